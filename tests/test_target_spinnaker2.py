"""SpiNNaker2 target: network JSON + py-spinnaker2 script, bit-exact with the integer simulator
on spikeport's model of the chip's `lif` neuron (not the hardware), and refusals that name the
layer and the limit before anything is written.

py-spinnaker2 is not installable here: the emitted script runs against a stand-in `spinnaker2`
package written by this test, which checks every API call it receives and simulates the
network it was given (from those calls, not from the JSON) with the chip model.
"""

from __future__ import annotations

import dataclasses
import json
import runpy
import sys
import textwrap
from collections import Counter

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import cli_emit_verify, unsigned_snn
from fixture_models import _Builder, concat_maxpool

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.errors import CapabilityExceeded, CheckFailed
from spikeport.ir import save
from spikeport.ir.ops import OPS
from spikeport.quantize import Profile, get_profile, quantize
from spikeport.targets import emit, verify
from spikeport.targets.compare import random_inputs, reference
from spikeport.targets.spinnaker2 import capabilities as cap
from spikeport.targets.spinnaker2 import check_batch
from spikeport.targets.spinnaker2.chip import ChipModel

# wide_mlp converted without --signed; residual's add is folded into synapses (fold_add);
# concat_pool max-pools an average pool of spikes (graded comparators, maxpool_graded.py)
MAPPED = ["concat_pool", "digits_cnn", "digits_mlp", "residual", "wide_mlp"]
RANDOM_INPUTS = 200
MAX_T = 15  # max pooling is exact for T <= 15 on the chip


def _calib(case) -> np.ndarray:
    return np.load(case.calib)["x"]


def s2_graph(case, profile: str = "spinnaker2"):
    return quantize(unsigned_snn(case), _calib(case), get_profile(profile), max_timesteps=MAX_T)


