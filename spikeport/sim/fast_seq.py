"""Fast kernels of the expectation-compensated sequence operators in "int" mode: layernorm,
softmax (masked too), GELU and the product of two activations, in torch.

The reference (spikeport.sim.seq_ops) computes G(t) = t * f(requant_mean(S_t)) for each step
with numpy int64 arithmetic (spikeport.sim.intfunc). These kernels compute the same integers in
float64: an integer below 2^53 is exact there, so are sums and products that stay below it,
and floor(fl(a / b)) = floor(a / b) while |a| + |b| < 2^53 (intfunc.floor_div). Each maker
derives, once, from the range proof's bound on its inputs' running sums, that every value its
kernel forms stays below 2^52; where that does not follow, the node keeps its reference kernel
(or, where the bound needs the inputs' own values, a step or run takes the reference's G(t)).
Passes run in place one step at a time (a step's tensors stay in cache: faster here than all T
steps in one pass); the products of two activations run as one batched matmul over all steps,
in float32 where the proof keeps their partial sums below 2^23 (FLOAT32_SAFE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from spikeport.ir.graph import Node
from spikeport.sim import intfunc as F
from spikeport.sim import native
from spikeport.sim.fast import (
    CUM,
    FLOAT32_SAFE,
    Bounds,
    FastKernel,
    Steps,
    _torch,
    fast_kernel,
    input_peaks,
)
from spikeport.sim.ops import KERNELS, Shape
from spikeport.sim.seq_ops import ExpectationCompensated

EXACT = 2.0**52  # below this every integer, and the sum of two, is exact in float64


def compensated(k: ExpectationCompensated, sums: list[np.ndarray], integer: bool) -> Steps:
    """A reference expectation-compensated kernel on the running sums S_t of its inputs. Its
    outputs telescope: their running sum is G(t) = g(S_t, t) itself, so G(t) goes out as
    running sums (no differences, and the reader that takes running sums needs none either)."""
    sums = [s.astype(np.int64 if integer else np.float64, copy=False) for s in sums]
    g = np.stack([k.g([s[t] for s in sums], t + 1) for t in range(len(sums[0]))])
    return Steps(g, (lambda: input_peaks(sums)) if integer else None)


def _peak(bounds: Bounds, tensor: str) -> float:
    """The proof's bound on |running sum| of `tensor` at any step."""
    return float(bounds[tensor].total.max(initial=0))


def _exact(bounds: Bounds, node: Node, *tops: float) -> bool:
    """Every intermediate value (bounded by `tops`) and the output's running sums are below
    2^52."""
    return max((*tops, _peak(bounds, node.output))) < EXACT


def _t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, np.float64))


def per_sample(p: np.ndarray, shape: Shape) -> torch.Tensor:
    """p broadcast to a sample's shape, flat, float64: what the C kernels index."""
    return _t64(np.ascontiguousarray(np.broadcast_to(p, shape), np.float64)).reshape(-1)


class Requant:
    """m = floor(S_t * mul / (t * 2^shift)): the running mean at the function's input scale
    (intfunc.requant_mean), for sums bounded by `peak`; `top` bounds |m|."""

    def __init__(self, node: Node, peak: float, shape: Shape):
        mul = node.params["requant_q"]
        self.mul, self.shift = _t64(mul), int(node.attrs["requant_shift"])
        self.per_sample = per_sample(mul, shape)  # the C kernels' (csrc/seq_steps.c)
        self.exact = peak * float(np.abs(mul).max(initial=0)) < EXACT
        self.top = peak * float(np.abs(mul).max(initial=0)) / 2.0**self.shift

    def __call__(self, s: torch.Tensor, t: int, out: torch.Tensor) -> torch.Tensor:
        """Into `out` (float64, s's shape): s may be of any type that holds its integers."""
        return torch.mul(s, self.mul, out=out).div_(t * 2.0**self.shift).floor_()


# f(m, [the other inputs' running sums at step t]) -> f(m) or None; may overwrite m
Function = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor | None]
# the same over all steps in C (spikeport.sim.native.ec_steps): (S (T, ...), out) -> the steps
# it left to the loop
Fused = Callable[[torch.Tensor, torch.Tensor], list[int]]


def out_type(bounds: Bounds, node: Node) -> torch.dtype:
    """float32 for outputs whose running sums the proof keeps below FLOAT32_SAFE (half the
    traffic for the kernel and its reader, a neuron or synapse that takes float32), else
    float64."""
    return torch.float32 if _peak(bounds, node.output) < FLOAT32_SAFE else torch.float64


