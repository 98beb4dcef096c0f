"""Quantize handlers and range-proof rules of the ops in spikeport.ir.ext_ops.

EC activations requantize their running mean to their integer function's input scale (fixed
2^-10 for sigmoid, whose exp saturates; the calibrated peak / 2^14 for hard sigmoid, silu,
hardswish and l2norm) and store that function's integer constants; prelu works on the running
sum itself. Outputs are requantized to their calibrated range, with fewer steps where the
readers sum many of them over T steps at the proof's worst case: a quotient keeps `frac`
fraction bits for about 2^16 steps over its peak (like an add), a product 2^MUL_OUT_BITS (a
negative `frac` drops bits), silu, hardswish and prelu 2^ACT_OUT_BITS (silu and hardswish by
dropping `drop` bits of their function's result). Linear ops move or rescale scales with the
values; a linear resize keeps as few weight bits as hold its matrices exactly.

The proof bounds an EC activation's step by its function's slope (how far the running mean
moves in one step), and a product's from its inputs' steps and running sums, not by
(2T - 1) max|f|: tests drive both with hostile inputs and compare.
"""

from __future__ import annotations

import math

import numpy as np

from spikeport.ir.ext_ops import pad_width, resize_matrices
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr, static_tensors
from spikeport.quantize.quantize import (
    ADD_OUT_BITS,
    _Ctx,
    _store_weights,
    handler,
    summing_reach,
)
from spikeport.quantize.ranges import NodeBounds, bound, node_bounds
from spikeport.quantize.scales import channel_vector, compact
from spikeport.quantize.seq import _ec, _full, _q_max, _requant, provable_shift, reduced_scale
from spikeport.quantize.uniform_inputs import PEAK_STEPS, PRECISION_BITS, SPREAD, is_uniform_input
from spikeport.sim import intfunc as F
from spikeport.sim.arith import int_limit, round_to_int

RESIZE_BITS = 8  # linear resize weights as integers of scale 2^-8 per axis, at most
DIV_FRAC_BITS = 16  # most fraction bits a quotient keeps
PRELU_FRAC_BITS = 8  # most fraction bits prelu adds to its input's scale
MUL_LEAST_FRAC = -40  # most bits a product drops (its int64 divisor t * 2^40 cannot wrap)
# A product's calibrated peak spans about 2^10 integer steps: fewer than an add's 2^16, as the
# proof bounds it by the product of its inputs' worst cases (often 2^10 beyond the calibrated
# peak), and the neuron after it holds T steps of that (EfficientNet-B0 needed 33 bits at 12).
MUL_OUT_BITS = 10


def _act_in(ctx: _Ctx, node: Node) -> float:
    """Requantize an unbounded activation's running mean to peak / 2^14 (no finer than 2^-14
    of an input step, so a dead input's multiplier stays small); return that scale."""
    s_in = float(np.max(ctx.scale_in(node)))
    s = max(F.act_scale(ctx.peak(node.inputs[0])), s_in * 2.0**-F.ACT_IN_BITS)
    _requant(ctx, node, s)
    return s


@handler("sigmoid")
def _sigmoid(ctx: _Ctx, node: Node) -> np.ndarray:
    _requant(ctx, node, F.SIGMOID_IN_SCALE)
    node.attrs["int"] = F.softmax_consts(F.SIGMOID_IN_SCALE)  # the integer exp
    return np.array(2.0**-F.GATE_BITS)


@handler("hardsigmoid")
def _hardsigmoid(ctx: _Ctx, node: Node) -> np.ndarray:
    s = _act_in(ctx, node)
    try:
        node.attrs["int"] = F.gate_consts(s, attr(node, "alpha"), attr(node, "beta"))
    except ValueError as e:
        raise ctx.refuse(node, str(e)) from None
    return np.array(2.0**-F.GATE_BITS)


def _drop(ctx: _Ctx, node: Node, s: float) -> int:
    """Bits a gated activation drops from its function's scale `s`, so its calibrated output
    peak spans about 2^ACT_OUT_BITS steps."""
    peak = ctx.peak(node.output)
    return max(0, math.floor(math.log2(peak / s / 2**F.ACT_OUT_BITS))) if peak > 0 else 0


