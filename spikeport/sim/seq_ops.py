"""Simulator kernels for the sequence-model ops of spikeport.ir.seq_ops.

Arrays carry the simulator's batch axis in front of the per-sample axes, so a per-sample axis
attribute `a >= 0` is axis `a + 1` here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikeport.ir.graph import Node
from spikeport.ir.ops import attr
from spikeport.ir.seq_ops import picked, slicer
from spikeport.sim import intfunc as F
from spikeport.sim.ops import Kernel, Shape, Stateless, kernel


def _ax(a: int) -> int:
    return a + 1 if a >= 0 else a


@kernel("transpose")
def _transpose(node: Node, mode: str, shape: Shape) -> Kernel:
    perm = (0,) + tuple(p + 1 for p in node.attrs["perm"])
    return Stateless(lambda x: np.transpose(x, perm))


@kernel("take", "gather")
def _take(node: Node, mode: str, shape: Shape) -> Kernel:
    index, axis = picked(node), _ax(node.attrs["axis"])
    if isinstance(index, int):  # one index: a view (np.take would copy the whole slice)
        at = (
            (slice(None),) * axis + (index,)
            if axis >= 0
            else (..., index) + (slice(None),) * (-axis - 1)
        )
        return Stateless(lambda x: x[at])
    return Stateless(lambda x: np.take(x, index, axis=axis))


@kernel("scale")
def _scale(node: Node, mode: str, shape: Shape) -> Kernel:
    factor = node.attrs["factor"]
    if mode == "int":  # |factor| lives in the output scale; only its sign touches integers
        return Stateless(np.negative if factor < 0 else lambda x: x)  # no copy for +
    return Stateless(lambda x: factor * x)


@kernel("offset")
def _offset(node: Node, mode: str, shape: Shape) -> Kernel:
    value = node.params["value_q" if mode == "int" else "value"]
    if mode == "int":
        value = value.astype(np.int64)
    return Stateless(lambda x: x + value)


@kernel("reduce_mean")
def _reduce_mean(node: Node, mode: str, shape: Shape) -> Kernel:
    a = node.attrs
    axes = tuple(_ax(x) for x in a["axes"])
    keep = bool(a["keepdims"])
    if mode == "int":
        return Stateless(lambda x: x.sum(axis=axes, keepdims=keep))
    return Stateless(lambda x: x.mean(axis=axes, keepdims=keep))


def _widen(x: np.ndarray) -> np.ndarray:
    """A copy to sum into: int64 for integers (a graph input arrives as int8 codes)."""
    return x.astype(np.int64) if np.issubdtype(x.dtype, np.integer) else x.copy()


class ExpectationCompensated:
    """out_t = G(t) - G(t-1), with G(t) = g(S_t, t) and S_t the running sums of the inputs.

    The outputs telescope: summed over t steps they equal G(t) = t * f(mean input)."""

    def __init__(self, g: Callable[[list[np.ndarray], int], np.ndarray]):
        self.g = g
        self.t = 0
        self.totals: list[np.ndarray] = []
        self.prev: np.ndarray | float = 0

    def reset(self, batch: int) -> None:
        self.t, self.totals, self.prev = 0, [], 0

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        self.t += 1
        self.totals = (
            [_widen(x) for x in xs]
            if not self.totals
            else [s + x for s, x in zip(self.totals, xs, strict=True)]
        )
        now = self.g(self.totals, self.t)
        out = now - self.prev
        self.prev = now
        return out

    @property
    def state_peak(self) -> int:
        return max((int(np.abs(s).max(initial=0)) for s in self.totals), default=0)


def _unary(
    node: Node,
    mode: str,
    f: Callable[..., np.ndarray],
    f_int: Callable[..., np.ndarray],
    side: Callable[[np.ndarray], np.ndarray] = lambda v: v,
) -> Kernel:
    """The ann function, or its EC wrapper over real or integer running means of the first
    input. Further inputs are static flags (a mask): `side` reads them, from their value in
    "ann" mode and from their running sum (t times the value: same sign) otherwise."""
    if mode == "ann":
        return Stateless(lambda x, *rest: f(x, *map(side, rest)))
    if mode == "float":
        return ExpectationCompensated(lambda s, t: t * f(s[0] / t, *map(side, s[1:])))
    mul, shift = node.params["requant_q"].astype(np.int64), node.attrs["requant_shift"]
    return ExpectationCompensated(
        lambda s, t: t * f_int(F.requant_mean(s[0], t, mul, shift), *map(side, s[1:]))
    )


@kernel("softmax")
def _softmax(node: Node, mode: str, shape: Shape) -> Kernel:
    c = node.attrs.get("int", {})
    return _unary(node, mode, F.softmax, lambda q: F.int_softmax(q, c["ln2"], c["b"], c["c"]))


@kernel("gelu")
def _gelu(node: Node, mode: str, shape: Shape) -> Kernel:
    c, form = node.attrs.get("int", {}), attr(node, "approximate")
    return _unary(node, mode, lambda x: F.gelu(x, form), lambda q: F.gelu_function(c)(q, **c))


@kernel("layernorm")
def _layernorm(node: Node, mode: str, shape: Shape) -> Kernel:
    p, eps = node.params, node.attrs["epsilon"]
    gq, bq, consts = p.get("gamma_q"), p.get("beta_q"), node.attrs.get("int", {})
    return _unary(
        node,
        mode,
        lambda x: F.layernorm(x, p["gamma"], p["beta"], eps),
        lambda q: F.int_layernorm(
            q,
            consts.get("eps", 0),
            gq.astype(np.int64),
            bq.astype(np.int64),
            consts.get("out_shift", 0),  # absent in graphs quantized before it existed
        ),
    )


@kernel("matmul")
def _matmul(node: Node, mode: str, shape: Shape) -> Kernel:
    if mode == "ann":
        return Stateless(np.matmul)
    if mode == "float":
        return ExpectationCompensated(lambda s, t: np.matmul(s[0], s[1]) / t)
    frac = F.MATMUL_FRAC_BITS  # G(t) = S_A S_B / t keeps fraction bits: spikes are coarse
    shift = node.attrs.get("out_shift", 0)  # and drops some where its operands are not spikes
    contract = node.params.get("contract_q")  # per contracted index, on A's running sum
    if contract is None:
        return ExpectationCompensated(
            lambda s, t: F.floor_div(F.int_matmul(s[0], s[1]) << frac, t << shift)
        )
    contract, bits = contract.astype(np.int64), F.MATMUL_CONTRACT_BITS + shift
    return ExpectationCompensated(
        lambda s, t: F.floor_div(F.int_matmul(s[0] * contract, s[1]) << frac, t << bits)
    )


@kernel("embed")
def _embed(node: Node, mode: str, shape: Shape) -> Kernel:
    table = node.params["table_q" if mode == "int" else "table"]
    dtype = np.int64 if mode == "int" else np.float64
    pad = attr(node, "position_pad")
    # the rows are cast once gathered (the same values): a float64 copy of a 30k-token table
    # is 90 MiB held by every simulator and by the T-aware search (all-MiniLM-L6-v2)
    if pad is not None:
        return Stateless(lambda ids: table[F.position_ids(ids, pad)].astype(dtype))
    return Stateless(lambda ids: table[ids].astype(dtype))


@kernel("masked_softmax")
def _masked_softmax(node: Node, mode: str, shape: Shape) -> Kernel:
    c = node.attrs.get("int", {})

    def keep(mask: np.ndarray) -> np.ndarray:  # (N, ...) flags -> one per key, broadcasting
        return mask.reshape((len(mask),) + (1,) * (len(shape) - 1) + (-1,)) > 0

    return _unary(
        node,
        mode,
        F.softmax,
        lambda q, kept: F.int_softmax(q, c["ln2"], c["b"], c["c"], kept),
        side=keep,
    )


@kernel("tanh")
def _tanh(node: Node, mode: str, shape: Shape) -> Kernel:
    c = node.attrs.get("int", {})
    return _unary(node, mode, np.tanh, lambda q: F.int_tanh(q, c["ln2"], c["b"], c["c"]))


@kernel("slice")
def _slice(node: Node, mode: str, shape: Shape) -> Kernel:
    index = slicer(node, batch=True)
    return Stateless(lambda x: x[index])
