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
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from spikeport.convert.onnx_import import _attrs, _Ctx, _refuse, importer
from spikeport.errors import UnsupportedOp
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


def _quiet_options() -> ort.SessionOptions:
    """onnxruntime options that keep its warnings (e.g. unused initializers after folding) off
    stderr, so an import error stays one line."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return opts


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
    opts = _quiet_options()
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
    if n.input[0] in ctx.consts and n.input[1] not in ctx.consts:
        _embedding(ctx, n)
        return
    idx = ctx.const(n, 1, "the index")
    if idx.ndim != 0:
        raise _refuse(n, f"only a scalar constant index is supported, got shape {idx.shape}")
    axis = int(_attrs(n).get("axis", 0))
    ctx.emit(Node(n.name, "take", [n.input[0]], n.output[0], {"axis": axis, "index": int(idx)}))


def _embedding(ctx: _Ctx, n: onnx.NodeProto) -> None:
    """Gather(table, ids): a lookup of token embeddings by an integer model input."""
    table = ctx.consts[n.input[0]]
    if table.ndim != 2 or int(_attrs(n).get("axis", 0)) != 0:
        raise _refuse(n, f"only row lookups in a 2-D table are supported, table is {table.shape}")
    ids = ctx.tensors.get(ctx.name(n.input[1]))
    if ids is None or ids.dtype != "int64":
        raise _refuse(n, f"the ids '{n.input[1]}' must be an integer model input")
    ctx.emit(
        Node(n.name, "embed", [n.input[1]], n.output[0], {}, {"table": table.astype(np.float32)})
    )


@importer("Tanh")
def _tanh(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    ctx.emit(Node(n.name, "tanh", [n.input[0]], n.output[0]))


def _emit_slice(ctx: _Ctx, n: onnx.NodeProto, out: str, name: str, spec: list[tuple]) -> None:
    """One slice node from (axis, start, end, step) tuples, clamped like ONNX Slice."""
    shape = ctx.shape(n.input[0])
    attrs: dict[str, list[int]] = {"axes": [], "starts": [], "ends": [], "steps": []}
    for axis, start, end, step in spec:
        ax = int(axis) % len(shape)
        if step == 0:
            raise _refuse(n, "a step of 0 is not a slice")
        s, e, _ = slice(int(start), int(end), int(step)).indices(shape[ax])
        for k, v in zip(attrs, (ax, s, e, int(step)), strict=True):
            attrs[k].append(v)
    ctx.emit(Node(name, "slice", [n.input[0]], out, attrs))


@importer("Slice")
def _slice(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    starts = ctx.const(n, 1, "starts")
    ends = ctx.const(n, 2, "ends")
    rank = len(ctx.shape(n.input[0]))
    axes = ctx.const(n, 3, "axes") if len(n.input) > 3 and n.input[3] else np.arange(len(starts))
    steps = ctx.const(n, 4, "steps") if len(n.input) > 4 and n.input[4] else np.ones(len(starts))
    if any(int(a) % rank == 0 for a in axes):
        raise _refuse(n, "slicing the batch axis is not supported")
    _emit_slice(ctx, n, n.output[0], n.name, list(zip(axes, starts, ends, steps, strict=True)))


@importer("Split")
def _split(ctx: _Ctx, n: onnx.NodeProto) -> None:
    """Split into k outputs: k slice nodes, named after the Split node and output index."""
    _need_seq(ctx, n)
    shape = ctx.shape(n.input[0])
    axis = int(_attrs(n).get("axis", 0)) % len(shape)
    if axis == 0:
        raise _refuse(n, "splitting the batch axis is not supported")
    if len(n.input) > 1 and n.input[1]:
        sizes = [int(s) for s in ctx.const(n, 1, "the split sizes")]
    elif "split" in _attrs(n):
        sizes = [int(s) for s in _attrs(n)["split"]]
    else:
        k = len(n.output)
        chunk = -(-shape[axis] // k)  # ONNX: equal parts, the last one smaller
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(k)]
    start = 0
    for i, (out, size) in enumerate(zip(n.output, sizes, strict=True)):
        if out:
            _emit_slice(ctx, n, out, f"{n.name}:{i}", [(axis, start, start + size, 1)])
        start += size


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
    if n.input[0] in ctx.masks:  # scores + additive attention mask, fused (plan_masks)
        scores, mask = ctx.masks[n.input[0]]
        ctx.emit(Node(n.name, "masked_softmax", [scores, mask], n.output[0]))
        return
    ctx.emit(Node(n.name, "softmax", [n.input[0]], n.output[0]))


@importer("Gelu")
def _gelu(ctx: _Ctx, n: onnx.NodeProto) -> None:
    _need_seq(ctx, n)
    if _attrs(n).get("approximate", b"none") not in (b"none", "none"):
        raise _refuse(n, "only the exact (erf) GELU is supported, not approximate='tanh'")
    ctx.emit(Node(n.name, "gelu", [n.input[0]], n.output[0]))


def _users(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """tensor -> the nodes that read it, in graph order."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    return users


