"""Fine-tuning (spikeport.finetune): the torch module is the float simulator, training raises
accuracy at low T, the result goes on through quantize, bad data is refused, and the same
command runs under torchrun with two processes."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from conftest import EXAMPLES, per_index_products

from spikeport.cli.main import main
from spikeport.data import Dataset, load_data
from spikeport.errors import BadInput, UnsupportedOp
from spikeport.finetune import (
    LAYERS,
    Augment,
    Settings,
    SpikingNet,
    finetune,
    make_layer,
    teacher_logits,
    teacher_model,
)
from spikeport.finetune.distributed import pick_device
from spikeport.finetune.memory import MARGIN, PARAM_COPIES, training_bytes
from spikeport.finetune.surrogate import SURROGATES
from spikeport.finetune.train import _schedule, loss_fn, match_loss
from spikeport.ir import OPS, Node, load, save
from spikeport.ir.graph import Graph, TensorInfo
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator, simulate

TRAIN, CALIB, TEST = (EXAMPLES / f"digits_{k}.npz" for k in ("train", "calib", "test"))


def cli(*args: object) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def int_accuracy(graph, x: np.ndarray, y: np.ndarray, T: int) -> float:
    q = quantize(graph, np.load(CALIB)["x"], get_profile("sim"))
    out = simulate(q, x, T, "int").outputs[q.outputs[0]][-1]
    return float((out.argmax(-1) == y).mean())


def _train_subset(tmp_path: Path, n: int) -> Path:
    """The first n labelled training images, as their own file."""
    d = np.load(TRAIN)
    path = tmp_path / "small.npz"
    np.savez(path, x=d["x"][:n], y=d["y"][:n])
    return path


@pytest.fixture(scope="module")
def train_set() -> Dataset:
    return load_data(TRAIN, labels=True, n_classes=10)


@pytest.fixture(scope="module")
def cnn_spk(cases, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ft") / "cnn.spk"
    save(cases["digits_cnn"].snn, path)
    return path


# --- the module is the float simulator -------------------------------------------------------


def test_every_op_of_the_ir_has_a_torch_layer():
    assert set(OPS) <= set(LAYERS), f"no finetune layer for {sorted(set(OPS) - set(LAYERS))}"


@pytest.mark.parametrize(
    "name", ["digits_cnn", "digits_mlp", "residual", "concat_pool", "wide_mlp"]
)
def test_forward_gives_the_float_simulators_spikes(cases, name):
    """Before training, every neuron spikes at the same steps as in the float simulator, and
    the accumulated outputs agree (float64 in both; wide_mlp has signed neurons)."""
    case, T = cases[name], 6
    x = case.test_x[:64]
    ref = Simulator(case.snn, "float").run(x, T, record=True)
    net = SpikingNet(case.snn).double()
    with torch.no_grad():
        run = net.run(torch.from_numpy(x).double(), T, record=True)
    neurons = [n for n in case.snn.nodes if n.op == "if"]
    assert neurons
    for n in neurons:
        want, got = np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].numpy())
        assert np.array_equal(want, got), f"{name}: spikes of '{n.name}' differ"
    out = case.snn.outputs[0]
    np.testing.assert_allclose(run.outputs.numpy(), ref.outputs[out], rtol=1e-9, atol=1e-9)


def _op_examples() -> dict[str, tuple[Node, list[tuple[int, ...]]]]:
    """One node of every op (several for the neuron), with per-sample input shapes."""
    r = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return r.normal(0, 1, shape).astype(np.float32)

    def node(op: str, n_in: int = 1, attrs: dict | None = None, **params) -> Node:
        return Node(op, op, [f"x{i}" for i in range(n_in)], "y", attrs or {}, params)

    def neuron(**attrs) -> Node:
        return node("if", attrs={"signed": False, "cap": None, **attrs}, threshold=w(3, 1) ** 2)

    win = {"kernel": [2, 3], "strides": [2, 1], "pads": [1, 0, 0, 1]}
    conv = {"strides": [2, 1], "pads": [1, 0, 0, 1], "dilations": [1, 2], "group": 2}
    ex = {
        "dense": (node("dense", weight=w(3, 5), bias=w(3)), [(4, 5)]),
        "conv2d": (node("conv2d", attrs=conv, weight=w(4, 1, 3, 2), bias=w(4)), [(2, 6, 7)]),
        "conv_transpose2d": (
            node(
                "conv_transpose2d",
                attrs={**conv, "output_padding": [1, 0]},
                weight=w(2, 3, 3, 2),
                bias=w(6),
            ),
            [(2, 6, 7)],
        ),
        "avgpool2d": (node("avgpool2d", attrs=win), [(3, 5, 5)]),
        "maxpool2d": (node("maxpool2d", attrs=win), [(3, 5, 5)]),
        "add": (node("add", 3), [(3, 4)] * 3),
        "concat": (node("concat", 2, {"axis": -1}), [(2, 3), (2, 4)]),
        "reshape": (node("reshape", attrs={"shape": [6, 2]}), [(3, 4)]),
        "relu": (node("relu", attrs={"cap": 0.5}), [(3, 4)]),
        "if": (neuron(), [(3, 4)]),
        "if/signed": (neuron(signed=True), [(3, 4)]),
        "transpose": (node("transpose", attrs={"perm": [1, 0, 2]}), [(2, 3, 4)]),
        "take": (node("take", attrs={"axis": 0, "index": 1}), [(3, 4)]),
        "gather": (node("gather", attrs={"axis": 1, "indices": [3, 0, 3]}), [(3, 4)]),
        "scale": (node("scale", attrs={"factor": -0.5}), [(3, 4)]),
        "offset": (node("offset", value=w(1, 4)), [(3, 4)]),
        "reduce_mean": (node("reduce_mean", attrs={"axes": [1], "keepdims": 0}), [(3, 4)]),
        "layernorm": (node("layernorm", attrs={"epsilon": 1e-5}, gamma=w(4), beta=w(4)), [(3, 4)]),
        "softmax": (node("softmax"), [(3, 4)]),
        "gelu": (node("gelu"), [(3, 4)]),
        "matmul": (node("matmul", 2), [(2, 3, 4), (2, 4, 5)]),
        "tanh": (node("tanh"), [(3, 4)]),
        "masked_softmax": (node("masked_softmax", 2), [(2, 3, 4), (1, 4)]),
        "embed": (node("embed", table=w(6, 3)), [(1, 4)]),
        "slice": (
            node("slice", attrs={"axes": [1], "starts": [3], "ends": [0], "steps": [-2]}),
            [(2, 5)],
        ),
        "sigmoid": (node("sigmoid"), [(3, 4)]),
        "hardsigmoid": (node("hardsigmoid", attrs={"alpha": 0.3, "beta": 0.4}), [(3, 4)]),
        "hardswish": (node("hardswish"), [(3, 4)]),
        "silu": (node("silu"), [(3, 4)]),
        "prelu": (node("prelu", slope=w(3, 1)), [(3, 4)]),
        "mul": (node("mul", 2), [(2, 3, 4), (3, 1)]),
        "div": (node("div", 2), [(2, 3, 4), (3, 1)]),
        "l2norm": (node("l2norm"), [(3, 4)]),
        "channel_scale": (node("channel_scale", factor=w(3, 1)), [(3, 4)]),
        "pad": (node("pad", attrs={"pads": [0, 1, 2, 0]}), [(3, 4)]),
        "reduce_sum": (node("reduce_sum", attrs={"axes": [0], "keepdims": 1}), [(3, 4)]),
        "resize": (
            node("resize", attrs={"mode": "linear", "out_shape": [2, 5, 3]}),
            [(2, 3, 2)],
        ),
        "resize/nearest": (node("resize", attrs={"out_shape": [2, 6, 1]}), [(2, 3, 2)]),
        "masked_mean": (node("masked_mean", 2, attrs={"axis": 0, "keepdims": 0}), [(4, 3), (4,)]),
    }
    if "bipolar" in OPS["if"].attrs:
        ex["if/bipolar"] = (neuron(bipolar=True), [(3, 4)])
    if "spike_bits" in OPS["if"].attrs:  # graded: thresholds well below the currents
        ex["if/graded"] = (neuron(spike_bits=3), [(3, 4)])
        ex["if/graded_signed"] = (neuron(spike_bits=2, signed=True), [(3, 4)])
        ex["if/graded_bipolar"] = (neuron(spike_bits=4, bipolar=True), [(3, 4)])
    return {k: v for k, v in ex.items() if k.split("/")[0] in OPS}


# (op, input index) -> exclusive upper end of its integer values: token ids, 0/1 masks.
INTEGER_INPUTS = {("embed", 0): 6, ("masked_softmax", 1): 2, ("masked_mean", 1): 2}


def test_every_op_has_an_example_below():
    covered = {k.split("/")[0] for k in _op_examples()}
    assert set(OPS) <= covered, f"add {sorted(set(OPS) - covered)} to _op_examples"


@pytest.mark.parametrize("label", sorted(_op_examples()))
def test_each_layer_steps_like_its_simulator_kernel(label):
    """Op by op, 6 steps of random inputs: the torch layer (float64) gives the float-mode
    kernel's outputs; a neuron's spikes are identical."""
    from spikeport.ir.ops import infer_shape
    from spikeport.sim.ops import KERNELS

    node, in_shapes = _op_examples()[label]
    shape = infer_shape(node, in_shapes)
    ref = KERNELS[node.op](node, "float", shape)
    lay = make_layer(node, shape, SURROGATES["rectangle"]).double()
    ref.reset(5)
    lay.reset()
    r = np.random.default_rng(1)
    for _ in range(6):
        xs = [
            r.integers(0, INTEGER_INPUTS[(node.op, i)], (5, *s))
            if (node.op, i) in INTEGER_INPUTS
            else r.normal(0, 1, (5, *s))
            for i, s in enumerate(in_shapes)
        ]
        want = ref(*xs)
        with torch.no_grad():
            got = lay(*[torch.from_numpy(x) for x in xs]).numpy()
        if node.op == "if":
            assert np.array_equal(np.sign(want), np.sign(got)), label
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=label)


@pytest.fixture(scope="module")
def vit_snn():
    from spikeport.convert import convert

    return convert(EXAMPLES / "digits_vit.onnx", CALIB, tune=False)


@pytest.mark.parametrize("per_index", [False, True], ids=["one_threshold", "per_index"])
def test_a_transformer_graph_is_fine_tuned_the_same_way(vit_snn, train_set, per_index):
    """The digits ViT (layernorm, softmax attention, gelu, matmul of activations, bipolar
    neurons; `per_index`: the products' operands with one threshold per contracted index, as
    T-aware conversion gives them): same spikes as the float simulator, then one short epoch
    that quantizes."""
    vit_snn = per_index_products(copy.deepcopy(vit_snn)) if per_index else vit_snn
    x = np.load(CALIB)["x"][:16]
    ref = Simulator(vit_snn, "float").run(x, 4, record=True)
    net = SpikingNet(vit_snn).double()
    with torch.no_grad():
        run = net.run(torch.from_numpy(x).double(), 4, record=True)
    for n in (n for n in vit_snn.nodes if n.op == "if"):
        assert np.array_equal(np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].numpy()))
    np.testing.assert_allclose(run.outputs.numpy(), ref.outputs[vit_snn.outputs[0]], atol=1e-9)
    small = Dataset(train_set.path, train_set.x[:64], train_set.y[:64])
    out = finetune(vit_snn, small, Settings(T=2, epochs=1), quiet=True).graph
    q = quantize(out, np.load(CALIB)["x"], get_profile("sim"))
    assert simulate(q, x, 2, "int").outputs[q.outputs[0]].shape == (2, 16, 10)


def test_graded_neurons_step_and_learn_like_k_binary_steps():
    """A 2-bit neuron (theta 1, v0 0.5): counts clamp(floor(v), 0, 3); its surrogate gradient
    is the sum of three bumps, one a threshold apart, so v = 2.5 gets a gradient where a binary
    neuron (one bump around v = 1) gets none."""
    node = Node("n", "if", ["x"], "y", {"signed": False, "cap": None, "spike_bits": 2}, {})
    node.params["threshold"] = np.ones(1)
    lay = make_layer(node, (1,), SURROGATES["triangle"]).double()
    lay.reset()
    steps = [lay(torch.tensor([[c]], dtype=torch.float64)).item() for c in (0.2, 2.9, 9.0)]
    assert steps == [0.0, 3.0, 3.0]  # v: 0.7 -> 0 spikes; 3.6 -> 3, v 0.6; 9.6 -> 3 (clamped)
    lay.reset()
    x = torch.tensor([[2.2]], dtype=torch.float64, requires_grad=True)
    lay(x).sum().backward()  # v = 2.7: bumps at 2 and 3 are 0.3 away
    assert x.grad.item() == pytest.approx(1.0)


def test_signed_neurons_take_spikes_back_like_the_simulator():
    node = Node("n", "if", ["x"], "y", {"signed": True, "cap": None}, {"threshold": np.ones(1)})
    lay = make_layer(node, (1,), SURROGATES["rectangle"]).double()
    lay.reset()
    # v0 = 0.5 (theta 1): +1.25 -> 1.75 spike, v 0.75; -1.5 -> -0.75 < 0 with count 1: -1
    steps = [lay(torch.tensor([[c]], dtype=torch.float64)).item() for c in (1.25, -1.5, -1.5)]
    assert steps == [1.0, -1.0, 0.0]


@pytest.mark.parametrize("bipolar", [False, True])
def test_the_rate_coded_ann_is_the_neurons_count_of_a_constant_input(bipolar, monkeypatch):
    """benchmarks/rate_coded_ann.py's reference for T-step fine-tuning: its one-step neuron gives
    what the IF neuron counts in T steps of a constant current (the graph's neuron, times
    theta / T), for currents across and beyond the range, exact halves included."""
    monkeypatch.syspath_prepend(Path(__file__).parent.parent / "benchmarks")
    from rate_coded_ann import RateCodedIF

    attrs = {"signed": False, "cap": None, "bipolar": bipolar}
    node = Node("n", "if", ["x"], "y", attrs, {"threshold": np.full(1, 2.0)})
    current = torch.linspace(-5, 5, 81, dtype=torch.float64)[:, None]  # steps of 1/8
    for T in (1, 2, 4):
        neuron = make_layer(node, (1,), SURROGATES["triangle"]).double()
        neuron.reset()
        counted = sum(neuron(current) for _ in range(T)) / T
        coded = RateCodedIF(node, SURROGATES["triangle"], T).double()
        assert torch.equal(coded(current), counted), T
        assert (counted.min() < 0) == bipolar


def test_an_op_without_a_layer_is_refused_naming_the_node():
    node = Node("the_odd_one", "frobnicate", ["x"], "y")
    with pytest.raises(UnsupportedOp, match="'the_odd_one' \\(frobnicate\\)"):
        make_layer(node, (4,), SURROGATES["rectangle"])


def test_only_a_converted_float_graph_is_fine_tuned(cases):
    with pytest.raises(BadInput, match="stage 'snn'.*'int'"):
        SpikingNet(cases["digits_mlp"].int)


def test_gradients_reach_weights_biases_and_thresholds(cases):
    net = SpikingNet(cases["residual"].snn)
    x = torch.from_numpy(cases["residual"].test_x[:8])
    loss_fn(net(x, 3), torch.zeros(8, dtype=torch.long), "every_step").backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_the_every_step_loss_at_T_1_is_plain_cross_entropy():
    out, y = torch.randn(1, 5, 3), torch.tensor([0, 1, 2, 0, 1])
    want = torch.nn.functional.cross_entropy(out[0], y)
    assert torch.allclose(loss_fn(out, y, "every_step"), want)


def test_distillation_is_zero_where_the_student_matches_its_teacher():
    """The distillation term is the KL divergence of the running means from the teacher's soft
    labels: zero where every step's mean is the teacher's logits, positive otherwise; with
    weight 1 the labels do not count."""
    teacher, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 0, 1])
    steps = torch.arange(1, 4, dtype=torch.float32).reshape(3, 1, 1)
    matched = teacher[None] * steps  # running sums whose mean is the teacher at every step
    assert float(loss_fn(matched, y, "every_step", teacher, 1.0)) < 1e-6
    assert float(loss_fn(matched.flip(-1), y, "every_step", teacher, 1.0)) > 0.01
    half = loss_fn(matched, y, "every_step", teacher, 0.5)
    assert torch.allclose(half, 0.5 * loss_fn(matched, y, "every_step"), atol=1e-6)


def test_thresholds_stay_positive():
    node = Node("n", "if", ["x"], "y", {"signed": False, "cap": None}, {"threshold": np.ones(3)})
    lay = make_layer(node, (3,), SURROGATES["rectangle"])
    with torch.no_grad():
        lay.threshold.fill_(-5.0)
    lay.constrain()
    assert (lay.threshold > 0).all()


# --- training ------------------------------------------------------------------------------


def test_fine_tuning_raises_integer_accuracy_at_T2(train_set):
    """Seeded: 3 epochs at T = 2 on the training split lift the quantized digits CNN's
    held-out accuracy at T = 2 from the percentile conversion's (95.2 % before)."""
    from spikeport.convert import convert

    snn = convert(EXAMPLES / "digits_cnn.onnx", CALIB, tune=False)
    test = load_data(TEST, labels=True, n_classes=10)
    before = int_accuracy(snn, test.x, test.y, 2)
    res = finetune(snn, train_set, Settings(T=2, epochs=3, seed=0), quiet=True)
    after = int_accuracy(res.graph, test.x, test.y, 2)
    assert after > before + 0.01, (before, after)
    assert [h["epoch"] for h in res.history] == [1, 2, 3]