def _stepwise(
    f: Function,
    node: Node,
    shape: Shape,
    mean: Requant,
    out_dt: torch.dtype,
    fused: Fused | None = None,
) -> FastKernel:
    """The kernel of a unary operator G(t) = t * f(m_t), m_t the requantized running mean of
    its first input (further inputs: static flags), a step at a time. Where f returns None (a
    step whose values it cannot keep below 2^52), that step runs the reference's G(t).
    `fused`, where given, does all steps in C first (one input, contiguous), and the loop
    only the steps it leaves."""
    reference = KERNELS[node.op](node, "int", shape).g  # type: ignore[attr-defined]

    def run(*sums: np.ndarray, cumulative: bool = True) -> Steps:
        xs = [_torch(s) for s in sums]
        out = torch.empty(xs[0].shape, dtype=out_dt)
        m = torch.empty_like(out[0], dtype=torch.float64)  # the mean: float64 (see Requant)
        steps: Iterable[int] = range(1, len(out) + 1)
        if fused is not None and len(xs) == 1 and native.available():
            if xs[0].is_contiguous() and xs[0].dtype in native.INPUT_KINDS and out.numel():
                steps = fused(xs[0], out)
        for t in steps:
            y = f(mean(xs[0][t - 1], t, m), [x[t - 1] for x in xs[1:]])
            if y is None:
                y = torch.from_numpy(reference([s[t - 1].astype(np.int64) for s in sums], t))
                out[t - 1] = y
            else:
                out[t - 1].copy_(y.mul_(t))  # (a mixed-type torch.mul(out=) is slower)
        return Steps(out.numpy(), lambda: input_peaks(list(sums)))

    return FastKernel(run, CUM)


