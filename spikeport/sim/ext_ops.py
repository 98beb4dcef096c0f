"""Simulator kernels of the ops in spikeport.ir.ext_ops (activations, gates, normalisation,
padding, resizing). Nonlinear ones reuse the expectation-compensated machinery of
spikeport.sim.seq_ops; arrays carry the batch axis in front of the per-sample axes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from spikeport.ir.ext_ops import pad_width, resize_matrices
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr
from spikeport.sim import intfunc as F
from spikeport.sim.ops import Kernel, Shape, Stateless, _as_int, kernel
from spikeport.sim.seq_ops import ExpectationCompensated, _ax, _unary


def _act(
    node: Node, mode: str, f: Callable[..., np.ndarray], f_int: Callable[..., np.ndarray]
) -> Kernel:
    """An EC activation whose integer function takes the node's stored constants."""
    consts = node.attrs.get("int", {})
    return _unary(node, mode, f, lambda q: f_int(q, **consts))


@kernel("sigmoid")
def _sigmoid(node: Node, mode: str, shape: Shape) -> Kernel:
    return _act(node, mode, F.sigmoid, F.int_sigmoid)


@kernel("hardsigmoid")
def _hardsigmoid(node: Node, mode: str, shape: Shape) -> Kernel:
    alpha, beta = attr(node, "alpha"), attr(node, "beta")
    return _act(node, mode, lambda x: F.hardsigmoid(x, alpha, beta), F.int_hardsigmoid)


@kernel("hardswish")
def _hardswish(node: Node, mode: str, shape: Shape) -> Kernel:
    return _act(node, mode, lambda x: x * F.hardsigmoid(x, 1 / 6, 0.5), F.int_hardswish)


@kernel("silu")
def _silu(node: Node, mode: str, shape: Shape) -> Kernel:
    return _act(node, mode, lambda x: x * F.sigmoid(x), F.int_silu)


@kernel("l2norm")
def _l2norm(node: Node, mode: str, shape: Shape) -> Kernel:
    eps = attr(node, "eps")
    return _act(node, mode, lambda x: F.l2norm(x, eps), F.int_l2norm)


@kernel("prelu")
def _prelu(node: Node, mode: str, shape: Shape) -> Kernel:
    if mode != "int":
        slope = node.params["slope"].astype(np.float64)
        # (the integer function below replaces _unary's requantized mean in "int" mode)
        return _unary(node, mode, lambda x: np.where(x >= 0, x, slope * x), lambda q: q)
    # Positively homogeneous: t * f(S / t) = f(S), so G(t) is f of the running sum itself.
    mul, shift = node.params["slope_q"].astype(np.int64), node.attrs["slope_shift"]
    frac = node.attrs["frac"]
    return ExpectationCompensated(lambda s, t: F.int_prelu(s[0], mul, shift, frac))


def _align(x: np.ndarray, rank: int) -> np.ndarray:
    """Give a batched array the per-sample rank `rank` (new axes after the batch axis), so
    numpy broadcasts per-sample shapes from the right as the IR means."""
    missing = rank - (x.ndim - 1)
    return x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:]) if missing > 0 else x