def test_output_keeps_the_graph_and_records_the_training(cases, train_set):
    snn = cases["digits_mlp"].snn
    small = Dataset(train_set.path, train_set.x[:96], train_set.y[:96])
    val = load_data(CALIB, labels=True, n_classes=10)
    out = finetune(snn, small, Settings(T=2, epochs=1, seed=3), val=val, quiet=True).graph
    assert out.stage == "snn"
    assert [(n.name, n.op, n.inputs) for n in out.nodes] == [
        (n.name, n.op, n.inputs) for n in snn.nodes
    ]
    for new, old in zip(out.nodes, snn.nodes, strict=True):
        assert set(new.params) == set(old.params)
        for k, v in new.params.items():
            assert v.shape == old.params[k].shape and v.dtype == np.float32
    meta = out.meta["finetune"]
    assert meta["T"] == 2 and meta["epochs"] == 1 and meta["seed"] == 3 and meta["lr"] > 0
    assert meta["data"]["file"] == TRAIN.name and len(meta["data"]["sha256"]) == 64
    assert meta["val"]["file"] == CALIB.name and 0 <= meta["val"]["accuracy"] <= 1
    assert "BPTT" in meta["method"]


def test_same_seed_same_result(cases, train_set):
    small = Dataset(train_set.path, train_set.x[:64], train_set.y[:64])
    runs = [
        finetune(cases["digits_mlp"].snn, small, Settings(T=2, epochs=1, seed=5), quiet=True)
        for _ in range(2)
    ]
    for a, b in zip(runs[0].graph.nodes, runs[1].graph.nodes, strict=True):
        for k in a.params:
            assert np.array_equal(a.params[k], b.params[k]), (a.name, k)


