"""Quantize handlers and range-proof rules of the sequence-model ops (spikeport.ir.seq_ops).

Data movement moves scales with the values; `scale` only rescales; expectation-compensated
operators requantize their running mean to their integer function's input scale and store the
integer constants that function needs (spikeport.sim.intfunc), so targets copy them as they are.
"""

from __future__ import annotations

import math

import numpy as np

from spikeport.errors import OverflowWithinSteps
from spikeport.ir.graph import Node
from spikeport.ir.seq_ops import picked, slicer
from spikeport.quantize.quantize import _Ctx, handler, summing_reach
from spikeport.quantize.ranges import BOUNDS, bound
from spikeport.quantize.scales import compact
from spikeport.sim import intfunc as F
from spikeport.sim.arith import int_limit, round_to_int


def _full(ctx: _Ctx, node: Node, i: int = 0) -> np.ndarray:
    return np.broadcast_to(ctx.scale_in(node, i), ctx.shape_in(node, i))


@handler("transpose")
def _transpose(ctx: _Ctx, node: Node) -> np.ndarray:
    return _full(ctx, node).transpose(node.attrs["perm"])


@handler("take", "gather")
def _take(ctx: _Ctx, node: Node) -> np.ndarray:
    return np.take(_full(ctx, node), picked(node), axis=node.attrs["axis"])


@handler("slice")
def _slice(ctx: _Ctx, node: Node) -> np.ndarray:
    return _full(ctx, node)[slicer(node, batch=False)]


@handler("scale")
def _scale(ctx: _Ctx, node: Node) -> np.ndarray:
    return ctx.scale_in(node) * abs(node.attrs["factor"])


@handler("offset")
def _offset(ctx: _Ctx, node: Node) -> np.ndarray:
    value_q = round_to_int(node.params["value"] / _full(ctx, node))
    if np.abs(value_q).max(initial=0) > int_limit(ctx.profile.bias_bits):
        raise ctx.refuse(node, f"constant needs more than {ctx.profile.bias_bits} bits")
    node.params["value_q"] = compact(value_q, value_q.shape).astype(np.int32)
    return ctx.scale_in(node)


def reduced_scale(ctx: _Ctx, node: Node) -> tuple[np.ndarray, int]:
    """The scale of a sum over `axes` (the input's, which must not vary along them) and how
    many cells each output sums."""
    full = _full(ctx, node)
    axes = tuple(a % full.ndim for a in node.attrs["axes"])
    if not np.all(full.max(axis=axes) == full.min(axis=axes)):
        raise ctx.refuse(node, "input scale varies along the reduced axes")
    count = int(np.prod([full.shape[a] for a in axes]))
    return full.max(axis=axes, keepdims=bool(node.attrs["keepdims"])), count


@handler("reduce_mean")
def _reduce_mean(ctx: _Ctx, node: Node) -> np.ndarray:
    scale, count = reduced_scale(ctx, node)
    return scale / count  # the integers are the sum: 1/count lives in the scale


def _requant(ctx: _Ctx, node: Node, func_scale: float) -> None:
    """Store the multiplier/shift that bring the running mean to the function's input scale."""
    rq = F.requant_consts(compact(ctx.scale_in(node), ctx.shape_in(node)), func_scale)
    node.params["requant_q"] = rq["mul"].astype(np.int64)
    node.attrs["requant_shift"] = rq["shift"]


@handler("softmax")
def _softmax(ctx: _Ctx, node: Node) -> np.ndarray:
    _requant(ctx, node, F.SOFTMAX_IN_SCALE)
    node.attrs["int"] = F.softmax_consts()
    return np.array(2.0**-F.SOFTMAX_OUT_BITS)


@handler("masked_softmax")
def _masked_softmax(ctx: _Ctx, node: Node) -> np.ndarray:
    return _softmax(ctx, node)


@handler("tanh")
def _tanh(ctx: _Ctx, node: Node) -> np.ndarray:
    _requant(ctx, node, F.TANH_IN_SCALE)
    node.attrs["int"] = F.softmax_consts(F.TANH_IN_SCALE)  # the same integer exp
    return np.array(2.0**-F.TANH_OUT_BITS)


@handler("embed")
def _embed(ctx: _Ctx, node: Node) -> np.ndarray:
    """The table as codes of the input width, one scale for the whole table (like an input)."""
    table = node.params["table"].astype(np.float64)
    lim = int_limit(ctx.profile.input_bits)
    scale = max(float(np.abs(table).max()), 1e-12) / lim
    node.params["table_q"] = np.clip(round_to_int(table / scale), -lim, lim).astype(
        np.int8 if lim <= 127 else np.int32
    )
    return np.array(scale)