def fuse_erf_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the exported erf pattern 0.5 * x * (1 + erf(x / sqrt 2)) by one Gelu node."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    users = _users(g)
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


# -- attention masks ---------------------------------------------------------------------------

MASKED_BELOW = -1e4  # an additive mask value at or below this excludes a key (exp underflows)


@dataclass
class MaskPlan:
    """How the model uses its integer inputs besides embedding lookups.

    skip:  nodes that compute only from integer inputs (the mask's Equal/Where/Expand/Reshape
           chain); they are not imported one by one.
    adds:  output of each Add(scores, mask values) that feeds Softmax -> (scores tensor, the
           integer input it masks by); the Softmax becomes one masked_softmax node.
    """

    skip: set[str] = field(default_factory=set)
    adds: dict[str, tuple[str, str]] = field(default_factory=dict)


def _integer_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in g.initializer}
    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    return [i for i in g.input if i.name not in inits and i.type.tensor_type.elem_type in ints]


def plan_masks(model: onnx.ModelProto) -> MaskPlan:
    """Find the additive attention masks; refuse any other use of an integer input."""
    g = model.graph
    consts = {i.name for i in g.initializer} | {
        o for n in g.node if n.op_type == "Constant" for o in n.output
    }
    ints = {i.name: i for i in _integer_inputs(g)}
    derived: dict[str, set[str]] = {name: {name} for name in ints}  # tensor -> integer inputs
    plan = MaskPlan()
    for n in g.node:
        live = [i for i in n.input if i and i not in consts]
        if not live or not all(i in derived for i in live) or _is_embedding(n, consts):
            continue
        for o in n.output:
            derived[o] = set().union(*(derived[i] for i in live))
        plan.skip.add(n.name)
    users = _users(g)
    for n in g.node:
        if n.name in plan.skip:
            continue
        masked = [i for i in n.input if i in derived]
        if n.op_type == "Add" and len(masked) == 1 and len(derived[masked[0]]) == 1:
            if all(u.op_type == "Softmax" for u in users.get(n.output[0], [None])):
                (source,) = derived[masked[0]]
                _check_key_mask(model, n, masked[0], ints[source])
                scores = next(i for i in n.input if i != masked[0])
                plan.adds[n.output[0]] = (scores, source)
                continue
        if masked and not _is_embedding(n, consts):
            raise UnsupportedOp(
                f"node '{n.name}' ({n.op_type}): computes with integer input "
                f"'{sorted(derived[masked[0]])[0]}'; integer inputs are supported as token ids "
                "of an embedding (Gather) and as an additive attention mask before Softmax"
            )
    return plan


def _is_embedding(n: onnx.NodeProto, consts: set[str]) -> bool:
    return n.op_type == "Gather" and n.input[0] in consts and n.input[1] not in consts