def test_off_a_terminal_each_epoch_says_one_line_and_quiet_says_nothing(cases, train_set, capsys):
    small = Dataset(train_set.path, train_set.x[:64], train_set.y[:64])
    finetune(cases["digits_mlp"].snn, small, Settings(T=2, epochs=2), quiet=False)
    lines = capsys.readouterr().err.splitlines()  # captured: not a terminal, so no bar
    assert [line.split(", loss ")[0] for line in lines] == [
        "finetune T=2: epoch 1/2",
        "finetune T=2: epoch 2/2",
    ]
    finetune(cases["digits_mlp"].snn, small, Settings(T=2, epochs=1), quiet=True)
    assert capsys.readouterr().err == ""


# --- command line ----------------------------------------------------------------------------


def test_cli_fine_tunes_and_the_result_goes_on_through_quantize_and_eval(cnn_spk, tmp_path):
    small = _train_subset(tmp_path, 128)
    out = tmp_path / "ft.spk"
    code, stdout, _ = cli(
        "finetune", cnn_spk, "--data", small, "-T", "2", "--epochs", "1", "--val", CALIB,
        "-o", out,
    )  # fmt: skip
    assert code == 0 and "fine-tuned at T=2" in stdout and out.is_file()
    assert load(out).meta["finetune"]["data"]["file"] == "small.npz"
    q = tmp_path / "q.spk"
    assert cli("quantize", out, "--calib", CALIB, "-o", q, "-q")[0] == 0
    code, stdout, _ = cli("eval", q, "--data", TEST, "-T", "1,2", "--json", tmp_path / "r.json")
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text())["records"][1]["accuracy"] > 0.9


