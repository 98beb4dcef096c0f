"""Statically quantized ONNX models (onnxruntime.quantization's QDQ and integer-operator
formats) import as the float network they quantize (spikeport.convert.onnx_qdq): the same IR
as the float model's, the ReLUs the quantizer fused away restored, and a spiking network as
accurate as the float model's; dynamic quantization's matrix products too, and what of it
cannot be read back is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_static,
)

from spikeport.cli.main import main
from spikeport.convert import import_onnx
from spikeport.errors import UnsupportedOp
from spikeport.sim import simulate

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FLOAT_CNN = EXAMPLES / "digits_cnn.onnx"
CALIB, TEST = EXAMPLES / "digits_calib.npz", EXAMPLES / "digits_test.npz"
# (format, activation type, per-channel weights): onnxruntime's two activation types, and the
# integer-operator format (QLinearConv, QGemm, QLinearAveragePool on codes through a MaxPool)
VARIANTS = {
    "qdq_s8": (QuantFormat.QDQ, QuantType.QInt8, True),
    "qdq_u8": (QuantFormat.QDQ, QuantType.QUInt8, False),
    "qoperator": (QuantFormat.QOperator, QuantType.QUInt8, True),
}


class _Images(CalibrationDataReader):
    def __init__(self, x: np.ndarray):
        self.feeds = iter({"x": x[i : i + 1].astype(np.float32)} for i in range(len(x)))

    def get_next(self) -> dict | None:
        return next(self.feeds, None)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("qdq")
    x = np.load(CALIB)["x"][:64]
    paths = {}
    # 7-bit weights (reduce_range): on x86 CPUs without VNNI, onnxruntime's u8 x s8 kernels add
    # pairs of products in 16 bits (vpmaddubsw), which saturate with full 8-bit weights, so the
    # int8 model's outputs would depend on the machine (onnxruntime's quantization docs give
    # this remedy); with 7 bits no pair can saturate and onnxruntime computes what ONNX says
    for name, (fmt, act, per_channel) in VARIANTS.items():
        paths[name] = out / f"{name}.onnx"
        quantize_static(FLOAT_CNN, paths[name], _Images(x), quant_format=fmt,
                        activation_type=act, weight_type=QuantType.QInt8,
                        per_channel=per_channel, reduce_range=True)  # fmt: skip
    return paths


def _saved(tmp_path: Path, nodes: list, inputs: dict, outputs: dict, inits: dict) -> Path:
    """A hand-written opset-17 graph as tmp_path/m.onnx: inputs and outputs {name: (elem type,
    shape)}, initializers {name: array}."""
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in outputs.items()],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _ort(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"x": x[i : i + 1]})[0] for i in range(len(x))])


@pytest.mark.parametrize("name", ["qdq_s8", "qdq_u8", "qoperator"])
def test_qdq_model_imports_as_the_float_network_it_quantizes(quantized, name):
    """Same ops as the float model's import (no neuron where the float network has no ReLU,
    the fused ReLUs back), weights within a rounding step of the float ones, and an ANN view
    that agrees with onnxruntime on the int8 model."""
    graph, ref = import_onnx(quantized[name]), import_onnx(FLOAT_CNN)
    assert [n.op for n in graph.nodes] == [n.op for n in ref.nodes]
    for a, b in zip(graph.nodes, ref.nodes, strict=True):
        if "weight" in a.params:
            step = np.abs(b.params["weight"]).max() / 63  # 7-bit weights
            assert np.abs(a.params["weight"] - b.params["weight"]).max() <= step
    assert "2 QuantizeLinear/DequantizeLinear pairs whose range starts at 0" in " ".join(
        graph.meta["source"]["notes"]
    )
    x = np.load(TEST)["x"][:200].astype(np.float32)
    ann = simulate(graph, {"x": x}, 1, "ann").outputs[graph.outputs[0]][0]
    int8 = _ort(quantized[name], x)
    assert np.mean(ann.argmax(-1) == int8.argmax(-1)) >= 0.97
    assert np.linalg.norm(ann - int8) / np.linalg.norm(int8) < 0.03


def test_qdq_model_converts_as_well_as_the_float_one(quantized, tmp_path):
    """convert -> quantize -> eval through the CLI, against onnxruntime on the int8 model: at
    T = 8 within a point of the int8 ANN's accuracy."""
    runner, snn, q = CliRunner(), tmp_path / "m.spk", tmp_path / "m.q.spk"
    for args in (
        ["convert", quantized["qdq_s8"], "--calib", CALIB, "-o", snn, "-T", "8"],
        ["quantize", snn, "--calib", CALIB, "-o", q],
        ["eval", q, "--data", TEST, "-T", "8", "--onnx", quantized["qdq_s8"],
         "--json", tmp_path / "e.json"],
    ):  # fmt: skip
        res = runner.invoke(main, [str(a) for a in args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "e.json").read_text())
    (record,) = report["records"]
    assert record["accuracy"] >= report["ann"]["accuracy"] - 0.01


