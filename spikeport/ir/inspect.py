"""Human-readable view of a graph (used by `spikeport inspect`)."""

from __future__ import annotations

import json

import numpy as np

from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import attr


def _params(node: Node) -> str:
    return ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in node.params.items())


def _threshold(node: Node) -> str:
    if node.op != "if":
        return ""
    th = node.params.get("threshold_q", node.params["threshold"])
    lo, hi = float(np.min(th)), float(np.max(th))
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g}..{hi:.4g}"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    fmt = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(rows[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows[1:]])


def describe(graph: Graph) -> str:
    head = [
        f"stage: {graph.stage}",
        "inputs: " + ", ".join(f"{t.name} {list(t.shape)}" for t in graph.inputs),
        "outputs: " + ", ".join(f"{o} {list(graph.shape(o))}" for o in graph.outputs),
    ]
    for key in ("source", "calibration", "conversion", "quantization"):
        if key in graph.meta:
            head.append(f"{key}: {json.dumps(graph.meta[key], default=str)}")
    rows = [["node", "op", "inputs", "output shape", "threshold", "spike bits", "params"]]
    for n in graph.nodes:
        rows.append(
            [
                n.name,
                f"{n.op} ({n.attrs['kind']})" if "kind" in n.attrs else n.op,  # a non-default kind
                ",".join(n.inputs),
                str(list(graph.shape(n.output))),
                _threshold(n),
                str(attr(n, "spike_bits")) if n.op == "if" else "",  # graded spikes: b > 1
                _params(n),
            ]
        )
    return "\n".join(head) + "\n\n" + _table(rows)