def _bad_files(tmp_path: Path) -> list[tuple[str, Path, str]]:
    d = np.load(TRAIN)
    x, y = d["x"][:32].copy(), d["y"][:32].copy()
    out = []
    y_bad = y.copy()
    y_bad[3] = 10
    x_nan = x.copy()
    x_nan[0, 0, 0, 0] = np.nan
    for name, arrays, key in (
        ("label", {"x": x, "y": y_bad}, "'y'"),
        ("shape", {"x": x[:, :, :4], "y": y}, "'x'"),
        ("nan", {"x": x_nan, "y": y}, "'x'"),
        ("nolabels", {"x": x}, "'y'"),
    ):
        p = tmp_path / f"bad_{name}.npz"
        np.savez(p, **arrays)
        out.append((name, p, key))
    return out


@pytest.mark.parametrize("flag", ["--data", "--val"])
def test_bad_training_data_is_refused_with_one_line_and_no_output(cnn_spk, tmp_path, flag):
    for name, bad, key in _bad_files(tmp_path):
        out = tmp_path / "never.spk"
        files = (
            ["--data", bad, "--val", CALIB] if flag == "--data" else ["--data", TRAIN, "--val", bad]
        )
        code, _, err = cli("finetune", cnn_spk, *files, "-T", "2", "--epochs", "1", "-o", out)
        lines = err.strip().splitlines()
        assert code == 2, (name, err)
        assert len(lines) == 1 and lines[0].startswith("error:"), (name, err)
        assert bad.name in lines[0] and key in lines[0], (name, err)
        assert not out.exists() and not list(tmp_path.glob(".never*")), name


