"""Integer functions of the sequence-model specification against their float functions, over
their whole input range, with the error bounds documented in spikeport.sim.intfunc; and the
expectation-compensation property of the operators built on them."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikeport.ir import Node
from spikeport.sim import intfunc as F
from spikeport.sim.ops import KERNELS


def test_softmax_within_bound_over_its_range():
    rng = np.random.default_rng(0)
    x = rng.uniform(-20, 20, (4000, 16)) * rng.uniform(0.05, 1, (4000, 1))
    q = np.floor(x / F.SOFTMAX_IN_SCALE).astype(np.int64)
    got = F.int_softmax(q, **F.softmax_consts()) * 2.0**-F.SOFTMAX_OUT_BITS
    assert np.abs(got - F.softmax(q * F.SOFTMAX_IN_SCALE)).max() <= F.SOFTMAX_BOUND


def test_gelu_within_bound_over_its_range():
    q = np.arange(-24000, 24001, dtype=np.int64)  # x in [-23.4, 23.4] at scale 2^-10
    c = F.gelu_consts()
    got = F.int_gelu(q, **c) * c["out_scale"]
    for form in ("none", "tanh"):  # erf's GELU, and the tanh form it computes
        assert np.abs(got - F.gelu(q * F.GELU_IN_SCALE, form)).max() <= F.GELU_BOUND


def test_ibert_gelu_of_older_graphs_within_its_bound():
    q = np.arange(-6000, 6001, dtype=np.int64)  # x in [-23.4, 23.4] at scale 2^-8
    c = F.ibert_gelu_consts()
    assert F.gelu_function(c) is F.int_gelu_ibert
    got = F.int_gelu_ibert(q, **c) * c["out_scale"]
    err = np.abs(got - F.gelu(q * F.IBERT_GELU_IN_SCALE)).max()
    assert F.GELU_BOUND < err <= F.IBERT_GELU_BOUND


def test_exp_table_is_the_polynomial_on_and_beyond_its_domain():
    """int_exp looks its values up; the table must equal the specification's polynomial
    everywhere, the inputs read as the floor -EXP_ZMAX * ln2 included."""
    c = F.softmax_consts()
    q = np.concatenate([-np.arange(40 * c["ln2"]), [-(2**40)]]).astype(np.int64)
    np.testing.assert_array_equal(F.int_exp(q, **c), F.exp_polynomial(q, **c))


@pytest.mark.parametrize("peak", [None, 3.0, 40.0])
def test_gelu_gate_table_is_the_formula(peak):
    """int_gelu looks the gate up by the clipped input: equal to the gate computed in full,
    for inputs far beyond the clip too."""
    c = F.gelu_consts(peak=peak)
    q = np.concatenate([np.arange(-30000, 30001), [-(2**33), 2**33]]).astype(np.int64)
    gate = F.gelu_gate(
        np.clip(q, -c["clip"], c["clip"]), c["a"], c["cubic"], c["ln2"], c["b"], c["c"]
    )
    np.testing.assert_array_equal(F.int_gelu(q, **c), np.right_shift(q * gate, c["shift"]))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**62))
def test_isqrt_is_exact_floor(n):
    r = int(F.isqrt(np.array([n]))[0])
    assert r * r <= n < (r + 1) ** 2
    near = np.array([n, max(n - 1, 0), n + 1, max(n - 2**40, 0)], np.int64)  # both methods of isqrt
    roots = F.isqrt(near)
    assert all(int(r) ** 2 <= int(v) < (int(r) + 1) ** 2 for r, v in zip(roots, near, strict=True))


def test_isqrt_is_exact_around_every_square_of_the_float_path():
    """Below 2^52 isqrt corrects the float64 root: exact at r^2 - 1, r^2 and r^2 + 1."""
    r = np.concatenate([np.arange(0, 2**26, 997), [2**26 - 1]]).astype(np.int64)
    n = np.concatenate([r * r - 1, r * r, r * r + 1])
    n = n[(n >= 0) & (n < 2**52)]
    got = F.isqrt(n).astype(object)
    ok = (got * got <= n.astype(object)) & ((got + 1) * (got + 1) > n.astype(object))
    assert ok.all()


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**52), 2**52), st.integers(-(2**40), 2**40).filter(bool))
def test_floor_div_is_integer_floor_division_in_every_range(a, b):
    """floor_div runs in float64 where it is exact (these: |a| + |b| < 2^53), in int64 where
    not (a value of 2^60 in the array): equal to Python's // either way."""
    got = F.floor_div(np.array([a, -a, a // 3], np.int64), np.array([b, b, -b], np.int64))
    assert got.tolist() == [a // b, -a // b, (a // 3) // -b]
    wide = F.floor_div(np.array([a, 2**60], np.int64), np.array([b, b], np.int64))
    assert wide.tolist() == [a // b, 2**60 // b]


def test_gelu_with_a_calibrated_output_shift_stays_within_bound():
    """quantize shifts GELU's output to span ~2^16 steps over its calibrated peak: one output
    step more of error at most."""
    q = np.arange(-24000, 24001, dtype=np.int64)
    c = F.gelu_consts(peak=8.0)
    assert c["shift"] > F.gelu_consts()["shift"]
    assert 2**15 <= 8.0 / c["out_scale"] < 2**17
    got = F.int_gelu(q, **c) * c["out_scale"]
    assert np.abs(got - F.gelu(q * F.GELU_IN_SCALE)).max() <= F.GELU_BOUND + c["out_scale"]


@pytest.mark.parametrize("out_shift", [0, 6])
def test_layernorm_within_bound(out_shift):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2000, 32)) * rng.uniform(0.05, 10, (2000, 1)) + rng.normal(
        0, 3, (2000, 1)
    )
    scale = np.abs(x).max() / 2**F.LN_IN_BITS
    gamma, beta = rng.uniform(0.3, 2, 32), rng.normal(0, 0.5, 32)
    s_gamma = np.abs(gamma).max() / 2**F.LN_GAMMA_BITS
    fine = s_gamma * 2.0**-F.LN_NORM_BITS  # beta's scale; the output's is 2^out_shift coarser
    out_scale = fine * 2.0**out_shift
    got = (
        F.int_layernorm(
            np.floor(x / scale).astype(np.int64),
            int(1e-5 / scale**2),
            np.round(gamma / s_gamma).astype(np.int64),
            np.round(beta / fine).astype(np.int64),
            out_shift,
        )
        * out_scale
    )
    ref = F.layernorm(x, gamma, beta, 1e-5)
    assert np.abs(got - ref).max() <= F.LAYERNORM_BOUND * np.abs(gamma).max() + out_scale


def _ec_sum(op, xs, params=None, attrs=None, mode="float", n_in=1):
    node = Node("n", op, [f"i{k}" for k in range(n_in)], "o", attrs or {}, params or {})
    k = KERNELS[op](node, mode, xs[0][0].shape[1:])
    k.reset(len(xs[0][0]))
    return sum(k(*(x[t] for x in xs)) for t in range(len(xs[0])))


@settings(max_examples=50, deadline=None)
@given(arrays(np.float64, (5, 2, 3, 4), elements=st.floats(-3, 3)))
def test_expectation_compensation_float(xs):
    """Summed over t steps, an EC operator's outputs equal t * f(mean input)."""
    T = len(xs)
    got = _ec_sum("softmax", [xs])
    np.testing.assert_allclose(got, T * F.softmax(xs.mean(axis=0)), atol=1e-9)
    got = _ec_sum("gelu", [xs])
    np.testing.assert_allclose(got, T * F.gelu(xs.mean(axis=0)), atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.int64, (6, 2, 3, 4), elements=st.integers(-1, 1)),
    arrays(np.int64, (6, 2, 4, 5), elements=st.integers(-1, 1)),
)
def test_spiking_product_sums_to_product_of_means(a, b):
    """Float: sum_t out = t * mean(A) @ mean(B). Int: the same, to 2^-10 of one spike product."""
    T = len(a)
    ref = a.sum(0).astype(float) @ b.sum(0) / T
    np.testing.assert_allclose(
        _ec_sum("matmul", [a.astype(float), b.astype(float)], n_in=2), ref, atol=1e-9
    )
    got = _ec_sum("matmul", [a, b], mode="int", n_in=2) * 2.0**-F.MATMUL_FRAC_BITS
    assert np.abs(got - ref).max() <= 2.0**-F.MATMUL_FRAC_BITS


@pytest.mark.parametrize("T", [1, 3, 8])
def test_integer_softmax_operator_tracks_the_float_one(T):
    rng = np.random.default_rng(T)
    xs = rng.integers(-3000, 3000, (T, 4, 16)).astype(np.int64)  # scale 2^-10 per unit
    consts = F.requant_consts(np.array([F.SOFTMAX_IN_SCALE]), F.SOFTMAX_IN_SCALE)
    attrs = {"requant_shift": consts["shift"], "int": F.softmax_consts()}
    got = _ec_sum("softmax", [xs], {"requant_q": consts["mul"]}, attrs, "int")
    ref = T * F.softmax(xs.mean(axis=0) * F.SOFTMAX_IN_SCALE)
    assert np.abs(got * 2.0**-F.SOFTMAX_OUT_BITS - ref).max() <= T * (F.SOFTMAX_BOUND + 2e-3)


def test_tanh_within_bound_over_its_range():
    q = np.arange(-16 * 1024, 16 * 1024 + 1, dtype=np.int64)  # x in [-16, 16] at scale 2^-10
    got = F.int_tanh(q, **F.softmax_consts(F.TANH_IN_SCALE)) * 2.0**-F.TANH_OUT_BITS
    assert np.abs(got - np.tanh(q * F.TANH_IN_SCALE)).max() <= F.TANH_BOUND
    assert F.int_tanh(np.zeros(1, np.int64), **F.softmax_consts())[0] == 0


def test_masked_softmax_within_bound_and_masked_keys_are_exactly_zero():
    rng = np.random.default_rng(2)
    x = rng.uniform(-20, 20, (4000, 16)) * rng.uniform(0.05, 1, (4000, 1))
    keep = rng.random((4000, 16)) < 0.6
    keep[:, 0] = True
    q = np.floor(x / F.SOFTMAX_IN_SCALE).astype(np.int64)
    got = F.int_softmax(q, **F.softmax_consts(), keep=keep)
    assert (got[~keep] == 0).all()
    ref = F.softmax(q * F.SOFTMAX_IN_SCALE, keep)
    assert np.abs(got * 2.0**-F.SOFTMAX_OUT_BITS - ref).max() <= F.SOFTMAX_BOUND
    # the float function equals the softmax of the kept keys alone
    row = np.flatnonzero(keep[0])
    np.testing.assert_allclose(ref[0, row], F.softmax(q[0, row] * F.SOFTMAX_IN_SCALE))


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, (5, 2, 3, 4), elements=st.floats(-3, 3)),
    arrays(np.int64, (2, 4), elements=st.integers(0, 1)),
)
def test_expectation_compensation_of_tanh_and_masked_softmax(xs, mask):
    T = len(xs)
    np.testing.assert_allclose(_ec_sum("tanh", [xs]), T * np.tanh(xs.mean(axis=0)), atol=1e-9)
    masks = np.broadcast_to(mask, (T,) + mask.shape)  # the same flags at every step
    got = _ec_sum("masked_softmax", [xs, masks], n_in=2)
    ref = T * F.softmax(xs.mean(axis=0), mask[:, None, :] > 0)
    np.testing.assert_allclose(got, ref, atol=1e-9)


