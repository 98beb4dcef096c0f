"""Lava target: the neuron kind "lava" in the simulator and in fine-tuning, the netx HDF5
layout, refusals before anything is written, and bit-exactness of the emitted network run in
Lava's own fixed-point CPU model (lava-nc 0.10.0 in .venv-lava, `make lava-venv`).

Without .venv-lava the Lava runs are skipped locally and FAIL under CI=true: a CI that cannot
run Lava must not report this target as verified.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import h5py
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import EXAMPLES, cli_emit_verify, lava_with_a_changed_weight, unsigned_snn

from spikeport.cli.main import main
from spikeport.convert import convert
from spikeport.errors import CapabilityExceeded, CheckFailed
from spikeport.finetune import SpikingNet
from spikeport.ir import load, save
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator
from spikeport.sim.kinds import LAVA, LAVA_V_LIMIT, kind_of, set_kind
from spikeport.sim.ops import IFNeuron, LavaIFNeuron
from spikeport.targets import emit, verify
from spikeport.targets import lava as lava_target
from spikeport.targets.compare import random_inputs
from spikeport.targets.lava import LavaUnavailable, check_batch
from spikeport.targets.lava import capabilities as cap
from spikeport.targets.lava.hdf5 import NETX_FIELDS, NEURON_FIELDS
from spikeport.targets.lava.reference import reference

DIGITS = ["digits_cnn", "digits_mlp"]
MAX_T = 8
RANDOM_INPUTS = 50  # per model, every step of a T = 8 run (see the bit-exact test)


def lava_graph(case) -> Graph:
    """The LIF kind ("lava"): quantize --target lava may pick the sigma-delta kind instead
    (tests/test_target_lava_sdn.py), so these tests ask for the LIF kind's own profile."""
    calib = np.load(case.calib)["x"]
    return quantize(unsigned_snn(case), calib, lava_target.LIF_PROFILE, max_timesteps=MAX_T)


@pytest.fixture(scope="module")
def emitted(cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("lava")
    out = {}
    for name in DIGITS:
        g = lava_graph(cases[name])
        emit(g, "lava", root / name)
        out[name] = (cases[name], g, root / name)
    return out


# --- the neuron kind, in the simulator -----------------------------------------------------


def test_lava_neuron_resets_to_zero_fires_strictly_and_delivers_a_step_late():
    n = LavaIFNeuron(np.array([10]), integer=True, shape=(1,))
    n.reset(1)  # v0 = 5
    outs, fired, vs = [], [], []
    for cur in (5, 1, 7, -3, 20):
        outs.append(int(n(np.array([[cur]]))[0, 0]))
        fired.append(int(n.fired[0, 0]))
        vs.append(int(n.v[0, 0]))
    # v: 10 (not > 10), 11 -> fire, 0+7, 4, 24 -> fire
    assert fired == [0, 1, 0, 0, 1] and vs == [10, 0, 7, 4, 0]
    assert outs == [0, 0, 1, 0, 0]  # what the next Dense delivers: last step's spikes


def test_lava_neuron_saturates_like_lavas_24_bit_v():
    n = LavaIFNeuron(np.array([LAVA_V_LIMIT]), integer=True, shape=(1,))
    n.reset(1)
    for _ in range(3):
        n(np.array([[-LAVA_V_LIMIT]]))
    assert int(n.v[0, 0]) == -LAVA_V_LIMIT


def test_default_kind_is_untouched(cases):
    """Graphs without the attribute run the subtractive IF, as before kinds existed."""
    g = cases["digits_cnn"].int
    assert all(kind_of(n) == "subtract" for n in g.nodes)
    kinds = {type(k) for _, k in Simulator(g, "int").kernels}
    assert IFNeuron in kinds and LavaIFNeuron not in kinds
    assert set_kind(g, "subtract").nodes[0].attrs == g.nodes[0].attrs


def test_quantize_for_lava_gives_the_kind_one_threshold_a_layer_and_16_bit_inputs(cases):
    for name in DIGITS:
        g = lava_graph(cases[name])
        neurons = [n for n in g.nodes if n.op in ("if", "maxpool2d")]
        assert neurons and all(kind_of(n) == LAVA for n in neurons)
        for n in g.nodes:
            if n.op == "if":
                assert len(np.unique(n.params["threshold_q"])) == 1, n.name
        net = lava_target.plan.prepare(g)  # raises if any a_in could leave 16 bits
        assert net.layers[-1].role == "output"


@pytest.mark.parametrize("name", DIGITS)
def test_finetune_module_runs_the_lava_kind_like_the_float_simulator(cases, name):
    snn = set_kind(unsigned_snn(cases[name]), LAVA)
    x, T = cases[name].test_x[:48], 8
    ref = Simulator(snn, "float").run(x, T, record=True)
    with torch.no_grad():
        run = SpikingNet(snn).double().run(torch.from_numpy(x).double(), T, record=True)
    for n in snn.nodes:
        if n.op in ("if", "maxpool2d"):
            want, got = np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].numpy())
            assert np.array_equal(want, got), n.name
    np.testing.assert_allclose(run.outputs.numpy(), ref.outputs[snn.outputs[0]], atol=1e-9)