def test_cli_distils_the_source_model_and_records_it(cnn_spk, tmp_path):
    small = _train_subset(tmp_path, 64)
    out = tmp_path / "kd.spk"
    src = EXAMPLES / "digits_cnn.onnx"
    code, stdout, err = cli(
        "finetune", cnn_spk, "--data", small, "-T", "2", "--epochs", "1", "--teacher", src,
        "-o", out,
    )  # fmt: skip
    assert code == 0, err
    meta = load(out).meta["finetune"]
    assert meta["distill"] == 1.0 and meta["temperature"] == 4.0
    assert meta["teacher"] == "digits_cnn.onnx"


def test_bad_settings_are_refused(cnn_spk, tmp_path):
    for args, what in (
        (("-T", "0"), "-T"),
        (("--lr", "-1"), "--lr"),
        (("--epochs", "-2"), "--epochs"),
        (("--warmup", "1"), "--warmup"),
        (("--shift", "-1"), "--shift"),
        (("--shift", "8"), "out of its frame"),  # the digits are 8x8
        (("--mixup", "-0.2"), "--mixup"),
        (("--distill", "0.5"), "--teacher"),  # a weight without a teacher
        (("--distill", "2", "--teacher", EXAMPLES / "digits_cnn.onnx"), "--distill"),
        (("--teacher", EXAMPLES / "digits_mlp.onnx"), "not the model"),  # sha256 differs
        (("--teacher", EXAMPLES / "missing.onnx"), "missing.onnx"),
    ):
        code, _, err = cli("finetune", cnn_spk, "--data", TRAIN, *args, "-o", tmp_path / "x.spk")
        assert code == 2 and what in err and not (tmp_path / "x.spk").exists()


def test_augmentation_moves_each_image_by_its_own_offset_and_mirrors_some():
    """Every augmented image is its original translated by at most `shift` pixels per axis
    (zeros moved in), mirrored or not; the draws differ between images and follow the seed."""
    x = torch.arange(1, 4 * 2 * 5 * 6 + 1, dtype=torch.float32).reshape(4, 2, 5, 6)
    x = x.repeat(16, 1, 1, 1)  # 64 images, so that every offset and flip is likely drawn
    aug = Augment(shift=1, hflip=True)
    out = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    seen = set()
    for i in range(len(x)):
        found = [
            (dy, dx, flip)
            for dy in range(3)
            for dx in range(3)
            for flip in (False, True)
            if torch.equal(
                out[i],
                (lambda m: m.flip(-1) if flip else m)(padded[i, :, dy : dy + 5, dx : dx + 6]),
            )
        ]
        assert found, i
        seen.update(found)
    assert len(seen) >= 12  # most of the 18 draws occur among 64 images
    assert torch.equal(Augment()(x, torch.Generator()), x)  # no augmentation: unchanged


def test_augmentation_is_refused_where_there_is_no_image(cases):
    features = Graph([TensorInfo("x", (16,))], [], ["x"])  # a feature vector, token ids alike
    with pytest.raises(BadInput, match="one image input"):
        Augment(shift=1).check(features)
    Augment(shift=1, hflip=True).check(cases["digits_mlp"].snn)  # an MLP on (1, 8, 8) images


def _recording_teacher(cases, train_set):
    """The digits CNN, 64 training images, its source model, and a teacher that records every
    batch it is asked on (in the list returned last)."""
    snn = cases["digits_cnn"].snn
    small = Dataset(train_set.path, train_set.x[:64], train_set.y[:64])
    source = teacher_model(snn, cases["digits_cnn"].onnx)
    asked: list[np.ndarray] = []

    def teacher(x):
        asked.append(x)
        return source(x)

    return snn, small, source, teacher, asked


def test_an_augmented_fine_tune_asks_the_teacher_for_the_augmented_images(cases, train_set):
    """Distillation with --shift scores the network against the source model's outputs on the
    images it sees (moved), not on the originals; fixed outputs are refused there."""
    snn, small, source, teacher, asked = _recording_teacher(cases, train_set)
    settings = Settings(T=2, epochs=2, batch_size=32, shift=1, distill=1.0)
    res = finetune(snn, small, settings, quiet=True, teacher=teacher)
    assert len(asked) == 4 and all(a.shape == (32, 1, 8, 8) for a in asked)
    originals = {small.x[i].tobytes() for i in range(len(small))}
    moved = sum(a[i].tobytes() not in originals for a in asked for i in range(len(a)))
    assert moved > 64, moved  # 8 in 9 draws move an image
    meta = res.graph.meta["finetune"]
    assert meta["shift"] == 1 and meta["hflip"] is False
    with pytest.raises(BadInput, match="augmented images"):
        finetune(snn, small, settings, quiet=True, teacher=source(small.x))


