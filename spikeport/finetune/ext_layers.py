"""Torch layers of the ops in spikeport.ir.ext_ops, float-mode semantics of
spikeport.sim.ext_ops: activations, gates, products, quotients and the L2 norm are
expectation-compensated (seq_layers.ExpectationCompensated), padding, resizing and sums are
plain functions; prelu's slope and channel_scale's factor are trainable.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from spikeport.finetune.layers import Fn, Layer, as_param, layer
from spikeport.finetune.seq_layers import ExpectationCompensated, _ax
from spikeport.finetune.surrogate import Shape
from spikeport.ir.ext_ops import pad_width, resize_matrices
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr


def _ec(f: Callable[[torch.Tensor], torch.Tensor]) -> Layer:
    """EC wrapper of a one-input function: G(t) = t * f(S_t / t)."""
    return ExpectationCompensated(lambda s, t: t * f(s[0] / t))


def _hardsigmoid(x: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    return (alpha * x + beta).clamp(0, 1)


@layer("sigmoid")
def _sigmoid(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return _ec(torch.sigmoid)


@layer("hardsigmoid")
def _hardsigmoid_layer(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    alpha, beta = float(attr(node, "alpha")), float(attr(node, "beta"))
    return _ec(lambda x: _hardsigmoid(x, alpha, beta))


@layer("hardswish")
def _hardswish(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return _ec(lambda x: x * _hardsigmoid(x, 1 / 6, 0.5))


@layer("silu")
def _silu(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return _ec(lambda x: x * torch.sigmoid(x))


@layer("l2norm")
def _l2norm(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    eps = float(attr(node, "eps"))
    return _ec(lambda x: x / x.norm(dim=-1, keepdim=True).clamp_min(eps))


class PReLU(ExpectationCompensated):
    """EC prelu with a trainable slope."""

    def __init__(self, node: Node):
        super().__init__(lambda s, t: t * self._f(s[0] / t))
        self.slope = as_param(node.params["slope"])

    def _f(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, self.slope * x)


@layer("prelu")
def _prelu(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return PReLU(node)


def _align(x: torch.Tensor, rank: int) -> torch.Tensor:
    """Per-sample rank `rank` (new axes after the batch axis), as simulator's _align."""
    missing = rank - (x.dim() - 1)
    return x.reshape(x.shape[:1] + (1,) * missing + x.shape[1:]) if missing > 0 else x


@layer("mul")
def _mul(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    r = len(shape)
    return ExpectationCompensated(lambda s, t: _align(s[0], r) * _align(s[1], r) / t)


@layer("div")
def _div(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    r, eps = len(shape), float(attr(node, "eps"))
    return ExpectationCompensated(
        lambda s, t: t * _align(s[0], r) / _align(s[1], r).clamp_min(t * eps)
    )


class ChannelScale(Layer):
    """y = factor * x with a trainable factor."""

    def __init__(self, node: Node):
        super().__init__()
        self.factor = as_param(node.params["factor"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.factor * x


@layer("channel_scale")
def _channel_scale(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ChannelScale(node)


@layer("pad")
def _pad(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    flat = [p for pair in reversed(pad_width(node)) for p in pair]  # torch: last axis first
    return Fn(lambda x: F.pad(x, flat))


@layer("reduce_sum")
def _reduce_sum(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    axes = tuple(_ax(a) for a in node.attrs["axes"])
    keep = bool(node.attrs["keepdims"])
    return Fn(lambda x: x.sum(dim=axes, keepdim=keep))


@layer("resize")
def _resize(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    """Both modes as the two constant matrices (nearest: one 1 per row), made at first call."""
    maps = functools.cache(lambda in_shape: resize_matrices(node, in_shape))

    def mix(x: torch.Tensor) -> torch.Tensor:
        mh, mw = (torch.as_tensor(m, dtype=x.dtype, device=x.device) for m in maps(x.shape[1:]))
        return torch.einsum("hH,nCHW,wW->nChw", mh, x, mw)

    return Fn(mix)


@layer("masked_mean")
def _masked_mean(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    axis, keep = attr(node, "axis"), bool(attr(node, "keepdims"))

    def mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rank = x.dim() - 1
        w_shape = [len(mask)] + [1] * rank
        w_shape[1 + axis % rank] = -1
        w = (mask.reshape(w_shape) > 0).to(x.dtype)
        ax = 1 + axis % rank
        return (x * w).sum(dim=ax, keepdim=keep) / w.sum(dim=ax, keepdim=keep).clamp_min(1)

    return Fn(mean)