@pytest.fixture(scope="module")
def emitted(cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("s2")
    out = {}
    for name in MAPPED:
        g = s2_graph(cases[name])
        emit(g, "spinnaker2", root / name)
        out[name] = (cases[name], g, root / name)
    return out


@pytest.mark.parametrize("name", MAPPED)
def test_chip_model_is_bit_exact_for_T_1_to_8(emitted, name):
    """200 random int8 inputs per model, each T in 1..8: every layer's spikes and the output
    accumulators equal the integer simulator's at every step."""
    _, g, outdir = emitted[name]
    net = json.loads((outdir / "network.json").read_text())
    model = ChipModel(net)
    x = random_inputs(g, RANDOM_INPUTS, seed=len(name))
    for T in range(1, 9):
        check_batch(g, net, model, x, T)


def test_verify_on_test_data_through_the_registry(emitted):
    case, g, outdir = emitted["digits_cnn"]
    res = verify(g, outdir, case.test_x, T=8)
    assert res["samples"] == len(case.test_x) and "not the hardware" in res["runner"]


def test_profile_keeps_weights_and_state_inside_the_chip(emitted):
    for _, g, outdir in emitted.values():
        assert all(
            np.abs(n.params["weight_q"]).max() <= 15 for n in g.nodes if "weight_q" in n.params
        )
        net = json.loads((outdir / "network.json").read_text())
        for p in net["populations"]:
            for key in ("threshold", "i_offset", "v_init"):
                assert np.abs(p["params"][key]).max(initial=0) <= cap.FLOAT_EXACT
            assert (
                p["params"]["alpha_decay"] == 1.0 and p["params"]["reset"] == "reset_by_subtraction"
            )
        for proj in net["projections"]:
            c = np.asarray(proj["connections"])
            post = next(p for p in net["populations"] if p["name"] == proj["post"])
            model = cap.NEURON_MODELS[post["neuron_model"]]
            assert np.abs(c[:, 2]).max() <= model.weight_limit
            assert 0 <= c[:, 3].min() and c[:, 3].max() <= model.max_delay


def test_max_pooling_runs_as_comparator_populations(emitted):
    net = json.loads((emitted["digits_cnn"][2] / "network.json").read_text())
    roles = [p["role"] for p in net["populations"]]
    assert roles.count("comparator") == 4 and roles.count("maxpool") == 1
    readme = (emitted["digits_cnn"][2] / "README.md").read_text()
    assert "not on the hardware" in readme and "Max pooling" in readme


@pytest.mark.parametrize("compare", [">", ">="])
def test_either_spike_compare_is_bridged_exactly(cases, tmp_path, monkeypatch, compare):
    monkeypatch.setattr(cap, "COMPARE", compare)
    g = s2_graph(cases["digits_mlp"])
    emit(g, "spinnaker2", tmp_path / "o")
    net = json.loads((tmp_path / "o" / "network.json").read_text())
    assert net["assumptions"]["compare"] == compare
    check_batch(g, net, ChipModel(net), random_inputs(g, 64, 1), 8)


def test_corrupted_weight_is_caught(emitted, tmp_path):
    case, g, outdir = emitted["digits_mlp"]
    net = json.loads((outdir / "network.json").read_text())
    net["projections"][0]["connections"][0][2] += 1
    with pytest.raises(CheckFailed, match="SpiNNaker2 model differs from the simulator at step"):
        check_batch(g, net, ChipModel(net), case.test_x[:100], 8)


# --- the emitted script against a stand-in of py-spinnaker2 ------------------------------------

STANDIN_SNN = '''
"""Stand-in of py-spinnaker2's snn module: the documented API only, every argument checked."""
LIF_PARAMS = {"threshold", "alpha_decay", "i_offset", "v_init", "v_reset", "reset"}
WEIGHT_LIMIT = {"lif": 15, "lif_no_delay": 127}
MAX_DELAY = {"lif": 7, "lif_no_delay": 0}
CALLS = []


def _per_neuron(value, size, key):
    values = value if isinstance(value, list) else [value] * size
    assert len(values) == size, key
    assert all(isinstance(v, float) and v == int(v) for v in values), key
    return values


class Population:
    def __init__(self, size, neuron_model, params, name, record=None):
        assert isinstance(size, int) and size > 0
        assert neuron_model in WEIGHT_LIMIT, neuron_model
        assert set(params) == LIF_PARAMS, sorted(params)
        assert params["reset"] in ("reset_by_subtraction", "reset_to_v_reset")
        for key in ("threshold", "i_offset", "v_init"):
            _per_neuron(params[key], size, key)
        assert set(record or []) <= {"spikes", "v"}
        self.size, self.neuron_model, self.params = size, neuron_model, params
        self.name, self.record = name, list(record or [])
        self.atoms = None
        self.spikes, self.voltages = {}, {}
        CALLS.append(("Population", name))

    def set_max_atoms_per_core(self, n):
        assert isinstance(n, int) and n > 0
        self.atoms = n

    def get_spikes(self):
        assert "spikes" in self.record
        return self.spikes

    def get_voltages(self):
        assert "v" in self.record
        return self.voltages


class Projection:
    def __init__(self, pre, post, connections):
        assert isinstance(pre, Population) and isinstance(post, Population)
        for i, j, w, d in connections:
            assert 0 <= i < pre.size and 0 <= j < post.size
            assert abs(w) <= WEIGHT_LIMIT[post.neuron_model], (post.name, w)
            assert 0 <= d <= MAX_DELAY[post.neuron_model], (post.name, d)
        self.pre, self.post, self.connections = pre, post, connections
        CALLS.append(("Projection", pre.name, post.name))


class Network:
    def __init__(self, name=""):
        self.name, self.populations, self.projections = name, [], []

    def add(self, *objects):
        for o in objects:
            assert isinstance(o, (Population, Projection)), type(o)
            (self.populations if isinstance(o, Population) else self.projections).append(o)
'''

STANDIN_HARDWARE = '''
"""Stand-in of py-spinnaker2's hardware module: simulates the network it is given with
spikeport's chip model, built from the Population/Projection objects (not from the JSON)."""
import numpy as np

from spinnaker2 import snn
from spikeport.targets.spinnaker2.chip import ChipModel

RUNS = []


class SpiNNaker2Chip:
    def __init__(self, eth_ip):
        assert isinstance(eth_ip, str) and eth_ip
        self.eth_ip = eth_ip

    def run(self, net, timesteps):
        assert isinstance(net, snn.Network) and timesteps > 0
        doc = {
            "populations": [
                {"name": p.name, "size": p.size, "record": p.record, "params": p.params,
                 "input_current": None}
                for p in net.populations
            ],
            "projections": [
                {"pre": q.pre.name, "post": q.post.name, "connections": q.connections}
                for q in net.projections
            ],
        }
        run = ChipModel(doc).run(np.zeros((1, 1), np.int64), timesteps)
        for p in net.populations:
            if "spikes" in p.record:
                s = run.spikes[p.name][:, 0]
                p.spikes = {i: [int(t) for t in np.flatnonzero(s[:, i])] for i in range(p.size)}
            if "v" in p.record:
                p.voltages = {i: run.v[p.name][:, 0, i].astype(np.float64) for i in range(p.size)}
        RUNS.append((self.eth_ip, timesteps))
'''


@pytest.fixture
def standin(tmp_path, monkeypatch):
    pkg = tmp_path / "standin" / "spinnaker2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "snn.py").write_text(textwrap.dedent(STANDIN_SNN))
    (pkg / "hardware.py").write_text(textwrap.dedent(STANDIN_HARDWARE))
    monkeypatch.syspath_prepend(str(tmp_path / "standin"))
    for mod in [m for m in sys.modules if m == "spinnaker2" or m.startswith("spinnaker2.")]:
        monkeypatch.delitem(sys.modules, mod)
    yield
    for mod in [m for m in sys.modules if m == "spinnaker2" or m.startswith("spinnaker2.")]:
        del sys.modules[mod]


def _run_script(outdir, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["run_spinnaker2.py", *argv])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(outdir / "run_spinnaker2.py"), run_name="__main__")
    assert done.value.code == 0


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_emitted_script_builds_and_runs_the_network(emitted, standin, tmp_path, monkeypatch, name):
    """The script's py-spinnaker2 calls, run by the stand-in, give the simulator's output
    accumulators and every layer's spikes, step for step."""
    _, g, outdir = emitted[name]
    x = random_inputs(g, 4, seed=7)
    codes, ref_spikes, ref_acc = reference(g, x, 6)
    np.savez(tmp_path / "codes.npz", x=codes.reshape(len(x), -1))
    res = tmp_path / "results.npz"
    argv = ["--eth-ip", "192.168.1.25", "--codes", str(tmp_path / "codes.npz"), "-T", "6"]
    _run_script(outdir, [*argv, "--record-spikes", "--out", str(res)], monkeypatch)
    got = np.load(res)
    assert np.array_equal(got["acc"], ref_acc.transpose(1, 0, 2))
    assert np.array_equal(got["pred"], ref_acc[-1].argmax(-1))
    for node, spikes in ref_spikes.items():
        assert np.array_equal(got[f"spikes/{node}"], spikes.transpose(1, 0, 2))
    hardware = sys.modules["spinnaker2.hardware"]
    net = json.loads((outdir / "network.json").read_text())
    assert hardware.RUNS == [("192.168.1.25", 6 + net["steps_ahead"])] * len(x)


