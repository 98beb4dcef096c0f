"""Activation statistics on calibration data, from the float reference (onnxruntime)."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort

from spikeport.batch import Batch, onnx_feeds, size, take
from spikeport.ir.graph import Graph

MAX_SAMPLES_PER_CHANNEL = 1 << 20  # keeps memory flat on big calibration sets

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
        out = sess.run(names, onnx_feeds([i.name for i in sess.get_inputs()], x))
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


def activation_tensors(graph: Graph) -> list[str]:
    """The tensors that become spike trains: outputs of ReLU/Clip nodes and, in sequence
    models, the analog inputs of linear layers (see balance.spike_inputs)."""
    from spikeport.convert.balance import spike_inputs

    return [n.output for n in graph.nodes if n.op == "relu"] + spike_inputs(graph)


def collect(
    graph: Graph, runner: Runner, x: Batch, batch_size: int = 64, seed: int = 0
) -> dict[str, np.ndarray]:
    """Per activation tensor, its values as (channels, samples), channels on the tensor's own
    channel axis (balance.channel_axes: 0 for images, the features otherwise)."""
    from spikeport.convert.balance import channel_axes

    names = activation_tensors(graph)
    axes = channel_axes(graph)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, size(x), batch_size):
        acts = runner(take(x, slice(start, start + batch_size)), names)
        for n in names:
            a = np.asarray(acts[n], np.float32)
            ax = axes[n] + 1 if axes[n] >= 0 else axes[n]  # the batch axis comes first here
            parts[n].append(np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1))
    rng = np.random.default_rng(seed)
    stats = {}
    for n, chunks in parts.items():
        vals = np.concatenate(chunks, axis=1)
        if vals.shape[1] > MAX_SAMPLES_PER_CHANNEL:
            vals = vals[:, rng.choice(vals.shape[1], MAX_SAMPLES_PER_CHANNEL, replace=False)]
        stats[n] = vals
    return stats