@handler("hardswish")
def _hardswish(ctx: _Ctx, node: Node) -> np.ndarray:
    s = _act_in(ctx, node)
    node.attrs["int"] = {**F.gate_consts(s, 1 / 6, 0.5), "drop": _drop(ctx, node, s)}
    provable_shift(ctx, node, "drop")
    return np.array(s * 2.0 ** node.attrs["int"]["drop"])


@handler("silu")
def _silu(ctx: _Ctx, node: Node) -> np.ndarray:
    s = _act_in(ctx, node)
    node.attrs["int"] = {**F.silu_consts(s), "drop": _drop(ctx, node, s)}
    provable_shift(ctx, node, "drop")
    return np.array(s * 2.0 ** node.attrs["int"]["drop"])


@handler("l2norm")
def _l2norm(ctx: _Ctx, node: Node) -> np.ndarray:
    s = _act_in(ctx, node)
    node.attrs["int"] = {"eps": max(1, math.ceil(attr(node, "eps") / s))}
    return np.array(2.0**-F.L2_OUT_BITS)


@handler("prelu")
def _prelu(ctx: _Ctx, node: Node) -> np.ndarray:
    """Integer slopes; fraction bits (up to PRELU_FRAC_BITS) where the input is coarse next
    to its peak (spikes), none where it is already fine (a conv's accumulator): its output's
    peak spans about 2^ACT_OUT_BITS steps, like silu's (with an add's 2^16 a global pool of
    16 x 16 of them and the neuron after it needed 34 bits at T = 64)."""
    c = F.slope_consts(node.params["slope"])
    node.params["slope_q"] = c["mul"].astype(np.int32)
    node.attrs["slope_shift"] = c["shift"]
    unit = float(np.max(ctx.scale_in(node)))
    frac = _frac(ctx, node, unit, PRELU_FRAC_BITS, bits=F.ACT_OUT_BITS)
    # Its readers sum G(t) to G(T) = f(S_T) 2^frac: no more fraction bits than the state bits
    # hold (MediaPipe's palm detector: an add whose proven range is 10^4 times its calibrated
    # peak, then a PReLU of slopes up to 1.8)
    k = max(1.0, float(np.abs(node.params["slope"]).max()))
    k *= max(1.0, summing_reach(ctx.graph, node.output))
    reach = k * float(ctx.bounds[node.inputs[0]].total.max(initial=0))
    room = 0.9 * int_limit(ctx.profile.state_bits) / max(reach, 1.0)
    node.attrs["frac"] = frac = max(0, min(frac, math.floor(math.log2(room))))
    return ctx.scale_in(node) / 2**frac


def _two_scales(ctx: _Ctx, node: Node) -> tuple[np.ndarray, np.ndarray]:
    return tuple(compact(ctx.scale_in(node, i), ctx.shape_in(node, i)) for i in (0, 1))


def _frac(
    ctx: _Ctx, node: Node, unit: float, most: int, least: int = 0, bits: int = ADD_OUT_BITS
) -> int:
    """Fraction bits that bring the output's calibrated peak to ~2^bits integer steps of
    `unit` / 2^frac (`least` to `most`; a negative count drops bits)."""
    peak = max(ctx.peak(node.output), 1e-30)
    return int(np.clip(math.ceil(math.log2(unit * 2**bits / peak)), least, most))


@handler("mul")
def _mul(ctx: _Ctx, node: Node) -> np.ndarray:
    """The product is requantized to its calibrated range, like an add's output: fraction bits
    where spikes are coarse, dropped bits (negative `frac`) where both scales are fine (x * gate:
    x at peak / 2^14 times a gate at 2^-15 gave 2^30 steps over the peak, and the threshold of
    the neuron reading it needed more than 32 bits). With a static operand (the same value b
    every step: a mask, an input) S_B = t * b, so S_A S_B / t = S_A b is exact in integers: no
    fraction bits are needed there."""
    sa, sb = _two_scales(ctx, node)
    static = static_tensors(ctx.graph)
    most = 0 if any(i in static for i in node.inputs) else F.MATMUL_FRAC_BITS
    frac = _frac(ctx, node, float(sa.max() * sb.max()), most, MUL_LEAST_FRAC, MUL_OUT_BITS)
    node.attrs["frac"] = frac
    return sa * sb / 2**frac