@pytest.mark.parametrize("model", ["digits_mlp.onnx", "digits_cnn.onnx"])
def test_dynamically_quantized_products_import_as_float_ones(tmp_path, model):
    """quantize_dynamic's chains (DynamicQuantizeLinear, MatMulInteger or ConvInteger, Cast,
    Mul by the two scales) import as MatMuls / Convs with the dequantized weights: the float
    model's ops, close to onnxruntime on the int8 model."""
    from onnxruntime.quantization import quantize_dynamic

    path = tmp_path / "dyn.onnx"
    quantize_dynamic(EXAMPLES / model, path, weight_type=QuantType.QInt8)
    graph, ref = import_onnx(path), import_onnx(EXAMPLES / model)
    assert [n.op for n in graph.nodes] == [n.op for n in ref.nodes]
    x = np.load(TEST)["x"][:200].astype(np.float32)
    ann = simulate(graph, {"x": x}, 1, "ann").outputs[graph.outputs[0]][0]
    int8 = _ort(path, x)
    assert np.mean(ann.argmax(-1) == int8.argmax(-1)) >= 0.97


def test_dynamic_quantization_it_cannot_read_back_is_refused_in_one_line(tmp_path):
    """A dynamically quantized product whose integer result is not rescaled by the two scales
    (here: none at all) is no float product spikeport can read back: refused, naming the
    node and what to give instead, nothing written."""
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"], name="dql"),
        helper.make_node("MatMulInteger", ["q", "w", "z"], ["i"], name="mmi"),
        helper.make_node("Cast", ["i"], ["y"], name="cast", to=TensorProto.FLOAT),
    ]
    w = {"w": np.ones((4, 3), np.int8)}
    path = _saved(tmp_path, nodes, {"x": (TensorProto.FLOAT, ["N", 4])},
                  {"y": (TensorProto.FLOAT, ["N", 3])}, w)  # fmt: skip
    out = tmp_path / "m.spk"
    calib = tmp_path / "c.npz"
    np.savez(calib, x=np.ones((4, 4), np.float32))
    res = CliRunner().invoke(main, ["convert", str(path), "--calib", str(calib), "-o", str(out)])
    assert res.exit_code == 2
    (line,) = [x for x in res.output.splitlines() if x.startswith("error:")]
    assert "node 'dql'" in line and "dynamically quantized" in line and "quantize_static" in line
    assert not out.exists()


def test_dequantizing_a_computed_integer_tensor_is_refused(tmp_path):
    """An int8 graph input read through DequantizeLinear: no QuantizeLinear to pair it with."""
    path = _saved(tmp_path, [helper.make_node("DequantizeLinear", ["q", "s"], ["y"], name="dq")],
                  {"q": (TensorProto.INT8, ["N", 4])}, {"y": (TensorProto.FLOAT, ["N", 4])},
                  {"s": np.asarray(0.5, np.float32)})  # fmt: skip
    with pytest.raises(UnsupportedOp, match="node 'dq' \\(DequantizeLinear\\): dequantizes a"):
        import_onnx(path)


