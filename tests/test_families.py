"""The families of issue #15 (tests/family_models.py): every miniature imports with an ANN view
equal to onnxruntime on every output, converts, quantizes for `sim` and runs in the integer
simulator at T = 4. These are the targets of the one-path ONNX import (DESIGN.md section 3b);
many fail on an import that does not have it yet."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from family_models import FAMILIES, Fixture
from scipy.special import softmax
from test_sim_fast import assert_same_run

from spikeport.convert import convert, import_onnx
from spikeport.quantize import get_profile, quantize
from spikeport.sim import simulate

N_CHECK = 6  # samples compared (padded and unpadded ones for the text families)


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("families")


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest, family_dir: Path) -> Fixture:
    return FAMILIES[request.param](family_dir)


def _head(x: np.ndarray | dict[str, np.ndarray], n: int) -> np.ndarray | dict[str, np.ndarray]:
    return {k: v[:n] for k, v in x.items()} if isinstance(x, dict) else x[:n]


def _reference(path: Path, x: np.ndarray | dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs in graph order; a batch-1 file runs one sample at a time."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = x if isinstance(x, dict) else {sess.get_inputs()[0].name: x}
    fixed = sess.get_inputs()[0].shape[0] == 1
    if not fixed:
        return sess.run(None, feeds)
    runs = [sess.run(None, {k: v[i : i + 1] for k, v in feeds.items()}) for i in range(N_CHECK)]
    return [np.concatenate(parts) for parts in zip(*runs, strict=True)]


def _import(fx: Fixture):  # noqa: ANN202
    """import_onnx, with the sequence length given where it stays dynamic and the import takes
    `input_shapes` (the one-path import adds it)."""
    if fx.input_shapes and "input_shapes" in inspect.signature(import_onnx).parameters:
        return import_onnx(fx.onnx, input_shapes=fx.input_shapes)
    return import_onnx(fx.onnx)


def test_ann_view_matches_onnxruntime(family: Fixture):
    graph = _import(family)
    x = _head(family.calib, N_CHECK)
    refs = _reference(family.onnx, x)
    assert len(graph.outputs) == len(refs)
    res = simulate(graph, x, 1, "ann")
    for k, ref in enumerate(refs):
        ours = res.outputs[graph.outputs[k]][0]
        if graph.outputs[k] in graph.meta["source"]["dropped_softmax"]:
            ours = softmax(ours, axis=-1)  # import said so: the logits keep the argmax
        assert ours.shape == ref.shape, (graph.outputs[k], ours.shape, ref.shape)
        tol = 1e-4 * np.abs(ref).max() + 1e-6
        np.testing.assert_allclose(ours, ref, rtol=0, atol=tol, err_msg=graph.outputs[k])


def test_convert_quantize_runs_integer(family: Fixture, tmp_path: Path):
    calib = family.save_calib(tmp_path / "calib.npz")
    snn = convert(family.onnx, calib)
    q = quantize(snn, family.calib, get_profile("sim"))
    x = _head(family.calib, 4)
    res = simulate(q, x, 4, "int", backend="reference")
    for name in q.outputs:
        assert res.outputs[name].shape[:2] == (4, 4), name
        assert np.isfinite(res.outputs[name]).all(), name
    assert_same_run(res, simulate(q, x, 4, "int", backend="fast"))


def test_eval_reports_fidelity_for_embedding_and_token_level_outputs(family_dir: Path, tmp_path):
    """A sentence embedding (no labels) and a token-level output: eval reports the cosine and
    relative error to onnxruntime per T (no accuracy), and --require gates on the cosine."""
    import torch
    from torch import nn

    from spikeport.data import load_data
    from spikeport.eval.evaluate import Requirement, check_requirements, evaluate

    fx = FAMILIES["sentence_embedding"](family_dir)
    tokens = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5)).eval()
    token_onnx = tmp_path / "tokens.onnx"
    torch.onnx.export(
        tokens,
        (torch.randn(1, 7, 6),),
        str(token_onnx),
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
        dynamo=False,
    )
    x = np.random.default_rng(0).normal(size=(64, 7, 6)).astype(np.float32)
    cases = [(fx.onnx, fx.calib), (token_onnx, x)]
    for k, (path, calib_x) in enumerate(cases):
        calib = tmp_path / f"calib{k}.npz"
        np.savez(calib, **(calib_x if isinstance(calib_x, dict) else {"x": calib_x}))
        q = quantize(convert(path, calib), calib_x, get_profile("sim"))
        rep = evaluate(q, load_data(calib, q.inputs), [2, 16], "int", str(path))
        first, last = rep["records"]
        assert "accuracy" not in first and "accuracy" not in rep["ann"]
        if k == 0:  # a normalised embedding: its largest element names no class, so neither
            # eval nor T-aware conversion's choice between candidates counts top-1 agreement
            assert "agreement_with_ann" not in first
            scores = q.meta["conversion"]["t_aware"]["candidates"].values()
            assert all(s["agreement"] == 0 for s in scores)
        assert -1 <= first["cosine_to_ann"] <= last["cosine_to_ann"] <= 1
        assert last["relative_error_to_ann"] < first["relative_error_to_ann"]
        missed = check_requirements(rep, [Requirement.parse("16:cosine_to_ann=1.0")])
        assert missed and missed[0]["metric"] == "cosine_to_ann"


def test_synapses_read_poolings_of_spikes_with_no_neuron_behind(family_dir: Path, tmp_path):
    """MobileNetV3 (hardswish, squeeze-excitation, global pooling head), converted: every
    average pooling that only synapses read pools spikes (a neuron's output in front of it),
    and no neuron follows one, so its readers get the window's mean rate, not one bit a step
    (balance.spiking_pool)."""
    fx = FAMILIES["mobilenetv3"](family_dir)
    snn = convert(fx.onnx, fx.save_calib(tmp_path / "calib.npz"), tune=False)
    pools = [n for n in snn.nodes if n.op == "avgpool2d"]
    assert len(pools) >= 2  # the gate's and the head's
    for pool in pools:
        assert snn.producer(pool.inputs[0]).op == "if", pool.name
        later, todo = [], [pool.output]
        while todo:
            for user in snn.consumers(todo.pop()):
                later.append(user.op)
                if user.op in ("reshape", "transpose"):
                    todo.append(user.output)
        assert "if" not in later and later, (pool.name, later)


@pytest.mark.parametrize("name", ["mobilenetv3", "efficientnet"])
def test_a_convolution_read_by_gates_and_products_gets_a_scale_per_channel(
    name: str, family_dir: Path, tmp_path
):
    """Hardswish and SiLU read a convolution through their gate (as one op, or x times a hard
    sigmoid or sigmoid), which requantizes every element, and the product, whose scale is its
    operands' element by element (through a centring offset to the neuron): the
    convolution gets one weight scale per output channel, as in front of a neuron, not one
    for the layer. Before, such layers kept one scale: a digits net of the held-out family
    (hswish_se:7, benchmarks/cnn_family.py) lost 2.8 points to int8 at T = 2."""
    fx = FAMILIES[name](family_dir)
    calib = fx.save_calib(tmp_path / "calib.npz")
    snn = convert(fx.onnx, calib, tune=False)
    q = quantize(snn, np.load(calib)["x"], get_profile("sim"))
    gating = {"hardsigmoid", "sigmoid", "mul", "hardswish", "silu"}
    gated = [
        n for n in q.nodes if n.op == "conv2d" and {u.op for u in q.consumers(n.output)} <= gating
    ]
    assert gated
    for n in gated:
        rows = np.abs(n.params["weight_q"]).reshape(len(n.params["weight_q"]), -1).max(axis=1)
        assert (rows == 127).mean() > 0.5, (n.name, rows)  # one scale: one row reaches 127
