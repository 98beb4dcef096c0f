"""Integer functions of the specification (integers only, numpy int64): the nonlinear
operators of sequence models and of imported CNN/embedding heads.

Each works on integers q with a known real scale (x = q * scale) and returns integers with a
known output scale. The constants they need are integers computed once by quantize from the
scales (`*_consts` below) and stored in the graph, so a target only copies these loops.
Polynomials follow I-BERT (Kim et al., ICML 2021):

  exp:  x = -ln2 * z + p, p in (-ln2, 0];  exp(p) ~ 0.3585 * (p + 1.353)^2 + 0.344;  >> z
  erf:  erf(x) ~ sgn(x) * [a * (min(|x|, -b) + b)^2 + 1],  a = -0.2888, b = -1.769
  gelu: x * sigmoid(2 sqrt(2/pi) (x + 0.044715 x^3)), the tanh form of x * Phi(x) (its
        distance to erf's GELU is 5e-4), with the integer sigmoid below; graphs quantized
        before it have I-BERT's x / 2 * (1 + erf(x / sqrt 2)) with the erf polynomial
  sqrt: Newton from 2^ceil(bits/2), x <- floor((x + floor(n / x)) / 2) until it stops falling
  tanh: sgn(x) * (e(0) - e(-2|x|)) / (e(0) + e(-2|x|)) with e the integer exp above
  sigmoid: e(0) / (e(0) + e(-|x|)) for x >= 0, one minus that below (exactly 1/2 at 0)
  gates: silu = x * sigmoid(x), hardswish = x * hardsigmoid(x), as floor(q * gate / 2^15),
         or floor(q * gate / 2^(15 + drop)) where the output keeps fewer bits than q
  product: floor(a * b * 2^frac / t), frac of either sign

Documented error bounds, each asserted by tests/test_intfunc.py over the whole input range:
  softmax    |error| <= SOFTMAX_BOUND per probability (inputs at scale 2^-10); the masked
             form gives masked keys exactly 0 and the others the softmax of the unmasked keys
  tanh       |error| <= TANH_BOUND (inputs at scale 2^-10)
  sigmoid    |error| <= SIGMOID_BOUND (inputs at scale 2^-10; 1/2 at 0, s(-x) = 1 - s(x) exactly)
  hardsig.   |error| <= HARD_BOUND + alpha * s (s: the input scale, any s)
  silu       |error| <= SILU_BOUND + 2 * s (input and output at scale s = act_scale(peak))
  hardswish  |error| <= HARDSWISH_BOUND + 2 * s (likewise)
  prelu      exact for x >= 0; |error| <= |x| * |slope rounding| + s / 2^frac below
  l2norm     |error| <= 2^-15 + 1 / (||q|| - 1) per entry against q / ||q|| (input steps)
  div        exact: floor(a * 2^frac / max(b, floor)), one rule for every target
  gelu       |error| <= GELU_BOUND against erf's GELU (inputs at scale 2^-10); I-BERT's
             form: IBERT_GELU_BOUND (inputs at 2^-8; its own Linf is 0.018)
  isqrt      exact floor(sqrt(n))
  layernorm  |error| <= LAYERNORM_BOUND * max|gamma| + rounding of beta + one output step
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
from scipy.special import erf

SOFTMAX_IN_SCALE = 2.0**-10
SOFTMAX_OUT_BITS = 15  # probabilities as integers of scale 2^-15
GELU_IN_SCALE = 2.0**-10  # the sigmoid's input scale: GELU's gate is a sigmoid (gelu_consts)
GELU_OUT_BITS = 16  # the calibrated output peak spans about 2^16 integer steps (gelu_consts)
GELU_CUBIC_SHIFT = 34  # fraction bits of the gate argument's two coefficients
GELU_CLIP = 8.0  # |x| beyond which GELU is x or 0 (to 1e-14): the gate's argument stops there
IBERT_GELU_IN_SCALE = 2.0**-8  # graphs quantized before the sigmoid form
LN_NORM_BITS = 10  # normalised (x - mean) / std as integers of scale 2^-10
LN_IN_BITS = 20  # layernorm input requantised to +-2^20 over its proven range
LN_GAMMA_BITS = 10  # gamma as integers up to 2^10
# Layernorm output: its calibrated peak spans about 2^12 integer steps (floor shift by
# `out_shift`), about the 10 fraction bits the normalised values carry. Without it the output
# scale, max|gamma| * 2^-20, was thousands of times finer than a residual add's, beyond what
# its 16-bit multipliers bridge (and a multiplier of a few units is a gain error of percents).
LN_OUT_BITS = 12
EXP_ZMAX = 30
MATMUL_FRAC_BITS = 10  # activation x activation products keep 10 fraction bits
# Multipliers of a product's contracted index where its operands' scales vary along it
# (quantize.seq._matmul): the smallest feature's product scale rounds to within 1/2 of a step.
MATMUL_CONTRACT_BITS = 12
# A product of operands that are not spikes drops fraction bits (its `out_shift`) to keep about
# 2^MATMUL_OUT_BITS steps over its calibrated peak (quantize.seq._out_shift), as LayerNorm does.
MATMUL_OUT_BITS = 12

TANH_IN_SCALE = 2.0**-10
TANH_OUT_BITS = 15

SOFTMAX_BOUND = 4e-3
TANH_BOUND = 2e-3
SIGMOID_BOUND = 1e-3
SILU_BOUND = 1.5e-3
HARD_BOUND = 2.0**-14
HARDSWISH_BOUND = 2.0**-13

GATE_BITS = 15  # gates (sigmoid, hard sigmoid) as integers of scale 2^-15: 1 is 2^15
SIGMOID_IN_SCALE = 2.0**-10
ACT_IN_BITS = 14  # unbounded inputs (silu, hardswish, l2norm) at scale peak / 2^14
# silu and hardswish outputs: their calibrated peak spans about 2^ACT_OUT_BITS steps (the
# function's result floored by `drop` bits), what an int8 network keeps. Their readers hold
# T steps of H x W of them (a squeeze-excite's or the head's global pool and the neuron after
# it) at the range proof's worst case, often 2^10 beyond the calibrated peak: with 14 bits
# EfficientNet-B0 (3x64x64) needed 35 bits at T = 64, with 10 still 33.
ACT_OUT_BITS = 8
L2_OUT_BITS = 15  # unit vectors as integers of scale 2^-15
GELU_BOUND = 1e-3
IBERT_GELU_BOUND = 2.5e-2
LAYERNORM_BOUND = 4e-3


def position_ids(ids: np.ndarray, pad: int) -> np.ndarray:
    """RoBERTa's position ids: each real token counts the real tokens up to it (from pad + 1);
    padding tokens get `pad`. `ids` (N, S) batch first, numpy or torch."""
    real = ids != pad
    counts = real.cumsum(-1) if isinstance(ids, np.ndarray) else real.long().cumsum(-1)
    return counts * real + pad


def floor_div(a: np.ndarray, b: np.ndarray | int) -> np.ndarray:
    """Floor division (toward -inf), the only division of the specification. By an array of
    divisors it runs in float64 where that is exact (several times faster than integer
    division): floor(fl(a / b)) = floor(a / b) for integers with |a| + |b| < 2^53, since a
    quotient that is not an integer stays at least 1 / |b| from the next one."""
    integers = isinstance(a, np.ndarray) and a.dtype.kind in "iu" and a.size > 1
    if integers and isinstance(b, np.ndarray) and b.dtype.kind in "iu" and b.size > 1:
        if _peak(a) + _peak(b) < 2.0**53:
            q = np.divide(a, b, dtype=np.float64)
            return np.floor(q, out=q).astype(np.int64)
    return np.floor_divide(a, b)


def requant_consts(in_scale: np.ndarray, out_scale: float, mul_bits: int = 15) -> dict:
    """(mul, shift) with mul / 2^shift ~ in_scale / out_scale, mul < 2^mul_bits."""
    ratio = np.asarray(in_scale, np.float64) / out_scale
    shift = max(0, mul_bits - 1 - int(math.ceil(math.log2(float(ratio.max())))))
    return {"mul": np.round(ratio * 2.0**shift).astype(np.int64), "shift": shift}


def requant_mean(total: np.ndarray, t: int, mul: np.ndarray, shift: int) -> np.ndarray:
    """floor(total * mul / (t * 2^shift)): the running mean, at the function's input scale."""
    return floor_div(total.astype(np.int64) * mul, t << shift)