def _lookup(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """table[index] for integer-valued float `index` (index_select: five times faster here
    than advanced indexing; int32 indices: float64 -> int64 converts four times slower)."""
    flat = index.to(torch.int32).reshape(-1)  # tables are far shorter than 2^31
    return torch.index_select(table, 0, flat).reshape(index.shape)


def _isqrt(n: torch.Tensor) -> torch.Tensor:
    """floor(sqrt(n)) for integers 0 <= n < 2^50 in float64: the floor of the correctly
    rounded root is exact there (for k^2 <= n < (k+1)^2 the root is at least 1 / (2 (k+1))
    below k + 1, more than the half ulp, (k + 1) 2^-53, that rounding can add), so no
    correction step (intfunc.isqrt makes one each way, which never moves it there)."""
    return torch.sqrt(n).floor_()


@fast_kernel("layernorm")
def _layernorm(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    if mode != "int" or bounds is None:
        return None
    c, d = node.attrs.get("int", {}), shape[-1]
    mean = Requant(node, _peak(bounds, node.inputs[0]), shape)
    gamma, beta = _t64(node.params["gamma_q"]), _t64(node.params["beta_q"])
    eps, out_shift = float(c.get("eps", 0)), int(c.get("out_shift", 0))
    norm = float(1 << F.LN_NORM_BITS)
    wide = 2.0**25 * norm * float(gamma.abs().max()) + float(beta.abs().max())
    if not (mean.exact and eps < 2.0**49 and _exact(bounds, node, wide)):
        return None

    def f(q: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor | None:
        q -= q.sum(-1, keepdim=True).div_(d).floor_()  # centred: |q| < 2^53, q is exact
        squares = torch.linalg.vecdot(q, q).unsqueeze_(-1)
        # the proof's bound on the mean (its worst case) is far above what runs, so the
        # check is this step's own: a float sum of nonnegative terms below 2^49 means every
        # partial sum was (exact), |q| < 2^25, var + eps < 2^50 (_isqrt) and the products
        # below stay under 2^52 (`wide`)
        if float(squares.max()) >= 2.0**49:
            return None
        var = squares.div_(d).floor_().add_(eps)
        q.mul_(norm).div_(_isqrt(var).clamp_(min=1)).floor_()  # normalised
        return torch.addcmul(beta, q, gamma, out=q).mul_(2.0**-out_shift).floor_()

    gamma_s, beta_s = (per_sample(node.params[p], shape) for p in ("gamma_q", "beta_q"))

    def fused(sums: torch.Tensor, out: torch.Tensor) -> list[int]:
        return native.ec_steps("ec_layernorm", sums, out, mean.per_sample, mean.shift, d,
                               d, gamma_s, beta_s, eps, norm, out_shift)  # fmt: skip

    return _stepwise(f, node, shape, mean, out_type(bounds, node), fused)


def _softmax_kernel(node: Node, bounds: Bounds, shape: Shape, masked: bool) -> FastKernel | None:
    c = node.attrs.get("int", {})
    mean = Requant(node, _peak(bounds, node.inputs[0]), shape)
    table = torch.from_numpy(F.exp_table(c["ln2"], c["b"], c["c"]).astype(np.float64))
    last = float(len(table) - 1)
    sums = float(table[0]) * 2.0**16 * shape[-1]  # e <= table[0]: e * 2^15, the keys' sum of e
    if not (mean.exact and _exact(bounds, node, 2 * mean.top, sums)):
        return None
    one = float(1 << F.SOFTMAX_OUT_BITS)

    def f(q: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor:
        if not masked:
            top = q.amax(-1, keepdim=True)
            e = _lookup(table, (top - q).clamp_(max=last))
        else:  # intfunc.int_softmax's `keep`: masked keys are 0, a row of none is all 0
            mask = rest[0]
            keep = mask.reshape((len(mask),) + (1,) * (len(shape) - 1) + (-1,)) > 0
            top = torch.where(keep, q, -torch.inf).amax(-1, keepdim=True)
            e = _lookup(table, (top - q).clamp_(0, last)).mul_(keep)
        total = e.sum(-1, keepdim=True).clamp_(min=1)
        return e.mul_(one).div_(total).floor_()

    def fused(sums: torch.Tensor, out: torch.Tensor) -> list[int]:
        d = shape[-1]
        return native.ec_steps("ec_softmax", sums, out, mean.per_sample, mean.shift, d,
                               d, table, last, one)  # fmt: skip

    return _stepwise(f, node, shape, mean, out_type(bounds, node), None if masked else fused)


@fast_kernel("softmax")
def _softmax(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    return None if mode != "int" or bounds is None else _softmax_kernel(node, bounds, shape, False)


@fast_kernel("masked_softmax")
def _masked(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    return None if mode != "int" or bounds is None else _softmax_kernel(node, bounds, shape, True)


@fast_kernel("gelu")
def _gelu(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    c = node.attrs.get("int", {})
    if mode != "int" or bounds is None or "cubic" not in c:  # I-BERT's form: the reference's
        return None
    mean = Requant(node, _peak(bounds, node.inputs[0]), shape)
    gates = F.gelu_gates(c["a"], c["cubic"], c["clip"], c["ln2"], c["b"], c["c"])
    gates, clip, unshift = _t64(gates), float(c["clip"]), 2.0 ** -c["shift"]  # exact
    if not (mean.exact and _exact(bounds, node, mean.top * float(1 << F.GATE_BITS))):
        return None

    def f(q: torch.Tensor, rest: list[torch.Tensor]) -> torch.Tensor:
        gate = _lookup(gates, q.clamp(-clip, clip).add_(clip))
        return q.mul_(gate).mul_(unshift).floor_()

    def fused(sums: torch.Tensor, out: torch.Tensor) -> list[int]:
        return native.ec_steps("ec_gelu", sums, out, mean.per_sample, mean.shift, 1,
                               gates, clip, int(c["shift"]))  # fmt: skip

    return _stepwise(f, node, shape, mean, out_type(bounds, node), fused)


@fast_kernel("matmul")
def _matmul(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    """floor(S_A S_B 2^frac / (t 2^out_shift)), A's running sum weighted per contracted index
    where the node has `contract_q` (seq_ops._matmul): one batched matmul over all steps, where the
    proof keeps every partial sum of its products below 2^52 (else the reference's G(t))."""
    if mode != "int" or bounds is None:
        return None
    contract = node.params.get("contract_q")
    bits = (F.MATMUL_CONTRACT_BITS if contract is not None else 0) + node.attrs.get("out_shift", 0)
    weight = float(np.abs(contract).max(initial=0)) if contract is not None else 1.0
    a_peak, b_peak = (_peak(bounds, i) for i in node.inputs[:2])
    contract_t = _t64(contract) if contract is not None else None
    out_dt = out_type(bounds, node)
    reference = KERNELS[node.op](node, "int", shape)
    # floor(p 2^frac / (t 2^bits)) is the floor of the same rational with the powers of two
    # cancelled: p 2^up / (t 2^down), the smaller numbers (float32 where they stay exact)
    up, down = max(F.MATMUL_FRAC_BITS - bits, 0), max(bits - F.MATMUL_FRAC_BITS, 0)

    def run(a: np.ndarray, b: np.ndarray, cumulative: bool = True) -> Steps:
        product = a_peak * weight * b_peak * a.shape[-1]  # every partial sum of the products
        if not _exact(bounds, node, product * 2.0**up):
            return compensated(reference, [a, b], True)  # type: ignore[arg-type]
        # float32 where its partial sums stay below 2^23 (FLOAT32_SAFE, the project's rule)
        dt = torch.float32 if product < FLOAT32_SAFE else torch.float64
        # one contiguous copy each in the product's type (a transposed K, as matmul would
        # copy it again, costs twice the product itself)
        at, bt = (_torch(v).to(dt, memory_format=torch.contiguous_format) for v in (a, b))
        if contract_t is not None:
            at = at * contract_t.to(dt)  # (at may be the caller's own array)
        small = product * 2.0**up + len(a) * 2.0**down < FLOAT32_SAFE  # floor(a / b): exact
        p = torch.matmul(at, bt).to(torch.float32 if small else torch.float64)
        if up:
            p.mul_(2.0**up)
        steps = torch.arange(1, len(a) + 1, dtype=p.dtype) * 2.0**down
        p.div_(steps.reshape((-1,) + (1,) * (p.dim() - 1))).floor_()
        return Steps(p.to(out_dt).numpy(), lambda: input_peaks([a, b]))

    return FastKernel(run, CUM)