def _binary(shape: Shape, g: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    return lambda a, b, *rest: g(_align(a, len(shape)), _align(b, len(shape)), *rest)


@kernel("mul")
def _mul(node: Node, mode: str, shape: Shape) -> Kernel:
    if mode == "ann":
        return Stateless(_binary(shape, np.multiply))
    if mode == "float":
        return ExpectationCompensated(lambda s, t: _binary(shape, np.multiply)(*s) / t)
    frac = node.attrs["frac"]  # G(t) = S_A S_B / t with `frac` fraction bits (any sign)
    prod = _binary(shape, lambda a, b, t: F.int_product(a, b, t, frac))
    return ExpectationCompensated(lambda s, t: prod(*s, t))


@kernel("div")
def _div(node: Node, mode: str, shape: Shape) -> Kernel:
    eps = attr(node, "eps")
    if mode == "ann":
        return Stateless(_binary(shape, lambda a, b: a / np.maximum(b, eps)))
    if mode == "float":  # t * (S_A / t) / max(S_B / t, eps)
        quot = _binary(shape, lambda a, b, t: t * a / np.maximum(b, t * eps))
    else:
        frac, least = node.attrs["frac"], node.attrs["least"]
        quot = _binary(shape, lambda a, b, t: F.int_div(t * a.astype(np.int64), b, frac, t * least))
    return ExpectationCompensated(lambda s, t: quot(*s, t))


@kernel("channel_scale")
def _channel_scale(node: Node, mode: str, shape: Shape) -> Kernel:
    factor = node.params["factor"].astype(np.float64)
    if mode == "int" and "factor_q" in node.params:  # a factor that varies inside a channel
        q, shift = node.params["factor_q"].astype(np.int64), node.attrs["shift"]
        return Stateless(lambda x: F.floor_div(x.astype(np.int64) * q, 2**shift))
    if mode == "int":  # |factor| lives in the output scale; only its sign touches integers
        sign = np.where(factor < 0, -1, 1).astype(np.int64)
        return Stateless(lambda x: sign * x)
    return Stateless(lambda x: factor * x)


@kernel("pad")
def _pad(node: Node, mode: str, shape: Shape) -> Kernel:
    width = [(0, 0)] + pad_width(node)
    # int64 in "int" mode: a graph input arrives as int8 codes, and outputs accumulate
    return Stateless(lambda x: _as_int(mode, np.pad(x, width)))


@kernel("reduce_sum")
def _reduce_sum(node: Node, mode: str, shape: Shape) -> Kernel:
    axes = tuple(_ax(a) for a in node.attrs["axes"])
    keep = bool(node.attrs["keepdims"])
    return Stateless(lambda x: x.sum(axis=axes, keepdims=keep))


def _separable(mh: np.ndarray, x: np.ndarray, mw: np.ndarray) -> np.ndarray:
    """Mh @ x[n, c] @ Mw.T for every image: one axis at a time. (One einsum over both axes
    summed every (h, w, H, W) cell: a 128 -> 256 bilinear upsampling took minutes.)"""
    return np.matmul(np.matmul(mh, x), mw.T)


@kernel("resize")
def _resize(node: Node, mode: str, shape: Shape) -> Kernel:
    """The matrices follow from the input shape, which a kernel first sees at its first call."""
    maps = functools.cache(lambda in_shape: resize_matrices(node, in_shape))
    if attr(node, "mode") == "nearest":  # an index map: data movement, the same in every mode

        def pick(x: np.ndarray) -> np.ndarray:
            rows, cols = (m.argmax(axis=1) for m in maps(x.shape[1:]))
            return _as_int(mode, x[:, :, rows][:, :, :, cols])  # int8 input codes: widen

        return Stateless(pick)
    if mode == "int":  # integer weights; their 2^-bits per axis live in the output scale
        mh, mw = node.params["rows_q"].astype(np.int64), node.params["cols_q"].astype(np.int64)
        return Stateless(lambda x: _separable(mh, x, mw))

    def mix(x: np.ndarray) -> np.ndarray:
        mh, mw = maps(x.shape[1:])
        return _separable(mh, x, mw)

    return Stateless(mix)


@kernel("masked_mean")
def _masked_mean(node: Node, mode: str, shape: Shape) -> Kernel:
    axis, keep = attr(node, "axis"), bool(attr(node, "keepdims"))
    if mode == "int":  # EC: the floor division does not commute with the sum over steps
        return ExpectationCompensated(lambda s, t: F.int_masked_mean(s[0], s[1], axis, keep))

    def mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = F.token_weights(mask, x.ndim - 1, axis)
        ax = 1 + axis % (x.ndim - 1)
        kept = (x * w).sum(axis=ax, keepdims=keep)
        return kept / np.maximum(w.sum(axis=ax, keepdims=keep), 1)

    return Stateless(mean)
