"""Eval report output: markdown table, JSON file, PNG plot (all written atomically).

`write_outputs` writes the JSON and the plot together: the plot is drawn in memory first, and
neither file appears unless both can be written.
"""

from __future__ import annotations

import io
import json
import os

from spikeport.fileio import atomic_output, atomic_outputs

COLUMNS = (  # (record field, header, format): a column shows when any record has the field
    ("accuracy", "accuracy", "{:.4f}"),
    ("accuracy_interval", "95 % interval", "{0[0]:.4f} - {0[1]:.4f}"),
    (
        "paired_with_ann",
        "ANN-only / SNN-only right (p)",
        "{0[ann_only]} / {0[snn_only]} ({0[p_value]:.2g})",
    ),
    ("agreement_with_ann", "agreement with ANN", "{:.4f}"),
    ("cosine_to_ann", "cosine to ANN", "{:.4f}"),
    ("relative_error_to_ann", "relative error", "{:.4f}"),
    ("spikes_per_inference", "spikes / inference", "{:.1f}"),
    ("spike_levels_per_inference", "spike levels / inference", "{:.1f}"),
    ("bits_per_event", "bits / event", "{:.2f}"),
    ("synaptic_ops_per_inference", "synaptic ops / inference", "{:.0f}"),
)


GRADED_COLUMNS = ("spike_levels_per_inference", "bits_per_event")


def _graded(record: dict[str, object]) -> bool:
    """Whether a record's spikes carry more than one level or bit (graded neurons fired)."""
    levels = record.get("spike_levels_per_inference", record.get("spikes_per_inference"))
    return levels != record.get("spikes_per_inference") or record.get("bits_per_event", 1) != 1


def markdown_table(report: dict[str, object]) -> str:
    records = report["records"]  # type: ignore[assignment]
    cols = [c for c in COLUMNS if any(c[0] in r for r in records)]  # type: ignore[union-attr]
    if not any(_graded(r) for r in records):  # type: ignore[union-attr]
        cols = [c for c in cols if c[0] not in GRADED_COLUMNS]  # binary spikes: as before
    ann = report["ann"].get("accuracy")  # type: ignore[union-attr]
    head = ["T"] + [h for _, h, _ in cols] + (["ANN accuracy"] if ann is not None else [])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for r in records:  # type: ignore[union-attr]
        cells = [str(r["T"])] + [f.format(r[k]) if k in r else "-" for k, _, f in cols]
        lines.append("| " + " | ".join(cells + ([f"{ann:.4f}"] if ann is not None else [])) + " |")
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
    """Accuracy vs T (with its 95 % interval) as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [r["T"] for r in report["records"]]  # type: ignore[union-attr]
    # Class scores plot accuracy (or agreement without labels); other outputs their cosine.
    key = next(
        k
        for k in ("accuracy", "agreement_with_ann", "cosine_to_ann")
        if k in report["records"][0]  # type: ignore[index]
    )
    ys = [100 * r[key] for r in report["records"]]  # type: ignore[union-attr]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    line = ax.plot(ts, ys, "o-", label=f"SNN ({report['mode']} mode)")[0]
    bounds = [r.get("accuracy_interval") for r in report["records"]]  # type: ignore[union-attr]
    if key == "accuracy" and all(bounds):  # the test set's noise (reports before it: none)
        lo, hi = zip(*bounds, strict=True)
        ax.fill_between(ts, [100 * v for v in lo], [100 * v for v in hi], color=line.get_color(),
                        alpha=0.15, lw=0, label="95 % interval")  # fmt: skip
    if key == "accuracy" and "accuracy" in report["ann"]:  # type: ignore[operator]
        ax.axhline(100 * report["ann"]["accuracy"], color="gray", ls="--", label="ANN")  # type: ignore[index]
    for req in report.get("requirements", []):  # type: ignore[union-attr]
        if req["metric"] == key:
            ax.plot([req["T"]], [100 * req["min"]], "v", color="red" if not req["met"] else "green")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ts, [str(t) for t in ts])
    ax.set_xlabel("timesteps T")
    ax.set_ylabel(f"{key.replace('_', ' ')} (%)")
    ax.set_title(title or f"{key.replace('_', ' ')} vs timesteps")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png")
    finally:
        plt.close(fig)
    return buf.getvalue()