@pytest.mark.parametrize("T", [1, 3, 8])
def test_integer_tanh_operator_tracks_the_float_one(T):
    rng = np.random.default_rng(T)
    xs = rng.integers(-4000, 4000, (T, 4, 16)).astype(np.int64)  # scale 2^-10 per unit
    consts = F.requant_consts(np.array([F.TANH_IN_SCALE]), F.TANH_IN_SCALE)
    attrs = {"requant_shift": consts["shift"], "int": F.softmax_consts(F.TANH_IN_SCALE)}
    got = _ec_sum("tanh", [xs], {"requant_q": consts["mul"]}, attrs, "int")
    ref = T * np.tanh(xs.mean(axis=0) * F.TANH_IN_SCALE)
    # the running mean is floored to the input scale: at most one input step (2^-10) off
    assert np.abs(got * 2.0**-F.TANH_OUT_BITS - ref).max() <= T * (F.TANH_BOUND + 2e-3)


# -- activations, gates, prelu, l2 norm, division (spikeport.ir.ext_ops) ---------------------


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(x / 2))


def test_sigmoid_within_bound_over_its_range():
    """Far beyond the exp's interval too: the integer exp floors its input at -30 ln 2."""
    q = np.arange(-64 * 1024, 64 * 1024 + 1, dtype=np.int64)  # x in [-64, 64] at scale 2^-10
    c = F.softmax_consts(F.SIGMOID_IN_SCALE)
    got = F.int_sigmoid(q, **c) * 2.0**-F.GATE_BITS
    assert np.abs(got - _sigmoid(q * F.SIGMOID_IN_SCALE)).max() <= F.SIGMOID_BOUND
    assert F.int_sigmoid(np.zeros(1, np.int64), **c)[0] == 2 ** (F.GATE_BITS - 1)
    np.testing.assert_array_equal(F.int_sigmoid(q, **c) + F.int_sigmoid(-q, **c), 2**F.GATE_BITS)
    far = np.array([-(10**9), -(10**6), 10**6, 10**9], np.int64)
    np.testing.assert_array_equal(F.int_sigmoid(far, **c), [0, 0, 2**15, 2**15])


