"""Activation statistics on calibration data, from the float reference (onnxruntime)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort

from spikeport.batch import Batch, onnx_feeds, size, take
from spikeport.ir.graph import Graph

# Activations one calibration batch may hold: 64 sentences of a 22M-parameter encoder hold
# 396 MiB of them in float64, so it runs in batches of 10.
BATCH_BYTES = 64 << 20

# A runner maps an input batch to {tensor name: activations (batch first)}.
Runner = Callable[[Batch, list[str]], dict[str, np.ndarray]]


def onnx_runner(path: str | os.PathLike[str]) -> Runner:
    """Run the source ONNX model with the named intermediate tensors exposed as outputs."""
    model = onnx.load(str(path))

    def run(x: Batch, names: list[str]) -> dict[str, np.ndarray]:
        present = {o.name for o in model.graph.output}
        for name in names:
            if name not in present:
                model.graph.output.append(
                    onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
                )
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        out = sess.run(names, onnx_feeds(sess.get_inputs(), x))
        return dict(zip(names, out, strict=True))

    return run


def ir_runner(graph: Graph) -> Runner:
    """The graph's own ANN view (equal to onnxruntime to float rounding, see the tests): it
    exposes tensors that exist only in the IR, such as the inputs of fused linear layers."""
    from spikeport.sim import Simulator

    sim = Simulator(graph, "ann")

    def run(x: Batch, names: list[str]) -> dict[str, np.ndarray]:
        wanted, out = set(names), {}

        def keep(name: str, v: np.ndarray) -> None:  # only the named tensors stay in memory
            if name in wanted:
                out[name] = v

        sim.run(x, 1, observe=keep)
        return {n: out[n] for n in names}

    return run


def activation_peaks(graph: Graph, x: Batch) -> dict[str, np.ndarray]:
    """Each unsigned neuron's largest input (its ANN activation before the ReLU's clip) on
    `x` in the graph's ANN view, shaped as its threshold (per channel where that is), at least
    0: the cap of a sigma-delta neuron (spikeport.sim.kinds.set_kind), which has levels enough
    for the whole range. The threshold T-aware conversion chose trades range for resolution at
    few spikes; as the cap it cost digits_mlp's sigma-delta network 100 -> 95 % agreement with
    the ANN (calibration split, T = 12)."""
    neurons = [
        n
        for n in graph.nodes
        if n.op == "if" and not (n.attrs.get("signed") or n.attrs.get("bipolar"))
    ]
    acts = ir_runner(graph)(x, [n.inputs[0] for n in neurons])
    peaks = {}
    for n in neurons:
        value, th = acts[n.inputs[0]], n.params["threshold"]
        aligned = (1,) * (value.ndim - 1 - th.ndim) + th.shape  # per sample, right-aligned
        axes = (0, *(i + 1 for i, d in enumerate(aligned) if d == 1))
        top = np.max(value, axis=axes, keepdims=True).reshape(th.shape)
        peaks[n.name] = np.maximum(top, 0).astype(np.float32)
    return peaks


def activation_tensors(graph: Graph, product_operands: str = "analog") -> list[str]:
    """The tensors that become spike trains: outputs of ReLU/Clip nodes and, in sequence
    models, the analog inputs of linear layers (see balance.spike_inputs)."""
    from spikeport.convert.balance import spike_inputs

    relus = [n.output for n in graph.nodes if n.op == "relu"]
    return relus + spike_inputs(graph, product_operands)


class Tails:
    """What threshold balancing reads of one activation tensor, kept as its batches arrive:
    per channel its k largest and k smallest values, and over the whole tensor its K largest
    values and K largest |values|, with k and K just enough for any percentile from `lowest`
    up (the linear interpolation of np.percentile reads two neighbouring order statistics).
    Memory is then flat in the number of calibration samples; the percentiles are exact, where
    keeping every value (7.6 GB peak for a 22M-parameter encoder on 200 sentences, issue #20)
    or a random subset of them was not."""

    def __init__(self, channels: int, per_channel: int, lowest: float):
        self.n = per_channel  # values each channel will see over all batches
        self.k = _kept(per_channel, lowest)
        self.big = _kept(channels * per_channel, lowest)
        empty = np.empty((channels, 0), np.float32)
        self.top, self.bottom = empty, empty  # (channels, <= k), unsorted
        self.top_all = np.empty(0, np.float32)
        self.top_abs = np.empty(0, np.float32)

    def add(self, vals: np.ndarray) -> None:
        """Take a batch of values shaped (channels, m)."""
        self.top = _largest(np.concatenate([self.top, vals], axis=1), self.k)
        self.bottom = -_largest(np.concatenate([-self.bottom, -vals], axis=1), self.k)
        self.top_all = _largest(np.concatenate([self.top_all, vals.ravel()]), self.big)
        self.top_abs = _largest(np.concatenate([self.top_abs, np.abs(vals).ravel()]), self.big)

    def percentile(self, q: float, per_channel: bool, absolute: bool = False) -> np.ndarray:
        """The q-th percentile of the values (or of |values|): per channel (channels,), or
        over the whole tensor (1,); np.percentile's linear method, to rounding."""
        if per_channel:
            tail = np.concatenate([self.top, -self.bottom], axis=1) if absolute else self.top
            return _from_tail(np.sort(tail, axis=1)[:, -self.k :], self.n, q)
        tail = self.top_abs if absolute else self.top_all
        return _from_tail(np.sort(tail)[None], self.n * len(self.top), q)


def _kept(n: int, lowest: float) -> int:
    """Values to keep of n for the percentiles from `lowest` up: every order statistic from
    floor((n - 1) lowest / 100) to the largest."""
    return min(n, n - int(np.floor((n - 1) * lowest / 100.0)) + 1)


def _largest(x: np.ndarray, k: int) -> np.ndarray:
    """The k largest entries along the last axis (all of them if fewer), in no order."""
    if x.shape[-1] <= k:
        return x
    return np.partition(x, x.shape[-1] - k, axis=-1)[..., -k:]


def _from_tail(tail: np.ndarray, n: int, q: float) -> np.ndarray:
    """Percentile q of n values per row whose sorted largest `tail.shape[1]` are `tail`."""
    h = (n - 1) * (q / 100.0)
    lo = int(np.floor(h))
    hi, frac = min(lo + 1, n - 1), h - lo
    first = n - tail.shape[1]  # the order statistic tail[:, 0] is
    assert lo >= first, "percentile below the lowest the tails were kept for"
    a, b = tail[:, lo - first].astype(np.float64), tail[:, hi - first].astype(np.float64)
    return a + (b - a) * frac


def collect(
    graph: Graph,
    runner: Runner,
    x: Batch,
    lowest: float,
    batch_size: int = 64,
    product_operands: str = "analog",
) -> dict[str, Tails]:
    """Per activation tensor, the Tails of its values over the calibration set, channels on
    the tensor's own channel axis (balance.channel_axes: 0 for images, the features
    otherwise), enough for any percentile from `lowest` up. Batches are at most `batch_size`
    samples and hold at most BATCH_BYTES of activations (float64)."""
    from spikeport.convert.balance import channel_axes

    names = activation_tensors(graph, product_operands)
    axes = channel_axes(graph)
    tails: dict[str, Tails] = {}
    elements = {n: int(np.prod(graph.shape(n), dtype=np.int64)) for n in names}  # per sample
    for n in names:
        shape = graph.shape(n)
        channels = shape[axes[n]] if shape else 1
        tails[n] = Tails(channels, elements[n] // max(channels, 1) * size(x), lowest)
    sample_bytes = 8 * sum(elements.values())
    batch_size = max(1, min(batch_size, BATCH_BYTES // max(sample_bytes, 1)))
    for start in range(0, size(x), batch_size):
        acts = runner(take(x, slice(start, start + batch_size)), names)
        for n in names:
            a = np.asarray(acts.pop(n), np.float32)
            ax = axes[n] + 1 if axes[n] >= 0 else axes[n]  # the batch axis comes first here
            tails[n].add(np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1))
    return tails