# --- emit: files and the netx layout ---------------------------------------------------------


def test_both_digits_examples_emit_for_lava(emitted):
    for _, _, outdir in emitted.values():
        for f in ("network.h5", "run_lava.py", "README.md", "spikeport-target.json"):
            assert (outdir / f).is_file(), f


def _netx_str(ds) -> str:
    """How netx's NetDict reads a string key (utils.py: value[0] or value[()], ascii)."""
    value = ds[0] if len(ds.shape) > 0 else ds[()]
    return value.decode("ascii")


@pytest.mark.parametrize("name", DIGITS)
def test_hdf5_has_the_fields_netx_reads(emitted, name):
    """lava-dl netx hdf5.py (lava-nc/lava-dl d825ac5): Network._create walks /layer/0..n-1 by
    `type`; create_input reads shape and neuron; create_dense reads shape, weight (2-D, or
    reshaped to (prod(shape), -1)), bias (as bias_mant, bias_exp 6) and neuron; a CUBA neuron
    becomes LIF(vth=vThMant, du=iDecay - 1, dv=vDecay). Weights and biases are read with
    .astype(int) and must be integers already."""
    _, g, outdir = emitted[name]
    net = lava_target.plan.prepare(g)
    with h5py.File(outdir / "network.h5", "r") as f:
        layers = f["layer"]
        assert sorted(layers, key=int) == [str(i) for i in range(len(layers))]
        prev = None
        for i in range(len(layers)):
            la = layers[str(i)]
            kind = _netx_str(la["type"])
            assert kind == ("input" if i == 0 else "dense")
            assert set(NETX_FIELDS[kind]) <= set(la)
            size = int(np.prod(la["shape"][()]))
            assert size == net.layers[i].size
            if kind == "dense":
                w = la["weight"][()]
                assert np.issubdtype(w.dtype, np.integer) and w.shape == (size, prev)
                assert np.abs(w).max() <= 127 and la["bias"][()].shape == (size,)
                assert np.abs(la["bias"][()]).max(initial=0) < 1 << (cap.BIAS_BITS - 1)
            nrn = la["neuron"]
            assert set(NEURON_FIELDS) <= set(nrn) and _netx_str(nrn["type"]) == "CUBA"
            assert int(nrn["iDecay"][()]) - 1 == cap.DU and int(nrn["vDecay"][()]) == cap.DV
            assert 0 <= int(nrn["vThMant"][()]) <= cap.VTH_MAX
            prev = size
        assert f["spikeport/input_weight"].shape == (net.layers[0].size, g.input.shape[-1] ** 2)


# --- refusals, before anything is written ------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [("residual", "op 'add' is not supported"), ("concat_pool", "op 'concat' is not supported")],
)
def test_unsupported_ops_are_refused_by_name_at_quantize(cases, name, why):
    with pytest.raises(CapabilityExceeded, match=why):
        lava_graph(cases[name])


def test_signed_neurons_are_refused(cases):
    with pytest.raises(CapabilityExceeded, match="has no signed spikes; convert with --unsigned"):
        quantize(
            cases["wide_mlp"].snn,
            np.load(cases["wide_mlp"].calib)["x"],
            get_profile("lava"),
            max_timesteps=MAX_T,
        )