def _act_inputs(s: float) -> np.ndarray:
    """Every integer near 0 and a sweep far out (|q| <= 2^22: 256 times the calibrated peak)."""
    sweep = np.linspace(-(2**22), 2**22, 200_001).astype(np.int64)
    return np.unique(np.concatenate([np.arange(-(2**16), 2**16 + 1), sweep]))


@pytest.mark.parametrize("peak", [0.01, 1.0, 6.0, 300.0])
def test_gated_activations_within_bound_over_their_range(peak):
    s = F.act_scale(peak)
    q = _act_inputs(s)
    x = q * s
    silu = F.int_silu(q, **F.silu_consts(s)) * s
    assert np.abs(silu - x * _sigmoid(x)).max() <= F.SILU_BOUND + 2 * s
    hsw = F.int_hardswish(q, **F.gate_consts(s, 1 / 6, 0.5)) * s
    assert np.abs(hsw - x * np.clip(x / 6 + 0.5, 0, 1)).max() <= F.HARDSWISH_BOUND + 2 * s
    for alpha, beta in ((0.2, 0.5), (1 / 6, 0.5), (0.5, 0.25)):
        hs = F.int_hardsigmoid(q, **F.gate_consts(s, alpha, beta)) * 2.0**-F.GATE_BITS
        ref = np.clip(alpha * x + beta, 0, 1)
        assert np.abs(hs - ref).max() <= F.HARD_BOUND + alpha * s


