"""ONNX import maps what it can exactly (equal to onnxruntime), folds constants into the layer
before them, and refuses what it cannot represent, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from spikeport.convert import import_onnx
from spikeport.errors import BadInput, UnsupportedOp
from spikeport.sim import simulate


def _save(tmp_path, nodes, inits=(), inputs=(("x", ["N", 4]),), out=("y", ["N", 4])):
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_two_float_inputs_import_and_match_onnxruntime(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Add", ["x", "x2"], ["y"], name="join")],
        inputs=(("x", ["N", 4]), ("x2", ["N", 4])),
    )
    graph = import_onnx(path)
    assert [t.name for t in graph.inputs] == ["x", "x2"]
    x = {"x": np.arange(8.0).reshape(2, 4), "x2": np.ones((2, 4))}
    out = simulate(graph, x, 1, "ann").outputs["y"][0]
    np.testing.assert_allclose(out, x["x"] + 1)


def test_a_constant_first_matmul_operand_names_the_node(tmp_path):
    nodes = [helper.make_node("MatMul", ["w", "x"], ["y"], name="wx")]
    io = {"inputs": (("x", ["N", 4, 4]),), "out": ("y", ["N", 4, 4])}
    path = _save(tmp_path, nodes, inits=[("w", np.ones((4, 4)))], **io)
    with pytest.raises(UnsupportedOp, match="node 'wx' \\(MatMul\\): a constant first operand"):
        import_onnx(path)


def _matches_onnxruntime(path, x) -> None:
    graph = import_onnx(path)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x.astype(np.float32)})[0]
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    np.testing.assert_allclose(ours, ref, atol=1e-5 * np.abs(ref).max())


def test_batchnorm_without_a_conv_before_it_is_a_channel_affine(tmp_path):
    c = np.array([1.0, 2.0, 0.5, 3.0])
    path = _save(
        tmp_path,
        [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn0")],
        inits=[("g", c), ("b", -c), ("m", c / 2), ("v", c)],
    )
    assert [n.op for n in import_onnx(path).nodes] == ["channel_scale", "offset"]
    _matches_onnxruntime(path, np.random.default_rng(0).normal(size=(5, 4)))


def test_add_of_a_constant_that_is_not_a_bias_is_an_offset(tmp_path):
    path = _save(
        tmp_path,
        [
            helper.make_node("Relu", ["x"], ["r"], name="act"),
            helper.make_node("Add", ["r", "c"], ["y"], name="shift"),
        ],
        inits=[("c", np.arange(4.0))],
    )
    assert [n.op for n in import_onnx(path).nodes] == ["relu", "offset"]
    _matches_onnxruntime(path, np.random.default_rng(0).normal(size=(5, 4)))


def test_clip_with_nonzero_min_is_refused(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="hardtanh")],
        inits=[("lo", np.array(-1.0)), ("hi", np.array(1.0))],
    )
    with pytest.raises(UnsupportedOp, match="node 'hardtanh' \\(Clip\\): only Clip\\(min=0"):
        import_onnx(path)


def test_batchnorm_is_folded_exactly(cases):
    """The residual fixture has Conv-BN: no BatchNormalization survives, and the ANN view still
    matches onnxruntime (tests/test_pipeline_fixtures.py)."""
    graph = import_onnx(cases["residual"].onnx)
    assert "BatchNormalization" not in {n.op for n in graph.nodes}
    assert [n.op for n in graph.nodes][:2] == ["conv2d", "relu"]


def test_batchnorm_after_a_conv_that_onnxruntime_leaves_folds_into_it(tmp_path):
    """A Conv whose output is a graph output too cannot be fused by onnxruntime; BN after a
    ConvTranspose neither: spikeport folds both its scale and shift (DBNet's head)."""
    c = np.array([1.0, 2.0, 0.5, 3.0])
    nodes = [
        helper.make_node("ConvTranspose", ["x", "w"], ["h"], name="up", strides=[2, 2]),
        helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["y"], name="bn"),
    ]
    path = _save(
        tmp_path,
        nodes,
        inits=[
            ("w", np.random.default_rng(0).normal(size=(4, 4, 2, 2))),
            ("g", c),
            ("b", -c),
            ("m", c / 2),
            ("v", c),
        ],
        inputs=(("x", ["N", 4, 3, 3]),),
        out=("y", ["N", 4, 6, 6]),
    )
    assert [n.op for n in import_onnx(path).nodes] == ["conv_transpose2d"]
    _matches_onnxruntime(path, np.random.default_rng(1).normal(size=(2, 4, 3, 3)))


def test_an_opset_newer_than_onnx_knows_is_one_line(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="act")])
    model = onnx.load(path)
    model.opset_import[0].version = 99
    onnx.save(model, path)
    with pytest.raises(BadInput, match="opset 99 is newer than this onnx"):
        import_onnx(path)
