"""Per-tensor scales: real value = scale * integer. Scales are arrays that broadcast to the
per-sample shape, kept compact (an axis along which the scale is constant has size 1)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikeport.ir.graph import Graph, Node

# Ops that requantize every element of their input on their own (an add's multipliers per
# channel, an EC function's requant_q per element): a layer they read may have any scale per
# output channel.
REQUANT_READERS = frozenset(
    {
        "add",
        "layernorm",
        "gelu",
        "tanh",
        "softmax",
        "masked_softmax",
        "sigmoid",
        "hardsigmoid",
        "hardswish",
        "silu",
    }
)
# Ops whose output keeps each element's input scale (an offset adds a constant in its input's
# units; a product's scale is its operands' scales multiplied element by element): a
# per-channel scale passes through them to their readers, which decide.
SCALE_CARRIERS = frozenset({"offset", "mul"})


def read_requantized(
    graph: Graph, tensor: str, direct: Callable[[Node], bool] = lambda u: False
) -> bool:
    """Whether every reader of `tensor` requantizes it (REQUANT_READERS, through reshapes and
    transposes; `direct` may accept other readers of `tensor` itself, and of what
    SCALE_CARRIERS pass it to); a graph output is not."""
    users = graph.consumers(tensor)
    if not users or tensor in graph.outputs:
        return False
    return all(
        u.op in REQUANT_READERS
        or (u.op in ("reshape", "transpose") and read_requantized(graph, u.output))
        or (u.op in SCALE_CARRIERS and read_requantized(graph, u.output, direct))
        or direct(u)
        for u in users
    )


def compact(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Broadcast `scale` to `shape`, then shrink every axis on which it does not vary."""
    s = np.broadcast_to(np.asarray(scale, np.float64), shape)
    for ax in range(len(shape)):
        first = np.take(s, [0], axis=ax)
        if np.array_equal(s, np.broadcast_to(first, s.shape)):
            s = first
    return np.ascontiguousarray(s)


def channel_vector(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The (C,) scale of an image tensor (C, H, W), or None when it varies inside a channel."""
    s = compact(scale, shape)
    if len(shape) == 3 and s.shape[1:] != (1, 1):
        return None
    return np.broadcast_to(s.reshape(-1) if len(shape) == 3 else s, (shape[0],)).copy()


def input_channels(weight_shape: tuple[int, ...], group: int) -> np.ndarray:
    """(O, C/g): the input channel each weight of a grouped conv (O, C/g, kh, kw) reads, so a
    (C,) input scale indexed by it lines up with the weights."""
    out, per_group = weight_shape[0], weight_shape[1]
    return (np.arange(out)[:, None] // (out // group)) * per_group + np.arange(per_group)[None, :]


def feature_vector(scale: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The scale along the last axis (the features a dense layer reads), or None if it varies
    along the other axes."""
    s = compact(scale, shape)
    if any(d != 1 for d in s.shape[:-1]):
        return None
    return np.broadcast_to(s.reshape(-1), (shape[-1],)).copy()


def compact_rows(a: np.ndarray) -> np.ndarray:
    """`compact` over every axis but the first (one row per add input: equal rows stay two)."""
    c = compact(a, a.shape)
    return np.ascontiguousarray(np.broadcast_to(c, (a.shape[0],) + c.shape[1:]))
