"""ONNX import refuses what it cannot represent, naming the node; folds what it can."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from spikeport.convert import import_onnx
from spikeport.errors import UnsupportedOp


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


def test_a_second_graph_input_is_refused(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Add", ["x", "x2"], ["y"], name="join")],
        inputs=(("x", ["N", 4]), ("x2", ["N", 4])),
    )
    with pytest.raises(UnsupportedOp, match="2 inputs"):
        import_onnx(path)


def test_matmul_of_two_activations_names_the_node(tmp_path):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act"),
        helper.make_node("MatMul", ["x", "r"], ["y"], name="qk"),
    ]
    path = _save(tmp_path, nodes, inputs=(("x", ["N", 4, 4]),), out=("y", ["N", 4, 4]))
    with pytest.raises(UnsupportedOp, match="node 'qk' \\(MatMul\\): the second operand"):
        import_onnx(path)


def test_batchnorm_without_a_conv_before_it_is_refused(tmp_path):
    c = np.ones(4)
    path = _save(
        tmp_path,
        [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], name="bn0")],
        inits=[("g", c), ("b", c), ("m", c), ("v", c)],
    )
    with pytest.raises(UnsupportedOp, match="node 'bn0' \\(BatchNormalization\\): only"):
        import_onnx(path)


def test_add_of_a_constant_that_is_not_a_bias_is_refused(tmp_path):
    path = _save(
        tmp_path,
        [
            helper.make_node("Relu", ["x"], ["r"], name="act"),
            helper.make_node("Add", ["r", "c"], ["y"], name="shift"),
        ],
        inits=[("c", np.ones(4))],
    )
    with pytest.raises(UnsupportedOp, match="node 'shift' \\(Add\\)"):
        import_onnx(path)


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