def _check_key_mask(
    model: onnx.ModelProto, add: onnx.NodeProto, bias: str, mask: onnx.ValueInfoProto
) -> None:
    """Run the mask's subgraph on random 0/1 masks: it must give 0 for kept keys and at most
    MASKED_BELOW for masked ones, one value per key along the last axis (key padding)."""
    sub = onnx.utils.Extractor(model).extract_model([mask.name], [bias])
    sess = ort.InferenceSession(
        sub.SerializeToString(), _quiet_options(), providers=["CPUExecutionProvider"]
    )
    shape = [d.dim_value for d in mask.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(mask.type.tensor_type.elem_type)
    rng = np.random.default_rng(0)
    for _ in range(4):
        flags = (rng.random(shape) < 0.6).astype(dtype)
        flags.reshape(-1)[0] = 1
        values = sess.run(None, {mask.name: flags})[0]
        keep = flags.reshape(-1) > 0
        ok = values.shape[-1] == keep.size and (
            np.all(values[..., keep] == 0) and np.all(values[..., ~keep] <= MASKED_BELOW)
        )
        if not ok:
            raise UnsupportedOp(
                f"node '{add.name}' (Add): '{bias}' is not a key-padding mask of "
                f"'{mask.name}' (0 where kept, <= {MASKED_BELOW:g} where masked, per key)"
            )


# -- decomposed LayerNorm ------------------------------------------------------------------------


def fuse_decomposed_layernorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace mean/centre/variance/sqrt/divide (+ scale, + shift) chains over the last axis,
    as older exports write LayerNorm, by one LayerNormalization node."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    for rm in [n for n in g.node if n.op_type == "ReduceMean"]:
        chain = _layernorm_chain(g, rm, consts)
        if chain is None:
            continue
        nodes, x, out, eps, gamma, beta = chain
        width = _last_dim(g, x)
        names = [f"{rm.name}_ln_gamma", f"{rm.name}_ln_beta"]
        gamma = np.ones(width) if gamma is None else gamma
        beta = np.zeros(width) if beta is None else beta
        for name, v in zip(names, (gamma, beta), strict=True):
            v = np.broadcast_to(v, (width,)).astype(np.float32)
            g.initializer.append(onnx.numpy_helper.from_array(v, name))
        ln = onnx.helper.make_node(
            "LayerNormalization",
            [x, *names],
            [out],
            name=rm.name + "_layernorm",
            axis=-1,
            epsilon=eps,
        )
        at = list(g.node).index(nodes[0])
        for dead in nodes:
            g.node.remove(dead)
        g.node.insert(at, ln)
    return model


def _last_dim(g: onnx.GraphProto, tensor: str) -> int:
    for v in list(g.value_info) + list(g.input):
        if v.name == tensor:
            return int(v.type.tensor_type.shape.dim[-1].dim_value)
    raise UnsupportedOp(f"tensor '{tensor}': shape unknown, cannot fuse its LayerNorm")


def _layernorm_chain(g: onnx.GraphProto, rm: onnx.NodeProto, consts: dict[str, np.ndarray]):
    """(nodes, x, output, eps, gamma, beta) of the pattern starting at `rm`, or None."""
    users = _users(g)

    def only(t: str, op: str) -> onnx.NodeProto | None:
        u = users.get(t, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    def scalar(t: str) -> float | None:
        v = consts.get(t)
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    x = rm.input[0]
    if not _reduces_last_axis(g, rm, consts):
        return None
    sub = only(rm.output[0], "Sub")
    if sub is None or list(sub.input) != [x, rm.output[0]]:
        return None
    d_users = users.get(sub.output[0], [])
    pw = next((u for u in d_users if u.op_type == "Pow"), None)
    div = next((u for u in d_users if u.op_type == "Div"), None)
    if len(d_users) != 2 or pw is None or div is None or scalar(pw.input[1]) != 2.0:
        return None
    rm2 = only(pw.output[0], "ReduceMean")
    if rm2 is None or not _reduces_last_axis(g, rm2, consts):
        return None
    nodes, eps, t = [rm, sub, pw, rm2], 0.0, rm2.output[0]
    add = only(t, "Add")
    if add is not None:
        e = scalar(next(i for i in add.input if i != t))
        if e is None:
            return None
        nodes, eps, t = nodes + [add], e, add.output[0]
    sq = only(t, "Sqrt")
    if sq is None or list(div.input) != [sub.output[0], sq.output[0]]:
        return None
    nodes += [sq, div]
    out, gamma, beta = div.output[0], None, None
    mul = only(out, "Mul")
    if mul is not None:
        c = next((i for i in mul.input if i != out and i in consts), None)
        if c is not None:
            nodes, gamma, out = nodes + [mul], consts[c].reshape(-1), mul.output[0]
    add_b = only(out, "Add")
    if add_b is not None:
        c = next((i for i in add_b.input if i != out and i in consts), None)
        if c is not None:
            nodes, beta, out = nodes + [add_b], consts[c].reshape(-1), add_b.output[0]
    return nodes, x, out, eps, gamma, beta


def _reduces_last_axis(g: onnx.GraphProto, rm: onnx.NodeProto, consts: dict) -> bool:
    if len(rm.input) > 1 and rm.input[1]:
        axes = consts.get(rm.input[1])
        axes = None if axes is None else [int(a) for a in np.atleast_1d(axes)]
    else:
        axes = [int(a) for a in _attrs(rm).get("axes", [])]
    if axes is None or len(axes) != 1:
        return False
    rank = next(
        (
            len(v.type.tensor_type.shape.dim)
            for v in list(g.value_info) + list(g.input)
            if v.name == rm.input[0]
        ),
        None,
    )
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)