# -- exp / softmax -------------------------------------------------------------------------


def softmax_consts(in_scale: float = SOFTMAX_IN_SCALE) -> dict:
    return {
        "ln2": int(math.floor(math.log(2) / in_scale)),
        "b": int(math.floor(1.353 / in_scale)),
        "c": int(math.floor(0.344 / (0.3585 * in_scale**2))),
    }


def int_exp(q: np.ndarray, ln2: int, b: int, c: int) -> np.ndarray:
    """exp(q * s) for q <= 0, as integers of scale 0.3585 * s^2 (I-BERT i-exp). Inputs below
    -EXP_ZMAX * ln2 are read as that floor (exp is 0 there at every output scale used): past
    it the polynomial would leave its interval (p < -ln2) and grow with |q|. Looked up in
    exp_table (one pass instead of eight over a large q)."""
    return exp_table(ln2, b, c)[np.minimum(-np.asarray(q), EXP_ZMAX * ln2)]


def exp_polynomial(q: np.ndarray, ln2: int, b: int, c: int) -> np.ndarray:
    """int_exp as the specification writes it: z = floor(-q / ln2) halvings of the
    polynomial at p = q + z ln2 (in (-ln2, 0])."""
    q = np.maximum(q, -EXP_ZMAX * ln2)
    z = np.minimum(floor_div(-q, ln2), EXP_ZMAX)
    p = q + z * ln2
    poly = (p + b) ** 2 + c
    return np.right_shift(poly, z)


