"""T-aware threshold calibration: `convert -T T` chooses each neuron layer's thresholds for the
T it will run, layer by layer, on the spiking network's own inputs.

For a neuron layer, with the layers before it already chosen, the float spiking network runs
the calibration samples for T steps; the layer's input currents are recorded, and for every
channel the threshold theta that minimises the mean squared error between its T-step rate code
(spike count * theta / T, with v0 = theta / 2) and the ANN's activation on the same samples
is picked from a grid (which includes the percentile threshold, so on the calibration set it
is never worse). Then the mean remaining error of each channel is added to the bias of the
layer that feeds it (a bias correction, Li et al. 2021, "A free lunch from ANN"), where that
layer feeds only this neuron. Errors do not compound: the next layer sees the spikes this
choice produces. Deterministic; its cost is T simulator runs of growing graph prefixes.
"""

from __future__ import annotations

import copy

import numpy as np

from spikeport.batch import Batch, size, take
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node

TUNE_SAMPLES = 256  # calibration samples the layer-wise search runs on
GRID = np.geomspace(0.15, 1.5, 28)  # candidate thresholds, relative to a channel's max activation


def _channels_first(a: np.ndarray, axis: int) -> np.ndarray:
    """(N, ...) batch-first activations -> (C, N * rest) with the channel axis first."""
    ax = axis + 1 if axis >= 0 else a.ndim + axis
    return np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)


def _rate(currents: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """The T-step rate code of an IF neuron (reset by subtraction, v0 = theta / 2) driven by
    `currents` (T, C, M), in real units: spike count * theta / T, (C, M)."""
    v = np.broadcast_to(theta / 2, currents.shape[1:]).copy()
    count = np.zeros(currents.shape[1:])
    for current in currents:
        v += current
        fired = v >= theta
        v -= fired * theta
        count += fired
    return count * theta / len(currents)


def best_thresholds(
    currents: np.ndarray, target: np.ndarray, start: np.ndarray, cap: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the threshold from the grid (and `start`) whose rate code is closest to
    `target` (C, M), and its mean squared error. `currents` (T, C, M)."""
    top = np.maximum(target.max(axis=1), 1e-12)
    candidates = [start] + [top * f for f in GRID]
    best, best_err = start, np.full(len(start), np.inf)
    for theta in candidates:
        theta = np.minimum(theta, cap) if cap is not None else theta
        theta = np.where(theta > 0, theta, 1.0)[:, None]
        err = ((_rate(currents, theta) - target) ** 2).mean(axis=1)
        better = err < best_err
        best = np.where(better, theta[:, 0], best)
        best_err = np.where(better, err, best_err)
    return best, best_err


def _prefix(graph: Graph, upto: str) -> Graph:
    """The graph's nodes up to the one that writes `upto`, with `upto` as its output."""
    nodes = []
    for n in graph.nodes:
        nodes.append(n)
        if n.output == upto:
            break
    return Graph(graph.inputs, nodes, [upto], stage=graph.stage, meta=graph.meta)


def _per_step(graph: Graph, tensor: str, x: Batch, T: int) -> np.ndarray:
    """`tensor` at each of T steps, (T, N, ...), in the float spiking network."""
    from spikeport.sim import Simulator

    acc = Simulator(check_graph(_prefix(graph, tensor)), "float").run(x, T).outputs[tensor]
    return np.diff(acc, axis=0, prepend=0.0)


def tune_thresholds(
    snn: Graph, ann: Graph, x: Batch, T: int, axes: dict[str, int]
) -> tuple[Graph, dict[str, object]]:
    """The float SNN with T-aware thresholds and bias corrections (see the module docstring),
    and a record of what changed. `axes`: each tensor's channel axis (balance.channel_axes)."""
    from spikeport.sim import Simulator

    out = copy.deepcopy(snn)
    x = take(x, slice(TUNE_SAMPLES))
    targets = Simulator(ann, "ann").run(x, 1, record=True).trace
    producers = {n.output: n for n in out.nodes}
    consumers: dict[str, int] = {}
    for n in out.nodes:
        for i in n.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    changed = 0
    for node in [n for n in out.nodes if n.op == "if" and not n.attrs.get("bipolar")]:
        if node.output not in targets or node.attrs.get("signed"):
            continue
        axis = axes.get(node.output, 0)
        cur = np.stack([_channels_first(c, axis) for c in _per_step(out, node.inputs[0], x, T)])
        target = _channels_first(targets[node.output][0], axis)
        old = node.params["threshold"]
        if old.size not in (1, len(target)):
            continue
        if old.size == 1:  # one threshold for the layer: search it over all channels at once
            theta, _ = best_thresholds(
                cur.reshape(T, 1, -1), target.reshape(1, -1), old.reshape(1), node.attrs["cap"]
            )
            theta = np.broadcast_to(theta, (len(target),))
        else:
            theta, _ = best_thresholds(cur, target, old.reshape(-1), node.attrs["cap"])
        node.params["threshold"] = theta[: old.size].reshape(old.shape).astype(np.float32)
        residual = (target - _rate(cur, theta[:, None])).mean(axis=1)
        _correct_bias(producers.get(node.inputs[0]), consumers, residual)
        changed += 1
    return check_graph(out), {"tuned_layers": changed, "samples": size(x), "T": T}


def _correct_bias(layer: Node | None, consumers: dict[str, int], residual: np.ndarray) -> None:
    """Add the mean remaining error of each channel to the bias of the dense/conv layer that
    feeds the neuron alone (its current moves by that much, so its rate does)."""
    if layer is None or layer.op not in ("dense", "conv2d") or consumers.get(layer.output) != 1:
        return
    bias = layer.params["bias"]
    if bias.shape != residual.shape:
        return
    layer.params["bias"] = (bias + residual).astype(np.float32)