def test_integer_operator_concat_imports_without_a_neuron_after_it(tmp_path):
    """QLinearConcat of two ReLU branches (its range starts at 0 too, but a concat had no
    ReLU to fuse): the float model's ops, no extra ReLU, close to the float model."""
    import torch
    from torch import nn

    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(8 * 64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.fc(h.flatten(1))

    torch.manual_seed(0)
    float_path, int8_path = tmp_path / "cat.onnx", tmp_path / "cat_q.onnx"
    torch.onnx.export(Branches().eval(), (torch.randn(2, 1, 8, 8),), str(float_path),
                      input_names=["x"], dynamic_axes={"x": {0: "N"}}, dynamo=False)  # fmt: skip
    quantize_static(float_path, int8_path, _Images(np.load(CALIB)["x"][:32]),
                    quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)  # fmt: skip
    assert "QLinearConcat" in {n.op_type for n in onnx.load(str(int8_path)).graph.node}
    graph, ref = import_onnx(int8_path), import_onnx(float_path)
    assert [n.op for n in graph.nodes] == [n.op for n in ref.nodes]
    x = np.load(TEST)["x"][:100].astype(np.float32)
    ours = simulate(graph, {"x": x}, 1, "ann").outputs[graph.outputs[0]][0]
    exact = _ort(float_path, x)
    assert np.linalg.norm(ours - exact) / np.linalg.norm(exact) < 0.05
    # without the axis its schema requires: one line naming the node (was a StopIteration)
    model = onnx.load(str(int8_path))
    cat = next(n for n in model.graph.node if n.op_type == "QLinearConcat")
    cat.ClearField("attribute")
    onnx.save(model, str(int8_path))
    with pytest.raises(
        UnsupportedOp, match=f"node '{cat.name}' \\(QLinearConcat\\): has no 'axis'"
    ):
        import_onnx(int8_path)


def test_constant_codes_moved_and_read_twice_import_as_the_float_table(tmp_path):
    """An int8 table gathered by the ids, transposed, and dequantized twice (quantize_dynamic's
    embeddings and relative-attention tables; QOperator DistilBERT): each reader gets the
    same moves of the dequantized table, equal to onnxruntime."""
    inits = {
        "table": np.arange(-12, 12, dtype=np.int8).reshape(6, 4),
        "s": np.asarray(0.5, np.float32),
        "z": np.asarray(1, np.int8),
    }
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["rows"], name="gather"),
        helper.make_node("Transpose", ["rows"], ["cols"], name="t", perm=[0, 2, 1]),
        helper.make_node("DequantizeLinear", ["cols", "s", "z"], ["a"], name="dq_a"),
        helper.make_node("DequantizeLinear", ["cols", "s", "z"], ["b"], name="dq_b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="add"),
    ]
    path = _saved(tmp_path, nodes, {"ids": (TensorProto.INT64, ["N", 3])},
                  {"y": (TensorProto.FLOAT, ["N", 4, 3])}, inits)  # fmt: skip
    ids = np.array([[0, 5, 2], [3, 3, 1]], np.int64)
    graph = import_onnx(path)
    ours = simulate(graph, {"ids": ids}, 1, "ann").outputs[graph.outputs[0]][0]
    ref = ort.InferenceSession(str(path)).run(None, {"ids": ids})[0]
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_a_constant_dequantized_with_a_computed_scale_is_refused_by_name(tmp_path):
    """Int8 codes dequantized by a scale computed from the input: no constant to fold, one
    line naming the node (it was a KeyError traceback)."""
    nodes = [
        helper.make_node("ReduceMax", ["x"], ["s"], name="peak", keepdims=0),
        helper.make_node("DequantizeLinear", ["q", "s"], ["w"], name="dq"),
        helper.make_node("Add", ["x", "w"], ["y"], name="add"),
    ]
    path = _saved(tmp_path, nodes, {"x": (TensorProto.FLOAT, ["N", 4])},
                  {"y": (TensorProto.FLOAT, ["N", 4])}, {"q": np.ones(4, np.int8)})  # fmt: skip
    with pytest.raises(UnsupportedOp, match="node 'dq' \\(DequantizeLinear\\): its scale"):
        import_onnx(path)
