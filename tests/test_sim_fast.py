"""The fast backend (spikeport.sim.fast, spikeport.sim.layerwise) equals the reference
simulator: bit for bit in "int" mode (outputs, every traced tensor at every step, spikes, event
bits, synaptic operations, overflow errors) on every fixture model and on random inputs; to
float rounding in the "float" and "ann" modes. tests/test_families.py checks the same on every
family model."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from conftest import EXAMPLES, per_index_products
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeport.convert import convert
from spikeport.errors import SimulationOverflow
from spikeport.ir import Node
from spikeport.quantize import Profile, get_profile, quantize
from spikeport.quantize.ranges import NodeBounds
from spikeport.sim import SimResult, Simulator, fast, fast_seq, layerwise, native, simulate
from spikeport.sim import intfunc as F
from spikeport.sim.int8 import Int8Synapse, int8_products_exact
from spikeport.sim.ops import KERNELS, IFNeuron
from spikeport.sim.simulator import BACKENDS


def assert_same_run(ref: SimResult, fast: SimResult) -> None:
    """Two runs of one graph agree bit for bit (dtypes aside: both hold the same integers)."""
    assert ref.outputs.keys() == fast.outputs.keys()
    for name, v in ref.outputs.items():
        np.testing.assert_array_equal(fast.outputs[name], v, err_msg=name)
    for key in ("spikes", "sops", "levels", "event_bits"):
        np.testing.assert_array_equal(getattr(fast, key), getattr(ref, key), err_msg=key)
    if ref.trace is not None:
        assert fast.trace is not None and ref.trace.keys() == fast.trace.keys()
        for name, v in ref.trace.items():
            np.testing.assert_array_equal(fast.trace[name], v, err_msg=name)


def _both(graph, x, T, mode="int", record=True):  # noqa: ANN001, ANN202
    return [Simulator(graph, mode, b).run(x, T, record=record) for b in BACKENDS]


@pytest.mark.parametrize("T", [1, 6])
def test_int_mode_equals_reference_on_every_fixture(case, T):
    ref, fast = _both(case.int, case.test_x[:32], T)
    assert_same_run(ref, fast)


def test_an_empty_batch_gives_the_references_empty_result(case):
    """No samples: empty outputs and zero counts on both backends (the fast one ran no slice
    and failed to join none)."""
    ref, fast = _both(case.int, case.test_x[:0], 3, record=False)
    assert_same_run(ref, fast)
    assert all(v.shape[1] == 0 for v in fast.outputs.values()) and not fast.sops.any()


def test_int_mode_equals_reference_on_products_of_per_index_operands():
    """The ViT with one threshold per feature on Q, K and V: its products weigh their
    contracted features by integer multipliers, on both backends alike."""
    snn = per_index_products(
        convert(
            EXAMPLES / "digits_vit.onnx",
            EXAMPLES / "digits_calib.npz",
            tune=False,
            product_operands="spikes",
        )  # fmt: skip
    )
    g = quantize(snn, np.load(EXAMPLES / "digits_calib.npz")["x"], get_profile("sim"), 8)
    assert any("contract_q" in n.params for n in g.nodes)
    ref, fast = _both(g, np.load(EXAMPLES / "digits_test.npz")["x"][:16], 6)
    assert_same_run(ref, fast)


def test_float_and_ann_modes_equal_reference_to_rounding(case):
    for mode, graph in (("float", case.snn), ("ann", case.snn)):
        ref, fast = _both(graph, case.test_x[:16], 4, mode, record=False)
        for name, v in ref.outputs.items():
            np.testing.assert_allclose(fast.outputs[name], v, rtol=1e-9, atol=1e-9)
        # a spike may flip where float rounding puts v exactly at theta: allow a few
        assert abs(int(fast.spikes.sum()) - int(ref.spikes.sum())) <= 2


def test_batch_slices_join_to_the_whole_batch(cases, monkeypatch):
    """A batch too wide for MAX_ELEMENTS runs in slices: the same result."""
    case = cases["digits_cnn"]
    whole = Simulator(case.int, "int", "fast").run(case.test_x[:20], 5, record=True)
    monkeypatch.setattr(layerwise, "MAX_ELEMENTS", 3 * 5 * 16 * 8 * 8)  # 3 samples a slice
    assert_same_run(whole, Simulator(case.int, "int", "fast").run(case.test_x[:20], 5, True))


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 12),
    n=st.integers(1, 9),
    scale=st.floats(0.1, 30.0),
    name=st.sampled_from(["digits_cnn", "digits_mlp", "residual", "concat_pool", "wide_mlp"]),
)
def test_int_mode_equals_reference_on_random_inputs(cases, seed, T, n, scale, name):
    """Random inputs, including ones far outside the calibration range (saturated codes)."""
    case = cases[name]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n,) + case.test_x.shape[1:]) * scale).astype(np.float32)
    assert_same_run(*_both(case.int, x, T))


def test_overflow_is_raised_alike(cases):
    """A graph the proof no longer covers (state bits narrowed by hand): both backends raise,
    naming the same node."""
    case = cases["digits_mlp"]
    graph = quantize(case.snn, np.load(case.calib)["x"], Profile("sim"))
    graph.meta["quantization"]["state_bits"] = 12
    messages = []
    for backend in BACKENDS:
        with pytest.raises(SimulationOverflow) as err:
            Simulator(graph, "int", backend).run(case.test_x[:4], 8)
        messages.append(str(err.value).split(" reached")[0])
    assert messages[0] == messages[1]


def test_simulate_takes_the_backend(cases):
    case = cases["digits_cnn"]
    runs = [simulate(case.int, case.test_x[:8], 3, backend=b) for b in BACKENDS]
    assert_same_run(*runs)
    with pytest.raises(Exception, match="backend 'gpu' is not one of"):
        Simulator(case.int, "int", "gpu")


@pytest.mark.parametrize("backend", BACKENDS)
def test_observer_sees_every_tensor_at_every_step(cases, backend):
    """observe= reads what record= keeps, without keeping it (quantize's calibrated peaks)."""
    case = cases["residual"]
    seen: dict[str, list[np.ndarray]] = {}
    res = Simulator(case.int, "int", backend).run(
        case.test_x[:5], 3, record=True, observe=lambda k, v: seen.setdefault(k, []).append(v)
    )
    assert res.trace is not None and seen.keys() == res.trace.keys()
    for name, v in res.trace.items():
        np.testing.assert_array_equal(np.stack(seen[name]), v, err_msg=name)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), peak=st.sampled_from([1, 7, 2**12, 2**20]))