@handler("div")
def _div(ctx: _Ctx, node: Node) -> np.ndarray:
    """Output scale s_a / (s_b 2^frac); the divisor is floored at `least` integer steps: one
    step, or eps in real units where that is more."""
    sa, sb = _two_scales(ctx, node)
    frac = _frac(ctx, node, float(sa.max() / sb.min()), DIV_FRAC_BITS)
    node.attrs["frac"] = frac
    node.attrs["least"] = max(1, math.ceil(attr(node, "eps") / float(sb.min())))
    return sa / sb / 2**frac


CHANNEL_SCALE_BITS = 15  # a factor that varies inside a channel: integers of scale 2^-15
CHANNEL_SCALE_FRAC = 8  # ... and its output keeps up to 8 bits below the input's step (the floor)


@handler("channel_scale")
def _channel_scale(ctx: _Ctx, node: Node) -> np.ndarray:
    """|factor| goes into the output scale, unless that scale would vary inside a channel of
    an image (the border windows of an average pool that excludes padding): then the factor
    relative to the channel's largest is an integer multiplier `factor_q` / 2^shift, the output
    finer than the input by up to 2^CHANNEL_SCALE_FRAC so that the floor costs little: fewer
    where the input's steps are already fine (its calibrated peak over ~2^ADD_OUT_BITS steps;
    PoolFormer's pooling of a GroupNorm output overflowed 32 bits with all 8)."""
    if is_uniform_input(node):
        return _uniform_input(ctx, node)
    scale = ctx.scale_in(node) * np.abs(node.params["factor"].astype(np.float64))
    shape = ctx.shape_in(node)
    if len(shape) != 3 or channel_vector(scale, shape) is not None:
        return scale
    full = np.broadcast_to(scale, shape)
    top = full.reshape(shape[0], -1).max(axis=1).reshape(-1, 1, 1)
    sign = np.sign(np.broadcast_to(node.params["factor"], shape))
    node.params["factor_q"] = (sign * round_to_int(full / top * 2**CHANNEL_SCALE_BITS)).astype(
        np.int32
    )
    frac = _frac(ctx, node, float(top.min()), CHANNEL_SCALE_FRAC, 0, ADD_OUT_BITS)
    node.attrs["shift"] = CHANNEL_SCALE_BITS - frac
    return top / 2**frac


def _uniform_input(ctx: _Ctx, node: Node) -> np.ndarray:
    """One scale for every element (quantize/uniform_inputs.py): the input scale relative to
    its largest is an integer multiplier `factor_q` / 2^shift, the output scale the largest
    / 2^frac, with frac enough for PRECISION_BITS of the finest element's step but no more
    than brings the calibrated peak to about 2^ADD_OUT_BITS steps, nor than the range proof
    has room for (_uniform_room). Input scales within SPREAD of each other, or a peak below
    2^PEAK_STEPS steps at that frac, pass as they are (the node is dropped after the walk)."""
    scale, shape = ctx.scale_in(node), ctx.shape_in(node)
    top, low = float(np.max(scale)), float(np.min(scale))
    if low <= 0 or top <= SPREAD * low:
        return scale
    ratio = compact(scale, shape) / top
    finest = PRECISION_BITS + math.ceil(math.log2(top / low))
    frac = min(finest, _frac(ctx, node, top, CHANNEL_SCALE_BITS, 0, ADD_OUT_BITS))
    frac = min(frac, _uniform_room(ctx, node, ratio, top))
    if ctx.peak(node.output) / top * 2**frac < 2**PEAK_STEPS:
        return scale  # too coarse to gain: the node is dropped
    node.params["factor_q"] = round_to_int(ratio * 2**CHANNEL_SCALE_BITS).astype(np.int32)
    node.attrs["shift"] = CHANNEL_SCALE_BITS - frac
    return np.array(top / 2**frac)


