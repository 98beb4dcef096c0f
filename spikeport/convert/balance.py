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
from spikeport.ir.ops import OPS

DEFAULT_PERCENTILE = 99.99
# Signed, heavy-tailed transformer activations (LayerNorm outputs, Q, K, V) trade clipping for
# resolution better at a lower percentile when T is small: on the digits ViT (float mode,
# T = 4) 99.99 gave 80.0 %, 99.9 gave 90.6 %, 99.0 gave 93.3 % (ANN 97.8 %).
DEFAULT_INPUT_PERCENTILE = 99.0
# Ops that move or rescale values without computing: spikes stay spikes through them.
DATA_MOVEMENT = frozenset({"reshape", "transpose", "take", "slice", "scale", "concat"})
SYNAPTIC_SEQ = ("dense", "matmul")


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


def _kind(graph: Graph, tensor: str) -> str:
    """ "static" (never changes: the direct input through stateless ops), "spikes" (a neuron's
    output, possibly moved or rescaled) or "analog"."""
    node = graph.producer(tensor)
    if node is None:
        return "static"
    if node.op == "if":
        return "spikes"
    kinds = {_kind(graph, i) for i in node.inputs}
    if kinds == {"static"} and not OPS[node.op].stateful:
        return "static"
    if node.op in DATA_MOVEMENT and kinds == {"spikes"}:
        return "spikes"
    return "analog"


def spike_inputs(graph: Graph) -> list[str]:
    """In a sequence model, the analog tensors that linear layers (dense, matmul) read: each
    gets a bipolar IF neuron in front, so every synaptic op is driven by spikes."""
    if not graph.meta.get("source", {}).get("sequence_model"):
        return []
    found: list[str] = []
    for n in graph.nodes:
        if n.op in SYNAPTIC_SEQ:
            found += [t for t in n.inputs if t not in found and _kind(graph, t) == "analog"]
    return found


def _insert_input_neurons(graph: Graph, stats: dict[str, np.ndarray], percentile: float) -> None:
    """A bipolar IF neuron (threshold: percentile of |activation|) before each such input."""
    points = set(spike_inputs(graph))
    nodes: list[Node] = []
    made: set[str] = set()
    for n in graph.nodes:
        for t in n.inputs:
            if t in points and t not in made:
                theta = thresholds(np.abs(stats[t]).reshape(1, -1), percentile, False)
                rank = len(graph.shape(t))
                nodes.append(
                    Node(
                        f"{t}:neuron",
                        "if",
                        [t],
                        f"{t}:spikes",
                        {"signed": True, "bipolar": True, "cap": None},
                        {"threshold": theta.reshape((1,) * rank).astype(np.float32)},
                    )
                )
                made.add(t)
        if n.op in SYNAPTIC_SEQ:
            n.inputs = [f"{t}:spikes" if t in points else t for t in n.inputs]
        nodes.append(n)
    graph.nodes = nodes


def balance_thresholds(
    graph: Graph,
    stats: dict[str, np.ndarray],
    percentile: float = DEFAULT_PERCENTILE,
    per_channel: bool = False,
    signed: bool = False,
    input_percentile: float = DEFAULT_INPUT_PERCENTILE,
) -> Graph:
    """Return the float spiking graph (stage "snn") of an "ann" graph. `input_percentile` sets
    the bipolar neurons that sequence models get in front of their linear layers."""
    out = copy.deepcopy(graph)
    nodes = []
    for n in out.nodes:
        if n.op == "relu":
            theta = thresholds(stats[n.output], percentile, per_channel)
            n = to_neuron(n, theta, len(graph.shape(n.output)), signed)
        nodes.append(n)
    out.nodes, out.stage = nodes, "snn"
    _insert_input_neurons(out, stats, input_percentile)
    out.meta["conversion"] = {
        "percentile": percentile,
        "per_channel": per_channel,
        "signed_spikes": signed,
        "input_percentile": input_percentile if spike_inputs(graph) else None,
        "neuron": "if, reset by subtraction, v0 = theta/2",
        "encoding": "direct (constant input current)",
    }
    return check_graph(out)