def test_counts_sum_exactly_past_float32(seed, peak):
    """Event and synapse counts sum float32 tensors in chunks that stay exact: equal to an
    int64 sum where one float32 sum would round (rows far above 2^24)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-peak, peak + 1, (3, 40_000)).astype(np.float32)
    np.testing.assert_array_equal(
        layerwise._sum(torch.from_numpy(x), peak), x.astype(np.int64).sum(axis=1)
    )


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    peak=st.sampled_from([1, 8, 255]),
    top=st.sampled_from([9, 1 << 12, 1 << 22, 1 << 23]),
)
def test_weighted_synapse_counts_are_exact(seed, peak, top):
    """Fan-out weighted synapse counts (_Counts._weighted) over rows whose weighted sums pass
    2^24: float32 products over runs below 2^23, equal to an int64 sum; fan-outs near 2^23
    take float64."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, peak + 1, (2, 3, 4, 50, 50)).astype(np.float32)  # (T, N, C, H, W)
    fanout = rng.integers(0, top + 1, (4, 50, 50))
    want = (x.astype(np.int64) * fanout).sum(axis=(1, 2, 3, 4))
    np.testing.assert_array_equal(layerwise._Counts._weighted(x, fanout, peak), want)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.integers(1, 3),
    kind=st.sampled_from(["unsigned", "signed", "bipolar"]),
    T=st.integers(1, 10),
    static=st.booleans(),
)
def test_neuron_kernels_equal_the_reference_neuron(seed, bits, kind, T, static):
    """fast.IntIF (running sums in, counts out; and its closed form for a current equal at
    every step) and fast.StepIF (per step) give the reference IFNeuron's spikes, for binary
    and graded, unsigned, signed and bipolar neurons."""
    rng = np.random.default_rng(seed)
    C, N, K = 5, 7, (1 << bits) - 1
    theta = rng.integers(1, 60, C)
    current = rng.integers(-3, 4, (T, N, C)) * rng.integers(0, 60, (T, N, C))
    if static:  # every step the first one's current: a first layer fed by a static input
        current = np.broadcast_to(current[:1], current.shape).copy()
    signed, bipolar = kind != "unsigned", kind == "bipolar"
    ref = IFNeuron(theta, signed, True, (C,), bipolar, K)
    ref.reset(N)
    want = np.stack([ref(current[t]) for t in range(T)])
    node = Node("n", "if", ["i"], "o", {"signed": signed, "bipolar": bipolar, "spike_bits": bits},
                {"threshold_q": theta})  # fmt: skip
    peak, state = float(np.abs(current).max()), float(theta.max() + T * 200 * (K + 1))
    bounds = {
        "i": NodeBounds(np.full(C, peak), np.full(C, T * peak), 0.0),
        "o": NodeBounds(np.full(C, float(K)), np.full(C, float(T * K)), state),
    }
    step = fast.StepIF(node, (C,), bounds)(current).y
    cum = fast.IntIF(node, (C,), bounds)(np.cumsum(current, axis=0)).y
    np.testing.assert_array_equal(step, want)
    np.testing.assert_array_equal(np.diff(cum, axis=0, prepend=0), want)
    if static:
        for c_loop in (True, False):  # spikeport.sim.native's, and torch's closed form
            with mock.patch.object(native, "ENABLED", c_loop):
                closed = fast.IntIF(node, (C,), bounds).static(current[0], T).y
            np.testing.assert_array_equal(closed, cum)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    bits=st.integers(1, 3),
    kind=st.sampled_from(["unsigned", "signed", "bipolar"]),
    T=st.integers(1, 9),
    shape=st.sampled_from([(1, 3, 1, 1), (2, 3, 5, 7), (3, 33, 6, 6), (2, 1100), (5, 2, 3)]),
    channels_last=st.booleans(),
    wide=st.booleans(),
    split=st.booleans(),
    sliced=st.booleans(),
)
def test_native_neuron_equals_the_torch_loop(
    seed, bits, kind, T, shape, channels_last, wide, split, sliced
):
    """The fused C loop of IntIF (spikeport.sim.native) gives the torch loop's counts, events
    and levels, and its readers' synaptic operations (fan-out over nonzero counts): every
    rule, float32 and float64 sums, contiguous and channels-last steps, samples longer than a
    C block (1100 > 1024), the elements split over threads, and sums that are a slice of a
    longer batch (steps apart in memory: text_bert's int eval at T = 32 raised there)."""
    if not native.available():
        pytest.skip(f"no native kernels here: {native.status()}")
    rng = np.random.default_rng(seed)
    K, sample = (1 << bits) - 1, shape[1:]
    theta = rng.integers(1, 60, sample)
    current = rng.integers(-3, 4, (T, *shape)) * rng.integers(0, 60, (T, *shape))
    cum = torch.from_numpy(np.cumsum(current, axis=0).astype(np.float64))
    if channels_last and len(shape) == 4:
        cum = torch.stack([c.contiguous(memory_format=torch.channels_last) for c in cum])
    if sliced:  # the first samples of a batch twice as long: a view, its steps apart
        cum = torch.cat([cum, cum], dim=1)[:, : shape[0]]
    node = Node("n", "if", ["i"], "o", {"signed": kind != "unsigned", "bipolar": kind == "bipolar",
                "spike_bits": bits}, {"threshold_q": theta})  # fmt: skip
    big = 2.0**30 if wide else 1e3  # float64 sums where the proof's bound passes float32's
    bounds = {
        "i": NodeBounds(np.full(sample, 200.0), np.full(sample, big), 0.0),
        "o": NodeBounds(np.full(sample, float(K)), np.full(sample, float(T * K)), 0.0),
    }
    neuron = fast.IntIF(node, sample, bounds)
    assert neuron.dt == (torch.float64 if wide else torch.float32)
    c = cum.to(neuron.dt)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if split else 1)
    try:
        with mock.patch.object(native, "MIN_SPLIT", 64 if split else native.MIN_SPLIT):
            fused, fused_events, _ = neuron._levels(c)
            fanout = rng.integers(0, 1000, sample)
            neuron.weigh_events_by(fanout)
            _, _, sops = neuron._levels(c)
        with mock.patch.object(native, "ENABLED", False):
            loop, loop_events, none = neuron._levels(c)
    finally:
        torch.set_num_threads(threads)
    assert fused.stride() == loop.stride()
    np.testing.assert_array_equal(fused.numpy(), loop.numpy())
    for a, b in zip(fused_events, loop_events, strict=True):
        np.testing.assert_array_equal(a, b)
    # a current equal at every step (a first layer's), in the layout under test
    first = c[0].numpy() if c.dtype == torch.float64 else c[0].double().numpy()
    neuron.fanout = None
    with mock.patch.object(native, "ENABLED", True):
        ramp = neuron.static(first, T)
    with mock.patch.object(native, "ENABLED", False):
        closed = neuron.static(first, T)
    np.testing.assert_array_equal(ramp.y, closed.y)
    assert ramp.y.strides == closed.y.strides or T == 1
    counts = np.diff(loop.numpy(), axis=0, prepend=0)  # per step
    want = ((counts != 0) * fanout).reshape(T, -1).sum(axis=1)
    assert none is None
    np.testing.assert_array_equal(sops, want)  # its readers' synaptic operations


