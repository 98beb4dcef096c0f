"""ONNX -> Graph (stage "ann").

The model is checked (onnx.checker) and shape-inferred first. Each ONNX op has one importer,
registered by op type; BatchNormalization and bias Adds are folded into the Conv/Gemm before
them, Identity and Dropout vanish, and anything else is refused with the node's name and type.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from spikeport.errors import BadInput, UnsupportedOp
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import infer_shape
from spikeport.registry import registrar


@dataclass
class _Ctx:
    """Import state: constants, aliases of removed nodes, and the IR being built."""

    consts: dict[str, np.ndarray]
    tensors: dict[str, TensorInfo]
    nodes: list[Node] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)
    # Sequence models are imported from their batch-1 form: every tensor keeps its full shape
    # (batch axis of size 1 included) as its per-sample shape, and ONNX axes apply unchanged.
    keep_batch: bool = False
    # Add outputs that are scores + an additive attention mask -> (scores, mask input).
    masks: dict[str, tuple[str, str]] = field(default_factory=dict)

    def shape(self, t: str) -> tuple[int, ...]:
        return self.tensors[self.name(t)].shape

    def name(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def const(self, n: onnx.NodeProto, i: int, what: str) -> np.ndarray:
        t = n.input[i] if i < len(n.input) else ""
        if t not in self.consts:
            raise UnsupportedOp(
                f"node '{n.name}' ({n.op_type}): {what} must be a constant "
                f"(an initializer), '{t}' is computed at run time"
            )
        return self.consts[t]

    def emit(self, node: Node) -> None:
        node.inputs = [self.name(t) for t in node.inputs]
        shape = infer_shape(node, [self.tensors[t].shape for t in node.inputs])
        self.tensors[node.output] = TensorInfo(node.output, shape)
        self.nodes.append(node)

    def producer(self, t: str) -> Node | None:
        t = self.name(t)
        return next((n for n in self.nodes if n.output == t), None)

    def fold_target(self, t: str) -> Node | None:
        """The Conv/Gemm that alone feeds `t`, if folding a per-channel affine into it is safe."""
        p = self.producer(t)
        ok = p is not None and p.op in ("dense", "conv2d") and self.uses.get(p.output, 0) == 1
        return p if ok else None

    def rename_output(self, node: Node, new: str) -> None:
        self.tensors[new] = TensorInfo(new, self.tensors.pop(node.output).shape)
        node.output = new


Importer = Callable[[_Ctx, onnx.NodeProto], None]
IMPORTERS: dict[str, Importer] = {}


importer = registrar(IMPORTERS)


def _attrs(n: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def _refuse(n: onnx.NodeProto, why: str) -> UnsupportedOp:
    return UnsupportedOp(f"node '{n.name}' ({n.op_type}): {why}")


def _window_attrs(n: onnx.NodeProto, rank_ok: int = 2) -> dict[str, list[int]]:
    a = _attrs(n)
    k = list(a.get("kernel_shape", []))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        raise _refuse(
            n, f"auto_pad={a['auto_pad'].decode()} is not supported; export explicit pads"
        )
    if a.get("ceil_mode", 0):
        raise _refuse(n, "ceil_mode=1 is not supported")
    if k and len(k) != rank_ok:
        raise _refuse(n, f"only 2-D windows are supported, got kernel {k}")
    return {
        "kernel": k,
        "strides": list(a.get("strides", [1, 1])),
        "pads": list(a.get("pads", [0, 0, 0, 0])),
        "dilations": list(a.get("dilations", [1, 1])),
    }


@importer("Constant")
def _constant(ctx: _Ctx, n: onnx.NodeProto) -> None:
    a = n.attribute[0]
    if a.name != "value":
        raise _refuse(n, f"constant attribute '{a.name}' is not supported")
    ctx.consts[n.output[0]] = numpy_helper.to_array(a.t)


@importer("Identity", "Dropout")
def _passthrough(ctx: _Ctx, n: onnx.NodeProto) -> None:
    if n.input[0] in ctx.consts:
        ctx.consts[n.output[0]] = ctx.consts[n.input[0]]
    if len(n.output) > 1 and n.output[1] and ctx.uses.get(n.output[1]):
        raise _refuse(n, "its mask output is used")
    ctx.alias[n.output[0]] = n.input[0]


@importer("Conv")
def _conv(ctx: _Ctx, n: onnx.NodeProto) -> None:
    w = ctx.const(n, 1, "the weight").astype(np.float32)
    b = ctx.const(n, 2, "the bias") if len(n.input) > 2 and n.input[2] else np.zeros(w.shape[0])
    if w.ndim != 4:
        raise _refuse(n, f"only 2-D convolution is supported, weight is {w.shape}")
    win = _window_attrs(n)
    attrs = {
        "strides": win["strides"],
        "pads": win["pads"],
        "dilations": win["dilations"],
        "group": int(_attrs(n).get("group", 1)),
    }
    ctx.emit(
        Node(
            n.name,
            "conv2d",
            [n.input[0]],
            n.output[0],
            attrs,
            {"weight": w, "bias": b.astype(np.float32)},
        )
    )


@importer("Gemm", "MatMul")
def _gemm(ctx: _Ctx, n: onnx.NodeProto) -> None:
    a = _attrs(n)
    if n.op_type == "MatMul" and ctx.keep_batch and n.input[1] not in ctx.consts:
        ctx.emit(Node(n.name, "matmul", list(n.input), n.output[0]))
        return
    if a.get("transA", 0):
        raise _refuse(n, "transA=1 is not supported")
    w = ctx.const(n, 1, "the second operand (weight)").astype(np.float64)
    if w.ndim != 2:
        raise _refuse(n, f"weight must be 2-D, got {w.shape}")
    w = (w if a.get("transB", 0) else w.T) * float(a.get("alpha", 1.0))
    b = np.zeros(w.shape[0])
    if n.op_type == "Gemm" and len(n.input) > 2 and n.input[2]:
        b = b + float(a.get("beta", 1.0)) * ctx.const(n, 2, "the bias")
    ctx.emit(
        Node(
            n.name,
            "dense",
            [n.input[0]],
            n.output[0],
            {},
            {"weight": w.astype(np.float32), "bias": b.astype(np.float32)},
        )
    )


@importer("Add")
def _add(ctx: _Ctx, n: onnx.NodeProto) -> None:
    const = [i for i in n.input if i in ctx.consts]
    if not const:
        ctx.emit(Node(n.name, "add", list(n.input), n.output[0]))
        return
    act = next(i for i in n.input if i not in ctx.consts)
    target = ctx.fold_target(act)
    c = ctx.consts[const[0]]
    if (target is None or c.size != target.params["bias"].size and c.size != 1) and ctx.keep_batch:
        ctx.emit(
            Node(
                n.name,
                "offset",
                [act],
                n.output[0],
                {},
                {"value": c.astype(np.float32).reshape(c.shape[-len(ctx.shape(act)) :])},
            )
        )
        return
    if target is None or c.size != target.params["bias"].size and c.size != 1:
        raise _refuse(
            n,
            "adding a constant is supported only as the bias of the Conv/Gemm/MatMul "
            "right before it",
        )
    target.params["bias"] = (target.params["bias"] + c.reshape(-1)).astype(np.float32)
    ctx.rename_output(target, n.output[0])


@importer("BatchNormalization")
def _batchnorm(ctx: _Ctx, n: onnx.NodeProto) -> None:
    target = ctx.fold_target(n.input[0])
    if target is None:
        raise _refuse(
            n, "only a BatchNormalization right after a Conv/Gemm (its only consumer) can be folded"
        )
    gamma, beta, mean, var = (
        ctx.const(n, i, k).astype(np.float64)
        for i, k in enumerate(("scale", "B", "mean", "var"), 1)
    )
    scale = gamma / np.sqrt(var + float(_attrs(n).get("epsilon", 1e-5)))
    w = target.params["weight"]
    target.params["weight"] = (w * scale.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    target.params["bias"] = ((target.params["bias"] - mean) * scale + beta).astype(np.float32)
    ctx.rename_output(target, n.output[0])


@importer("Relu")
def _relu(ctx: _Ctx, n: onnx.NodeProto) -> None:
    ctx.emit(Node(n.name, "relu", [n.input[0]], n.output[0], {"cap": None}))


@importer("Clip")
def _clip(ctx: _Ctx, n: onnx.NodeProto) -> None:
    a = _attrs(n)
    lo = float(ctx.const(n, 1, "min")) if len(n.input) > 1 and n.input[1] else a.get("min")
    hi = float(ctx.const(n, 2, "max")) if len(n.input) > 2 and n.input[2] else a.get("max")
    if lo != 0.0:
        raise _refuse(n, f"only Clip(min=0, max) maps to a neuron, min is {lo}")
    ctx.emit(Node(n.name, "relu", [n.input[0]], n.output[0], {"cap": hi}))


@importer("AveragePool", "GlobalAveragePool")
def _avgpool(ctx: _Ctx, n: onnx.NodeProto) -> None:
    if n.op_type == "GlobalAveragePool":
        _, h, w = ctx.tensors[ctx.name(n.input[0])].shape
        attrs = {"kernel": [h, w], "strides": [1, 1], "pads": [0, 0, 0, 0]}
    else:
        win = _window_attrs(n)
        if any(win["pads"]) and not _attrs(n).get("count_include_pad", 0):
            raise _refuse(
                n,
                "padding with count_include_pad=0 divides border windows by a "
                "varying count; export with count_include_pad=1 or no padding",
            )
        attrs = {k: win[k] for k in ("kernel", "strides", "pads")}
    ctx.emit(Node(n.name, "avgpool2d", [n.input[0]], n.output[0], attrs))


@importer("MaxPool")
def _maxpool(ctx: _Ctx, n: onnx.NodeProto) -> None:
    win = _window_attrs(n)
    if win["dilations"] != [1, 1]:
        raise _refuse(n, "dilated max pooling is not supported")
    if len(n.output) > 1 and n.output[1]:
        raise _refuse(n, "the indices output is not supported")
    ctx.emit(
        Node(
            n.name,
            "maxpool2d",
            [n.input[0]],
            n.output[0],
            {k: win[k] for k in ("kernel", "strides", "pads")},
        )
    )


@importer("Flatten")
def _flatten(ctx: _Ctx, n: onnx.NodeProto) -> None:
    if _attrs(n).get("axis", 1) != 1:
        raise _refuse(n, "only Flatten(axis=1) keeps the batch axis apart")
    if ctx.keep_batch:
        _full_reshape(ctx, n, [1, -1])
        return
    shape = ctx.tensors[ctx.name(n.input[0])].shape
    ctx.emit(Node(n.name, "reshape", [n.input[0]], n.output[0], {"shape": [int(np.prod(shape))]}))


def _full_reshape(ctx: _Ctx, n: onnx.NodeProto, target: list[int]) -> None:
    """Batch-1 form: the whole target shape is per sample (0 copies, -1 is inferred)."""
    in_shape = ctx.shape(n.input[0])
    keep_zero = _attrs(n).get("allowzero", 0)
    dims = [in_shape[i] if d == 0 and not keep_zero else d for i, d in enumerate(target)]
    if -1 in dims:
        known = int(np.prod([d for d in dims if d != -1]))
        dims[dims.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    ctx.emit(Node(n.name, "reshape", [n.input[0]], n.output[0], {"shape": dims}))


@importer("Reshape")
def _reshape(ctx: _Ctx, n: onnx.NodeProto) -> None:
    target = [int(d) for d in ctx.const(n, 1, "the shape")]
    if ctx.keep_batch:
        _full_reshape(ctx, n, target)
        return
    in_shape = ctx.tensors[ctx.name(n.input[0])].shape
    if not target or target[0] not in (-1, 0):
        raise _refuse(n, f"shape {target} must keep the batch axis first (-1 or 0)")
    rest = [
        in_shape[i - 1] if d == 0 and not _attrs(n).get("allowzero", 0) else d
        for i, d in enumerate(target)
        if i > 0
    ]
    if rest.count(-1) > 1 or (target[0] == -1 and -1 in rest):
        raise _refuse(n, f"shape {target} leaves the batch axis ambiguous")
    if -1 in rest:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = int(np.prod(in_shape)) // max(known, 1)
    ctx.emit(Node(n.name, "reshape", [n.input[0]], n.output[0], {"shape": rest}))


@importer("Concat")
def _concat(ctx: _Ctx, n: onnx.NodeProto) -> None:
    axis = int(_attrs(n)["axis"])
    if ctx.keep_batch:
        ctx.emit(Node(n.name, "concat", list(n.input), n.output[0], {"axis": axis}))
        return
    rank = len(ctx.tensors[ctx.name(n.input[0])].shape) + 1
    axis %= rank
    if axis == 0:
        raise _refuse(n, "concatenating along the batch axis is not supported")
    ctx.emit(Node(n.name, "concat", list(n.input), n.output[0], {"axis": axis - 1}))


def _load(path: str | os.PathLike[str]) -> onnx.ModelProto:
    p = existing_file(path, "ONNX model")
    try:
        model = onnx.load(str(p))
        onnx.checker.check_model(model)
        return onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as e:  # onnx raises DecodeError, ValidationError, InferenceError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{p}: not a valid ONNX model ({first})") from None


INTEGER_INPUTS = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int64"}


def _graph_inputs(model: onnx.ModelProto, sequence: bool) -> list[TensorInfo]:
    """The model inputs: one float input, or (sequence models) several, integer ones (token
    ids, attention masks) included."""
    inits = {i.name for i in model.graph.initializer}
    ins = [i for i in model.graph.input if i.name not in inits]
    if len(ins) != 1 and not (sequence and ins):
        raise UnsupportedOp(
            f"the model has {len(ins)} inputs {[i.name for i in ins]}; import takes exactly one "
            "(several only for sequence models)"
        )
    infos = []
    for i in ins:
        dims = i.type.tensor_type.shape.dim
        rest = [d.dim_value for d in dims[1:]]
        if not dims or any(d <= 0 for d in rest):
            raise BadInput(f"input '{i.name}' needs a batch axis and static sizes after it")
        elem = i.type.tensor_type.elem_type
        if elem != onnx.TensorProto.FLOAT and not (sequence and elem in INTEGER_INPUTS):
            raise UnsupportedOp(
                f"input '{i.name}': element type "
                f"{onnx.TensorProto.DataType.Name(elem)} is not supported (float32, or int64 "
                "token ids / masks in sequence models)"
            )
        infos.append(TensorInfo(i.name, tuple(rest), INTEGER_INPUTS.get(elem, "float32")))
    return infos


def _batch1_input(ctx: _Ctx, inp: TensorInfo) -> None:
    """Give the batch-1 graph its leading axis back: x (per sample) -> x with shape (1, ...)."""
    inner = f"{inp.name}:batch1"
    ctx.emit(Node(inner, "reshape", [inp.name], inner, {"shape": [1, *inp.shape]}))
    ctx.tensors[inner].dtype = inp.dtype
    ctx.alias[inp.name] = inner


def _batch1_outputs(ctx: _Ctx, outputs: list[str]) -> list[str]:
    """Drop the leading axis of size 1 from each graph output (per-sample classifier logits)."""
    for out in outputs:
        node = ctx.producer(out)
        shape = ctx.shape(out)
        if node is None or not shape or shape[0] != 1:
            raise UnsupportedOp(f"graph output '{out}' does not start with the batch axis")
        ctx.rename_output(node, f"{out}:batch1")
        ctx.emit(Node(f"{out}:sample", "reshape", [node.output], out, {"shape": list(shape[1:])}))
    return outputs


def import_onnx(path: str | os.PathLike[str]) -> Graph:
    """Read an ONNX CNN/MLP or sequence model into a float ANN graph, refusing what it cannot
    represent (naming the node)."""
    from spikeport.convert import onnx_seq  # registers the sequence importers

    model = _load(path)
    sequence = onnx_seq.is_sequence_model(model)
    inputs = _graph_inputs(model, sequence)
    plan = onnx_seq.MaskPlan()
    if sequence:
        model = onnx_seq.specialise_batch1(model)
        model = onnx_seq.fuse_decomposed_layernorm(onnx_seq.fuse_erf_gelu(model))
        for i, n in enumerate(model.graph.node):
            n.name = n.name or f"{n.op_type}_{i}"
        plan = onnx_seq.plan_masks(model)
    ctx = _Ctx(
        consts={i.name: numpy_helper.to_array(i) for i in model.graph.initializer},
        tensors={t.name: t for t in inputs},
        keep_batch=sequence,
        masks=plan.adds,
    )
    for n in model.graph.node:
        for i in n.input:
            ctx.uses[i] = ctx.uses.get(i, 0) + 1
    if sequence:
        for t in inputs:
            _batch1_input(ctx, t)
    for i, n in enumerate(model.graph.node):
        n.name = n.name or f"{n.op_type}_{i}"
        if n.name in plan.skip:
            continue  # computes the attention mask: fused into the masked softmax
        if n.output[0] in plan.adds:
            ctx.alias[n.output[0]] = plan.adds[n.output[0]][0]  # scores; the mask goes to Softmax
            continue
        if n.domain not in ("", "ai.onnx") or n.op_type not in IMPORTERS:
            raise _refuse(n, "op is not in spikeport's vocabulary")
        IMPORTERS[n.op_type](ctx, n)
    outputs = [ctx.name(o.name) for o in model.graph.output]
    if sequence:
        outputs = _batch1_outputs(ctx, outputs)
    graph = Graph(
        inputs=inputs,
        nodes=ctx.nodes,
        outputs=outputs,
        meta={
            "source": {
                "format": "onnx",
                "file": os.path.basename(path),
                "sha256": sha256_file(path),
                "opset": max(o.version for o in model.opset_import),
                "sequence_model": sequence,
            }
        },
    )
    return check_graph(graph)
