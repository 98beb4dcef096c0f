"""Graph rewrites after import, exact in float, for every source format.

A constant added after a neuron (Clip(min=-1) is relu(x + 1) - 1; a standalone Add of a
constant) would stay a node of its own, and in integer mode an offset is a count of its
input's steps: a neuron's step is its threshold, so the offset rounds to a whole number of
thresholds. Where only linear layers read it, W (x + c) + b = W x + (W c + b): the constant
moves into their biases, exactly, and the integer network never sees it.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node


def fold_offsets(graph: Graph) -> Graph:
    """Every `offset` node whose readers are all dense layers, or convolutions without padding
    of a per-channel constant, folded into their biases and removed."""
    check_graph(graph)
    for off in [n for n in graph.nodes if n.op == "offset"]:
        readers = graph.consumers(off.output)
        if off.output in graph.outputs or not readers:
            continue
        x_shape = graph.shape(off.inputs[0])
        shifts = [_bias_shift(r, off.params["value"], x_shape) for r in readers]
        if any(s is None for s in shifts):
            continue
        for reader, shift in zip(readers, shifts, strict=True):
            reader.params["bias"] = (reader.params["bias"] + shift).astype(np.float32)
            reader.inputs = [off.inputs[0] if t == off.output else t for t in reader.inputs]
        graph.nodes.remove(off)
    return check_graph(graph)


def _bias_shift(reader: Node, c: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """W c for a linear `reader` of x + c (x of per-sample shape x_shape), in the shape its
    bias can take; None where the constant does not fold into it."""
    c = np.asarray(c, np.float64)
    w = reader.params["weight"].astype(np.float64) if "weight" in reader.params else None
    if reader.op == "dense":
        # constant along the leading axes: one vector; else one per position (a dense bias may
        # vary along its leading axes)
        return np.broadcast_to(c, x_shape[-1:] if c.ndim <= 1 else x_shape) @ w.T
    if reader.op == "conv2d" and not any(reader.attrs["pads"]):
        channels = x_shape[0]
        if c.size == 1:
            per_channel = np.full(channels, float(c.reshape(())))
        elif c.shape == (channels, 1, 1):
            per_channel = c.reshape(-1)
        else:
            return None  # varies over the image: no per-channel bias holds it
        g = reader.attrs["group"]
        # output o of group k reads input channels k C/g .. (k + 1) C/g - 1
        per_group = w.reshape(g, len(w) // g, *w.shape[1:]) * per_channel.reshape(g, 1, -1, 1, 1)
        return per_group.sum(axis=(2, 3, 4)).reshape(-1)
    return None