def test_native_kernels_report_why_they_do_not_run(monkeypatch):
    """Without a C compiler the torch loops run (same results), and status() says why."""
    monkeypatch.setattr(native.shutil, "which", lambda _: None)
    native.library.cache_clear()
    try:
        assert native.library() is None and not native.available()
        assert native.status() == "torch loops (no C compiler (cc) on PATH)"
    finally:
        native.library.cache_clear()
    monkeypatch.setattr(native, "ENABLED", False)
    assert native.status() == "torch loops (switched off)"


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 6),
    inputs=st.integers(1, 3),
    shift=st.sampled_from([0, 0, 1, 5, 13]),
    cumulative=st.booleans(),
    scale=st.sampled_from([1.0, 2.0**24, 2.0**40, 2.0**56]),  # float32 / int32 / f64 / int64
    layouts=st.sampled_from(["nchw", "nhwc", "mixed", "sliced"]),
    kinds=st.lists(
        st.sampled_from(["float32", "float64", "int32", "int64"]), min_size=3, max_size=3
    ),
)
def test_add_kernel_equals_the_reference(seed, T, inputs, shift, cumulative, scale, layouts, kinds):
    """The "int" add (floor(sum m_i x_i / 2^shift) a step) on per-step values and on running
    sums, fused in C (spikeport.sim.native) and in torch's loop, in every exact type the
    proof's bound picks, on inputs of float32, float64, int32 and int64 (the runner sums
    per-step inputs in the add's type), in one layout or mixed ones, or a slice of a longer
    batch (its steps apart in memory): the reference kernel's integers."""
    rng = np.random.default_rng(seed)
    C, N, H, W = 3, 2, 4, 5
    mult = rng.integers(-300, 300, (inputs, C, 1, 1))
    node = Node("a", "add", [f"x{i}" for i in range(inputs)], "o", {"shift": shift},
                {"mult_q": mult})  # fmt: skip
    x = rng.integers(-40, 41, (inputs, T, N, C, H, W))
    ref = KERNELS["add"](node, "int", ())
    want = np.stack([ref(*x[:, t]) for t in range(T)])
    given_ = np.cumsum(x, axis=1) if cumulative else x
    reach = np.full((C, H, W), scale)
    bounds = {f"x{i}": NodeBounds(reach, reach, 0.0) for i in range(inputs)}
    bounds["o"] = NodeBounds(reach, reach, 0.0)
    arrays = []
    for i in range(inputs):
        a = torch.from_numpy(given_[i].astype(kinds[i]))
        if layouts == "nhwc" or (layouts == "mixed" and i % 2):
            a = torch.stack([s.contiguous(memory_format=torch.channels_last) for s in a])
        if layouts == "sliced":
            a = torch.cat([a, a], dim=1)[:, :N]
        arrays.append(a.numpy())
    kern = fast.FAST_KERNELS["add"](node, "int", (C, H, W), bounds)
    for enabled in (True, False):
        with mock.patch.object(native, "ENABLED", enabled):
            steps = kern.run(*arrays, cumulative=cumulative)
        got = np.asarray(steps.y, np.int64)
        if (steps.form or (fast.CUM if cumulative else fast.STEP)) == fast.CUM:
            got = np.diff(got, axis=0, prepend=0)  # running sums out: their steps
        np.testing.assert_array_equal(got, want, err_msg=f"C: {enabled}")