def _uniform_room(ctx: _Ctx, node: Node, ratio: np.ndarray, top: float) -> int:
    """The most fraction bits at which the reader's proven T-step sum (the graph output's
    accumulator) still fits the state bits with a bit to spare: its integers grow as 2^frac.
    Proven at frac 0 (input scale `top`) with the reader's weights as quantize will store
    them (one scale, on the weights alone), the floor's + 1 on every step included, and its
    input taken as signed (no nonneg halving: a bit of margin)."""
    reader = ctx.graph.consumers(node.output)[0]
    T, b = ctx.max_timesteps, ctx.bounds[node.inputs[0]]
    w_eff = reader.params["weight"].astype(np.float64) * top
    probe = Node(reader.name, reader.op, reader.inputs, reader.output, reader.attrs,
                 dict(reader.params))  # fmt: skip
    s_w = max(float(np.abs(w_eff).max()), 1e-300) / int_limit(ctx.profile.weight_bits)
    _store_weights(ctx, probe, w_eff, np.full(len(w_eff), s_w))
    scaled = NodeBounds(np.floor(b.step * ratio) + 1, np.floor(b.total * ratio) + T, 0.0)
    worst = node_bounds(probe, {node.output: scaled}, T).worst(True)
    return math.floor(math.log2(int_limit(ctx.profile.state_bits) / max(worst, 1))) - 1


@handler("pad")
def _pad(ctx: _Ctx, node: Node) -> np.ndarray:
    """Padded cells hold 0 at any scale: they take the edge's, so a uniform scale stays one."""
    return np.pad(_full(ctx, node), pad_width(node), mode="edge")


@handler("reduce_sum")
def _reduce_sum(ctx: _Ctx, node: Node) -> np.ndarray:
    return reduced_scale(ctx, node)[0]


def integer_rows(m: np.ndarray, bits: int) -> np.ndarray:
    """round(m * 2^bits), each row's largest entry adjusted so the row sums to exactly 2^bits
    (every row of a resize matrix sums to 1)."""
    q = round_to_int(m * 2**bits)
    rows = np.arange(len(q))
    q[rows, m.argmax(axis=1)] += 2**bits - q.sum(axis=1)
    return q


@handler("resize")
def _resize(ctx: _Ctx, node: Node) -> np.ndarray:
    mh, mw = resize_matrices(node, ctx.shape_in(node))
    if attr(node, "mode") == "nearest":  # an index map: scales move with the values
        return _full(ctx, node)[:, mh.argmax(axis=1)][:, :, mw.argmax(axis=1)]
    s_c = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_c is None:
        raise ctx.refuse(node, "input scale varies inside a channel; linear resize mixes cells")
    bh, bw = _exact_bits(mh), _exact_bits(mw)
    node.params["rows_q"] = integer_rows(mh, bh).astype(np.int32)
    node.params["cols_q"] = integer_rows(mw, bw).astype(np.int32)
    return s_c.reshape(-1, 1, 1) * 2.0 ** -(bh + bw)


def resize_gain(node: Node, shape: tuple[int, ...]) -> float:
    """How far a linear resize multiplies its input's integers: 2^(bits of both axes)."""
    mh, mw = resize_matrices(node, shape)
    return 2.0 ** (_exact_bits(mh) + _exact_bits(mw))


def _exact_bits(m: np.ndarray) -> int:
    """The fewest bits (up to RESIZE_BITS) that hold a resize matrix exactly: 2 for a 2x
    bilinear upsample (weights 1/4, 3/4). Every bit more multiplies the output's integers,
    and a conv reading them sums those: 2 x 8 bits overflowed int32 after one conv."""
    for bits in range(RESIZE_BITS):
        if np.allclose(m * 2**bits, np.round(m * 2**bits), rtol=0, atol=1e-9):
            return bits
    return RESIZE_BITS


# -- range proof ------------------------------------------------------------------------------

Bounds = tuple