def test_emitted_script_encodes_float_inputs_like_spikeport(
    emitted, standin, tmp_path, monkeypatch
):
    case, g, outdir = emitted["digits_mlp"]
    np.savez(tmp_path / "test.npz", x=case.test_x[:3])
    argv = ["--eth-ip", "10.0.0.2", "--data", str(tmp_path / "test.npz"), "-T", "4"]
    _run_script(outdir, [*argv, "--out", str(tmp_path / "r.npz")], monkeypatch)
    _, _, ref_acc = reference(g, case.test_x[:3], 4)
    assert np.array_equal(np.load(tmp_path / "r.npz")["acc"], ref_acc.transpose(1, 0, 2))


# --- refusals: before anything is written, naming the layer and the limit ---------------------


def _refused(graph, tmp_path, match):
    out = tmp_path / "never"
    with pytest.raises(CapabilityExceeded, match=match):
        emit(graph, "spinnaker2", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _onnx_case(tmp_path, builder):
    model, x = builder()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=x)
    return convert(tmp_path / "m.onnx", tmp_path / "c.npz", signed=False), x


def _skip_concat():
    """Two hidden layers at different depths joined by a Concat: the output layer needs a delay."""
    b = _Builder(6)
    a = b.op("Relu", [b.gemm(b.op("Flatten", ["x"], axis=1), 16, 12)])
    h = b.op("Relu", [b.gemm(a, 12, 10)])
    out = b.gemm(b.op("Concat", [a, h], axis=1), 22, 3)
    return b.model((16,), out, 3), b.rng.uniform(0, 1, (48, 16)).astype(np.float32)


