"""Outlier neurons get copies: outlier channel splitting (Zhao et al. 2019, "Improving Neural
Network Quantization without Retraining using Outlier Channel Splitting"), for spikes.

A bipolar neuron codes its feature's mean over T steps on 2T + 1 levels theta / T apart, so
its rounding error, up to theta / (2T), reaches the dense layers that read it weighted by the
feature's weight column: noise power about theta_f^2 |W[:, f]|^2. With one threshold per
feature, a transformer's few outlier features (LLM.int8(), SmoothQuant) have thresholds 10 to
1,000 times the median and carry most of that noise: in all-MiniLM-L6-v2's feed-forward
output layers of blocks 0 to 3, 1 % of the features hold 46 to 90 % of it (per-feature
ranges of 64 calibration sentences).

T-aware conversion (tune.py) decides per neuron layer, once its thresholds are chosen: the
noise of feature f is r_f^2 |W[:, f]|^2, r_f the largest |value| it must code (x - c where
the layer is centred), and a feature given copies has its threshold searched again for them
(with k neurons it can afford a threshold that clips less).

A feature given k neurons, each reading the same current plus a constant offset
(j / k - (k - 1) / (2k)) theta / T per step (j = 0 .. k - 1) and each carrying 1 / k of the
weight column, is coded on k times finer levels with binary spikes still: after T steps the
counts floor(T x / theta + 1/2 + j / k - (k - 1) / (2k)) sum to round(k T x / theta)
(Hermite's identity). The offsets sum to zero over a feature's copies, so the ANN view
computes the same function. They are set for the T the graph is converted for (`convert -T`):
run at other T the copies still dither the rounding, with less gain.

Which features: a greedy equalisation of the noise, within a share s of extra neurons
(`convert --extra-neurons`, EXTRA_NEURONS by default). While the feature of largest remaining
noise, r_f^2 |W[:, f]|^2 / k_f^2, holds more than 1 / s times the layer's median feature's,
and the layer has fewer than s times its features in extra neurons, that feature gets one more
copy (at most MAX_COPIES). Layers without outliers get none. One knob sets both limits: a
bigger budget also lets less extreme features earn copies.

The default, 1 / 16, was emulated on all-MiniLM-L6-v2 at T = 16 (per-feature rounding of
every dense layer's input, thresholds at each feature's range): cosine to the ANN 0.976
without, 0.9907 with 0.6 % more neurons; doubling every neuron gives 0.992. Measured through
conversion (1-bit, T = 16, 64 test sentences): 0.9791 -> 0.9823 in integer mode with 1.2 %
more neurons, but 0.9838 -> 0.9831 in float mode: the gain there comes from quantization, not
from the finer code (docs/transformers.md). A share of 1 (58 % more neurons in the 24
layers split, 9,416 of 16,128; 2026-12-03): 0.9862 integer, 0.9869 float; with 50 % more,
0.9861. What is left there is not the rounding of those neurons.

Only bipolar neurons (what transformers get in front of their linear layers) whose every
reader is a dense layer on that tensor are split: a dense layer sums the copies' columns,
where a convolution's window or a product of two activations would not.
"""

from __future__ import annotations

import heapq

import numpy as np

from spikeport.ir.graph import Graph, Node, TensorInfo

EXTRA_NEURONS = 1 / 16  # extra neurons per layer, at most, as a share of its features
MAX_COPIES = 16  # neurons per feature, at most


def splittable(graph: Graph, node: Node) -> bool:
    """A bipolar IF layer (binary or graded, reset by subtraction) whose every reader is a
    dense layer on its output, which is not a graph output."""
    if node.op != "if" or not node.attrs.get("bipolar"):
        return False
    if node.attrs.get("kind", "subtract") != "subtract" or node.output in graph.outputs:
        return False
    readers = graph.consumers(node.output)
    return bool(readers) and all(r.op == "dense" and r.inputs == [node.output] for r in readers)


