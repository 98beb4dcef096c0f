"""ONNX import maps what it can exactly (equal to onnxruntime), folds constants into the layer
before them, and refuses what it cannot represent, naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from spikeport.convert import import_onnx
from spikeport.convert.pipeline import import_model
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


def _matches_onnxruntime(path, x, importer=import_onnx) -> None:
    graph = importer(path)
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


@pytest.mark.parametrize(
    "op, bounds", [("Clip", (-1.0, 1.0)), ("Clip", (0.5, 2.0)), ("Max", 0.25), ("Min", 0.5)]
)
def test_clamps_by_constants_are_one_relu_between_shifts(tmp_path, op, bounds):
    """Clip with any bounds, and max / min with a constant, import exactly: the ReLU's input
    shift folds into the layer before it, and its output shift into the layer after it."""
    inputs = ["h", "lo", "hi"] if op == "Clip" else ["h", "c"]
    consts = dict(zip(inputs[1:], np.atleast_1d(bounds), strict=True))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
        helper.make_node(op, inputs, ["a"], name="clamp"),
        helper.make_node("MatMul", ["a", "w2"], ["y"], name="fc2"),
    ]
    rng = np.random.default_rng(0)
    inits = [("w", rng.normal(size=(4, 4))), ("w2", rng.normal(size=(4, 4)))]
    path = _save(tmp_path, nodes, inits=inits + [(k, np.array(v)) for k, v in consts.items()])
    for importer in (import_onnx, import_model):  # as imported, and with the shifts folded
        _matches_onnxruntime(path, rng.normal(size=(50, 4)), importer)
    ops = [n.op for n in import_model(path).nodes]
    assert ops == (["dense", "relu", "dense"] if op != "Min" else
                   ["dense", "scale", "offset", "relu", "scale", "dense"])  # fmt: skip


@pytest.mark.parametrize("op, a", [("Max", 0.2), ("Min", 3.0)])
def test_max_of_x_and_a_times_x_is_a_leaky_relu(tmp_path, op, a):
    nodes = [
        helper.make_node("Mul", ["x", "a"], ["ax"], name="times"),
        helper.make_node(op, ["ax", "x"], ["y"], name="leaky"),
    ]
    path = _save(tmp_path, nodes, inits=[("a", np.array(a))])
    assert [n.op for n in import_onnx(path).nodes] == ["prelu"]
    _matches_onnxruntime(path, np.random.default_rng(0).normal(size=(50, 4)))


@pytest.mark.parametrize(
    "bounds, why", [((1.0, -1.0), "upper bound -1.0 is not above"), ((np.zeros(4), 1.0), "min")]
)
def test_a_clip_no_neuron_can_be_is_refused_by_name(tmp_path, bounds, why):
    path = _save(
        tmp_path,
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"], name="odd")],
        inits=[("lo", bounds[0]), ("hi", bounds[1])],
    )
    with pytest.raises(UnsupportedOp, match=f"node 'odd' \\(Clip\\): .*{why}"):
        import_onnx(path)


def test_max_of_two_activations_is_refused(tmp_path):
    path = _save(
        tmp_path,
        [helper.make_node("Max", ["x", "x2"], ["y"], name="both")],
        inputs=(("x", ["N", 4]), ("x2", ["N", 4])),
    )
    with pytest.raises(UnsupportedOp, match="node 'both' \\(Max\\): only the max or min of one"):
        import_onnx(path)


def test_adding_two_activations_broadcasts_by_repeating(tmp_path):
    """x - mean(x) with keepdims (a norm written by hand): the mean repeats along the axis it
    reduced, and the ANN view equals onnxruntime."""
    path = _save(
        tmp_path,
        [
            helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[-1], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"], name="centre"),
        ],
        inputs=(("x", ["N", 3, 4]),),
        out=("y", ["N", 3, 4]),
    )
    assert "gather" in [n.op for n in import_onnx(path).nodes]
    _matches_onnxruntime(path, np.random.default_rng(0).normal(size=(5, 3, 4)))


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


@pytest.mark.parametrize("tokens", [5, 1])
def test_batchnorm_over_flattened_tokens_folds_into_the_linear_before_it(tmp_path, tokens):
    """LeViT's Linear + BatchNorm1d: MatMul, a Flatten of the tokens, BN (here with a zero
    scale, as timm initialises it, or a pruned channel), a Reshape back. The BN folds into
    the dense layer through the Flatten; no channel affine is left to refuse the zero."""
    c = np.array([1.0, 0.0, 0.5, 3.0])
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="linear"),
        helper.make_node("Flatten", ["h"], ["f"], name="flat", axis=2),
        helper.make_node("BatchNormalization", ["f", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Constant", [], ["shape"], value=_const_i64("s", [-1, tokens, 4])),
        helper.make_node("Reshape", ["n", "shape"], ["y"], name="back"),
    ]
    w = np.random.default_rng(0).normal(size=(6, 4))
    inits = [("w", w), ("g", c), ("b", -c), ("m", c / 2), ("v", c + 1)]
    path = _save(tmp_path, nodes, inits, (("x", ["N", tokens, 6]),), ("y", ["N", tokens, 4]))
    assert {n.op for n in import_onnx(path).nodes} <= {"dense", "reshape"}
    _matches_onnxruntime(path, np.random.default_rng(1).normal(size=(1, tokens, 6)))


def test_an_opset_newer_than_onnx_knows_is_one_line(tmp_path):
    path = _save(tmp_path, [helper.make_node("Relu", ["x"], ["y"], name="act")])
    model = onnx.load(path)
    model.opset_import[0].version = 99
    onnx.save(model, path)
    with pytest.raises(BadInput, match="opset 99 is newer than this onnx"):
        import_onnx(path)


def _const_i64(name, values):
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


@pytest.mark.parametrize(
    "mode, value", [("constant", 1.0), ("constant", -0.5), ("edge", 0.0), ("reflect", 0.0)]
)
def test_pads_of_any_constant_edge_and_reflect_match_onnxruntime(tmp_path, mode, value):
    """A nonzero constant is zero padding plus that constant on the border (EfficientViT pads
    with ones); edge and reflect are one gather per padded axis."""
    pads = [0, 0, 1, 2, 0, 0, 2, 1]
    g = helper.make_graph(
        [helper.make_node("Pad", ["x", "pads", "value"], ["y"], name="pad", mode=mode)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 7, 8])],
        [_const_i64("pads", pads), numpy_helper.from_array(np.float32(value), "value")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    ops = {n.op for n in import_onnx(path).nodes}
    assert ops == ({"gather"} if mode != "constant" else {"pad", "offset"})
    _matches_onnxruntime(path, np.random.default_rng(1).normal(size=(3, 3, 4, 5)))


def test_instance_norm_is_a_layernorm_of_each_channel_then_its_affine(tmp_path):
    """InstanceNormalization (GroupNorm's export) normalises each channel over its positions:
    a layernorm of the flattened positions, then the per-channel scale and bias."""
    rng = np.random.default_rng(2)
    path = _save(
        tmp_path,
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="inorm")],
        inits=[("s", rng.uniform(0.5, 2, 3)), ("b", rng.normal(size=3))],
        inputs=(("x", ["N", 3, 4, 5]),),
        out=("y", ["N", 3, 4, 5]),
    )
    assert "layernorm" in [n.op for n in import_onnx(path).nodes]
    _matches_onnxruntime(path, rng.normal(size=(4, 3, 4, 5)) * 3 + 1)


def test_groupnorm_of_one_group_as_torch_exports_it_matches_onnxruntime(tmp_path):
    """Reshape (N, 1, -1) -> InstanceNormalization -> Reshape -> Mul -> Add: PoolFormer's and
    MobileViTv2's GroupNorm(1), a norm over C, H and W."""
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Reshape", ["x", "groups"], ["g"], name="split"),
        helper.make_node("InstanceNormalization", ["g", "one", "zero"], ["n"], name="inorm"),
        helper.make_node("Reshape", ["n", "image"], ["r"], name="join"),
        helper.make_node("Mul", ["r", "gamma"], ["m"], name="gamma"),
        helper.make_node("Add", ["m", "beta"], ["y"], name="beta"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [
            _const_i64("groups", [0, 1, -1]),
            _const_i64("image", [0, 3, 4, 4]),
            numpy_helper.from_array(np.ones(1, np.float32), "one"),
            numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
            numpy_helper.from_array(rng.uniform(0.5, 2, (3, 1, 1)).astype(np.float32), "gamma"),
            numpy_helper.from_array(rng.normal(size=(3, 1, 1)).astype(np.float32), "beta"),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    _matches_onnxruntime(path, rng.normal(size=(4, 3, 4, 4)))


def test_expand_of_an_activation_repeats_it(tmp_path):
    """ECA's attention weights: mean over positions, Expand back to the image, times x."""
    g = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], name="mean", axes=[2, 3], keepdims=1),
            helper.make_node("Expand", ["m", "shape"], ["e"], name="expand"),
            helper.make_node("Mul", ["x", "e"], ["y"], name="gate"),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 4, 4])],
        [_const_i64("shape", [1, 3, 4, 4])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert "gather" in [n.op for n in import_onnx(path).nodes]
    _matches_onnxruntime(path, np.random.default_rng(4).normal(size=(3, 3, 4, 4)))


def test_a_gather_by_a_2d_index_and_a_concat_of_one_tensor_match_onnxruntime(tmp_path):
    """A multi-axis constant index (dynamo's as_strided) is a gather by its flattened positions
    and a reshape; a Concat of a list of one tensor (DenseNet) is that tensor."""
    g = helper.make_graph(
        [
            helper.make_node("Gather", ["x", "idx"], ["g"], name="pick", axis=1),
            helper.make_node("Concat", ["g"], ["y"], name="one", axis=1),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])],
        [numpy_helper.from_array(np.array([[0, 2, 5], [5, 1, 1]], np.int64), "idx")],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    _matches_onnxruntime(path, np.random.default_rng(5).normal(size=(3, 6)))


@pytest.mark.parametrize("keep", [0, 1])
def test_a_sum_over_a_short_axis_is_an_add_of_its_slices(tmp_path, keep):
    """SKNet's branches, stacked then summed: an add of the slices (which brings branches of
    different integer scales to one), equal to onnxruntime."""
    path = _save(
        tmp_path,
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="branches", keepdims=keep)],
        inits=[],
        inputs=(("x", ["N", 3, 4, 2]),),
        out=("y", ["N", 1, 4, 2] if keep else ["N", 4, 2]),
    )
    model = onnx.load(path)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1], np.int64), "axes"))
    onnx.save(model, path)
    assert "add" in [n.op for n in import_onnx(path).nodes]
    _matches_onnxruntime(path, np.random.default_rng(6).normal(size=(3, 3, 4, 2)))