def test_mixup_blends_each_sample_with_a_partner_and_every_input_alike():
    """x' = lam x + (1 - lam) x[perm] per sample, lam in [0, 1] from Beta(alpha, alpha), the
    same lam and partner for every input of a dict; the draws follow the generator."""
    x = torch.randn(64, 1, 8, 8)
    aug = Augment(mixup=0.2)
    out, lam, perm = aug.mix(x, torch.Generator().manual_seed(0))
    again, lam2, perm2 = aug.mix(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again) and torch.equal(lam, lam2) and torch.equal(perm, perm2)
    assert sorted(perm.tolist()) == list(range(64)) and ((lam >= 0) & (lam <= 1)).all()
    w = lam.float().reshape(-1, 1, 1, 1)
    torch.testing.assert_close(out, w * x + (1 - w) * x[perm])
    # Beta(0.2, 0.2) puts most weight near 0 and 1, yet blends some samples by a fair share
    assert ((lam > 0.1) & (lam < 0.9)).any() and ((lam < 0.1) | (lam > 0.9)).sum() > 32
    pair = {"a": x, "b": 2 * x}
    blended, lam3, perm3 = aug.mix(pair, torch.Generator().manual_seed(0))
    torch.testing.assert_close(blended["b"], 2 * blended["a"])
    assert torch.equal(lam3, lam) and torch.equal(perm3, perm)
    assert Augment(mixup=0.2) and not Augment(mixup=0.2).moves
    assert torch.equal(Augment(mixup=0.2)(x, torch.Generator()), x)  # __call__ only moves


def test_mixup_is_refused_on_token_ids(cases):
    ids = Graph([TensorInfo("ids", (16,), "int64")], [], ["ids"])
    with pytest.raises(BadInput, match="token ids"):
        Augment(mixup=0.2).check(ids)
    Augment(mixup=0.2).check(Graph([TensorInfo("x", (16,))], [], ["x"]))  # floats blend


def test_mixup_blends_the_labels_and_asks_the_teacher_on_the_blends(cases, train_set):
    """With mixup the cross-entropy reads class probabilities (each pair's labels blended as
    its inputs are), and distillation asks the source model on the blended inputs."""
    snn, small, source, teacher, asked = _recording_teacher(cases, train_set)
    settings = Settings(T=2, epochs=1, batch_size=64, mixup=0.2, distill=0.5, seed=3)
    res = finetune(snn, small, settings, quiet=True, teacher=teacher)
    assert res.graph.meta["finetune"]["mixup"] == 0.2
    (got,) = asked  # one batch of 64
    originals = {small.x[i].tobytes() for i in range(64)}
    assert sum(got[i].tobytes() not in originals for i in range(64)) > 16  # blends, not originals
    labels = torch.tensor([1, 3])
    probs = F.one_hot(labels, 10).float() * 0.7 + F.one_hot(labels.flip(0), 10).float() * 0.3
    out = torch.randn(2, 2, 10)  # (T, N, classes) accumulated outputs
    soft = loss_fn(out, probs, "every_step")
    parts = [loss_fn(out, y, "every_step") for y in (labels, labels.flip(0))]
    mixed = 0.7 * parts[0] + 0.3 * parts[1]
    torch.testing.assert_close(soft, mixed)  # cross-entropy is linear in its target
    with pytest.raises(BadInput, match="augmented images"):
        finetune(snn, small, settings, quiet=True, teacher=source(small.x))


def test_warmup_rises_linearly_then_decays_to_zero():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = _schedule(opt, total=100, warmup=0.1)
    rates = []
    for _ in range(100):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(rates[:9], rates[1:10], strict=True))  # rising
    assert all(a > b for a, b in zip(rates[10:-1], rates[11:], strict=True))  # then falling
    assert rates[-1] < 1e-3
    plain = _schedule(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 100, 0.0)
    assert plain.get_last_lr()[0] == 1.0  # no warmup: the cosine decay from the full rate


def test_the_memory_bound_grows_with_batch_and_steps(cases, train_set):
    net = SpikingNet(cases["digits_cnn"].snn)
    probe = torch.from_numpy(train_set.x[:2])
    (per_1, fixed), (per_4, _) = (training_bytes(net, probe, T) for T in (1, 4))
    params = sum(p.numel() * p.element_size() for p in net.parameters())
    assert fixed >= PARAM_COPIES * params and per_4 > 3 * per_1 > 0