@functools.lru_cache(maxsize=32)
def exp_table(ln2: int, b: int, c: int) -> np.ndarray:
    """exp_polynomial(-i) for i = 0 .. EXP_ZMAX * ln2 (read-only): its whole domain."""
    table = exp_polynomial(-np.arange(EXP_ZMAX * ln2 + 1, dtype=np.int64), ln2, b, c)
    table.flags.writeable = False
    return table


def int_softmax(
    q: np.ndarray, ln2: int, b: int, c: int, keep: np.ndarray | None = None
) -> np.ndarray:
    """softmax over the last axis of q (scale 2^-10) -> integers of scale 2^-15. With `keep`
    (bool, broadcasts to q), entries where it is False are excluded and come out 0; a row with
    none kept comes out all 0."""
    if keep is None:
        e = int_exp(q - q.max(axis=-1, keepdims=True), ln2, b, c)
    else:
        floor = np.iinfo(np.int64).min // 4  # below any real input, far from wrapping
        top = np.where(keep, q, floor).max(axis=-1, keepdims=True)
        e = np.where(keep, int_exp(np.minimum(q - top, 0), ln2, b, c), 0)
    return floor_div(e << SOFTMAX_OUT_BITS, np.maximum(e.sum(axis=-1, keepdims=True), 1))


def int_tanh(q: np.ndarray, ln2: int, b: int, c: int) -> np.ndarray:
    """tanh(q * 2^-10) as integers of scale 2^-15, from the integer exp (exact 0 at 0)."""
    one = int_exp(np.zeros(1, np.int64), ln2, b, c)  # exp(0) at the exp's own scale
    e = int_exp(-2 * np.abs(q), ln2, b, c)
    return np.sign(q) * floor_div((one - e) << TANH_OUT_BITS, one + e)


