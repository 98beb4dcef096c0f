"""IR: the op registry drives every stage; the .spk artifact is checked entry by entry."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from spikeport.errors import FormatError
from spikeport.ir import OPS, Graph, Node, ShapeMismatch, TensorInfo, check_graph, load, save
from spikeport.ir.ops import class_scores
from spikeport.quantize.quantize import HANDLERS
from spikeport.quantize.ranges import BOUNDS
from spikeport.sim.ops import KERNELS


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_has_a_kernel_and_its_int_treatment(op):
    """One registry: an op without a simulator kernel, quantize handler or bound rule fails here."""
    assert op in KERNELS
    if "int" in OPS[op].stages:
        assert op in HANDLERS and op in BOUNDS


def _dense_graph(w_shape=(3, 4)) -> Graph:
    node = Node(
        "fc",
        "dense",
        ["x"],
        "y",
        {},
        {"weight": np.ones(w_shape, np.float32), "bias": np.zeros(w_shape[0], np.float32)},
    )
    return Graph([TensorInfo("x", (4,))], [node], ["y"])


def test_shape_rule_names_the_node():
    with pytest.raises(ShapeMismatch, match="node 'fc' \\(dense\\).*does not end in 5"):
        check_graph(_dense_graph((3, 5)))


def test_class_scores_are_one_axis_outputs_of_anything_but_an_embedding_head():
    """A dense layer's one-axis output is class scores; an L2-normalised (or pooled, or
    LayerNorm, or tanh) one is an embedding, also through a reshape; a token-level output
    (two axes) and a single logit are neither."""
    g = _dense_graph()
    check_graph(g)  # fills in the shapes
    assert class_scores(g, "y")
    g.nodes.append(Node("norm", "l2norm", ["y"], "e", {"axis": -1}))
    g.nodes.append(Node("flat", "reshape", ["e"], "f", {"shape": [3]}))
    check_graph(g)
    assert not class_scores(g, "e") and not class_scores(g, "f")
    g.tensors["y"] = TensorInfo("y", (2, 3))
    assert not class_scores(g, "y")
    g.tensors["y"] = TensorInfo("y", (1,))  # a single logit: no top class to agree on
    assert not class_scores(g, "y")


def test_reading_a_tensor_before_it_is_written_is_refused():
    g = _dense_graph()
    g.nodes[0].inputs = ["nowhere"]
    with pytest.raises(FormatError, match="node 'fc' reads 'nowhere'"):
        check_graph(g)


def test_round_trip_keeps_everything(cases, tmp_path):
    g = cases["digits_cnn"].int
    save(g, tmp_path / "m.spk")
    back = load(tmp_path / "m.spk")
    assert [n.name for n in back.nodes] == [n.name for n in g.nodes]
    assert back.meta == json.loads(json.dumps(g.meta))
    for a, b in zip(g.nodes, back.nodes, strict=True):
        assert a.attrs == b.attrs
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
            assert a.params[k].dtype == b.params[k].dtype
    for t in g.scales:
        np.testing.assert_array_equal(g.scales[t], back.scales[t])


def _rewrite(src, dst, graph_json=None, npz=None):
    with zipfile.ZipFile(src) as z:
        doc, arrays = z.read("graph.json"), z.read("tensors.npz")
    with zipfile.ZipFile(dst, "w") as z:
        z.writestr("graph.json", graph_json(doc) if graph_json else doc)
        z.writestr("tensors.npz", npz(arrays) if npz else arrays)


def test_no_pickle_in_the_artifact(cases, tmp_path):
    save(cases["digits_mlp"].int, tmp_path / "m.spk")
    with zipfile.ZipFile(tmp_path / "m.spk") as z:
        assert sorted(z.namelist()) == ["graph.json", "tensors.npz"]
        arrays = np.load(io.BytesIO(z.read("tensors.npz")), allow_pickle=False)
        for k in arrays.files:
            assert arrays[k].dtype != object


def test_wrong_format_version_is_refused(cases, tmp_path):
    save(cases["digits_mlp"].snn, tmp_path / "m.spk")

    def bump(doc: bytes) -> bytes:
        d = json.loads(doc)
        d["format_version"] = 99
        return json.dumps(d).encode()

    _rewrite(tmp_path / "m.spk", tmp_path / "bad.spk", graph_json=bump)
    with pytest.raises(FormatError, match="version 99"):
        load(tmp_path / "bad.spk")


def test_corrupted_tensor_names_the_entry(cases, tmp_path):
    save(cases["digits_mlp"].snn, tmp_path / "m.spk")

    def reshape_one(npz: bytes) -> bytes:
        arrays = dict(np.load(io.BytesIO(npz), allow_pickle=False))
        arrays["node_linear_1/weight"] = arrays["node_linear_1/weight"][:5]
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    _rewrite(tmp_path / "m.spk", tmp_path / "bad.spk", npz=reshape_one)
    with pytest.raises(FormatError, match="node 'node_linear_1' param 'weight'"):
        load(tmp_path / "bad.spk")


def test_garbage_bytes_in_tensors_are_refused(cases, tmp_path):
    save(cases["digits_mlp"].snn, tmp_path / "m.spk")
    _rewrite(tmp_path / "m.spk", tmp_path / "bad.spk", npz=lambda b: b[: len(b) // 2])
    with pytest.raises(FormatError, match="tensors.npz|corrupted"):
        load(tmp_path / "bad.spk")


def test_not_a_zip_is_refused(tmp_path):
    (tmp_path / "x.spk").write_bytes(b"hello")
    with pytest.raises(FormatError, match="not a readable .spk"):
        load(tmp_path / "x.spk")


def test_failed_save_leaves_no_file(tmp_path):
    g = _dense_graph((3, 5))  # invalid: refused before any byte is written
    with pytest.raises(ShapeMismatch):
        save(g, tmp_path / "m.spk")
    assert list(tmp_path.iterdir()) == []