def _wide(hidden: bool):
    """A layer on the chip with fan-in 2,000 (the first layer runs on the host and may be
    wider): the output, or with `hidden` a neuron layer in front of it."""
    b = _Builder(5)
    h = b.op("Relu", [b.gemm(b.op("Flatten", ["x"], axis=1), 16, 2000)])
    if hidden:
        h = b.op("Relu", [b.gemm(h, 2000, 4)])
    out = b.gemm(h, 4 if hidden else 2000, 3)
    return b.model((16,), out, 3), b.rng.uniform(0, 1, (48, 16)).astype(np.float32)


def test_branches_of_different_depth_get_delays_and_stay_exact(tmp_path):
    snn, x = _onnx_case(tmp_path, _skip_concat)
    g = quantize(snn, x, get_profile("spinnaker2"), max_timesteps=MAX_T)
    emit(g, "spinnaker2", tmp_path / "o")
    net = json.loads((tmp_path / "o" / "network.json").read_text())
    out = next(p for p in net["populations"] if p["role"] == "output")
    assert out["neuron_model"] == "lif" and out["depth"] == 2
    check_batch(g, net, ChipModel(net), random_inputs(g, RANDOM_INPUTS, 3), 8)


def test_weights_beyond_the_neuron_model_are_refused(tmp_path):
    """8-bit weights fit `lif_no_delay` but not `lif`, which a delayed layer needs."""
    work = tmp_path / "work"
    work.mkdir()
    snn, x = _onnx_case(work, _skip_concat)
    g = quantize(snn, x, get_profile("spinnaker2-8bit"), max_timesteps=MAX_T)
    out = tmp_path / "never"
    with pytest.raises(
        CapabilityExceeded,
        match="node 'gemm_7' \\(synapses\\): synapse weights "
        "into 'output' reach \\d+, beyond the \\[-15, 15\\] of neuron model 'lif'",
    ):
        emit(g, "spinnaker2-8bit", out)
    assert not out.exists()
    ops = get_profile("spinnaker2").ops  # its ops: no classifier multipliers (uniform_inputs)
    wide = quantize(snn, x, Profile("w12", weight_bits=12, state_bits=32, ops=ops), max_timesteps=8)
    with pytest.raises(
        CapabilityExceeded,
        match="node 'gemm_4' \\(synapses\\): synapse weights "
        "into 'relu_5' reach \\d+, beyond the \\[-127, 127\\] of neuron model "
        "'lif_no_delay'",
    ):
        emit(wide, "spinnaker2", out)
    assert not out.exists()


