"""Sequence models: the digits ViT (nn.TransformerEncoderLayer, exported by torch.onnx with a
dynamic batch axis) imports, converts and quantizes like the CNNs; its integer mode stays close
to the ANN on held-out data; what cannot be treated is refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import EXAMPLES
from onnx import TensorProto, helper, numpy_helper

from spikeport.convert import convert, import_onnx
from spikeport.data import load_data
from spikeport.errors import UnsupportedOp
from spikeport.eval import evaluate
from spikeport.eval.evaluate import onnx_logits
from spikeport.quantize import get_profile, quantize
from spikeport.sim import simulate

VIT = EXAMPLES / "digits_vit.onnx"
CALIB = EXAMPLES / "digits_calib.npz"


@pytest.fixture(scope="module")
def vit_int():
    snn = convert(VIT, CALIB)
    return quantize(snn, np.load(CALIB)["x"], get_profile("sim"), max_timesteps=16)


def test_vit_ann_view_matches_onnxruntime():
    graph = import_onnx(VIT)
    ops = {n.op for n in graph.nodes}
    assert {"matmul", "softmax", "layernorm", "gelu", "transpose", "take"} <= ops
    x = np.load(EXAMPLES / "digits_test.npz")["x"][:64]
    ref = onnx_logits(VIT, x)
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_every_linear_layer_reads_spikes(vit_int):
    """Dense layers read spikes; the products of two activations (matmul) read their
    operands' running sums (--product-operands analog, the default)."""
    producers = {n.output: n for n in vit_int.nodes}
    moves = ("reshape", "transpose", "take", "scale")
    for n in vit_int.nodes:
        for t in n.inputs if n.op in ("dense", "matmul") else []:
            while t in producers and producers[t].op in moves:
                t = producers[t].inputs[0]
            source = producers[t].op if t in producers else "input"
            assert (source in ("if", "input")) == (n.op == "dense"), (n.name, t, source)


def test_vit_integer_accuracy_close_to_ann(vit_int):
    data = load_data(EXAMPLES / "digits_test.npz", labels=True)
    rep = evaluate(vit_int, data, [4, 8], "int", str(VIT))
    ann = rep["ann"]["accuracy"]
    acc = {r["T"]: r["accuracy"] for r in rep["records"]}
    assert ann > 0.95
    assert acc[8] >= ann - 0.02
    assert acc[4] >= ann - 0.05


def test_unsupported_op_in_a_transformer_is_refused_by_name(tmp_path):
    d = 8
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], name="ln", axis=-1),
        helper.make_node("Sin", ["h"], ["y"], name="gate"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, d])],
        [
            numpy_helper.from_array(np.ones(d, np.float32), "g"),
            numpy_helper.from_array(np.zeros(d, np.float32), "b"),
        ],
    )
    path = tmp_path / "t.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UnsupportedOp, match="node 'gate' \\(Sin\\)"):
        import_onnx(path)


def test_split_and_slice_import_and_match_onnxruntime(tmp_path):
    """q/k halves by Split (as older MHA exports do), a Slice with a negative step."""
    d = 8
    nodes = [
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["h"], name="ln", axis=-1),
        helper.make_node("Split", ["h", "sizes"], ["q", "k"], name="qk_split", axis=-1),
        helper.make_node("Transpose", ["k"], ["kT"], name="tr", perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kT"], ["s"], name="scores"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("Slice", ["p", "st", "en", "ax", "sp"], ["y"], name="rows"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4])],
        [
            numpy_helper.from_array(np.ones(d, np.float32), "g"),
            numpy_helper.from_array(np.zeros(d, np.float32), "b"),
            numpy_helper.from_array(np.array([4, 4], np.int64), "sizes"),
            numpy_helper.from_array(np.array([3], np.int64), "st"),
            numpy_helper.from_array(np.array([-10], np.int64), "en"),
            numpy_helper.from_array(np.array([1], np.int64), "ax"),
            numpy_helper.from_array(np.array([-2], np.int64), "sp"),
        ],
    )
    path = tmp_path / "t.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes].count("slice") == 3
    x = np.random.default_rng(0).normal(size=(16, 4, d)).astype(np.float32)
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    np.testing.assert_allclose(ours, onnx_logits(path, x), atol=1e-5)
