"""NIR target: model.nir read back with nir.read and run in snnTorch (a real NIR consumer) gives
the float simulator's spikes at every step of every IF layer; what NIR cannot hold is refused by
name before anything is written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from conftest import cli_emit_verify, unsigned_snn
from fixture_models import _Builder, concat_maxpool

from spikeport.convert import convert
from spikeport.errors import CapabilityExceeded, CheckFailed
from spikeport.ir.ops import OPS
from spikeport.quantize import get_profile, quantize
from spikeport.sim import kernels as K
from spikeport.targets import emit, verify

nir = pytest.importorskip("nir")
pytest.importorskip("snntorch")
pytest.importorskip("nirtorch")

from spikeport.targets.nir import check_batch  # noqa: E402
from spikeport.targets.nir.snntorch_run import SnnTorchRun, _module_name  # noqa: E402

# wide_mlp converted without --signed; the max pools of digits_cnn (spikes) and concat_pool
# (an average pool of spikes) become comparator IF nodes
MAPPED = ["concat_pool", "digits_cnn", "digits_mlp", "residual", "wide_mlp"]
INPUTS = 100


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """snnTorch steps tensors of a few thousand neurons: a second thread only adds sync cost,
    and on a busy 2-core machine it made each neuron call ~40x slower (53 vs 1.3 ms)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def nir_graph(case):
    return quantize(unsigned_snn(case), np.load(case.calib)["x"], get_profile("nir"))