def test_an_output_wider_than_a_neuron_is_spread_over_partial_accumulators(
    tmp_path, standin, monkeypatch
):
    """2,000 synapses a neuron into the output: two accumulators of at most MAX_FANIN each,
    the bias in the first; the chip model and the emitted script add them up, bit for bit."""
    snn, x = _onnx_case(tmp_path, lambda: _wide(hidden=False))
    g = quantize(snn, x, get_profile("spinnaker2"), max_timesteps=MAX_T)
    emit(g, "spinnaker2", tmp_path / "o")
    net = json.loads((tmp_path / "o" / "network.json").read_text())
    assert net["output"]["parts"] == ["output", "output.part1"]
    pops = {p["name"]: p for p in net["populations"]}
    fanin = Counter(
        (q["post"], c[1]) for q in net["projections"] for c in q["connections"] if q["post"] in pops
    )
    assert max(n for (post, _), n in fanin.items() if post.startswith("output")) == cap.MAX_FANIN
    widest = Counter()
    for (post, i), n in fanin.items():
        widest[i] += n if post.startswith("output") else 0
    assert max(widest.values()) > cap.MAX_FANIN  # (weights that round to 0 have no synapse)
    assert not any(pops["output.part1"]["params"]["i_offset"])
    check_batch(g, net, ChipModel(net), random_inputs(g, RANDOM_INPUTS, 3), 8)
    x3 = random_inputs(g, 3, seed=5)
    codes, _, ref_acc = reference(g, x3, 6)
    np.savez(tmp_path / "codes.npz", x=codes.reshape(len(x3), -1))
    argv = ["--eth-ip", "10.0.0.3", "--codes", str(tmp_path / "codes.npz"), "-T", "6"]
    _run_script(tmp_path / "o", [*argv, "--out", str(tmp_path / "r.npz")], monkeypatch)
    assert np.array_equal(np.load(tmp_path / "r.npz")["acc"], ref_acc.transpose(1, 0, 2))


