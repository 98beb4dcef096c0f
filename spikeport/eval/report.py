"""Eval report output: markdown table, JSON file, PNG plot (all written atomically).

`write_outputs` writes the JSON and the plot together: the plot is drawn in memory first, and
neither file appears unless both can be written.
"""

from __future__ import annotations

import io
import json
import os

from spikeport.fileio import atomic_output, atomic_outputs


def markdown_table(report: dict[str, object]) -> str:
    ann = report["ann"]["accuracy"]  # type: ignore[index]
    lines = [
        "| T | accuracy | ANN | agreement with ANN | spikes / inference "
        "| synaptic ops / inference |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["records"]:  # type: ignore[union-attr]
        lines.append(
            f"| {r['T']} | {r['accuracy']:.4f} | {ann:.4f} | {r['agreement_with_ann']:.4f} "
            f"| {r['spikes_per_inference']:.1f} | {r['synaptic_ops_per_inference']:.0f} |"
        )
    return "\n".join(lines)


def write_json(report: dict[str, object], path: str | os.PathLike[str]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json_text(report))


def json_text(report: dict[str, object]) -> str:
    return json.dumps(report, indent=2) + "\n"


def write_plot(report: dict[str, object], path: str | os.PathLike[str], title: str = "") -> None:
    png = plot_png(report, title)
    with atomic_output(path) as tmp:
        tmp.write_bytes(png)


def write_outputs(
    report: dict[str, object],
    json_path: str | os.PathLike[str] | None,
    plot_path: str | os.PathLike[str] | None,
    title: str = "",
) -> None:
    """The JSON and / or the plot, both or neither (the plot is drawn before anything is
    written)."""
    blobs: dict[str | os.PathLike[str], bytes] = {}
    if plot_path:
        blobs[plot_path] = plot_png(report, title)
    if json_path:
        blobs[json_path] = json_text(report).encode()
    if not blobs:
        return
    with atomic_outputs(list(blobs)) as tmps:
        for tmp, data in zip(tmps, blobs.values(), strict=True):
            tmp.write_bytes(data)


def plot_png(report: dict[str, object], title: str = "") -> bytes:
    """Accuracy vs T as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["T"] for r in report["records"]]  # type: ignore[union-attr]
    acc = [100 * r["accuracy"] for r in report["records"]]  # type: ignore[union-attr]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.plot(ts, acc, "o-", label=f"SNN ({report['mode']} mode)")
    ax.axhline(100 * report["ann"]["accuracy"], color="gray", ls="--", label="ANN")  # type: ignore[index]
    for req in report.get("requirements", []):  # type: ignore[union-attr]
        ax.plot(
            [req["T"]], [100 * req["min_accuracy"]], "v", color="red" if not req["met"] else "green"
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title or "accuracy vs timesteps")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()