def int_sigmoid(q: np.ndarray, ln2: int, b: int, c: int) -> np.ndarray:
    """sigmoid(q * 2^-10) as integers of scale 2^-15, from the integer exp; computed for |x|
    and mirrored, so sigmoid(-x) = 1 - sigmoid(x) exactly and sigmoid(0) = 2^14."""
    one = int_exp(np.zeros(1, np.int64), ln2, b, c)
    up = floor_div(one << GATE_BITS, one + int_exp(-np.abs(q), ln2, b, c))
    return np.where(q >= 0, up, (1 << GATE_BITS) - up)


def int_hardsigmoid(q: np.ndarray, mul: int, shift: int, beta: int) -> np.ndarray:
    """clip(alpha * x + beta, 0, 1) as integers of scale 2^-15: mul / 2^shift ~ alpha * s * 2^15
    (s the scale of q, alpha > 0) and beta = round(beta * 2^15) (`gate_consts`)."""
    return np.clip(floor_div(q * mul, 1 << shift) + beta, 0, 1 << GATE_BITS)


def gated(q: np.ndarray, gate: np.ndarray, drop: int = 0) -> np.ndarray:
    """q * gate at q's scale times 2^drop, for a gate of scale 2^-15: floor(q * gate /
    2^(15 + drop))."""
    return floor_div(q * gate, 1 << (GATE_BITS + drop))


def int_silu(
    q: np.ndarray, mul: int, shift: int, ln2: int, b: int, c: int, drop: int = 0
) -> np.ndarray:
    """x * sigmoid(x) at q's scale s times 2^drop; mul / 2^shift ~ s / 2^-10 brings q to the
    sigmoid's input scale (`silu_consts`)."""
    return gated(q, int_sigmoid(floor_div(q * mul, 1 << shift), ln2, b, c), drop)


def int_hardswish(q: np.ndarray, mul: int, shift: int, beta: int, drop: int = 0) -> np.ndarray:
    """x * clip(x / 6 + 1/2, 0, 1) at q's scale times 2^drop (constants: `gate_consts(s, 1/6,
    1/2)`)."""
    return gated(q, int_hardsigmoid(q, mul, shift, beta), drop)


def _mul_shift(ratio: float, mul_bits: int = 15) -> tuple[int, int]:
    """(mul, shift), mul / 2^shift ~ ratio > 0 with mul < 2^mul_bits."""
    rq = requant_consts(np.array([ratio]), 1.0, mul_bits)
    return int(rq["mul"][0]), int(rq["shift"])


def gate_consts(in_scale: float, alpha: float, beta: float) -> dict:
    """Constants of int_hardsigmoid / int_hardswish for inputs of scale `in_scale`."""
    if alpha <= 0:
        raise ValueError(f"hard sigmoid slope alpha={alpha} must be > 0")
    mul, shift = _mul_shift(alpha * in_scale * 2**GATE_BITS)
    return {"mul": mul, "shift": shift, "beta": int(round(beta * 2**GATE_BITS))}


def silu_consts(in_scale: float) -> dict:
    """Constants of int_silu for inputs of scale `in_scale`."""
    mul, shift = _mul_shift(in_scale / SIGMOID_IN_SCALE)
    return {"mul": mul, "shift": shift, **softmax_consts(SIGMOID_IN_SCALE)}


def act_scale(peak: float) -> float:
    """Input scale of an unbounded activation: its calibrated peak spans 2^ACT_IN_BITS steps."""
    return max(peak, 1e-12) / 2**ACT_IN_BITS


# -- prelu -----------------------------------------------------------------------------------


def slope_consts(slope: np.ndarray, mul_bits: int = 16) -> dict:
    """Integer slopes mul / 2^shift ~ slope (one shift, from the largest |slope|)."""
    top = float(np.abs(slope).max(initial=0)) or 1.0
    shift = max(0, mul_bits - 2 - int(math.ceil(math.log2(top))))
    return {
        "mul": np.round(np.asarray(slope, np.float64) * 2.0**shift).astype(np.int64),
        "shift": shift,
    }