def test_fan_in_beyond_the_chip_is_refused_at_quantize_and_emit(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    snn, x = _onnx_case(work, lambda: _wide(hidden=True))
    limit = cap.MAX_FANIN
    why = f"fan-in \\d+ synapses per neuron into 'relu_5' exceeds the SpiNNaker2 limit {limit}"
    with pytest.raises(CapabilityExceeded, match=f"node 'gemm_4' \\(synapses\\): {why}"):
        quantize(snn, x, get_profile("spinnaker2"), max_timesteps=8)
    # spinnaker2's ops: without `gather`, quantize keeps every layer whole (no outlier split)
    ops = get_profile("spinnaker2").ops
    p5 = Profile("p5", weight_bits=5, mult_bits=5, bias_bits=25, state_bits=25, ops=ops)
    g = quantize(snn, x, p5, max_timesteps=8)
    out = tmp_path / "emit"
    out.mkdir()
    _refused(g, out, f"node 'gemm_4' \\(synapses\\): {why}")


def test_unsupported_ops_are_refused_by_name(cases, tmp_path, monkeypatch):
    g = s2_graph(cases["digits_mlp"])
    odd = dataclasses.replace(OPS["reshape"], name="softmax")
    monkeypatch.setitem(OPS, "softmax", odd)
    g.nodes[0].op = "softmax"  # a transformer operator in place of the flatten
    _refused(
        g, tmp_path, "node 'node_Reshape_7': op 'softmax' is not supported by target 'spinnaker2'"
    )


def test_signed_spikes_are_refused_naming_the_node(cases):
    with pytest.raises(
        CapabilityExceeded, match="node 'relu_3': target 'spinnaker2' has no signed"
    ):
        quantize(cases["wide_mlp"].snn, _calib(cases["wide_mlp"]), get_profile("spinnaker2"))


def test_graded_max_pool_sends_each_pooled_unit_as_bits(emitted):
    """concat_pool pools counts of 0..9 spikes: the pooled unit leaves as 4 neurons worth 1, 2,
    4, 8, so the next layer reads 160 x 4 synapses (not 160 x 9, beyond the fan-in limit)."""
    _, _, outdir = emitted["concat_pool"]
    net = json.loads((outdir / "network.json").read_text())
    pops = {p["name"]: p for p in net["populations"]}
    assert pops["maxpool_7"]["size"] == 160 * 4 and pops["maxpool_7"]["role"] == "maxpool"
    (into,) = [p for p in net["projections"] if (p["pre"], p["post"]) == ("maxpool_7", "clip_11")]
    c = np.asarray(into["connections"])
    assert np.bincount(c[:, 1]).max() <= 640 and pops["clip_11"]["neuron_model"] == "lif_no_delay"
    comparators = [p for p in net["projections"] if p["post"].startswith("maxpool_7/")]
    assert all(np.abs(np.asarray(p["connections"])[:, 2]).max() == 1 for p in comparators)


def _pool_of_a_conv():
    """MaxPool over a conv of spikes: weighted sums, which no comparator reads."""
    b = _Builder(9)
    h = b.op("Relu", [b.conv("x", 2, 4, 3, 1)])
    m = b.op("MaxPool", [b.conv(h, 4, 4, 3, 1)], kernel_shape=[2, 2], strides=[2, 2])
    out = b.gemm(b.op("Flatten", [b.op("Relu", [m])], axis=1), 4 * 16, 3)
    return b.model((2, 8, 8), out, 3), b.rng.uniform(0, 1, (48, 2, 8, 8)).astype(np.float32)


def test_max_pooling_of_weighted_spikes_is_refused_naming_the_node(tmp_path):
    snn, x = _onnx_case(tmp_path, _pool_of_a_conv)
    with pytest.raises(
        CapabilityExceeded,
        match="node 'maxpool_4' \\(maxpool2d\\): its input is not spikes of neuron layers "
        "nor sums of them \\(it weights spikes: 'conv_3' \\(conv2d\\)",
    ):
        quantize(snn, x, get_profile("spinnaker2"), max_timesteps=MAX_T)


def test_residual_add_is_folded_into_synapse_weights(emitted):
    """The add's inputs are quantized jointly: conv weight x multiplier and the identity's
    multiplier are each synapse weights, shift 0, the scale left to the next threshold."""
    _, g, outdir = emitted["residual"]
    add = g.node("add_5")
    assert add.attrs["shift"] == 0
    assert np.all(add.params["mult_q"][0] == 1)  # the conv is quantized at the add's scale
    assert 1 <= add.params["mult_q"][1].min() and add.params["mult_q"][1].max() <= 15
    net = json.loads((outdir / "network.json").read_text())
    proj = [p for p in net["projections"] if p["post"] == "relu_6"]
    assert [p["pre"] for p in proj] == ["relu_3"]  # conv and identity: one projection
    assert np.abs(np.asarray(proj[0]["connections"])[:, 2]).max() <= 15


def _diagonal_residual():
    """A 1x1 conv with a large positive diagonal plus its own input: the identity and the
    conv's weight land on the same synapse and, at the finest scale, add up beyond 15."""
    b = _Builder(8)
    h = b.op("Relu", [b.conv("x", 2, 6, 3, 1)])
    w = (np.eye(6) * 2.0 + b.rng.normal(0, 0.1, (6, 6))).astype(np.float32)[:, :, None, None]
    c = b.op("Conv", [h, b.const(w), b.const(np.zeros(6, np.float32))], kernel_shape=[1, 1])
    r = b.op("Relu", [b.op("Add", [c, h])])
    out = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [r])], axis=1), 6, 3)
    return b.model((2, 6, 6), out, 3), b.rng.uniform(0, 1, (48, 2, 6, 6)).astype(np.float32)


