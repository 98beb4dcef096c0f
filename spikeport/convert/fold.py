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
    """Every `offset` node folded away where that is exact: into the bias of the dense layer
    or convolution (the beta of the LayerNorm, for a constant per feature) that alone feeds
    it, into an offset after it, or into the biases of the dense layers (or convolutions
    without padding, of a per-channel constant) that alone read it."""
    check_graph(graph)
    # until none folds: a shift merged into the one before it may then fold into the readers
    while any(_fold(graph, off) for off in [n for n in graph.nodes if n.op == "offset"]):
        pass
    return check_graph(graph)


def _fold(graph: Graph, off: Node) -> bool:
    """Fold `off` away if it can go anywhere, rewiring its readers to its input."""
    if not (_into_producer(graph, off) or _into_readers(graph, off)):
        return False
    for reader in graph.consumers(off.output):
        reader.inputs = [off.inputs[0] if t == off.output else t for t in reader.inputs]
    graph.nodes.remove(off)
    return True


def _into_producer(graph: Graph, off: Node) -> bool:
    """y = W x + b then + c: b + c, where nothing else reads W x + b."""
    p, c = graph.producer(off.inputs[0]), np.asarray(off.params["value"], np.float64)
    if p is None or off.output in graph.outputs or p.output in graph.outputs:
        return False
    if len(graph.consumers(p.output)) != 1:
        return False
    shape = graph.shape(p.output)
    if p.op == "dense" and _broadcasts(p.params["bias"].shape, c.shape, shape):
        p.params["bias"] = (p.params["bias"] + c).astype(np.float32)  # may vary per position
    elif p.op == "conv2d" and (per_channel := _per_channel(c, shape[0])) is not None:
        p.params["bias"] = (p.params["bias"] + per_channel).astype(np.float32)
    elif p.op == "offset" and _broadcasts(p.params["value"].shape, c.shape, shape):
        p.params["value"] = (p.params["value"] + c).astype(np.float32)
    elif p.op == "layernorm" and _broadcasts(
        c.shape, p.params["beta"].shape, p.params["beta"].shape
    ):
        p.params["beta"] = (p.params["beta"] + c).astype(np.float32)  # one per feature
    else:
        return False
    return True


def _broadcasts(a: tuple[int, ...], b: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """a + b broadcasts to a shape that itself broadcasts to `shape` (no wider)."""
    try:
        return np.broadcast_shapes(np.broadcast_shapes(a, b), shape) == tuple(shape)
    except ValueError:
        return False


def _into_readers(graph: Graph, off: Node) -> bool:
    """W (x + c) + b = W x + (W c + b) in every reader, where all of them are linear layers."""
    readers = graph.consumers(off.output)
    if off.output in graph.outputs or not readers:
        return False
    x_shape = graph.shape(off.inputs[0])
    shifts = [bias_shift(r, off.params["value"], x_shape) for r in readers]
    if any(s is None for s in shifts):
        return False
    for reader, shift in zip(readers, shifts, strict=True):
        reader.params["bias"] = (reader.params["bias"] + shift).astype(np.float32)
    return True


def bias_shift(reader: Node, c: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray | None:
    """W c for a linear `reader` of x + c (x of per-sample shape x_shape), in the shape its
    bias can take; None where the constant does not fold into it."""
    c = np.asarray(c, np.float64)
    if reader.op == "dense":
        # constant along the leading axes: one vector; else one per position (a dense bias may
        # vary along its leading axes)
        w = reader.params["weight"].astype(np.float64)
        return np.broadcast_to(c, x_shape[-1:] if c.ndim <= 1 else x_shape) @ w.T
    if reader.op != "conv2d" or any(reader.attrs["pads"]):
        return None  # a padded border reads zeros, not x + c
    per_channel = _per_channel(c, x_shape[0])
    return None if per_channel is None else _conv_shift(reader, per_channel)


def _conv_shift(conv: Node, per_channel: np.ndarray) -> np.ndarray:
    """W c of a convolution for a constant c per input channel, wherever no padding is read."""
    w, g = conv.params["weight"].astype(np.float64), conv.attrs["group"]
    # output o of group k reads input channels k C/g .. (k + 1) C/g - 1
    per_group = w.reshape(g, len(w) // g, *w.shape[1:]) * per_channel.reshape(g, 1, -1, 1, 1)
    return per_group.sum(axis=(2, 3, 4)).reshape(-1)


def padded_conv_shift(
    conv: Node, c: np.ndarray, x_shape: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray] | None:
    """A padded convolution of x + c (c one value per channel of the image x_shape) as its
    output for x plus two parts: W c per output channel, for its bias, and the border's
    remainder per output position (where the window reads padding, which stays zero and is not
    x + c), for an offset after it; None where c is not one value per channel."""
    from spikeport.sim.kernels import conv2d

    per_channel = _per_channel(np.asarray(c, np.float64), x_shape[0])
    if conv.op != "conv2d" or per_channel is None:
        return None
    a, w = conv.attrs, conv.params["weight"].astype(np.float64)
    image = np.broadcast_to(per_channel.reshape(-1, 1, 1), x_shape)[None]
    full = conv2d(image, w, np.zeros(len(w)), a["strides"], a["pads"], a["dilations"], a["group"])
    inner = _conv_shift(conv, per_channel)
    return inner, full[0] - inner.reshape(-1, 1, 1)


def _per_channel(c: np.ndarray, channels: int) -> np.ndarray | None:
    """A shift of an image (C, H, W) as one value per channel; None where it varies over the
    image (no per-channel bias holds it)."""
    if c.size == 1:
        return np.full(channels, float(c.reshape(())))
    return c.reshape(-1) if c.shape == (channels, 1, 1) else None
