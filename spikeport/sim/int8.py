"""Exact int8 synaptic products for the fast backend: oneDNN's quantized convolution and linear
(int32 sums, VNNI where the CPU has it; 2.5 to 4 times a float32 convolution here).

A running sum of a few steps of spikes is a small integer, and so is every weight: their
products are the same integers in int8 arithmetic as in float. The inputs go in as u8 in
[0, 127] (zero point 0 for inputs the range proof shows nonnegative, else 64 for |x| <= 63),
the weights as s8 in [-127, 127]. So two products together stay below 2^15: a CPU without
VNNI, whose int8 kernels sum pairs of products in int16 with saturation (vpmaddubsw), gets
them exactly too. The output is float32, exact while sum |w| * max |x| stays below 2^23.

Where torch has no oneDNN (or its int8 kernels disagree with exact arithmetic on a probe at
the extremes, checked once per process), the callers keep their float kernels.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.ir.graph import Node
from spikeport.sim.kernels import symmetric_pads

FLOAT32_EXACT = float(1 << 23)
U8_MAX = 127  # an input's u8 code, zero point included: pairs of products below 2^15
SIGNED_ZERO = 64  # the zero point of inputs that may be negative: |x| <= 63
# (weight array id, op, attrs) -> (a weak reference to the array, its synapse)
_MADE: dict[tuple, tuple[weakref.ref, Int8Synapse]] = {}


def zero_point(peak: float, nonneg: bool, abs_sum: float) -> int | None:
    """The zero point for inputs |x| <= peak (x >= 0 if nonneg) against weights whose rows
    sum to at most abs_sum in magnitude, or None where int8 products are not exact."""
    if peak * abs_sum >= FLOAT32_EXACT:
        return None
    if nonneg and peak <= U8_MAX:
        return 0
    return SIGNED_ZERO if peak <= U8_MAX - SIGNED_ZERO else None


@dataclass
class Int8Synapse:
    """A conv2d (attrs: strides, pads, dilations, group) or dense node's integer weights as
    oneDNN runs them: y = W x in float32, x given as floats holding integers."""

    op: str
    weight: torch.Tensor  # int8, (O, C/group, kh, kw) or (O, K)
    attrs: dict
    abs_sum: float  # the largest sum of |w| that one output reads
    packed: dict[int, torch.Tensor] = field(default_factory=dict)  # by zero point
    checked: dict[tuple, bool] = field(default_factory=dict)  # exact_on, by shape and zp
    # the weights' and the output's scales, all 1 (and zero points 0): the integers as they are
    unit_scales: tuple[torch.Tensor, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        o = len(self.weight)
        self.unit_scales = (torch.ones(o, dtype=torch.float32), torch.zeros(o, dtype=torch.int64))

    @staticmethod
    def of(node: Node) -> Int8Synapse | None:
        """The node's int8 synapse, None where a weight leaves s8 (or int8 products are not
        exact here). Kept while its weight array lives: a simulator made for each call of
        simulate() reuses the packed weights (and oneDNN's kernels for them, whose first
        call costs several times a later one)."""
        w = node.params.get("weight_q")
        if w is None or w.size == 0 or np.abs(w).max() > U8_MAX or not int8_products_exact():
            return None
        key = (id(w), node.op, repr(sorted(node.attrs.items())))
        ref, syn = _MADE.get(key, (None, None))
        # the same array with the same values (an array changed in place is packed afresh)
        if ref is None or ref() is not w or syn is None or not np.array_equal(syn.weight, w):
            abs_sum = float(np.abs(w.astype(np.int64)).reshape(len(w), -1).sum(axis=1).max())
            # contiguous: oneDNN's prepack reads a transposed view's memory as if it were not
            weight = torch.from_numpy(np.ascontiguousarray(w, np.int8))
            syn = Int8Synapse(node.op, weight, node.attrs, abs_sum)
            _MADE[key] = (weakref.ref(w, lambda _, k=key, made=_MADE: made.pop(k, None)), syn)
        return syn

    def zero_point(self, peak: float, nonneg: bool) -> int | None:
        return zero_point(peak, nonneg, self.abs_sum)

    def exact_on(self, sample: tuple[int, ...], zp: int) -> bool:
        """oneDNN gives the exact integers on inputs of this per-sample shape: probed once per
        shape and zero point against float64, at the extremes. oneDNN picks kernels by shape,
        and some are wrong: torch 2.13's int8 convolution with a width-3 kernel, stride 2 and
        dilation 2 along the width, one output column wide, on an AVX-512 Xeon."""
        key = (tuple(sample), zp)
        if key not in self.checked:
            self.checked[key] = self._probe(tuple(sample), zp)
        return self.checked[key]

    def _probe(self, sample: tuple[int, ...], zp: int) -> bool:
        """Two random samples of codes `zp` admits, the first all at the largest one, kept
        where sums stay exact in float32 (the callers' bound, zero_point)."""
        peak = U8_MAX if zp == 0 else U8_MAX - SIGNED_ZERO
        if self.abs_sum:
            peak = min(peak, int((FLOAT32_EXACT - 1) // self.abs_sum))
        rng = np.random.default_rng(0)
        x = rng.integers(0 if zp == 0 else -peak, peak + 1, (2, *sample))
        x[0] = peak
        x = torch.from_numpy(x.astype(np.float32))
        w = self.weight.to(torch.float64)
        if self.op == "conv2d":
            a = self.attrs
            top, left, bottom, right = a["pads"]
            padded = F.pad(x.double(), (left, right, top, bottom))
            want = F.conv2d(padded, w, None, a["strides"], 0, a["dilations"], a["group"])
        else:
            want = x.double() @ w.T
        return torch.equal(self._run(x, zp).double(), want)

    def __call__(self, x: torch.Tensor, zp: int) -> torch.Tensor:
        """x (N, C, H, W) (channels-last is fastest) or (..., K) of integers that `zp` admits
        (zero_point) -> float32 (N, O, Ho, Wo) channels-last, or (..., O). The callers check
        exact_on(x.shape[1:], zp) first."""
        return self._run(x, zp)

    def _run(self, x: torch.Tensor, zp: int) -> torch.Tensor:
        """x (N, C, H, W) (channels-last is fastest) or (..., K) of integers that `zp` admits
        (zero_point) -> float32 (N, O, Ho, Wo) channels-last, or (..., O)."""
        u8 = x.to(torch.int8)  # |x| <= 127 - zp: no wrap, and with zp added still an int8
        u8 = (u8 + zp if zp else u8).view(torch.uint8)  # not in place: x may be int8 itself
        if self.op == "conv2d":
            return self._conv(u8, zp)
        rows = u8.reshape(-1, x.shape[-1])
        y = torch.ops.onednn.qlinear_pointwise(
            rows, 1.0, zp, self._packed(zp), *self.unit_scales, None, 1.0, 0,
            torch.float32, "none", [], "",
        )  # fmt: skip
        return y.reshape(x.shape[:-1] + (-1,))

    def _conv(self, u8: torch.Tensor, zp: int) -> torch.Tensor:
        a = self.attrs
        pads = symmetric_pads(a["pads"])
        if pads is None:  # padded here, with the zero point: a real 0
            top, left, bottom, right = a["pads"]
            u8 = F.pad(u8, (left, right, top, bottom), value=zp)
        u8 = u8.contiguous(memory_format=torch.channels_last)
        return torch.ops.onednn.qconv2d_pointwise(
            u8, 1.0, zp, self._packed(zp), *self.unit_scales, None, a["strides"],
            pads or [0, 0], a["dilations"], a["group"], 1.0, 0, torch.float32, "none", [], "",
        )  # fmt: skip

    def _packed(self, zp: int) -> torch.Tensor:
        if zp not in self.packed:
            if self.op == "conv2d":
                a = self.attrs
                self.packed[zp] = torch.ops.onednn.qconv_prepack(
                    self.weight, self.unit_scales[0], 1.0, zp, a["strides"],
                    symmetric_pads(a["pads"]) or [0, 0], a["dilations"], a["group"], None,
                )  # fmt: skip
            else:
                self.packed[zp] = torch.ops.onednn.qlinear_prepack(self.weight, None)
        return self.packed[zp]


@functools.cache
def int8_products_exact() -> bool:
    """oneDNN's int8 convolution and linear run here and give exact integers at the extremes
    (inputs at their largest code, weights +-127): once per process (and each synapse checks
    the shapes it meets: Int8Synapse.exact_on)."""
    attrs = {"strides": [1, 1], "pads": [1, 0, 1, 2], "dilations": [1, 1], "group": 1}
    rng = np.random.default_rng(0)
    try:
        for op, shape, sample in (("conv2d", (6, 5, 3, 3), (5, 7, 6)), ("dense", (6, 40), (40,))):
            w = np.where(rng.random(shape) < 0.5, -U8_MAX, U8_MAX)
            syn = Int8Synapse(op, torch.from_numpy(np.ascontiguousarray(w, np.int8)), attrs, 0.0)
            if not all(syn.exact_on(sample, zp) for zp in (0, SIGNED_ZERO)):
                return False
    except (RuntimeError, AttributeError, NotImplementedError, TypeError, ValueError):
        # no oneDNN in this torch build, or its int8 ops take other arguments: float kernels
        return False
    return True