@handler("gelu")
def _gelu(ctx: _Ctx, node: Node) -> np.ndarray:
    _requant(ctx, node, F.GELU_IN_SCALE)
    consts = F.gelu_consts(peak=ctx.peak(node.output))  # output requantized to its range
    node.attrs["int"] = {k: v for k, v in consts.items() if k != "out_scale"}
    return np.array(consts["out_scale"])


MOST_SHIFT = 30  # an EC function's output drops at most this many bits for its proof


def provable_shift(ctx: _Ctx, node: Node, key: str) -> None:
    """Raise the bits an EC function's output drops (`node.attrs["int"][key]`: silu's and
    hardswish's `drop`, LayerNorm's `out_shift`) until the proof bounds its steps by the state
    width, and the sums of them a reader keeps (a neuron, a max pool) by 0.9 of it, as prelu's
    fraction bits: the proven input range can be far beyond the calibrated one (random or
    unusual weights: a MobileViT's SiLU needed 4 bits more at T = 64, the neuron after it 5).
    A note says where that is more than the calibration asks."""
    limit, T = int_limit(ctx.profile.state_bits), ctx.max_timesteps
    steps, totals = ([getattr(ctx.bounds[i], k) for i in node.inputs] for k in ("step", "total"))
    reader = summing_reach(ctx.graph, node.output)
    if node.output in ctx.graph.outputs:  # its accumulator holds the sum of its steps
        reader = max(reader, 1.0 / 0.9)
    k = node.attrs["int"]
    wanted = k[key]

    def fits() -> bool:
        step, _, total = BOUNDS[node.op](node, steps, T, totals)
        return step.max() <= limit and reader * total.max() <= 0.9 * limit

    while k[key] < MOST_SHIFT and not fits():
        k[key] += 1
    if k[key] > wanted:
        ctx.notes.append(
            f"node '{node.name}' ({node.op}) drops {k[key] - wanted} more bits than its "
            f"calibrated range asks, so that its steps provably fit {ctx.profile.state_bits}-bit "
            f"state for T <= {T}"
        )


@handler("layernorm")
def _layernorm(ctx: _Ctx, node: Node) -> np.ndarray:
    peak = max(ctx.peak(node.inputs[0]), 1e-12)
    in_scale = peak / 2**F.LN_IN_BITS
    _requant(ctx, node, in_scale)
    gamma, beta = node.params["gamma"].astype(np.float64), node.params["beta"].astype(np.float64)
    s_gamma = max(float(np.abs(gamma).max()), 1e-12) / 2**F.LN_GAMMA_BITS
    fine = s_gamma * 2.0**-F.LN_NORM_BITS  # the scale of normed * gamma_q (and of beta_q)
    node.params["gamma_q"] = round_to_int(gamma / s_gamma).astype(np.int32)
    node.params["beta_q"] = round_to_int(beta / fine).astype(np.int64)
    # Requantize the output to its calibrated range (about 2^LN_OUT_BITS steps over its peak),
    # as an add's output is: a residual add then bridges the two with small multipliers, and
    # the output's integers (and the thresholds of the neurons it feeds) stay small.
    peak_out = ctx.peak(node.output)
    ratio = peak_out / 2**F.LN_OUT_BITS / fine if peak_out > 0 else 1.0
    shift = max(0, math.floor(math.log2(ratio)))
    node.attrs["int"] = {
        "eps": int(math.floor(node.attrs["epsilon"] / in_scale**2)),
        "out_shift": shift,
    }
    provable_shift(ctx, node, "out_shift")
    return np.array(fine * 2.0 ** node.attrs["int"]["out_shift"])


@handler("matmul")
def _matmul(ctx: _Ctx, node: Node) -> np.ndarray:
    """Scales A = r_A (rows) x c_A (contracted axis), B = c_B (contracted) x r_B (columns):
    per-index thresholds on the neurons in front (tune.product_axis) make an operand vary
    along the contracted axis (Q's and K's features, the probabilities' keys); a scale per
    row or column may come from other neurons. The rows and columns give the output's scale;
    the contracted products c_A c_B become integer multipliers `contract_q` (the largest
    2^MATMUL_CONTRACT_BITS) of A's running sum, G(t) = S_A diag(m) S_B 2^frac / (t 2^bits):
    the output keeps the range it has with one scale per operand."""
    a, b = (np.broadcast_to(ctx.scale_in(node, i), ctx.shape_in(node, i)) for i in (0, 1))
    r_a, c_a = _separate(ctx, node, a, 0)
    r_b, c_b = _separate(ctx, node, np.swapaxes(b, -1, -2), 1)
    out = r_a * np.swapaxes(r_b, -1, -2) / 2**F.MATMUL_FRAC_BITS  # (..., m, 1) x (..., 1, n)
    contract = c_a * c_b  # (..., 1, k)
    shape = ctx.graph.shape(node.output)
    top = float(contract.max())
    out = out * 2.0 ** _out_shift(ctx, node, float((out * top).max()))
    if np.all(contract == contract.flat[0]):
        return compact(out * contract.flat[0], shape)
    q = np.maximum(round_to_int(contract / top * 2**F.MATMUL_CONTRACT_BITS), 1)
    try:  # A's running sum is weighted: its own stack axes must hold the multipliers
        q = np.broadcast_to(q, a.shape[:-2] + (1, a.shape[-1]))
    except ValueError:
        raise ctx.refuse(
            node, "operand 1's scale varies along stack axes that operand 0 is broadcast over"
        ) from None
    node.params["contract_q"] = np.ascontiguousarray(q).astype(np.int64)
    return compact(out * top, shape)