def test_prelu_is_exact_above_zero_and_rounds_only_its_slope():
    slope = np.array([0.01, 0.25, -0.3, 1.7, 0.0])[:, None]
    c = F.slope_consts(slope)
    q = np.arange(-(2**20), 2**20, 97, dtype=np.int64)[None, :]
    rounding = np.abs(c["mul"] / 2.0 ** c["shift"] - slope)
    assert rounding.max() <= 2.0 ** -(c["shift"] + 1)
    for frac in (0, 8):  # output scale: q's / 2^frac
        got = F.int_prelu(q, c["mul"], c["shift"], frac) * 2.0**-frac
        pos = q[0] >= 0
        np.testing.assert_array_equal(got[:, pos], np.broadcast_to(q[:, pos], (5, pos.sum())))
        err = np.abs(got - np.where(q >= 0, q, slope * q))
        assert np.all(err <= np.abs(q) * rounding + 2.0**-frac)


@pytest.mark.parametrize("d", [2, 8, 384])
def test_l2norm_within_bound(d):
    rng = np.random.default_rng(d)
    x = rng.normal(0, 1, (3000, d)) * rng.uniform(0.001, 1, (3000, 1))
    x *= rng.random((3000, d)) < 0.7  # sparse rows, some all zero
    q = np.floor(x / F.act_scale(np.abs(x).max())).astype(np.int64)
    norm = np.sqrt((q.astype(np.float64) ** 2).sum(-1, keepdims=True))
    got = F.int_l2norm(q, 1)
    assert np.abs(got).max() <= 2**F.L2_OUT_BITS
    live = norm[:, 0] > 1
    err = np.abs(got * 2.0**-F.L2_OUT_BITS - q / np.maximum(norm, 1))[live]
    assert (err <= 2.0**-F.L2_OUT_BITS + 1 / (norm[live] - 1)).all()
    np.testing.assert_array_equal(got[norm[:, 0] == 0], 0)


@settings(max_examples=200, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(-5, 2**30), st.integers(0, 16), st.integers(1, 64))
def test_integer_division_is_the_floor_of_the_exact_quotient(a, b, frac, least):
    got = int(F.int_div(np.array([a]), np.array([b]), frac, least)[0])
    assert got == (a * 2**frac) // max(b, least)


@pytest.mark.parametrize("drop", [1, 3, 6])
def test_gated_activations_dropping_bits_floor_the_full_result(drop):
    """drop = k is floor(f / 2^k) of the k = 0 result, for negative results too."""
    s = F.act_scale(6.0)
    q = _act_inputs(s)
    for f, c in ((F.int_silu, F.silu_consts(s)), (F.int_hardswish, F.gate_consts(s, 1 / 6, 0.5))):
        np.testing.assert_array_equal(f(q, **c, drop=drop), f(q, **c) >> drop)


def test_integer_product_requantizes_with_either_sign_of_frac():
    a = np.arange(-300, 301, 7, dtype=np.int64)[:, None]
    b = np.arange(-(2**20), 2**20, 4099, dtype=np.int64)[None, :]
    for t in (1, 3, 64):
        for frac in (-20, -1, 0, 5):
            want = np.floor(a * b * 2.0**frac / t).astype(np.int64)  # exact: |a b| < 2^29
            np.testing.assert_array_equal(F.int_product(a, b, t, frac), want)