def test_a_batch_that_cannot_fit_is_refused_naming_one_that_does(cnn_spk, tmp_path, monkeypatch):
    per_sample, fixed = training_bytes(
        SpikingNet(load(cnn_spk)), torch.from_numpy(np.load(TRAIN)["x"][:2]), 4
    )
    free = MARGIN * (fixed + 10.5 * per_sample)  # room for a batch of 10, with the margin
    monkeypatch.setattr("spikeport.finetune.memory.available_bytes", lambda device: free)
    out = tmp_path / "ft.spk"
    code, _, err = cli("finetune", cnn_spk, "--data", TRAIN, "-T", "4", "--batch-size", "64",
                       "-o", out, "-q")  # fmt: skip
    assert code == 2 and "--batch-size 10 or less" in err and not out.exists()
    assert len(err.strip().splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU")
def test_cuda_gives_the_same_spikes_and_trains(cases, train_set, tmp_path):
    case = cases["digits_cnn"]
    x = case.test_x[:64]
    ref = Simulator(case.snn, "float").run(x, 4, record=True)
    net = SpikingNet(case.snn).double().cuda()
    with torch.no_grad():
        run = net.run(torch.from_numpy(x).double().cuda(), 4, record=True)
    for n in (n for n in case.snn.nodes if n.op == "if"):
        assert np.array_equal(
            np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].cpu().numpy())
        )
    model, out = tmp_path / "cnn.spk", tmp_path / "ft.spk"
    save(case.snn, model)
    code, _, err = cli("finetune", model, "--data", TRAIN, "-T", "2", "--epochs", "1",
                       "--device", "cuda", "-o", out, "-q")  # fmt: skip
    assert code == 0, err
    assert load(out).meta["finetune"]["device"] == "cuda"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(BadInput, match="no CUDA device"):
        pick_device("cuda")


# --- torchrun ------------------------------------------------------------------------------


def test_torchrun_two_cpu_processes(cases, tmp_path):
    """The unchanged command under torchrun: 2 gloo processes, 1 epoch; rank 0 writes, the
    replicas are checked bit for bit before it does."""
    model = tmp_path / "mlp.spk"
    save(cases["digits_mlp"].snn, model)
    small = _train_subset(tmp_path, 96)
    out = tmp_path / "ddp.spk"
    script = Path(sys.executable).parent / "spikeport"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), "finetune", str(model), "--data", str(small), "--val", str(CALIB),
        "-T", "2", "--epochs", "1", "--batch-size", "32", "-o", str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("fine-tuned at T=2") == 1  # only rank 0 reports
    meta = load(out).meta["finetune"]
    assert meta["world_size"] == 2 and meta["ranks_agree"] is True
    assert meta["data"]["n"] == 96


# --- outputs that are not class scores: the source model's outputs are the target -----------


class DigitsEmbedder(torch.nn.Module):
    """An embedding of the digits images (unit length, 16 features): no class scores."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(self.body(x), dim=1)


@pytest.fixture(scope="module")
def embedder(tmp_path_factory) -> tuple[Path, Path]:
    """The embedder's ONNX file and its converted graph (T = 2, percentile thresholds)."""
    from spikeport.convert import convert

    torch.manual_seed(0)
    where = tmp_path_factory.mktemp("embed")
    onnx_path, spk = where / "embed.onnx", where / "embed.spk"
    torch.onnx.export(
        DigitsEmbedder().eval(), torch.zeros(1, 1, 8, 8), str(onnx_path), input_names=["x"],
        output_names=["e"], dynamic_axes={"x": {0: "N"}}, dynamo=False,
    )  # fmt: skip
    save(convert(onnx_path, CALIB, timesteps=2, tune=False), spk)
    return onnx_path, spk


def _int_cosine(graph, onnx_path: Path, x: np.ndarray, T: int) -> float:
    from spikeport.eval.evaluate import onnx_logits

    q = quantize(graph, np.load(CALIB)["x"], get_profile("sim"))
    got = simulate(q, x, T, "int").outputs[q.outputs[0]][-1] / T
    want = onnx_logits(str(onnx_path), x)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    return float(cos.mean())


def test_match_loss_is_zero_only_where_every_steps_mean_is_the_teachers():
    teacher = torch.nn.functional.normalize(torch.randn(5, 4), dim=1)
    steps = torch.arange(1, 4, dtype=torch.float32).reshape(3, 1, 1)
    assert float(match_loss(teacher[None] * steps, teacher, "every_step")) < 1e-12
    # right at the last step only: "final" does not mind, "every_step" does
    late = torch.cat([torch.zeros(2, 5, 4), 3 * teacher[None]])
    assert float(match_loss(late, teacher, "final")) < 1e-12
    assert float(match_loss(late, teacher, "every_step")) > 0.5
    # relative: a sample scaled by 10 and its teacher too gives the same loss
    out = torch.randn(3, 5, 4)
    assert torch.allclose(
        match_loss(out, teacher, "final"), match_loss(10 * out, 10 * teacher, "final")
    )


def test_an_embedding_learns_its_source_outputs_without_labels(embedder):
    """Seeded: 6 epochs at T = 2 matching the source's embeddings on unlabelled training
    images take a quarter or more off the quantized network's held-out 1 - cosine to the
    source at T = 2 (0.976 -> 0.985 when written)."""
    onnx_path, spk = embedder
    snn = load(spk)
    train = Dataset(TRAIN, np.load(TRAIN)["x"][:512], None)
    test_x = np.load(TEST)["x"]
    teacher = teacher_logits(snn, train, onnx_path)
    before = _int_cosine(snn, onnx_path, test_x, 2)
    res = finetune(
        snn, train, Settings(T=2, epochs=6, lr=3e-3, seed=0), quiet=True, teacher=teacher
    )
    after = _int_cosine(res.graph, onnx_path, test_x, 2)
    assert res.graph.meta["finetune"]["objective"] == "match"
    assert 1 - after < 0.75 * (1 - before), (before, after)


