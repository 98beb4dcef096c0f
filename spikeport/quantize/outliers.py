"""Outlier inputs get synapses of their own (LLM.int8()'s decomposition, for spikes).

A dense layer fed by neurons with one threshold per feature (what threshold balancing gives
a transformer's outlier features, issue 16) has the real weights w_ij * theta_j once the
spikes' value is folded in. A few features of trained transformers carry values 10 to 1,000
times the median (Dettmers et al., "LLM.int8()", 2022; Xiao et al., "SmoothQuant", 2023), and
their column then sets every row's weight scale: the other columns keep a few of the 8 bits.
On all-MiniLM-L6-v2 (graded 4-bit spikes, T = 8) the feed-forward output layers' columns
reach 270 to 1,460 times the median column, and 8-bit weights cost 0.004 of the sentence
embedding's cosine to the ANN against 12-bit ones.

So quantize moves those columns into a second dense layer that reads only them (a `gather`
of the outlier features), each layer with its own per-row weight scales, and an `add` joins
the two currents: y = W_in x + W_out x[outliers], the same function in float. An add brings
its inputs to one scale with per-channel multipliers, so this needs a target whose adds
requantize every element (not one that folds adds into synapses, or that has one threshold a
population or a per-step current limit) and that has `gather`.

Only layers whose every reader requantizes their output anyway (an add, LayerNorm, GELU,
softmax, through reshapes: a transformer's linear layers but Q, K and V) are split. A layer
read by neurons hands them its per-channel scales exactly (their thresholds absorb them); the
join would put one more rounding of the current in front of them, with one output scale for
all channels, and on a generated MLP with two outlier features that cost more than the finer
weights gained.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.quantize.profiles import Profile
from spikeport.quantize.scales import read_requantized

# A column whose peak |w_ij * theta_j| is above this many times the median column's is an
# outlier: keeping it would spend 3 or more bits of every row it dominates.
OUTLIER_FACTOR = 8.0
# At most this share of a layer's inputs is split off (at least one): outliers are few, and
# past that the second layer would cost about as much as the first.
MAX_OUTLIER_SHARE = 1 / 16


def splits_outliers(profile: Profile) -> bool:
    """Whether the target runs what the split needs (see the module docstring)."""
    return {"gather", "add", "dense"} <= set(profile.ops) and profile.requantizes_elements


def outlier_columns(graph: Graph, node: Node) -> list[int]:
    """The input features of dense `node` whose weight column, scaled by the threshold of the
    neuron that feeds it, is an outlier; [] where the input is not one neuron per feature or
    the output is not requantized by every reader."""
    src = graph.producer(node.inputs[0])
    if node.op != "dense" or src is None or src.op != "if":
        return []
    if not read_requantized(graph, node.output):
        return []
    w = np.abs(node.params["weight"].astype(np.float64))
    shape = graph.shape(node.inputs[0])
    theta = np.abs(np.broadcast_to(src.params["threshold"], shape).astype(np.float64))
    per_feature = theta.reshape(-1, shape[-1])
    if not np.all(per_feature == per_feature[:1]):  # varies along tokens: no column scale
        return []
    peak = (w * per_feature[0][None, :]).max(axis=0)
    median = float(np.median(peak))
    if median <= 0:
        return []
    most = max(1, int(len(peak) * MAX_OUTLIER_SHARE))
    top = np.argsort(peak)[::-1][:most]
    return sorted(int(j) for j in top if peak[j] > OUTLIER_FACTOR * median)


def split_outlier_inputs(graph: Graph, profile: Profile) -> list[str]:
    """Split, in place, every dense layer of `graph` with outlier inputs; return their names."""
    if not splits_outliers(profile):
        return []
    split = []
    for node in list(graph.nodes):
        cols = outlier_columns(graph, node)
        if cols:
            _split(graph, node, cols)
            split.append(node.name)
    return split


def _split(graph: Graph, node: Node, cols: list[int]) -> None:
    """dense(x) -> add(dense(x) without `cols`, dense(gather(x, cols)))."""
    x, y = node.inputs[0], node.output
    rank, out_shape = len(graph.shape(x)), graph.shape(y)
    picked, inliers, outliers = f"{node.name}:outlier_inputs", f"{y}:inliers", f"{y}:outliers"
    w = node.params["weight"]
    gather = Node(picked, "gather", [x], picked, {"axis": rank - 1, "indices": cols})
    side = Node(
        f"{node.name}:outliers",
        "dense",
        [picked],
        outliers,
        dict(node.attrs),
        {"weight": w[:, cols].copy(), "bias": np.zeros_like(node.params["bias"])},
    )
    kept = w.copy()
    kept[:, cols] = 0
    node.params["weight"], node.output = kept, inliers
    join = Node(f"{node.name}:join", "add", [inliers, outliers], y)
    for name, shape in (
        (picked, graph.shape(x)[:-1] + (len(cols),)),
        (inliers, out_shape),
        (outliers, out_shape),
    ):
        graph.tensors[name] = TensorInfo(name, shape)
    at = graph.nodes.index(node) + 1
    graph.nodes[at:at] = [gather, side, join]


def join_outlier_inputs(graph: Graph) -> None:
    """Undo, in place, the split of a graph quantized before (its meta lists the layers): a
    quantized graph quantized again, maybe for a target that runs no split, starts from the
    float layers it was split from."""
    for name in graph.meta.get("quantization", {}).get("outlier_inputs_split", []):
        main = graph.node(name)
        gather, side, join = (
            graph.node(f"{name}:{k}") for k in ("outlier_inputs", "outliers", "join")
        )
        weight = main.params["weight"].copy()
        weight[:, gather.attrs["indices"]] = side.params["weight"]
        main.params["weight"] = weight
        for t in (main.output, gather.output, side.output):
            graph.tensors.pop(t, None)
        main.output = join.output
        for n in (gather, side, join):
            graph.nodes.remove(n)