def int_prelu(q: np.ndarray, mul: np.ndarray, shift: int, frac: int = 0) -> np.ndarray:
    """q if q >= 0 else q * mul / 2^shift, with `frac` fraction bits (output scale: q's scale
    / 2^frac), floored. PReLU is positively homogeneous (t * f(S / t) = f(S)), so its EC
    operator applies this to the running sum S: no mean, no requantisation; the only error is
    the slope's rounding and the floor (fraction bits keep a few spikes' leak from flooring
    to a whole spike)."""
    return np.where(q >= 0, q << frac, floor_div((q * mul) << frac, 1 << shift))


# -- products -------------------------------------------------------------------------------


def int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b of integers, exact, as int64: through float64 (BLAS; numpy has no fast integer
    matmul) where every partial sum provably stays below 2^53, else in int64."""
    a, b = a.astype(np.int64, copy=False), b.astype(np.int64, copy=False)
    peak = _peak(a) * _peak(b) * a.shape[-1]
    if peak < 2.0**53:
        return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)
    return np.matmul(a, b)


def _peak(x: np.ndarray) -> float:
    """max |x| (0 for an empty x), without an |x| copy."""
    x = np.asarray(x)
    return float(max(-int(x.min(initial=0)), int(x.max(initial=0))))


# -- product of two streams -------------------------------------------------------------------


def int_product(a: np.ndarray, b: np.ndarray, t: int, frac: int) -> np.ndarray:
    """floor(a * b * 2^frac / t): t times the product of the means of two running sums, with
    `frac` fraction bits. A negative `frac` requantizes: the product of two fine scales
    (an activation times a gate of scale 2^-15) would carry 2^30 and more integer steps over
    its peak, beyond the thresholds and weights of its readers. |a * b| < 2^62 where both sums
    fit int32, so the int64 product never wraps."""
    p = a.astype(np.int64) * b.astype(np.int64)
    return floor_div(p << frac, t) if frac >= 0 else floor_div(p, t << -frac)


# -- l2 norm ---------------------------------------------------------------------------------


def int_l2norm(q: np.ndarray, eps: int) -> np.ndarray:
    """q / max(||q||, eps) over the last axis, integers of scale 2^-15; ||q|| = isqrt of the
    sum of squares (so |output| <= 2^15: isqrt(sum) >= |q_i|)."""
    norm = isqrt((q * q).sum(axis=-1, keepdims=True))
    return floor_div(q << L2_OUT_BITS, np.maximum(norm, max(eps, 1)))


# -- division -------------------------------------------------------------------------------


def int_div(a: np.ndarray, b: np.ndarray, frac: int, least: np.ndarray | int) -> np.ndarray:
    """floor(a * 2^frac / max(b, least)) with least >= 1: a quotient with `frac` fraction bits;
    a divisor below `least` (0 included) is read as `least`, so the result stays bounded."""
    return floor_div(np.asarray(a, np.int64) << frac, np.maximum(b, least))


# -- gelu ------------------------------------------------------------------------------------


def gelu_consts(in_scale: float = GELU_IN_SCALE, peak: float | None = None) -> dict:
    """The integer constants of GELU at input scale `in_scale` (the sigmoid's, 2^-10): the
    gate's argument z = a x + cubic x^3 at the sigmoid's input scale, a and cubic with
    GELU_CUBIC_SHIFT fraction bits; the integer exp of the sigmoid; and an output shift
    where the output's calibrated `peak` (real units) allows it, so that it spans about
    2^GELU_OUT_BITS integer steps (q * gate alone has scale in_scale * 2^-15)."""
    k = math.sqrt(8 / math.pi)  # sigmoid(2u) = (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + ...)
    frac = 2.0**GELU_CUBIC_SHIFT
    shift = 0
    if peak is not None and peak > 0:
        shift = max(
            0, math.floor(math.log2(peak / 2**GELU_OUT_BITS / (in_scale * 2.0**-GATE_BITS)))
        )
    return {
        "a": round(k * in_scale / SIGMOID_IN_SCALE * frac),
        "cubic": round(k * 0.044715 * in_scale**3 / SIGMOID_IN_SCALE * frac),
        "clip": math.floor(GELU_CLIP / in_scale),
        **softmax_consts(SIGMOID_IN_SCALE),
        "shift": shift,
        "out_scale": in_scale * 2.0**-GATE_BITS * 2**shift,
    }


def int_gelu(
    q: np.ndarray, a: int, cubic: int, clip: int, ln2: int, b: int, c: int, shift: int, **_: object
) -> np.ndarray:
    """GELU(q * s_in) = x * sigmoid(z), integers of scale consts['out_scale']: the gate's
    argument z from |x| <= GELU_CLIP (the gate is 0 or 1 beyond), the integer sigmoid, then
    q * gate floored by 2^shift. The gate, a function of the clipped x only, is looked up in
    gelu_gates (two passes over q instead of twenty)."""
    x = np.clip(q, -clip, clip)
    return np.right_shift(q * gelu_gates(a, cubic, clip, ln2, b, c)[x + clip], shift)


def gelu_gate(x: np.ndarray, a: int, cubic: int, ln2: int, b: int, c: int) -> np.ndarray:
    """The gate sigmoid(a x + cubic x^3) of int_gelu, scale 2^-15, for |x| <= clip."""
    z = np.right_shift(a * x + cubic * x * x * x, GELU_CUBIC_SHIFT)
    return int_sigmoid(z, ln2, b, c)


@functools.lru_cache(maxsize=32)
def gelu_gates(a: int, cubic: int, clip: int, ln2: int, b: int, c: int) -> np.ndarray:
    """gelu_gate(x) for x = -clip .. clip (read-only): its whole domain."""
    table = gelu_gate(np.arange(-clip, clip + 1, dtype=np.int64), a, cubic, ln2, b, c)
    table.flags.writeable = False
    return table


def gelu_function(consts: dict) -> Callable[..., np.ndarray]:
    """The integer GELU a quantized node's constants are for: the sigmoid form, or I-BERT's in
    graphs quantized before it (their constants have no `cubic`)."""
    return int_gelu if "cubic" in consts else int_gelu_ibert


def ibert_gelu_consts(in_scale: float = IBERT_GELU_IN_SCALE, peak: float | None = None) -> dict:
    """I-BERT's GELU constants (graphs quantized before the sigmoid form). The output is
    shifted right by 10 bits at least, and further where the output's calibrated `peak`
    allows: it then spans about 2^GELU_OUT_BITS integer steps."""
    s = in_scale / math.sqrt(2)  # erf is evaluated at x / sqrt 2
    a, b = -0.2888, -1.769
    s_l = -a * s * s  # positive scale of the (negated) polynomial
    q_one = int(math.floor(1 / s_l))
    # out = q * (q_one - L) has scale in_scale * s_l / 2; a shift of 10 keeps it near 2^20.
    shift = 10
    if peak is not None and peak > 0:
        over = peak / 2**GELU_OUT_BITS / (in_scale * s_l / 2)
        shift = max(shift, math.floor(math.log2(over)))
    return {
        "clip": int(math.floor(-b / s)),
        "c": int(math.floor(1 / (a * s * s))),
        "one": q_one,
        "shift": shift,
        "out_scale": in_scale * s_l / 2 * 2**shift,
    }


def int_gelu_ibert(
    q: np.ndarray, clip: int, c: int, one: int, shift: int, **_: object
) -> np.ndarray:
    """GELU(q * s_in), integers of scale consts['out_scale'] (I-BERT i-GELU)."""
    u = np.minimum(np.abs(q), clip) - clip  # in [-clip, 0]
    erf_neg = np.sign(q) * (u * u + c)  # = -erf / s_l  (c < 0)
    return np.right_shift(q * (one - erf_neg), shift)


# -- sqrt / layernorm -----------------------------------------------------------------------


def isqrt(n: np.ndarray) -> np.ndarray:
    """floor(sqrt(n)) for n >= 0 (exact; the C target runs I-BERT's i-sqrt, Newton's method
    on integers). Below 2^52 the float64 root is off by at most one and one correction each
    way makes it exact; above, Newton from 2^ceil(bits/2), x <- floor((x + floor(n / x)) / 2)
    until it stops falling."""
    n = np.asarray(n, np.int64)
    if _peak(n) < 2.0**52:
        r = np.floor(np.sqrt(np.maximum(n, 0).astype(np.float64))).astype(np.int64)
        r -= r * r > n
        return r + ((r + 1) * (r + 1) <= n)
    bits = np.where(n > 0, np.ceil(np.log2(np.maximum(n, 1) + 1)), 0).astype(np.int64)
    x = np.left_shift(1, (bits + 1) // 2)
    for _ in range(40):  # converges in a few steps; bounded so it always ends
        y = floor_div(x + floor_div(n, np.maximum(x, 1)), 2)
        done = y >= x
        x = np.where(done, x, y)
        if done.all():
            break
    return np.where(n > 0, x, 0)


def int_layernorm(
    q: np.ndarray, eps: int, gamma: np.ndarray, beta: np.ndarray, out_shift: int = 0
) -> np.ndarray:
    """floor(((q - mean) / sqrt(var + eps) * gamma + beta) / 2^out_shift) over the last axis,
    integers only.

    Normalised values have scale 2^-LN_NORM_BITS; gamma/beta are the integer params (beta at
    the scale of normed * gamma), so the output scale is 2^(out_shift - LN_NORM_BITS) * gamma's
    scale. quantize picks out_shift from the output's calibrated peak (LN_OUT_BITS)."""
    d = q.shape[-1]
    centred = q - floor_div(q.sum(axis=-1, keepdims=True), d)
    var = floor_div((centred * centred).sum(axis=-1, keepdims=True), d)
    std = np.maximum(isqrt(var + eps), 1)
    normed = floor_div(centred << LN_NORM_BITS, std)
    return np.right_shift(normed * gamma + beta, out_shift)


# -- float references ------------------------------------------------------------------------


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """Exact GELU, x * Phi(x), or its tanh form (approximate="tanh")."""
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def softmax(x: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis; entries where `keep` is False are excluded (0)."""
    if keep is None:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
    else:
        top = np.where(keep, x, -np.inf).max(axis=-1, keepdims=True)
        e = np.where(keep, np.exp(np.minimum(x - np.where(np.isfinite(top), top, 0), 0)), 0)
    return e / np.maximum(e.sum(axis=-1, keepdims=True), np.finfo(np.float64).tiny)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), written with tanh so it never overflows."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def hardsigmoid(x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    return np.clip(alpha * x + beta, 0, 1)


def l2norm(x: np.ndarray, eps: float) -> np.ndarray:
    """x / max(||x||_2, eps) over the last axis."""
    return x / np.maximum(np.sqrt((x * x).sum(axis=-1, keepdims=True)), eps)


def token_weights(mask: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """(N, tokens) 0/1 flags -> (N, ...) 0/1 that broadcast along per-sample `axis` of a
    batched array of per-sample rank `rank`."""
    shape = [len(mask)] + [1] * rank
    shape[1 + axis % rank] = -1
    return (mask.reshape(shape) > 0).astype(np.int64)


def int_masked_mean(total: np.ndarray, mask: np.ndarray, axis: int, keepdims: bool) -> np.ndarray:
    """floor(sum of the kept tokens' integers / kept count) along per-sample `axis` (at least
    one token counts, as the exported clamp(count, min=1e-9) implies)."""
    w = token_weights(mask, total.ndim - 1, axis)
    ax = 1 + axis % (total.ndim - 1)
    kept = (total * w).sum(axis=ax, keepdims=keepdims)
    return floor_div(kept, np.maximum(w.sum(axis=ax, keepdims=keepdims), 1))