def column_power(graph: Graph, node: Node) -> np.ndarray:
    """|W[:, f]|^2 summed over the dense layers that read `node`, per input feature f."""
    readers = graph.consumers(node.output)
    return sum((r.params["weight"].astype(np.float64) ** 2).sum(axis=0) for r in readers)


def neuron_copies(noise: np.ndarray, share: float = EXTRA_NEURONS) -> np.ndarray:
    """Neurons per feature (>= 1) for features of rounding noise `noise`, at most `share`
    times as many extra neurons as features (module docstring)."""
    copies = np.ones(len(noise), dtype=np.int64)
    if share <= 0:
        return copies
    limit, budget = float(np.median(noise)) / share, int(share * len(noise))
    heap = [(-float(v), f) for f, v in enumerate(noise)]
    heapq.heapify(heap)
    while budget > 0 and heap and -heap[0][0] > limit:
        _, f = heapq.heappop(heap)
        copies[f] += 1
        budget -= 1
        if copies[f] < MAX_COPIES:
            heapq.heappush(heap, (-float(noise[f]) / copies[f] ** 2, f))
    return copies


def stagger(j: np.ndarray | int, k: np.ndarray | int) -> np.ndarray | float:
    """The per-step offset, in units of theta / T, of neuron j (0 .. k - 1) of a feature's k."""
    return j / k - (k - 1) / (2 * k)


def insert_copies(graph: Graph, node: Node, copies: np.ndarray, T: int) -> Node:
    """Insert gather -> offset in front of neuron layer `node` (its last axis the features,
    `copies` neurons each), widen its thresholds and its readers' weight columns (1 / k of a
    feature's column to each of its k neurons); the offset node, which `node` now reads."""
    n = len(copies)
    index = np.concatenate([np.arange(n), np.repeat(np.arange(n), copies - 1)])
    rank = np.concatenate([np.zeros(n, np.int64)] + [np.arange(1, c) for c in copies if c > 1])
    k = copies[index]
    src, th = node.inputs[0], node.params["threshold"]
    full = np.broadcast_to(th, th.shape[:-1] + (n,)) if th.ndim else np.full(n, th)
    offset = stagger(rank, k) * full.reshape(-1, n)[0][index] / T  # one threshold a feature
    shape = graph.shape(src)
    wide = shape[:-1] + (len(index),)
    copied, staggered = f"{src}/copies", f"{src}/staggered"
    graph.tensors[copied] = TensorInfo(copied, wide)
    graph.tensors[staggered] = TensorInfo(staggered, wide)
    picks = {"axis": len(shape) - 1, "indices": index.tolist()}
    value = {"value": offset.astype(np.float32)}
    at = graph.nodes.index(node)
    graph.nodes[at:at] = [
        Node(f"{node.name}/copies", "gather", [src], copied, picks),
        Node(f"{node.name}/stagger", "offset", [copied], staggered, {}, value),
    ]
    node.inputs = [staggered]
    node.params["threshold"] = np.ascontiguousarray(np.take(full, index, axis=-1))
    graph.tensors[node.output] = TensorInfo(node.output, wide)
    for reader in graph.consumers(node.output):
        w = reader.params["weight"]
        reader.params["weight"] = (w[:, index] / k).astype(w.dtype)
    return graph.nodes[at + 1]


def inserted(node: Node) -> bool:
    """Whether insert_copies made `node` (the gather or the offset in front of a split layer)."""
    return node.name.endswith(("/copies", "/stagger")) and node.op in ("gather", "offset")


def split_neurons(graph: Graph) -> dict[str, int]:
    """The extra neurons of each neuron layer that insert_copies split, by layer name."""
    return {
        n.name.removesuffix("/copies"): len(n.attrs["indices"]) - graph.shape(n.inputs[0])[-1]
        for n in graph.nodes
        if n.op == "gather" and inserted(n)
    }