def test_composed_residual_weights_are_coarsened_to_fit(tmp_path, monkeypatch):
    from spikeport.quantize import fold_add

    peaks = []
    composed = fold_add._composed_peak

    def spy(*args):
        peak = composed(*args)
        peaks.append(peak.max())
        return peak

    monkeypatch.setattr(fold_add, "_composed_peak", spy)
    snn, x = _onnx_case(tmp_path, _diagonal_residual)
    g = quantize(snn, x, get_profile("spinnaker2"), max_timesteps=MAX_T)
    assert peaks[0] > 15 and peaks[-1] <= 15  # the first, finest scale did not fit
    emit(g, "spinnaker2", tmp_path / "o")
    net = json.loads((tmp_path / "o" / "network.json").read_text())
    weights = np.concatenate([np.asarray(p["connections"])[:, 2] for p in net["projections"]])
    assert np.abs(weights).max() <= 15
    xs = random_inputs(g, RANDOM_INPUTS, 2)
    for T in range(1, 9):
        check_batch(g, net, ChipModel(net), xs, T)


def test_an_add_with_a_floor_shift_is_refused(cases, tmp_path):
    """An add quantized for another profile (or edited) may floor-shift, which no synapse does."""
    g = s2_graph(cases["residual"])
    g.node("add_5").attrs["shift"] = 2
    _refused(g, tmp_path, "node 'add_5' \\(add\\): its floor shift 2 has no synapse equivalent")


def test_max_pooling_over_a_concat_of_spikes_is_exact(tmp_path):
    snn, x = _onnx_case(tmp_path, concat_maxpool)
    g = quantize(snn, x, get_profile("spinnaker2"), max_timesteps=MAX_T)
    emit(g, "spinnaker2", tmp_path / "o")
    net = json.loads((tmp_path / "o" / "network.json").read_text())
    pre = {p["pre"] for p in net["projections"] if p["post"] == "maxpool_6/max1a"}
    assert {"relu_2", "relu_4"} <= pre  # both branches feed the comparators
    xs = random_inputs(g, RANDOM_INPUTS, 4)
    for T in range(1, 9):
        check_batch(g, net, ChipModel(net), xs, T)


def test_max_pooling_beyond_15_steps_is_refused(cases, tmp_path):
    case = cases["digits_cnn"]
    g = quantize(case.snn, _calib(case), get_profile("spinnaker2"), max_timesteps=16)
    _refused(
        g,
        tmp_path,
        "node 'node_max_pool2d' \\(maxpool2d\\): the max-pooling comparators "
        "are exact for T <= 15 only",
    )


def test_cli_says_the_model_is_not_the_hardware(emitted, tmp_path):
    case, g, _ = emitted["digits_mlp"]
    emit_out, verify_out = cli_emit_verify(g, "spinnaker2", tmp_path, case.calib, 16, T=4)
    assert "not against the hardware" in emit_out
    assert "not the hardware" in verify_out


# what an emitted folder keeps of the artifact itself: a copy, and its hash in the manifest
COPIES_OF_THE_ARTIFACT = {"model.spk", "spikeport-target.json"}


@pytest.mark.parametrize("target", ["c", "spinnaker2"])
def test_an_artifact_without_input_bits_emits_as_one_of_8_bits(cases, tmp_path, target):
    """The artifact's check leaves meta quantization.input_bits optional; every reader then
    takes the simulator's 8 bits (sim.arith.input_bits): emit writes the same files (but the
    artifact's copy and hash) as for a graph that records 8, where it raised a KeyError (exit
    3) before."""
    graph = s2_graph(cases["digits_mlp"], target)  # each target's own profile
    assert graph.meta["quantization"]["input_bits"] == 8
    trees = {}
    for name in ("recorded", "missing"):
        if name == "missing":
            del graph.meta["quantization"]["input_bits"]
        spk, out = tmp_path / f"{name}.spk", tmp_path / name
        save(graph, spk)
        res = CliRunner().invoke(main, ["emit", str(spk), "--target", target, "-o", str(out)])
        assert res.exit_code == 0, res.output
        trees[name] = {
            p.relative_to(out): p.read_bytes()
            for p in out.rglob("*")
            if p.is_file() and p.name not in COPIES_OF_THE_ARTIFACT
        }
    assert trees["recorded"] and trees["missing"] == trees["recorded"]
