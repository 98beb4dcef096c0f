"""Threshold balancing: ReLU/Clip nodes become integrate-and-fire neurons.

Each neuron's threshold theta (the value one spike carries) is a high percentile of its ANN
activation on calibration data (Rueckauer et al. 2017, "robust normalisation"), per layer or per
channel, capped by the Clip bound. With v0 = theta/2 the rate code rounds to the nearest of
the T+1 levels {0, theta/T, ..., theta} instead of flooring (Bu et al., QCFS, ICLR 2022).
"""

from __future__ import annotations

import copy

import numpy as np

from spikeport.errors import BadInput
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node

DEFAULT_PERCENTILE = 99.99


def thresholds(acts: np.ndarray, percentile: float, per_channel: bool) -> np.ndarray:
    """theta per channel (C,) or for the layer (1,) from activations shaped (C, samples)."""
    if not 0 < percentile <= 100:
        raise BadInput(f"percentile {percentile} is not in (0, 100]")
    layer = float(np.percentile(acts, percentile))
    if not per_channel:
        theta = np.array([layer])
    else:
        theta = np.percentile(acts, percentile, axis=1)
        theta = np.where(theta > 0, theta, layer)  # silent channel: any theta works, keep it sane
    return np.where(theta > 0, theta, 1.0)  # a silent layer still needs theta > 0


def to_neuron(node: Node, theta: np.ndarray, rank: int, signed: bool) -> Node:
    cap = node.attrs.get("cap")
    if cap is not None:
        theta = np.minimum(theta, cap)
    shape = (theta.size,) + (1,) * (rank - 1) if theta.size > 1 else (1,) * rank
    return Node(
        node.name,
        "if",
        list(node.inputs),
        node.output,
        {"signed": signed, "cap": cap},
        {"threshold": theta.reshape(shape).astype(np.float32)},
    )


def balance_thresholds(
    graph: Graph,
    stats: dict[str, np.ndarray],
    percentile: float = DEFAULT_PERCENTILE,
    per_channel: bool = False,
    signed: bool = False,
) -> Graph:
    """Return the float spiking graph (stage "snn") of an "ann" graph."""
    out = copy.deepcopy(graph)
    nodes = []
    for n in out.nodes:
        if n.op == "relu":
            theta = thresholds(stats[n.output], percentile, per_channel)
            n = to_neuron(n, theta, len(graph.shape(n.output)), signed)
        nodes.append(n)
    out.nodes, out.stage = nodes, "snn"
    out.meta["conversion"] = {
        "percentile": percentile,
        "per_channel": per_channel,
        "signed_spikes": signed,
        "neuron": "if, reset by subtraction, v0 = theta/2",
        "encoding": "direct (constant input current)",
    }
    return check_graph(out)