@bound("l2norm")
def _b_unit(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """Outputs in [-1, 1] at scale 2^-15 (a unit vector's entries)."""
    return _ec(c, 2.0**F.GATE_BITS, T, b[0].shape)


def _ec_smooth(
    node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray], lo: float, hi: float,
    lip: float, slack: float, drop: int = 0,
) -> Bounds:  # fmt: skip
    """EC bounds of an activation whose integer function f lies in [lo, hi] (lo <= 0 <= hi)
    and moves by |f(q) - f(q')| <= lip |q - q'| + slack (q: the requantized mean); with
    `drop`, the output is floor(f / 2^drop), which moves by 1/2^drop of that plus 1.

    A step emits t f_t - (t-1) f_{t-1} = f_t + (t-1)(f_t - f_{t-1}). The mean moves by
    (x_t - m_{t-1}) / t, at most 2 b / t with b the per-step input bound (at the function's
    input scale), and the floor of the requantization adds 1: so (t-1)|f_t - f_{t-1}| <=
    2 lip b + (T-1)(lip + slack), and never more than (T-1)(hi - lo). The generic bound
    (2T - 1) max|f| was ~40 times looser for silu at T = 64: a global average pool of 32 x 32
    such steps passed int32 (EfficientNet-B0's first squeeze-excite)."""
    if drop:
        d = 2.0**drop
        lo, hi, lip, slack = lo / d - 1, hi / d, lip / d, slack / d + 1
    b_mean = _q_max(node, b[0])
    move = min((T - 1) * (hi - lo), 2 * lip * b_mean + (T - 1) * (lip + slack))
    step = max(hi, -lo) + move
    state = max(float(x.max(initial=0)) for x in c)
    return np.full(b[0].shape, step), state, np.full(b[0].shape, T * max(hi, -lo))


def _func_scale(node: Node, ratio_scale: float) -> float:
    """The input scale of an activation's integer function, from its stored mul / 2^shift =
    s / ratio_scale, taken a little small (mul is rounded to 15 bits), so errors in units of
    s are not underestimated."""
    k = node.attrs["int"]
    return k["mul"] / 2.0 ** k["shift"] * ratio_scale * (1 - 2.0**-12)