def product_peak(
    b: list[np.ndarray], c: list[np.ndarray], weigh: np.ndarray | int = 1
) -> np.ndarray:
    """A bound of |S_A(t) diag(w) S_B(t)| / t over t <= T from the operands' step bounds b and
    running-sum bounds c: |S(t)| <= min(t b, c), so each term is at most b_A c_B and at most
    c_A b_B. Where the operands' running means are bounded by c / T (a linear layer's
    currents, an EC operator's telescoping outputs) this is T k m_A m_B, what the product's
    sum reaches at t = T; a step bound alone (up to 2T times an EC output's mean) is never
    multiplied by the other's."""
    return np.minimum(np.matmul(b[0] * weigh, c[1]), np.matmul(c[0] * weigh, b[1]))


def _out_shift(ctx: _Ctx, node: Node, scale: float) -> int:
    """Fraction bits a product drops (`out_shift`): operands that are not spikes (a linear
    layer's currents, softmax's probabilities) make its output scale, the product of theirs,
    far finer than its range needs; like LayerNorm's, its output keeps about 2^MATMUL_OUT_BITS
    steps over its calibrated peak, so that the integers (and the thresholds of the neurons
    it feeds) stay small. Spike operands' products are coarse already: shift 0. Either way at
    least the bits without which the proof could not bound its steps by the state width (a
    note in the artifact says so where that is more than the calibration asks)."""
    from spikeport.convert.balance import tensor_kinds

    peak, kinds = ctx.peak(node.output), tensor_kinds(ctx.graph)
    spikes = all(kinds[i] == "spikes" for i in node.inputs)
    wanted = (
        0 if spikes or peak <= 0 else math.floor(math.log2(peak / 2**F.MATMUL_OUT_BITS / scale))
    )
    wanted = max(0, wanted)
    # the proof's bound of a step, (2T - 1) peak / T 2^frac (_b_matmul; multipliers <= 1)
    T = ctx.max_timesteps
    ins = [ctx.bounds[i] for i in node.inputs]
    peak = float(product_peak([v.step for v in ins], [v.total for v in ins]).max(initial=0))
    step = (2 * T - 1) * peak / T * 2.0**F.MATMUL_FRAC_BITS
    needed = max(0, math.ceil(math.log2(step / int_limit(ctx.profile.state_bits)))) if step else 0
    if needed > wanted:
        ctx.notes.append(
            f"node '{node.name}' (matmul) drops {needed - wanted} more fraction bits than its "
            f"calibrated range asks, so that its steps provably fit {ctx.profile.state_bits}-bit "
            f"state for T <= {T}"
        )
    shift = max(wanted, needed)
    if shift:
        node.attrs["out_shift"] = shift
    else:
        node.attrs.pop("out_shift", None)
    return shift