int8_call = Int8Synapse.__call__


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 5),
    k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    pads=st.tuples(*[st.integers(0, 2)] * 4),
    group=st.sampled_from([1, 2]),
    peak=st.sampled_from([1, 63, 64, 127, 128, 3000]),
    nonneg=st.booleans(),
    cumulative=st.booleans(),
)
def test_int8_synaptic_kernels_equal_the_reference(
    seed, T, k, stride, dilation, pads, group, peak, nonneg, cumulative
):
    """Convolutions and dense layers take int8 products (spikeport.sim.int8) where the proof
    bounds their inputs within u8 codes below 128 (0 <= x <= 127, or |x| <= 63 around a zero
    point of 64) and float32 / float64 otherwise: the reference kernel's integers either way,
    at the edges of both ranges and past float32's exact range (peak 3000 with 127-weights:
    sums above 2^23 fall to float64)."""
    rng = np.random.default_rng(seed)
    C, Co, N, H, W = 4, 4, 2, 7, 6
    attrs = {"strides": list(stride), "pads": list(pads), "dilations": list(dilation),
             "group": group}  # fmt: skip
    # weights as transposed views (as an imported MatMul's are): read in logical order
    w = rng.integers(-127, 128, k + (C // group, Co)).transpose(3, 2, 0, 1)
    conv = Node("c", "conv2d", ["i"], "o", attrs,
                {"weight": w * 1.0, "bias": np.zeros(Co), "weight_q": w,
                 "bias_q": rng.integers(-900, 900, Co)})  # fmt: skip
    wd = rng.integers(-127, 128, (W, Co)).T
    dense = Node("d", "dense", ["i"], "o", {},
                 {"weight": wd * 1.0, "bias": np.zeros(Co), "weight_q": wd,
                  "bias_q": rng.integers(-900, 900, Co)})  # fmt: skip
    x = rng.integers(0 if nonneg else -peak, peak + 1, (T, N, C, H, W))
    x *= rng.random((T, N, C, H, W)) < 0.4
    x[0, 0, 0] = peak  # the extremes, where a wrapped or saturated int8 would show
    for node in (conv, dense):
        ref = KERNELS[node.op](node, "int", ())
        want = np.stack([ref(x[t]) for t in range(T)])
        big = float(np.abs(want).max(initial=0)) + 900 * T + 1
        reach = np.full((C, H, W), float(peak))
        bounds = {
            "i": NodeBounds(reach, reach, 0.0, nonneg),
            "o": NodeBounds(np.full(1, big), np.full(1, big), 0.0),
        }
        kern = fast.FAST_KERNELS[node.op](node, "int", (), bounds)
        with mock.patch.object(
            Int8Synapse, "__call__", autospec=True, side_effect=int8_call
        ) as spy:
            # input codes come as int8: taken as they are, and never changed in place
            xin = x.astype(np.int8 if peak <= 127 else np.float64)
            got = kern.run(xin, cumulative=cumulative).y
        np.testing.assert_array_equal(xin, x, err_msg="the input changed")
        if cumulative:  # running sums in: W S_t + t b, one bias more per step than W x_t + b
            b = node.params["bias_q"].reshape((-1, 1, 1) if node.op == "conv2d" else (-1,))
            want = want + np.arange(T).reshape((T,) + (1,) * (want.ndim - 1)) * b
        np.testing.assert_array_equal(np.asarray(got, np.int64), want, err_msg=node.op)
        fits = peak <= 127 if nonneg else peak <= 63
        syn = Int8Synapse.of(node)
        exact_here = syn is not None and all(syn.checked.values())  # oneDNN, on these shapes
        assert spy.called == (fits and exact_here), "int8 where the bounds allow"


def test_int8_synapses_refuse_shapes_where_onednn_is_wrong():
    """Each synapse probes every input shape it meets (Int8Synapse.exact_on): a kernel that
    gives other integers on a shape is not used for it, and a conv whose oneDNN kernel was
    wrong on one machine (width-3 kernel, stride and dilation 2 along the width, one output
    column) still equals the reference."""
    if not int8_products_exact():
        pytest.skip("no exact oneDNN int8 kernels here")
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 4, 1, 3))
    attrs = {"strides": [1, 2], "pads": [0, 0, 0, 0], "dilations": [1, 2], "group": 1}
    params = {"weight": w * 1.0, "bias": np.zeros(4), "weight_q": w, "bias_q": np.zeros(4)}
    node = Node("c", "conv2d", ["i"], "o", attrs, params)
    syn = Int8Synapse.of(node)
    assert syn is not None and syn.exact_on((4, 7, 9), 0)  # three output columns: exact
    wrong = mock.patch.object(Int8Synapse, "_run", lambda self, x, zp: torch.zeros(1))
    with wrong:
        assert not syn.exact_on((4, 7, 8), 0) and syn.exact_on((4, 7, 9), 0)  # kept per shape
    x = rng.integers(0, 2, (2, 3, 4, 7, 6)).astype(np.float32)  # one output column
    reach = np.full((4, 7, 6), 1.0)
    bounds = {"i": NodeBounds(reach, reach * 2, 0.0, True),
              "o": NodeBounds(np.full(1, 1e5), np.full(1, 1e5), 0.0)}  # fmt: skip
    got = fast.FAST_KERNELS["conv2d"](node, "int", (), bounds).run(x).y
    ref = KERNELS["conv2d"](node, "int", ())
    np.testing.assert_array_equal(got, np.stack([ref(x[t]) for t in range(2)]))


