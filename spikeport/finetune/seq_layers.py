"""Torch layers for the sequence-model ops (spikeport.ir.seq_ops), float-mode semantics of
spikeport.sim.seq_ops: data movement and scaling are plain functions; layernorm, softmax, gelu
and the matmul of two activations are expectation-compensated (out_t = G(t) - G(t-1) with
G(t) = t * f(S_t / t), S_t the running input sums), differentiable end to end.

Registered by op name whether or not the IR registry has the op yet, so a graph gets a layer
for every op the moment the op imports.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from spikeport.finetune.layers import Fn, Layer, as_param, layer
from spikeport.finetune.surrogate import Shape
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr
from spikeport.sim.intfunc import position_ids


def _ax(a: int) -> int:
    """Per-sample axis -> axis of the batched tensor."""
    return a + 1 if a >= 0 else a


class ExpectationCompensated(Layer):
    """out_t = g(S_t, t) - g(S_{t-1}, t-1): the outputs sum to g(S_t, t) exactly."""

    def __init__(self, g: Callable[[list[torch.Tensor], int], torch.Tensor]):
        super().__init__()
        self.g = g
        self.reset()

    def reset(self) -> None:
        self.t = 0
        self.totals: list[torch.Tensor] = []
        self.prev: torch.Tensor | float = 0.0

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        self.t += 1
        if self.totals:
            self.totals = [s + x for s, x in zip(self.totals, xs, strict=True)]
        else:
            self.totals = list(xs)
        now = self.g(self.totals, self.t)
        out, self.prev = now - self.prev, now
        return out


def _gelu(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1 + torch.special.erf(x / math.sqrt(2)))


def _layernorm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float):
    mu = x.mean(dim=-1, keepdim=True)
    var = ((x - mu) ** 2).mean(dim=-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * gamma + beta


class LayerNorm(ExpectationCompensated):
    """EC layer norm over the last axis with trainable gamma and beta."""

    def __init__(self, node: Node):
        super().__init__(self._g)
        self.gamma, self.beta = as_param(node.params["gamma"]), as_param(node.params["beta"])
        self.eps = float(node.attrs["epsilon"])

    def _g(self, s: list[torch.Tensor], t: int) -> torch.Tensor:
        return t * _layernorm(s[0] / t, self.gamma, self.beta, self.eps)


@layer("transpose")
def _transpose(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    perm = (0,) + tuple(p + 1 for p in node.attrs["perm"])
    return Fn(lambda x: x.permute(perm))


@layer("take")
def _take(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    a = node.attrs
    return Fn(lambda x: x.select(_ax(a["axis"]), a["index"]))


@layer("gather")
def _gather(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    a, idx = node.attrs, torch.tensor(node.attrs["indices"])
    return Fn(lambda x: x.index_select(_ax(a["axis"]), idx.to(x.device)))


@layer("slice")
def _slice(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    """index_select per axis: torch slices take no negative steps."""
    a = node.attrs
    picks = [
        (_ax(ax), torch.tensor(list(range(s, e, st))))
        for ax, s, e, st in zip(a["axes"], a["starts"], a["ends"], a["steps"], strict=True)
    ]

    def pick(x: torch.Tensor) -> torch.Tensor:
        for dim, idx in picks:
            x = x.index_select(dim, idx.to(x.device))
        return x

    return Fn(pick)


@layer("scale")
def _scale(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    factor = float(node.attrs["factor"])
    return Fn(lambda x: factor * x)


class Offset(Layer):
    """y = x + value, a trainable constant that broadcasts to x (e.g. a position embedding)."""

    def __init__(self, node: Node):
        super().__init__()
        self.value = as_param(node.params["value"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.value


@layer("offset")
def _offset(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return Offset(node)


@layer("reduce_mean")
def _reduce_mean(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    axes = tuple(_ax(a) for a in node.attrs["axes"])
    keep = bool(node.attrs["keepdims"])
    return Fn(lambda x: x.mean(dim=axes, keepdim=keep))


@layer("softmax")
def _softmax(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ExpectationCompensated(lambda s, t: t * torch.softmax(s[0] / t, dim=-1))


@layer("gelu")
def _gelu_layer(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    form = attr(node, "approximate")
    return ExpectationCompensated(
        lambda s, t: t * torch.nn.functional.gelu(s[0] / t, approximate=form)
    )


@layer("layernorm")
def _layernorm_layer(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return LayerNorm(node)


@layer("matmul")
def _matmul(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ExpectationCompensated(lambda s, t: torch.matmul(s[0], s[1]) / t)


class Embed(Layer):
    """y = table[ids] with a trainable table."""

    def __init__(self, node: Node):
        super().__init__()
        self.table = as_param(node.params["table"])
        self.pad = attr(node, "position_pad")

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.pad is not None:
            ids = position_ids(ids, self.pad)
        return self.table[ids]


@layer("embed")
def _embed(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return Embed(node)


def _masked_softmax_fn(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    keep = mask.reshape((len(mask),) + (1,) * (x.dim() - 2) + (-1,)) > 0
    return torch.softmax(x.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)


@layer("masked_softmax")
def _masked_softmax(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ExpectationCompensated(lambda s, t: t * _masked_softmax_fn(s[0] / t, s[1]))


@layer("tanh")
def _tanh(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ExpectationCompensated(lambda s, t: t * torch.tanh(s[0] / t))