def _separate(ctx: _Ctx, node: Node, s: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
    """A scale (..., m, k) as rows (..., m, 1) times contracted (..., 1, k), or a refusal
    naming the operand whose scale varies along both."""
    rows = s[..., :, :1]
    contracted = s[..., :1, :] / s[..., :1, :1]
    if not np.allclose(rows * contracted, s, rtol=1e-9, atol=0):
        raise ctx.refuse(
            node,
            f"operand {i}'s scale varies along both its rows and the contracted axis "
            "(one multiplier per contracted index needs it constant along one of them)",
        )
    return rows, contracted


# -- range proof ------------------------------------------------------------------------------

Bounds = tuple


@bound("transpose")
def _b_transpose(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return b[0].transpose(node.attrs["perm"]), 0.0


@bound("take", "gather")
def _b_take(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return np.take(b[0], picked(node), axis=node.attrs["axis"]), 0.0


@bound("slice")
def _b_slice(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return b[0][slicer(node, batch=False)], 0.0


@bound("scale")
def _b_scale(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return b[0], 0.0


@bound("offset")
def _b_offset(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    v = np.abs(node.params["value_q"].astype(np.float64))
    return b[0] + v, 0.0, c[0] + T * v


@bound("reduce_mean")
def _b_reduce(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    axes = tuple(a % b[0].ndim for a in node.attrs["axes"])
    return b[0].sum(axis=axes, keepdims=bool(node.attrs["keepdims"])), 0.0


def _ec(
    c_in: list[np.ndarray], y_max: float, T: int, shape: tuple[int, ...], y_min: float | None = None
) -> tuple[np.ndarray, float, np.ndarray]:
    """EC output with f in [y_min, y_max] (y_min = -y_max unless given; y_min <= 0 <= y_max):
    a step's G(t) - G(t-1) = t f_t - (t-1) f_{t-1} lies in [T y_min - (T-1) y_max,
    T y_max - (T-1) y_min], up to (2T - 1) max|f| for a symmetric f but T max f for one that is
    never negative (softmax); the outputs telescope, so their sum is G(t), at most T * max|f|.
    The kept running sums are the summed inputs."""
    lo = -y_max if y_min is None else min(0.0, y_min)
    step = max(T * y_max - (T - 1) * lo, (T - 1) * y_max - T * lo)
    state = max(float(c.max(initial=0)) for c in c_in)
    return np.full(shape, step), state, np.full(shape, T * max(y_max, -lo))


@bound("softmax")
def _b_softmax(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return _ec(c, 2.0**F.SOFTMAX_OUT_BITS, T, b[0].shape, 0.0)  # probabilities: never negative


@bound("masked_softmax")
def _b_masked_softmax(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return _ec(c, 2.0**F.SOFTMAX_OUT_BITS, T, b[0].shape, 0.0)


@bound("tanh")
def _b_tanh(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    return _ec(c, 2.0**F.TANH_OUT_BITS, T, b[0].shape)


@bound("embed")
def _b_embed(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    top = float(np.abs(node.params["table_q"]).max(initial=0))
    shape = b[0].shape + (node.params["table"].shape[1],)
    return np.full(shape, top), 0.0, np.full(shape, T * top)


def _q_max(node: Node, b_in: np.ndarray) -> float:
    mul = node.params["requant_q"].astype(np.float64)
    return (
        float(
            (np.broadcast_to(b_in, np.broadcast_shapes(b_in.shape, mul.shape)) * mul).max(initial=0)
        )
        / 2 ** node.attrs["requant_shift"]
        + 1
    )


@bound("gelu")
def _b_gelu(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    k = node.attrs["int"]
    # q times a gate: the sigmoid's at most 2^GATE_BITS; I-BERT's one - erf_neg at most
    # 2 one + clip^2
    gain = 2**F.GATE_BITS if "cubic" in k else 2 * k["one"] + k["clip"] ** 2
    y_max = _q_max(node, b[0]) * gain / 2 ** k["shift"]
    # GELU dips below 0 only for inputs in [-clip, 0] (beyond, the gate is 0: the sigmoid's
    # argument stops at -clip, I-BERT's erf is clipped to -1 and q * (one + c) >= 0 as
    # one + c is 0 or -1): its exact minimum, over those integers.
    low = np.arange(-k["clip"] - 1, 1, dtype=np.int64)
    y_min = float(F.gelu_function(k)(low, **k).min())
    return _ec(c, y_max, T, b[0].shape, y_min)


@bound("layernorm")
def _b_layernorm(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    d = b[0].shape[-1]
    normed = math.sqrt(d) * 2**F.LN_NORM_BITS + 1
    y_max = normed * float(np.abs(node.params["gamma_q"]).max()) + float(
        np.abs(node.params["beta_q"]).max()
    )
    shift = node.attrs.get("int", {}).get("out_shift", 0)
    return _ec(c, math.floor(y_max / 2**shift) + 1, T, b[0].shape)


@bound("matmul")
def _b_matmul(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> Bounds:
    # G(t) = S_A S_B 2^frac / (t 2^out_shift): G(t) = t f_t with |f_t| <= peak / T
    weigh = node.params.get("contract_q", 1)  # each contracted index weighted by its multiplier
    peak = float(product_peak(b, c, weigh).max(initial=0))
    # S_A S_B before its division, int64 in every target: |S| <= c
    if float(np.matmul(c[0] * weigh, c[1]).max(initial=0)) * 2.0**F.MATMUL_FRAC_BITS >= 2.0**62:
        raise OverflowWithinSteps(
            f"node '{node.name}' (matmul): the product of its operands' running sums can pass "
            f"2^62 within {T} steps; lower --max-T or the operands' ranges"
        )
    bits = F.MATMUL_FRAC_BITS - node.attrs.get("out_shift", 0)
    if "contract_q" in node.params:
        bits -= F.MATMUL_CONTRACT_BITS
    y_max = math.ceil(peak / T * 2.0**bits)
    out_shape = np.broadcast_shapes(b[0].shape[:-2], b[1].shape[:-2]) + (
        b[0].shape[-2],
        b[1].shape[-1],
    )
    return _ec(c, y_max, T, out_shape)
