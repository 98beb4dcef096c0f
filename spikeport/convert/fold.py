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


def fold_channel_scales(graph: Graph) -> Graph:
    """Every `channel_scale` (a BatchNorm no layer alone produces: on a concat, an average
    pool, or a convolution that others read too, as in DenseNet's and other pre-activation
    blocks), with the `offset` right after it, moved into copies of the convolutions that
    produce its input, through channel concats and unpadded average pools:
    a (W x + c) + b = (a W) x + (a c + b) per output channel, exact in float. For targets
    with no per-channel multiply (SpiNNaker2, NIR, Lava), where a convolution's output is
    synapses into each reader anyway, so a copy per reader costs the chip nothing. Spikes
    in the input (a DenseNet's concat holds its stem's pooled spikes) get a depthwise 1x1
    convolution. Scales whose input comes from elsewhere (an add, the graph input) stay."""
    check_graph(graph)
    for cs in [n for n in graph.nodes if n.op == "channel_scale"]:
        _fold_channel_scale(graph, cs)
        check_graph(graph)  # the copies' shapes, for the next scale's walk
    return graph


def _fold_channel_scale(graph: Graph, cs: Node) -> None:
    shape = graph.shape(cs.output)
    a = _per_channel(np.asarray(cs.params["factor"], np.float64), shape[0])
    readers = graph.consumers(cs.output)
    last, b = cs, np.zeros(shape[0])
    if len(readers) == 1 and readers[0].op == "offset" and cs.output not in graph.outputs:
        b_off = _per_channel(np.asarray(readers[0].params["value"], np.float64), shape[0])
        if b_off is not None:
            last, b = readers[0], b_off
    if a is None or len(shape) != 3 or last.output in graph.outputs:
        return
    made: list[Node] = []
    new = _scaled(graph, cs.inputs[0], a, b, made)
    if new is None:
        return
    at = graph.nodes.index(cs)
    graph.nodes[at:at] = made
    for reader in graph.consumers(last.output):
        reader.inputs = [new if t == last.output else t for t in reader.inputs]
    for node in {cs.name: cs, last.name: last}.values():
        graph.nodes.remove(node)
    _drop_unread(graph)


def _scaled(graph: Graph, t: str, a: np.ndarray, b: np.ndarray, made: list[Node]) -> str | None:
    """A tensor computing a t + b (one a, b per channel of the image t), from new copies of
    the layers that produce t (appended to `made` in order); None where t is not made of
    convolutions, channel concats, unpadded average pools and spikes (of neurons or max
    pools, read by a new depthwise 1x1 convolution: a synapse each, where a copy of a layer
    in front would compose two layers' integer weights into one)."""
    p = graph.producer(t)
    if p is None or t in graph.outputs:
        return None
    tag = f":scaled{sum(n.name.startswith(p.name + ':scaled') for n in graph.nodes + made)}"
    if p.op in ("if", "maxpool2d"):  # spikes: a depthwise 1x1 convolution reads them
        w = a.reshape(-1, 1, 1, 1).astype(np.float32)
        attrs = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": len(a)}
        params = {"weight": w, "bias": b.astype(np.float32)}
        made.append(Node(p.name + tag, "conv2d", [t], t + tag, attrs, params))
        return made[-1].output
    if p.op == "conv2d":
        w = p.params["weight"].astype(np.float64) * a.reshape(-1, 1, 1, 1)
        bias = p.params["bias"].astype(np.float64) * a + b
        params = {**p.params, "weight": w.astype(np.float32), "bias": bias.astype(np.float32)}
        made.append(Node(p.name + tag, p.op, list(p.inputs), p.output + tag, dict(p.attrs), params))
        return made[-1].output
    if p.op == "avgpool2d" and not any(p.attrs["pads"]):  # the mean of a x + b: a mean + b
        inputs = [_scaled(graph, p.inputs[0], a, b, made)]
    elif p.op == "concat" and p.attrs["axis"] % 3 == 0:  # each input its channels' a and b
        ends = np.cumsum([graph.shape(i)[0] for i in p.inputs])[:-1]
        pieces = zip(p.inputs, np.split(a, ends), np.split(b, ends), strict=True)
        inputs = [_scaled(graph, i, ai, bi, made) for i, ai, bi in pieces]
    else:
        return None
    if None in inputs:
        return None
    made.append(Node(p.name + tag, p.op, inputs, p.output + tag, dict(p.attrs), dict(p.params)))
    return made[-1].output


def _drop_unread(graph: Graph) -> None:
    """Remove nodes nothing reads any more (the layers a fold copied, where it was their only
    reader), latest first so that a chain goes as a whole."""
    for node in reversed(list(graph.nodes)):
        linear = node.op in ("conv2d", "avgpool2d", "concat")
        if linear and node.output not in graph.outputs and not graph.consumers(node.output):
            graph.nodes.remove(node)