@pytest.fixture(scope="module")
def emitted(cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("nir")
    out = {}
    for name in MAPPED:
        g = nir_graph(cases[name])
        emit(g, "nir", root / name)
        out[name] = (cases[name], g, root / name)
    return out


def _drive(run, n: int, steps: int, draw) -> None:
    """Step the imported network `steps` times on a fresh input `draw()` each step, handing
    its returned state back (how a consumer must run the recurrent comparator edges)."""
    run.reset(n)
    state = None
    with run.torch.no_grad():
        for _ in range(steps):
            _, state = run.module(run.torch.tensor(draw(), dtype=run.dtype), state)


def random_x(case, n: int, seed: int) -> np.ndarray:
    """Inputs spread over the range of the model's own data."""
    lo, hi = float(case.test_x.min()), float(case.test_x.max())
    return np.random.default_rng(seed).uniform(lo, hi, (n,) + case.test_x.shape[1:])


@pytest.mark.parametrize("name", MAPPED)
def test_snntorch_round_trip_equals_the_float_simulator(emitted, name):
    """100 random inputs (and the model's own test inputs), T = 8: spikes of every IF layer
    equal, outputs equal to float rounding."""
    case, g, outdir = emitted[name]
    assert verify(g, outdir, random_x(case, INPUTS, len(name)), T=8)["samples"] == INPUTS
    assert verify(g, outdir, case.test_x, T=8)["samples"] == len(case.test_x)


def test_file_holds_nir_nodes_and_our_semantics_in_metadata(emitted):
    graph = nir.read(str(emitted["residual"][2] / "model.nir"))
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Conv2d", "IF", "AvgPool2d", "Flatten", "Affine", "Output"} <= kinds
    for node in graph.nodes.values():
        if isinstance(node, nir.IF):
            assert (node.r == 1).all() and (node.v_threshold == 1).all()
            assert (node.v_reset == 0).all()
            assert node.metadata["reset"] == "subtract"
            assert node.metadata["v_initial"] == "0.5 * v_threshold"
    assert graph.metadata["spikeport"]["spike_condition"] == "v >= v_threshold"
    readme = (emitted["residual"][2] / "README.md").read_text()
    assert "initial potential" in readme and "set beta to 1" in readme


def test_snntorch_defaults_run_another_network(emitted):
    """Why the fixes matter: snnTorch's own IF import (leaky, beta 0.9) gives other spikes."""
    case, g, outdir = emitted["digits_mlp"]
    run = SnnTorchRun(outdir / "model.nir")
    for mod, _ in run.neurons.values():
        mod.beta = run.torch.tensor(0.9, dtype=run.dtype)
    with pytest.raises(CheckFailed, match="snnTorch \\(NIR\\) differs from the simulator"):
        check_batch(g, run, case.test_x[:64], 8)


def _skip_concat(tmp_path):
    b = _Builder(6)
    a = b.op("Relu", [b.gemm(b.op("Flatten", ["x"], axis=1), 16, 12)])
    h = b.op("Relu", [b.gemm(a, 12, 10)])
    out = b.gemm(b.op("Concat", [a, h], axis=1), 22, 3)
    onnx.save(b.model((16,), out, 3), tmp_path / "m.onnx")
    x = b.rng.uniform(0, 1, (48, 16)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    return convert(tmp_path / "m.onnx", tmp_path / "c.npz", signed=False), x


def test_concat_maps_by_embedding(tmp_path):
    snn, x = _skip_concat(tmp_path)
    g = quantize(snn, x, get_profile("nir"))
    emit(g, "nir", tmp_path / "o")
    xs = np.random.default_rng(2).uniform(0, 1, (INPUTS, 16))
    assert verify(g, tmp_path / "o", xs, T=8)["samples"] == INPUTS


def test_depthwise_convolution_maps_as_a_full_kernel(tmp_path):
    """A grouped (depthwise) convolution: nir types its input by the kernel's second axis
    (one channel), so it goes out as the full kernel, zero between groups; the round trip
    equals the simulator (it raised nir's type-inference ValueError, exit 3)."""
    b = _Builder(7)
    h = b.op("Relu", [b.conv("x", 2, 6, 3, 1)])
    w = b.rng.normal(0, 0.5, (6, 1, 3, 3)).astype(np.float32)
    d = b.op("Conv", [h, b.const(w), b.const(np.zeros(6, np.float32))], pads=[1] * 4,
             kernel_shape=[3, 3], group=6)  # fmt: skip
    g = b.op("GlobalAveragePool", [b.op("Relu", [d])])
    out = b.gemm(b.op("Flatten", [g], axis=1), 6, 3)
    _round_trip(b, out, (2, 6, 6), tmp_path, seed=3, T=8)


def _round_trip(b: _Builder, out: str, shape: tuple[int, ...], tmp_path, seed: int, T: int):
    """Convert b's model (3 outputs) on its own calibration draw, quantize for NIR, emit, and
    verify it in snnTorch on INPUTS random inputs."""
    onnx.save(b.model(shape, out, 3), tmp_path / "m.onnx")
    x = b.rng.uniform(0, 1, (48, *shape)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    snn = convert(tmp_path / "m.onnx", tmp_path / "c.npz", signed=False)
    g = quantize(snn, x, get_profile("nir"))
    emit(g, "nir", tmp_path / "o")
    xs = np.random.default_rng(seed).uniform(0, 1, (INPUTS, *shape))
    assert verify(g, tmp_path / "o", xs, T=T)["samples"] == INPUTS


def _refused(graph, tmp_path, match):
    out = tmp_path / "never"
    with pytest.raises(CapabilityExceeded, match=match):
        emit(graph, "nir", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_max_pooling_becomes_comparator_if_nodes_with_recurrent_edges(emitted):
    graph = nir.read(str(emitted["digits_cnn"][2] / "model.nir"))
    levels = ["node_max_pool2d.max1", "node_max_pool2d.max2"]
    for name in levels:
        node = graph.nodes[name]
        assert isinstance(node, nir.IF) and (node.v_threshold == 1).all()
        assert node.metadata["reset"] == "subtract" and "T <= 64" in node.metadata["role"]
        assert (f"{name}.rec", name) in graph.edges and (name, f"{name}.rec") in graph.edges
    assert not any(isinstance(n, nir.Delay) for n in graph.nodes.values())
    assert "recurrent" in (emitted["digits_cnn"][2] / "README.md").read_text()


def test_comparators_give_the_max_of_arbitrary_spike_trains_in_snntorch(emitted):
    """Drive the imported network with a new random input at every step, so the pooled layer
    sees irregular trains; the comparators' output must be the expectation-compensated max
    of the spikes snnTorch itself recorded, at every step up to T = 64."""
    _, g, outdir = emitted["digits_cnn"]
    run = SnnTorchRun(outdir / "model.nir")
    seen = {"relu": [], "pool": []}
    hooks = [
        run.neurons["node_relu"][0].register_forward_hook(
            lambda m, i, o: seen["relu"].append(o.numpy().copy())
        ),
        run.module.node_max_pool2d_out.register_forward_hook(
            lambda m, i, o: seen["pool"].append(o.numpy().copy())
        ),
    ]
    rng = np.random.default_rng(5)
    n, steps = 64, 64
    _drive(
        run, n, steps, lambda: rng.uniform(0, 16, (n, 1, 8, 8)) * rng.uniform(0, 1, (n, 1, 1, 1))
    )
    for h in hooks:
        h.remove()
    counts = np.cumsum(np.stack(seen["relu"]), axis=0).reshape(steps * n, 16, 8, 8)
    geo = ([2, 2], [2, 2], [0, 0, 0, 0])
    best = K.window_max(counts, *geo)
    cells = K.windows(counts, *geo)
    counts_max = best.reshape(steps, n, 16, 4, 4)
    expect = np.diff(counts_max, axis=0, prepend=0)
    assert np.array_equal(np.stack(seen["pool"]), expect)
    leaders = (cells == best[..., None, None]).sum((-1, -2))
    assert (leaders > 1).mean() > 0.05 and (expect == 0).mean() > 0.2  # ties and silences occur


def test_graded_comparators_give_the_max_of_arbitrary_counts_in_snntorch(emitted):
    """concat_pool max-pools an average pool of spikes (0..9 spikes per cell and step). Driven
    by a new random input at every step, the pooled output of the imported network must be
    the expectation-compensated max of the counts snnTorch itself computed, every step."""
    _, g, outdir = emitted["concat_pool"]
    run = SnnTorchRun(outdir / "model.nir")
    pooled = [n for n in run.graph.nodes if n.startswith("maxpool_7.") and ".out_" in n]
    seen: dict[str, list] = {name: [] for name in ["averagepool_6", *pooled]}
    hooks = [
        getattr(run.module, _module_name(name)).register_forward_hook(
            lambda m, i, o, name=name: seen[name].append(o.numpy().copy())
        )
        for name in seen
    ]
    rng = np.random.default_rng(6)
    n, steps = 32, 40
    _drive(
        run, n, steps, lambda: rng.uniform(0, 1, (n, 2, 8, 8)) * rng.uniform(0, 1.5, (n, 1, 1, 1))
    )
    for h in hooks:
        h.remove()
    # the first comparator neuron, [a >= 1], reads cell 0 with weight = count per NIR value
    per = [
        run.graph.nodes[f"maxpool_7.c{c}.max1.from_averagepool_6"].weight[0, c, 0, 0]
        for c in range(10)
    ]
    avg = np.stack(seen["averagepool_6"]) * np.array(per)[:, None, None]
    counts = np.rint(avg)  # (steps, n, 10, 8, 8): spikes in each 3x3 window, 0..9
    assert np.abs(counts - avg).max() < 1e-9 and counts.max() == 9
    best = K.window_max(np.cumsum(counts, 0).reshape(-1, 10, 8, 8), [2, 2], [2, 2], [0] * 4)
    expect = np.diff(best.reshape(steps, n, 10, 4, 4), axis=0, prepend=0)
    got = sum(np.stack(seen[name]) for name in pooled)  # the pooled counts, summed edges
    assert np.array_equal(np.rint(got), expect) and np.abs(got - expect).max() < 1e-9
    assert (expect > 1).mean() > 0.05  # graded increments do occur


def test_max_pooling_over_a_concat_of_spikes_maps(tmp_path):
    onnx.save(concat_maxpool()[0], tmp_path / "m.onnx")
    x = concat_maxpool()[1]
    np.savez(tmp_path / "c.npz", x=x)
    snn = convert(tmp_path / "m.onnx", tmp_path / "c.npz", signed=False)
    g = quantize(snn, x, get_profile("nir"))
    emit(g, "nir", tmp_path / "o")
    xs = np.random.default_rng(7).uniform(0, 1, (INPUTS, 2, 8, 8))
    assert verify(g, tmp_path / "o", xs, T=12)["samples"] == INPUTS


@pytest.mark.parametrize("concat", [False, True])
def test_a_max_pool_of_a_max_pool_maps_as_one_over_the_union_of_windows(tmp_path, concat):
    """GoogLeNet's pooled branch after a strided pool, on one IF layer's spikes or on a
    concat of two (counts); the strided pool also feeds a convolution of its own."""
    b = _Builder(10)
    a = b.op("Relu", [b.conv("x", 2, 3, 3, 1)])
    if concat:
        a = b.op("Concat", [a, b.op("Relu", [b.conv("x", 2, 2, 1, 0)])], axis=1)
    c = 5 if concat else 3
    p = b.op("MaxPool", [a], kernel_shape=[2, 2], strides=[2, 2])
    q = b.op("MaxPool", [p], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    side = b.op("Relu", [b.conv(p, c, 2, 1, 0)])
    both = b.op("Concat", [b.op("Relu", [b.conv(q, c, 2, 1, 0)]), side], axis=1)
    out = b.gemm(b.op("Flatten", [both], axis=1), 4 * 16, 3)
    _round_trip(b, out, (2, 8, 8), tmp_path, seed=11, T=12)


def test_max_pooling_of_currents_is_refused_by_name(tmp_path):
    """A MaxPool right after a Conv pools currents, which no IF comparator can read."""
    b = _Builder(9)
    m = b.op("MaxPool", [b.conv("x", 2, 4, 3, 1)], kernel_shape=[2, 2], strides=[2, 2])
    out = b.gemm(b.op("Flatten", [b.op("Relu", [m])], axis=1), 4 * 16, 3)
    onnx.save(b.model((2, 8, 8), out, 3), tmp_path / "m.onnx")
    x = b.rng.uniform(0, 1, (48, 2, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    snn = convert(tmp_path / "m.onnx", tmp_path / "c.npz", signed=False)
    with pytest.raises(
        CapabilityExceeded,
        match="node 'maxpool_2' \\(maxpool2d\\): its input is the output of 'conv_1' "
        "\\(conv2d\\), not spikes of IF layers nor an average pool of them",
    ):
        quantize(snn, x, get_profile("nir"))


def test_signed_spikes_and_transformer_ops_are_refused(cases, tmp_path, monkeypatch):
    _refused(cases["wide_mlp"].int, tmp_path, "node 'relu_3': target 'nir' has no signed spikes")
    g = nir_graph(cases["digits_mlp"])
    monkeypatch.setitem(OPS, "softmax", dataclasses.replace(OPS["reshape"], name="softmax"))
    g.nodes[0].op = "softmax"
    _refused(g, tmp_path, "node 'node_Reshape_7': op 'softmax' is not supported by target 'nir'")


def test_emit_says_what_nir_cannot_hold(emitted, tmp_path):
    case, g, _ = emitted["digits_mlp"]
    emit_out, verify_out = cli_emit_verify(g, "nir", tmp_path, case.calib, 16)
    assert "initial potential" in emit_out and "reset" in emit_out
    manifest = json.loads((tmp_path / "o" / "spikeport-target.json").read_text())
    assert manifest["target"] == "nir"
    assert "snnTorch" in verify_out
