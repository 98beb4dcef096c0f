"""Sequence-model (ViT/BERT-like) import: batch-1 specialisation and the importers of the ops
transformers add. Registers into the same IMPORTERS table as the CNN ops.

torch.onnx exports of nn.MultiheadAttention / nn.TransformerEncoderLayer carry shape
subgraphs (Shape, Slice, Concat, ...) that depend only on static shapes once the batch size is
fixed. We fix it to 1, let onnxruntime's basic offline optimiser fold them into constants,
and read the result with every tensor's full batch-1 shape as its per-sample shape: samples
never interact, so the simulator runs N independent copies of the batch-1 graph.
"""

from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

from spikeport.convert.onnx_import import _attrs, _Ctx, _refuse, importer
from spikeport.ir.graph import Node

# Any of these marks a sequence model: it is imported in its batch-1 form.
SEQUENCE_OPS = frozenset(
    {
        "LayerNormalization",
        "Softmax",
        "Gelu",
        "Erf",
        "Shape",
        "Transpose",
        "Gather",
        "Unsqueeze",
        "Squeeze",
        "ReduceMean",
        "Where",
        "Expand",
        "Tanh",
        "Split",
        "Slice",
        "ConstantOfShape",
    }
)


def is_sequence_model(model: onnx.ModelProto) -> bool:
    return any(n.op_type in SEQUENCE_OPS for n in model.graph.node)


def specialise_batch1(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fix the batch axis to 1 and fold every shape computation into constants."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for v in list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        folded = onnx.load(opts.optimized_model_filepath)
    return onnx.shape_inference.infer_shapes(folded)


def _need_seq(ctx: _Ctx, n: onnx.NodeProto) -> None:
    if not ctx.keep_batch:
        raise _refuse(n, "only supported inside a sequence model")


def _axes(ctx: _Ctx, n: onnx.NodeProto) -> list[int]:
    if len(n.input) > 1 and n.input[1]:
        return [int(a) for a in np.atleast_1d(ctx.const(n, 1, "axes"))]
    return [int(a) for a in _attrs(n).get("axes", [])]


@importer("Transpose")
def _transpose(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    rank = len(ctx.shape(n.input[0]))
    perm = [int(p) for p in _attrs(n).get("perm", list(range(rank))[::-1])]
    ctx.emit(Node(n.name, "transpose", [n.input[0]], n.output[0], {"perm": perm}))


@importer("Gather")
def _gather(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    idx = ctx.const(n, 1, "the index")
    if idx.ndim != 0:
        raise _refuse(n, f"only a scalar constant index is supported, got shape {idx.shape}")
    axis = int(_attrs(n).get("axis", 0))
    ctx.emit(Node(n.name, "take", [n.input[0]], n.output[0], {"axis": axis, "index": int(idx)}))


@importer("Unsqueeze", "Squeeze")
def _squeeze(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    shape = list(ctx.shape(n.input[0]))
    axes = _axes(ctx, n)
    if n.op_type == "Unsqueeze":
        rank = len(shape) + len(axes)
        for a in sorted(a % rank for a in axes):
            shape.insert(a, 1)
    else:
        drop = (
            {a % len(shape) for a in axes} if axes else {i for i, d in enumerate(shape) if d == 1}
        )
        shape = [d for i, d in enumerate(shape) if i not in drop]
    ctx.emit(Node(n.name, "reshape", [n.input[0]], n.output[0], {"shape": shape}))


@importer("Mul", "Div")
def _mul(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    const = [i for i in n.input if i in ctx.consts]
    if len(const) != 1 or ctx.consts[const[0]].size != 1:
        raise _refuse(n, "only multiplication or division by a scalar constant is supported")
    if n.op_type == "Div" and n.input[1] != const[0]:
        raise _refuse(n, "dividing a constant by an activation is not supported")
    c = float(ctx.consts[const[0]].reshape(()))
    factor = 1.0 / c if n.op_type == "Div" else c
    act = next(i for i in n.input if i not in ctx.consts)
    ctx.emit(Node(n.name, "scale", [act], n.output[0], {"factor": factor}))


@importer("ReduceMean")
def _reduce_mean(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    axes = _axes(ctx, n)
    if not axes:
        raise _refuse(n, "a mean over all axes would mix the batch axis in")
    ctx.emit(
        Node(
            n.name,
            "reduce_mean",
            [n.input[0]],
            n.output[0],
            {"axes": axes, "keepdims": int(_attrs(n).get("keepdims", 1))},
        )
    )


def _last_axis(ctx: _Ctx, n: onnx.NodeProto, default: int) -> None:
    rank = len(ctx.shape(n.input[0]))
    if int(_attrs(n).get("axis", default)) % rank != rank - 1:
        raise _refuse(n, "only the last axis is supported")


@importer("LayerNormalization")
def _layernorm(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    _last_axis(ctx, n, -1)
    gamma = ctx.const(n, 1, "scale").astype(np.float32)
    beta = (
        ctx.const(n, 2, "bias") if len(n.input) > 2 and n.input[2] else np.zeros_like(gamma)
    ).astype(np.float32)
    ctx.emit(
        Node(
            n.name,
            "layernorm",
            [n.input[0]],
            n.output[0],
            {"epsilon": float(_attrs(n).get("epsilon", 1e-5))},
            {"gamma": gamma, "beta": beta},
        )
    )


@importer("Softmax")
def _softmax(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    _last_axis(ctx, n, -1)
    ctx.emit(Node(n.name, "softmax", [n.input[0]], n.output[0]))


@importer("Gelu")
def _gelu(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    if _attrs(n).get("approximate", b"none") not in (b"none", "none"):
        raise _refuse(n, "only the exact (erf) GELU is supported, not approximate='tanh'")
    ctx.emit(Node(n.name, "gelu", [n.input[0]], n.output[0]))


def fuse_erf_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the exported erf pattern 0.5 * x * (1 + erf(x / sqrt 2)) by one Gelu node."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    producer = {o: node for node in g.node for o in node.output}

    def scalar(name: str) -> float | None:
        v = consts.get(name)
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    for erf in [node for node in g.node if node.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type not in ("Div", "Mul"):
            continue
        c = scalar(div.input[1])
        ok = c is not None and math.isclose(
            c if div.op_type == "Div" else 1 / c, math.sqrt(2), rel_tol=1e-3
        )
        chain = [users.get(erf.output[0], [None])[0]]
        while ok and chain[-1] is not None and len(chain) < 3:
            chain.append(users.get(chain[-1].output[0], [None])[0])
        if not ok or None in chain or [m.op_type for m in chain] != ["Add", "Mul", "Mul"]:
            continue
        x = div.input[0]
        if x not in chain[1].input and x not in chain[2].input:
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [chain[2].output[0]], name=erf.name + "_gelu")
        for dead in [div, erf, *chain]:
            g.node.remove(dead)
        g.node.insert(_index_after(g, x), gelu)
        model.opset_import[0].version = max(model.opset_import[0].version, 20)
    return model


def _index_after(g: onnx.GraphProto, tensor: str) -> int:
    for k, node in enumerate(g.node):
        if tensor in node.output:
            return k + 1
    return 0