def test_cli_fine_tunes_an_embedding_on_unlabelled_data(embedder, tmp_path):
    onnx_path, spk = embedder
    data = tmp_path / "unlabelled.npz"
    np.savez(data, x=np.load(TRAIN)["x"][:128])
    out = tmp_path / "ft.spk"
    code, stdout, err = cli(
        "finetune", spk, "--data", data, "--val", CALIB, "-T", "2", "--epochs", "2",
        "--teacher", onnx_path, "--loss", "final", "-o", out,
    )  # fmt: skip
    assert code == 0, err
    assert "val cosine to the source" in stdout, stdout
    meta = load(out).meta["finetune"]
    assert meta["objective"] == "match" and meta["loss"] == "final"
    assert -1 <= meta["val"]["cosine"] <= 1
    assert meta["val"]["cosine"] >= meta["val"]["cosine_before"]  # the best epoch is kept
    # without the source model there is nothing to learn: one line, no output
    code, _, err = cli("finetune", spk, "--data", data, "-o", tmp_path / "no.spk")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--teacher" in err, err
    assert not (tmp_path / "no.spk").exists()


# --- quantization-aware fine-tuning (--qat) --------------------------------------------------


def _joined_ints(q, name: str) -> np.ndarray:
    """The integer weights of node `name`, its outlier columns (quantize.outliers) put back."""
    ints = q.node(name).params["weight_q"].astype(np.float64)
    if name in q.meta["quantization"].get("outlier_inputs_split", []):
        ints[:, q.node(f"{name}:outlier_inputs").attrs["indices"]] = q.node(
            f"{name}:outliers"
        ).params["weight_q"]
    return ints


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp", "residual", "outlier_mlp"])
def test_weight_grids_are_the_ones_quantize_rounds_to(cases, name):
    """Every conv and dense weight rounded to its grid step is quantize's own integer rounded
    to nearest (a split layer's outlier columns: the side layer's); weights put on that grid,
    as --qat leaves them, keep those integers with --weight-rounding feedback too."""
    from spikeport.finetune.grid import weight_steps

    snn, calib = cases[name].snn, np.load(cases[name].calib)["x"]
    steps, left = weight_steps(snn, calib, "sim")
    q = cases[name].int  # quantized on the same data, rounded to nearest
    weighted = [n for n in snn.nodes if n.op in ("dense", "conv2d")]
    assert weighted and left == [] and set(steps) == {n.name for n in weighted}
    on_grid = copy.deepcopy(snn)
    for n in weighted:
        ints = np.round(n.params["weight"] / steps[n.name])
        assert np.array_equal(ints, _joined_ints(q, n.name)), n.name
        on_grid.node(n.name).params["weight"] = (ints * steps[n.name]).astype(np.float32)
    kept = quantize(on_grid, calib, get_profile("sim"), weight_rounding="feedback")
    assert kept.meta["quantization"]["weight_rounding"] == "feedback"
    for n in weighted:
        assert np.array_equal(_joined_ints(kept, n.name), _joined_ints(q, n.name)), n.name


def test_on_grid_rounds_forward_and_passes_gradients_straight_through():
    from spikeport.finetune.grid import on_grid

    w = torch.tensor([0.26, -0.74, 0.1], requires_grad=True)
    step = torch.tensor([0.5, 0.5, 0.25])
    y = on_grid(w, step)
    assert torch.equal(y.detach(), torch.tensor([0.5, -0.5, 0.0]))
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0]))


def test_a_layer_on_a_grid_exports_its_rounded_weights():
    node = Node(
        "d", "dense", ["x"], "y", {}, {"weight": np.array([[0.26, -0.74]]), "bias": np.zeros(1)}
    )
    lay = make_layer(node, (1,), SURROGATES["rectangle"])
    assert np.allclose(lay.export()["weight"], [[0.26, -0.74]])
    lay.on_weight_grid(np.full((1, 2), 0.5))
    assert np.array_equal(lay.export()["weight"], np.array([[0.5, -0.5]], np.float32))


def test_cli_qat_trains_on_the_targets_grid_and_refuses_an_unknown_target(cnn_spk, tmp_path):
    small = _train_subset(tmp_path, 64)
    out = tmp_path / "qat.spk"
    code, _, err = cli(
        "finetune", cnn_spk, "--data", small, "-T", "2", "--epochs", "1", "--qat", "sim",
        "-o", out,
    )  # fmt: skip
    assert code == 0, err
    meta = load(out).meta["finetune"]
    assert meta["qat"] == "sim" and meta["float_weights"] == []
    code, _, err = cli(
        "finetune", cnn_spk, "--data", small, "--qat", "nosuch", "-o", tmp_path / "n.spk"
    )
    assert code == 2 and err.startswith("error:") and "nosuch" in err
    assert not (tmp_path / "n.spk").exists()


def test_cli_names_the_nodes_qat_left_in_float(cnn_spk, tmp_path, monkeypatch):
    """A weighted node whose grid could not be read trains in float: the CLI says which."""
    from spikeport.finetune import train
    from spikeport.finetune.grid import weight_steps

    def one_off_grid(graph, calib, target):
        steps, _ = weight_steps(graph, calib, target)
        name = sorted(steps)[0]
        return {k: v for k, v in steps.items() if k != name}, [name]

    monkeypatch.setattr(train, "weight_steps", one_off_grid)
    out = tmp_path / "qat.spk"
    code, text, err = cli("finetune", cnn_spk, "--data", _train_subset(tmp_path, 64), "-T", "2",
                          "--epochs", "1", "--qat", "sim", "-o", out)  # fmt: skip
    left = load(out).meta["finetune"]["float_weights"]
    assert code == 0 and len(left) == 1
    note = "note: --qat trained 1 weighted node(s) in float (no sim grid found for them): "
    assert note + left[0] in text