def test_bipolar_neurons_are_refused_without_blaming_signed(tmp_path):
    """A bipolar neuron is conversion's (a Gemm straight into a Gemm), not --signed's: the
    refusal says so and points to a target that runs it, not to an option the user never gave."""
    from fixture_models import bipolar_mlp

    model, x = bipolar_mlp()
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=x)
    snn = convert(tmp_path / "m.onnx", tmp_path / "c.npz", tune=False)
    with pytest.raises(CapabilityExceeded, match="no signed spikes; it is bipolar") as refused:
        quantize(snn, x, get_profile("lava"), max_timesteps=MAX_T)
    assert "--signed" not in str(refused.value) and "--target c" in str(refused.value)


def test_transformer_ops_are_refused_by_name(vit):
    with pytest.raises(
        CapabilityExceeded,
        match=r"node '.+': op '\w+' is not supported by "
        "target 'lava'",
    ):
        quantize(vit, np.load(EXAMPLES / "digits_calib.npz")["x"], get_profile("lava"), 8)


@pytest.fixture(scope="module")
def vit():
    return convert(
        EXAMPLES / "digits_vit.onnx", EXAMPLES / "digits_calib.npz", signed=False, tune=False
    )


def test_subtractive_network_is_not_emitted_as_lava_nor_lava_as_c(cases, emitted, tmp_path):
    with pytest.raises(
        CapabilityExceeded,
        match="neuron kind 'subtract' does not run on target 'lava', which runs 'lava' or 'sdn'",
    ):
        emit(cases["digits_mlp"].int, "lava", tmp_path / "a")
    _, g, _ = emitted["digits_mlp"]
    with pytest.raises(CapabilityExceeded, match="neuron kind 'lava' does not run on target 'c'"):
        emit(g, "c", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_maxpool_on_the_input_is_refused_naming_the_node(cases, tmp_path):
    g = lava_graph(cases["digits_cnn"])
    pool = next(n for n in g.nodes if n.op == "maxpool2d")
    first = next(n for n in g.nodes if n.op == "conv2d")
    moved = Node("pool_in", "maxpool2d", [g.input.name], "pooled", dict(pool.attrs))
    g.nodes.insert(0, moved)
    first.inputs = ["pooled"]
    g.tensors["pooled"] = TensorInfo("pooled", (1, 4, 4))
    with pytest.raises(CapabilityExceeded, match="node 'pool_in'"):
        lava_target.plan.prepare(g)


def test_cli_refusal_is_one_line_exit_2_and_writes_nothing(cases, tmp_path):
    spk = tmp_path / "sim.spk"
    save(cases["digits_cnn"].int, spk)
    res = CliRunner().invoke(
        main, ["emit", str(spk), "--target", "lava", "-o", str(tmp_path / "out")]
    )
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "does not run on target 'lava'" in res.stderr and not (tmp_path / "out").exists()


def test_verify_without_lavas_runtime_exits_2(emitted, tmp_path, monkeypatch):
    _, g, outdir = emitted["digits_mlp"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(lava_target, "REPO", tmp_path)
    spk = tmp_path / "m.spk"
    save(g, spk)
    res = CliRunner().invoke(
        main,
        ["verify", str(spk), str(outdir), "--data", str(EXAMPLES / "digits_test.npz"), "-n", "2"],
    )
    assert res.exit_code == 2 and "Lava's runtime is not installed" in res.stderr


def test_broken_runtime_is_not_a_pass(emitted, tmp_path, monkeypatch):
    _, g, outdir = emitted["digits_mlp"]
    fake = tmp_path / ".venv-lava" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 'No module named lava' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LavaUnavailable, match="No module named lava"):
        verify(g, outdir, cases_x(), T=2)
    assert LavaUnavailable.exit_code == 2  # the CLI exits 2: Lava could not run


def cases_x() -> np.ndarray:
    return np.load(EXAMPLES / "digits_test.npz")["x"][:2]


# --- Lava's fixed-point run equals the simulator, bit for bit --------------------------------


@pytest.mark.parametrize("name", DIGITS)
def test_lava_fixed_pt_is_bit_exact_for_T_1_to_8(lava_env, emitted, name):
    """50 random int8 inputs per model (every code the range proof covers): every layer's
    spikes and the output accumulator at every step of a T = 8 run, which covers every T from
    1 to 8 (run_lava.py runs each input T steps from the start state, so step t of a T = 8
    run is step t of a T = t run: the sigma-delta test's argument); and a T = 1 run of its
    own, for the script's handling of T. (One run per T took 154 s of CI's 19 min.)"""
    _, g, outdir = emitted[name]
    x = random_inputs(g, RANDOM_INPUTS, seed=len(name))
    start = time.time()
    for T in (1, MAX_T):
        check_batch(g, outdir, x, T)
    print(f"{name}: {RANDOM_INPUTS} inputs x T=1, 8 in Lava: {time.time() - start:.1f} s")


def test_verify_on_test_images_through_the_registry(lava_env, emitted):
    case, g, outdir = emitted["digits_cnn"]
    res = verify(g, outdir, case.test_x[:20], T=MAX_T)
    assert res["samples"] == 20 and "fixed_pt" in res["runner"]
    _, spikes, _ = reference(g, case.test_x[:20], MAX_T)
    assert all(s.sum() > 0 for s in spikes.values())  # the comparison is not of silence


def test_a_changed_weight_is_caught(lava_env, emitted, tmp_path):
    case, g, outdir = emitted["digits_cnn"]
    bad = lava_with_a_changed_weight(outdir, tmp_path / "bad", layer=2)
    with pytest.raises(CheckFailed, match="Lava \\(fixed_pt\\) differs"):
        verify(g, bad, case.test_x[:8], T=MAX_T)


def test_cli_emit_and_verify(lava_env, cases, tmp_path):
    graph = lava_graph(cases["digits_mlp"])
    _, verify_out = cli_emit_verify(graph, "lava", tmp_path, EXAMPLES / "digits_test.npz", 8, T=4)
    assert "bit-exact: lava target" in verify_out


def test_cli_finetune_for_lava_trains_the_lava_kind(cases, tmp_path):
    spk, out = tmp_path / "mlp.spk", tmp_path / "mlp_ft.spk"
    save(unsigned_snn(cases["digits_mlp"]), spk)
    args = [
        "finetune",
        str(spk),
        "--data",
        str(EXAMPLES / "digits_train.npz"),
        "-T",
        "4",
        "--epochs",
        "1",
        "--target",
        "lava",
        "-o",
        str(out),
        "--quiet",
    ]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    g = load(out)
    assert all(kind_of(n) == LAVA for n in g.nodes if n.op == "if")
    q = quantize(g, np.load(EXAMPLES / "digits_calib.npz")["x"], get_profile("lava"), MAX_T)
    assert q.meta["quantization"]["neuron_kind"] == LAVA
    res = CliRunner().invoke(main, ["inspect", str(out)])
    assert "if (lava)" in res.output


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_lavas_runtime_starts_on_one_core_and_the_caller_gets_its_cores_back():
    """Lava's processes wait on one another busily: run_lava starts them on the caller's core
    (lava_target._on_one_core) and the caller's own affinity is as before after."""
    before = os.sched_getaffinity(0)
    with lava_target._on_one_core():
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(len(os.sched_getaffinity(0)))"],
            capture_output=True,
            text=True,
            check=True,
        )
    assert child.stdout.strip() == "1"
    assert os.sched_getaffinity(0) == before


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_lava_runs_unpinned_where_the_affinity_cannot_be_set(monkeypatch):
    """A sandbox that forbids sched_setaffinity costs Lava its speed, not its run."""

    def forbidden(pid: int, cpus: set[int]) -> None:
        raise PermissionError(1, "Operation not permitted")

    before = os.sched_getaffinity(0)
    monkeypatch.setattr(os, "sched_setaffinity", forbidden)
    ran = []
    with lava_target._on_one_core():
        ran.append(True)
    assert ran == [True] and os.sched_getaffinity(0) == before
