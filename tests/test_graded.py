"""Graded spikes (issue 17): the multi-threshold neuron of `spike_bits` b in the simulator, the
range proof, convert, eval and inspect, and the targets that refuse it. The C target's bit-exact
runs are in test_target_c.py."""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.convert.balance import grade_neurons
from spikeport.errors import BadInput, CapabilityExceeded, FormatError
from spikeport.ir import Node, load, save
from spikeport.ir.check import check_artifact
from spikeport.quantize import get_profile, quantize
from spikeport.quantize.ranges import BOUNDS, range_bounds
from spikeport.sim import Simulator, simulate
from spikeport.sim.ops import IFNeuron
from spikeport.targets import emit

CALIB, TEST = EXAMPLES / "digits_calib.npz", EXAMPLES / "digits_test.npz"
VARIANTS = ["unsigned", "signed", "bipolar"]


def reference_counts(currents: np.ndarray, theta: np.ndarray, levels: int, variant: str):
    """The rule of spikeport.ir.ops "if", written out once more, integer by integer:
    s = clamp(floor(v / theta), lo, K), v -= s * theta, v0 = floor(theta / 2)."""
    v = np.broadcast_to(theta // 2, currents.shape[1:]).astype(np.int64).copy()
    count = np.zeros_like(v)
    out = []
    for cur in currents:
        v += cur
        lo = {"unsigned": 0, "bipolar": -levels}.get(variant, -np.minimum(count, levels))
        s = np.clip(v // theta, lo, levels)
        v -= s * theta
        count += s
        out.append(s)
    return np.stack(out)


def _run(neuron: IFNeuron, currents: np.ndarray) -> np.ndarray:
    neuron.reset(currents.shape[1])
    return np.stack([neuron(c) for c in currents])


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_the_simulator_neuron_follows_the_written_rule(variant, bits):
    """int mode: the counts equal clamp(floor(v / theta), lo, K) step by step; b = 1 runs the
    compare form of the binary neuron and still gives exactly this rule."""
    r = np.random.default_rng(bits)
    theta = r.integers(1, 40, (1, 6))
    currents = r.integers(-150, 300, (12, 50, 6))
    levels = (1 << bits) - 1
    n = IFNeuron(theta, variant == "signed", True, (6,), variant == "bipolar", levels)
    got = _run(n, currents)
    assert np.array_equal(got, reference_counts(currents, theta, levels, variant))
    assert np.abs(got).max() <= levels and (bits == 1 or np.abs(got).max() > 1)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float_mode_on_integer_values_equals_int_mode(variant):
    """The float neuron is the same rule in real numbers: fed integer-valued currents and
    thresholds it emits the same counts (times theta) as the integer one."""
    r = np.random.default_rng(5)
    theta = r.integers(1, 30, (1, 5))
    currents = r.integers(-100, 200, (10, 40, 5))
    args = (variant == "signed", (5,), variant == "bipolar", 7)
    ints = _run(IFNeuron(theta, args[0], True, *args[1:]), currents)
    floats = _run(IFNeuron(theta.astype(float), args[0], False, *args[1:]), currents.astype(float))
    assert np.array_equal(floats, ints * theta)


@pytest.fixture(scope="module")
def graded(cases):
    """digits_cnn and digits_mlp with 2-bit and 3-bit spikes, converted (percentile thresholds,
    so that comparisons with binary spikes isolate the neuron) and quantized; and the same
    conversion with binary spikes."""
    out = {}
    calib_x = np.load(CALIB)["x"]
    for name, bits in (("digits_cnn", 2), ("digits_mlp", 3)):
        binary = convert(cases[name].onnx, CALIB, tune=False)
        snn = grade_neurons(copy.deepcopy(binary), bits)
        out[name] = (snn, quantize(snn, calib_x, get_profile("sim"), max_timesteps=8))
        out[name, "binary"] = quantize(binary, calib_x, get_profile("sim"))
    return out


def test_spike_bits_1_leaves_conversion_and_quantization_as_they_were(cases):
    case = cases["digits_mlp"]
    snn = convert(case.onnx, case.calib, spike_bits=1)
    assert all("spike_bits" not in n.attrs for n in snn.nodes)
    assert "spike_bits" not in snn.meta["conversion"]
    for a, b in zip(snn.nodes, case.snn.nodes, strict=True):
        assert a.attrs == b.attrs
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    q = quantize(snn, np.load(case.calib)["x"], get_profile("sim"))
    for a, b in zip(q.nodes, case.int.nodes, strict=True):
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
    assert q.meta["quantization"]["proven_peak"] == case.int.meta["quantization"]["proven_peak"]


def test_graded_thresholds_are_the_binary_ones_over_K(cases, graded):
    snn, _ = graded["digits_mlp"]
    binary = convert(cases["digits_mlp"].onnx, CALIB, tune=False)
    for a, b in zip(snn.nodes, binary.nodes, strict=True):
        if a.op == "if":
            assert a.attrs["spike_bits"] == 3
            np.testing.assert_allclose(a.params["threshold"] * 7, b.params["threshold"], rtol=1e-6)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_int_and_float_modes_agree_and_graded_spikes_carry_more(cases, graded, name):
    """The integer graph predicts what the float one does, and at T = 1 graded spikes beat
    binary ones (a step's rate code has K + 1 levels, not 2)."""
    snn, q = graded[name]
    x, y = cases[name].test_x, np.load(TEST)["y"]
    f = simulate(snn, x, 4, "float").outputs[snn.outputs[0]]
    i = simulate(q, x, 4, "int").outputs[q.outputs[0]]
    assert (f[-1].argmax(-1) == i[-1].argmax(-1)).mean() > 0.97
    binary = simulate(graded[name, "binary"], x, 1, "int").outputs[q.outputs[0]]
    assert (i[0].argmax(-1) == y).mean() > (binary[0].argmax(-1) == y).mean() + 0.05


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_the_range_proof_holds_on_random_inputs_at_the_proven_T(cases, graded, name):
    """Random int8 codes for T = max_timesteps: every neuron's |v|, every value and every
    running sum stay within their proven bounds, and graded counts reach past 1."""
    _, q = graded[name]
    T = q.meta["quantization"]["max_timesteps"]
    bounds = range_bounds(q, T)
    codes = np.random.default_rng(0).integers(-127, 128, (200,) + q.input.shape)
    sim = Simulator(q, "int", "reference")  # it watches the reference neurons
    sim.kernels = [(n, _PeakV(k) if isinstance(k, IFNeuron) else k) for n, k in sim.kernels]
    res = sim.run(codes * q.scales[q.input.name], T, record=True)
    for node, k in sim.kernels:
        if isinstance(k, _PeakV):
            assert 0 < k.peak <= bounds[node.output].state, node.name
    for n in q.nodes:
        seen = np.abs(res.trace[n.output]).max(axis=(0, 1))
        assert (seen <= bounds[n.output].step).all(), n.name
        summed = np.abs(np.cumsum(res.trace[n.output], axis=0)).max(axis=(0, 1))
        assert (summed <= bounds[n.output].total).all(), n.name
    assert max(int(np.abs(res.trace[n.output]).max()) for n in q.nodes if n.op == "if") > 1


class _PeakV:
    """A neuron kernel that remembers the largest |v| it held after any step."""

    def __init__(self, neuron: IFNeuron):
        self.neuron, self.peak = neuron, 0

    def reset(self, batch: int) -> None:
        self.neuron.reset(batch)

    def __call__(self, current: np.ndarray) -> np.ndarray:
        out = self.neuron(current)
        self.peak = max(self.peak, int(np.abs(self.neuron.v).max()))
        return out


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.integers(1, 4),
    st.sampled_from(VARIANTS),
    st.integers(1, 50),
    st.integers(1, 300),
    st.integers(1, 12),
    st.integers(0, 2**32 - 1),
)
def test_the_neuron_bound_rule_covers_every_run(bits, variant, theta, b, T, seed):
    """Any currents within the per-step bound b: |v| never passes the proven state, a count
    never passes K, the summed counts never pass the proven total."""
    attrs = {"signed": variant == "signed", "bipolar": variant == "bipolar", "cap": None}
    node = Node("n", "if", ["x"], "y", {**attrs, "spike_bits": bits}, {})
    node.params["threshold_q"] = np.array([theta])
    r = np.random.default_rng(seed)
    cur = r.integers(-b, b + 1, (T, 64, 1))
    if seed % 2:  # the worst currents: all at the bound, one sign
        cur = np.full((T, 64, 1), b * (1 if seed % 4 == 1 else -1))
    step, state, total = BOUNDS["if"](node, [np.full(1, float(b))], T, [np.full(1, float(T * b))])
    levels = (1 << bits) - 1
    n = IFNeuron(np.array([theta]), variant == "signed", True, (1,), variant == "bipolar", levels)
    n.reset(64)
    summed, peak_v = np.zeros((64, 1), np.int64), 0
    for t in range(T):
        s = n(cur[t])
        summed += s
        peak_v = max(peak_v, int(np.abs(n.v).max()))
        assert np.abs(s).max() <= step[0] and np.abs(summed).max() <= total[0]
    assert peak_v <= state


def test_the_lava_kind_has_binary_spikes_only():
    node = Node("n", "if", ["x"], "y", {"signed": False, "cap": None, "kind": "lava"}, {})
    node.params["threshold"] = np.ones(1, np.float32)
    node.attrs["spike_bits"] = 2
    from spikeport.sim.ops import KERNELS

    with pytest.raises(BadInput, match="node 'n' \\(if\\): kind 'lava' has binary spikes only"):
        KERNELS["if"](node, "float", (1,))


def test_spike_bits_out_of_range_is_a_format_error(graded):
    snn, _ = graded["digits_mlp"]
    bad = next(n for n in snn.nodes if n.op == "if")
    old = bad.attrs["spike_bits"]
    try:
        for value in (0, 17, 2.0):
            bad.attrs["spike_bits"] = value
            with pytest.raises(FormatError, match="attribute 'spike_bits'"):
                check_artifact(snn)
    finally:
        bad.attrs["spike_bits"] = old


@pytest.mark.parametrize("target", ["spinnaker2", "nir", "lava"])
def test_targets_with_binary_spikes_refuse_graded_neurons_by_name(graded, target, tmp_path):
    """quantize --target and emit (of a graph quantized for sim) both refuse, naming the node,
    its spike bits and that the target carries only binary spikes."""
    snn, q = graded["digits_mlp"]
    first = next(n.name for n in snn.nodes if n.op == "if")
    want = f"node '{first}' \\(if\\): spike_bits 3: target '{target}' carries only binary spikes"
    with pytest.raises(CapabilityExceeded, match=want):
        quantize(snn, np.load(CALIB)["x"], get_profile(target))
    with pytest.raises(CapabilityExceeded, match=want) as err:
        emit(q, target, tmp_path / "never")
    assert "\n" not in str(err.value) and not (tmp_path / "never").exists()


def test_a_layer_override_sets_one_neuron_and_the_cli_refuses_bad_values(cases, tmp_path):
    case = cases["digits_mlp"]
    names = [n.name for n in case.snn.nodes if n.op == "if"]
    snn = convert(case.onnx, CALIB, spike_bits=4, layer_spike_bits={names[1]: 1})
    bits = {n.name: n.attrs.get("spike_bits", 1) for n in snn.nodes if n.op == "if"}
    assert bits == {names[0]: 4, names[1]: 1}
    with pytest.raises(BadInput, match="no neuron named 'nope'"):
        convert(case.onnx, CALIB, spike_bits=2, layer_spike_bits={"nope": 2})
    base = ["convert", str(case.onnx), "--calib", str(CALIB), "-o", str(tmp_path / "x.spk")]
    for extra in (["--spike-bits", "0"], ["--spike-bits", "17"], ["--spike-bits-layer", "a=b"]):
        res = CliRunner().invoke(main, base + extra)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, extra
    assert not (tmp_path / "x.spk").exists()


def test_cli_convert_spike_bits_2_end_to_end(tmp_path):
    """convert --spike-bits 2 -> quantize -> eval -> inspect -> emit/verify C on digits_cnn."""
    cnn, run = EXAMPLES / "digits_cnn.onnx", CliRunner()
    spk, q, rep = tmp_path / "g.spk", tmp_path / "gq.spk", tmp_path / "r.json"

    def ok(*args):
        res = run.invoke(main, [str(a) for a in args])
        assert res.exit_code == 0, res.output
        return res.output

    said = ok("convert", cnn, "--calib", CALIB, "--spike-bits", 2, "-o", spk)
    assert "2-bit graded spikes" in said
    assert all(n.attrs.get("spike_bits") == 2 for n in load(spk).nodes if n.op == "if")
    ok("quantize", spk, "--calib", CALIB, "--target", "sim", "--max-T", 8, "-o", q)
    out = ok("eval", q, "--data", TEST, "-T", "1,2,4", "--onnx", cnn, "--json", rep)
    assert "bits / event" in out and "spike levels / inference" in out
    records = json.loads(rep.read_text())["records"]
    assert records[-1]["accuracy"] > 0.97  # measured 99.07 % at T = 4 (binary: 98.33 %)
    for r in records:
        assert r["spike_levels_per_inference"] > r["spikes_per_inference"]
        assert r["bits_per_event"] == 2.0  # unsigned 2-bit neurons
    rows = [ln for ln in ok("inspect", q).splitlines() if " if " in ln]
    assert rows and all(re.search(r"\s2\s+threshold float32", r) for r in rows)
    save(load(q), tmp_path / "again.spk")  # the attribute survives a save / load round trip
    ok("emit", q, "--target", "c", "-o", tmp_path / "c")
    assert "bit-exact" in ok("verify", q, tmp_path / "c", "--data", TEST, "-n", 64)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_the_torch_module_spikes_like_the_float_simulator(graded, name):
    """Fine-tuning's module (float64) emits the float simulator's counts at every step."""
    import torch

    from spikeport.finetune import SpikingNet

    snn, _ = graded[name]
    x = np.load(TEST)["x"][:64]
    ref = Simulator(snn, "float").run(x, 4, record=True)
    with torch.no_grad():
        run = SpikingNet(snn).double().run(torch.from_numpy(x).double(), 4, record=True)
    for n in (n for n in snn.nodes if n.op == "if"):
        theta = n.params["threshold"].astype(np.float64)
        want = np.rint(ref.trace[n.output] / theta)
        assert np.array_equal(want, np.rint(run.trace[n.output].numpy() / theta)), n.name
        assert want.max() > 1
    np.testing.assert_allclose(run.outputs.numpy(), ref.outputs[snn.outputs[0]], atol=1e-9)


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_fast_backend_equals_reference_on_graded_neurons(cases, graded, name):
    """The fast simulator's graded neurons (running sums and per-step) equal the reference's,
    bit for bit, on every tensor at every step; signed ones too."""
    from test_sim_fast import assert_same_run

    snn, q = graded[name]
    x = cases[name].test_x[:24]
    runs = [Simulator(q, "int", b).run(x, 8, record=True) for b in ("reference", "fast")]
    assert_same_run(*runs)
    signed = copy.deepcopy(snn)
    for n in signed.nodes:
        if n.op == "if":
            n.attrs["signed"] = True
    qs = quantize(signed, np.load(CALIB)["x"], get_profile("sim"), max_timesteps=8)
    runs = [Simulator(qs, "int", b).run(x, 8, record=True) for b in ("reference", "fast")]
    assert_same_run(*runs)
