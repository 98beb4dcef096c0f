"""Eval report output: markdown table, JSON file, PNG plot (all written atomically)."""

from __future__ import annotations

import json
import os

from spikeport.fileio import atomic_output


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
        tmp.write_text(json.dumps(report, indent=2) + "\n")


def write_plot(report: dict[str, object], path: str | os.PathLike[str], title: str = "") -> None:
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
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