def test_int8_synapses_are_reused_until_their_weights_change():
    """Packed weights are kept per weight array (a simulator is made for each simulate call),
    and packed afresh when that array's values change in place."""
    w = np.arange(-12, 12).reshape(4, 6)
    node = Node("d", "dense", ["i"], "o", {}, {"weight_q": w})
    first = Int8Synapse.of(node)
    if not int8_products_exact():
        assert first is None
        return
    assert Int8Synapse.of(node) is first
    w[0, 0] = 99
    again = Int8Synapse.of(node)
    assert again is not first and again.weight[0, 0] == 99
    x = torch.ones(2, 6)
    np.testing.assert_array_equal(again(x, 0).numpy(), x.numpy() @ w.T)


def _ec_node(op: str, rng: np.random.Generator, d: int) -> Node:
    """A quantized sequence operator as quantize.seq makes one (its integer constants)."""
    params = {"requant_q": rng.integers(1, 1 << 14, d), "gamma_q": rng.integers(-1024, 1025, d),
              "beta_q": rng.integers(-(1 << 16), 1 << 16, d)}  # fmt: skip
    attrs: dict = {"requant_shift": int(rng.integers(0, 12))}
    if op == "layernorm":
        attrs |= {"epsilon": 1e-5, "int": {"eps": int(rng.integers(0, 1 << 20)),
                                           "out_shift": int(rng.integers(0, 10))}}  # fmt: skip
    elif op == "gelu":
        consts = F.gelu_consts(peak=float(rng.uniform(0.5, 50)))
        attrs |= {
            "approximate": "none",
            "int": {k: v for k, v in consts.items() if k != "out_scale"},
        }
    elif op == "matmul":
        params = {"contract_q": rng.integers(1, 1 << 12, d)} if rng.random() < 0.5 else {}
        attrs = {}
    else:
        attrs |= {"int": F.softmax_consts()}
    return Node("n", op, ["a", "b"] if op in ("matmul", "masked_softmax") else ["a"], "o",
                attrs, params)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    T=st.integers(1, 5),
    op=st.sampled_from(["layernorm", "softmax", "masked_softmax", "gelu", "matmul"]),
    peak=st.sampled_from([1, 50, 1 << 12, 1 << 20, 1 << 30]),
    split=st.booleans(),
)
def test_sequence_operator_kernels_equal_the_reference(seed, T, op, peak, split):
    """The fast kernels of the expectation-compensated operators (spikeport.sim.fast_seq),
    in C (spikeport.sim.native, its rows split over threads or not) and in torch's loop:
    the reference's G(t) on running sums from one spike to 2^30 (a layernorm's variance then
    leaves float64's exact range: those steps run the reference), masked rows with no key
    kept, per-index product multipliers."""
    rng = np.random.default_rng(seed)
    N, S, d = 3, 4, 6
    node = _ec_node(op, rng, d)
    a = rng.integers(-peak, peak + 1, (T, N, S, d)).cumsum(0)
    if op == "matmul":
        sums = [a, rng.integers(-peak, peak + 1, (T, N, d, S)).cumsum(0)]
    elif op == "masked_softmax":
        mask = (rng.random((N, d)) < 0.6).astype(np.int64)
        mask[0] = 0  # a row with no key kept: all 0
        sums = [a, mask[None] * np.arange(1, T + 1).reshape(T, 1, 1)]
    else:
        sums = [a]
    shape = (S, S) if op == "matmul" else (S, d)
    want = fast_seq.compensated(KERNELS[op](node, "int", shape), sums, True).y
    bounds = {i: NodeBounds(np.abs(s).max(0)[0] * 1.0, np.abs(s).max(0)[0] * 1.0, 0.0)
              for i, s in zip(node.inputs, sums, strict=True)}  # fmt: skip
    top = np.full(shape, float(np.abs(want).max(initial=0)))
    bounds["o"] = NodeBounds(top, top, 0.0)
    kern = fast.FAST_KERNELS[op](node, "int", shape, bounds)
    if kern is None:  # only where the proof leaves float64's exact range
        assert peak >= 1 << 20
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if split else 1)
    try:
        for c_loops in (True, False):
            with (
                mock.patch.object(native, "ENABLED", c_loops),
                mock.patch.object(native, "MIN_SPLIT", 6 if split else native.MIN_SPLIT),
            ):
                got = kern.run(*[s.astype(np.float64) for s in sums]).y
                np.testing.assert_array_equal(np.asarray(got, np.int64), want, f"C: {c_loops}")
                np.testing.assert_array_equal(kern.run(*sums).y, got)  # int64 sums in
                if peak < 1 << 20:  # float32 sums in (exact below 2^24)
                    f32 = [s.astype(np.float32) for s in sums]
                    np.testing.assert_array_equal(kern.run(*f32).y, got)
    finally:
        torch.set_num_threads(threads)