@bound("sigmoid")
def _b_sigmoid(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """A gate in [0, 2^15]; the exact sigmoid's slope is at most 1/4, the integer one is
    within SIGMOID_BOUND of it everywhere."""
    one = 2.0**F.GATE_BITS
    lip = one * F.SIGMOID_IN_SCALE / 4
    return _ec_smooth(node, b, T, c, 0.0, one, lip, 2 * F.SIGMOID_BOUND * one + 1)


@bound("hardsigmoid")
def _b_hardsigmoid(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """A gate in [0, 2^15]: floor(q mul / 2^shift) + beta, clipped, moves by at most
    mul / 2^shift per input step, plus 1 for the floor."""
    k = node.attrs["int"]
    return _ec_smooth(node, b, T, c, 0.0, 2.0**F.GATE_BITS, k["mul"] / 2.0 ** k["shift"], 1.0)


@bound("silu")
def _b_silu(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """x sigmoid(x): slope in [-0.1, 1.1], minimum -0.2785, |f(q)| <= |q| + 1; the integer
    function is within SILU_BOUND + 2 s of it (s its scale, the output's too)."""
    s = _func_scale(node, F.SIGMOID_IN_SCALE)
    err, hi = F.SILU_BOUND / s + 2, _q_max(node, b[0]) + 1
    drop = node.attrs["int"].get("drop", 0)
    return _ec_smooth(node, b, T, c, -(0.2785 / s + err), hi, 1.1, 2 * err, drop)


@bound("hardswish")
def _b_hardswish(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """x clip(x / 6 + 1/2, 0, 1): slope in [-1/2, 3/2], minimum -3/8, |f(q)| <= |q| + 1; the
    integer function is within HARDSWISH_BOUND + 2 s of it (s its scale, the output's too)."""
    s = _func_scale(node, 6 * 2.0**-F.GATE_BITS)
    err, hi = F.HARDSWISH_BOUND / s + 2, _q_max(node, b[0]) + 1
    drop = node.attrs["int"].get("drop", 0)
    return _ec_smooth(node, b, T, c, -(0.375 / s + err), hi, 1.5, 2 * err, drop)


@bound("prelu")
def _b_prelu(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """G(t) = f(S_t) 2^frac with f Lipschitz (k = max(1, |slope|)): steps move by at most
    k b 2^frac + 1 (the floor)."""
    a = node.attrs
    k = max(1.0, float(np.abs(node.params["slope_q"]).max()) / 2 ** a["slope_shift"])
    k *= 2 ** a["frac"]
    return k * b[0] + 1, float(c[0].max(initial=0)), k * c[0] + 1


def _ec_array(c: list[np.ndarray], g_max: np.ndarray) -> Bounds:
    """EC bounds from an elementwise bound g_max of |G(t)| over t <= T: one step moves by at
    most 2 g_max, the kept running sums are the summed inputs, the outputs sum to G."""
    return 2 * g_max, max(float(x.max(initial=0)) for x in c), g_max


@bound("mul")
def _b_mul(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """G(t) = floor(S_A S_B 2^frac / t) with |S(t)| <= s(t) = min(t b, c): |G(t)| <= s_A(t)
    s_B(t) 2^frac / t + 1. A step: with S = S' + x (S' the sums to t - 1, x this step's
    inputs), S_A S_B / t - S'_A S'_B / (t-1) = (x_A S'_B + x_B S'_A + x_A x_B) / t -
    S'_A S'_B / (t (t-1)), plus less than 1 for the two floors. Both taken over t <= T; the
    step bound is far below 2 max|G| where an input is EC (its step bound exceeds its rate)."""
    ba, bb, ca, cb = np.broadcast_arrays(*b, *c)
    g = move = np.zeros(ba.shape)
    pa = pb = 0.0  # s_A(t - 1), s_B(t - 1)
    for t in range(1, T + 1):
        sa, sb = np.minimum(t * ba, ca), np.minimum(t * bb, cb)
        g = np.maximum(g, sa * sb / t)
        old = pa * pb / (t * (t - 1)) if t > 1 else 0.0
        move = np.maximum(move, (ba * pb + bb * pa + ba * bb) / t + old)
        pa, pb = sa, sb
    unit = 2.0 ** node.attrs["frac"]
    g = g * unit + 1
    state = max(float(x.max(initial=0)) for x in c)
    return np.minimum(move * unit + 1, 2 * g), state, g


@bound("div")
def _b_div(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """|G(t)| = t |S_A| 2^frac / max(S_B, t * least) <= |S_A| 2^frac / least."""
    g = c[0] * 2.0 ** node.attrs["frac"] / node.attrs["least"]
    return _ec_array(c, np.broadcast_to(g, np.broadcast_shapes(c[0].shape, c[1].shape)))


@bound("channel_scale")
def _b_channel_scale(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    if "factor_q" not in node.params:
        return b[0], 0.0
    q = np.abs(node.params["factor_q"].astype(np.float64)) / 2 ** node.attrs["shift"]
    return np.floor(b[0] * q) + 1, 0.0, np.floor(c[0] * q) + T


@bound("pad")
def _b_pad(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return np.pad(b[0], pad_width(node)), 0.0


@bound("reduce_sum")
def _b_reduce_sum(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    axes = tuple(a % b[0].ndim for a in node.attrs["axes"])
    return b[0].sum(axis=axes, keepdims=bool(node.attrs["keepdims"])), 0.0


@bound("resize")
def _b_resize(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    mh, mw = resize_matrices(node, b[0].shape)
    if attr(node, "mode") == "linear":
        mh, mw = (np.abs(node.params[k].astype(np.float64)) for k in ("rows_q", "cols_q"))
    return np.einsum("hH,CHW,wW->Chw", mh, b[0], mw), 0.0


@handler("masked_mean")
def _masked_mean(ctx: _Ctx, node: Node) -> np.ndarray:
    """A mean keeps its input's scale, which must not vary along the pooled tokens."""
    full = _full(ctx, node)
    ax = attr(node, "axis") % full.ndim
    if not np.all(full.max(axis=ax) == full.min(axis=ax)):
        raise ctx.refuse(node, "input scale varies along the pooled tokens")
    return full.max(axis=ax, keepdims=bool(attr(node, "keepdims")))


@bound("masked_mean")
def _b_masked_mean(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    """A mean is at most the largest term: |G(t)| <= max over tokens of the summed bound; one
    step moves G by at most the per-step bound plus 1 (the floor)."""
    ax, keep = attr(node, "axis") % b[0].ndim, bool(attr(node, "keepdims"))
    g = c[0].max(axis=ax, keepdims=keep)
    return b[0].max(axis=ax, keepdims=keep) + 1, float(c[0].max(initial=0)), g
