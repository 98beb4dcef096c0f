"""Read an ONNX file and canonicalise it, before spikeport's own importers see it.

Every graph, whatever its op mix, goes through the same steps:

1. onnx.load + onnx.checker: a malformed file is one `BadInput` line.
2. Old-style files list their initializers as graph inputs too; they are dropped from the
   inputs, so that they are constants (and foldable) as in any current export.
3. The batch axis (axis 0 of every graph input) is fixed to 1 and every other dynamic
   dimension to the size the user or the calibration data gives (`input_shapes`).
4. onnxruntime's basic offline optimiser (constant folding, redundant-node elimination,
   Conv+BatchNorm/Mul/Add fusion) folds what depends only on static shapes: the Shape /
   Gather / Concat chains of attention reshapes, a CLS token's Expand over the batch,
   Reshape/Transpose of constant weights. We use it rather than writing those folds again.
5. onnx shape inference gives every tensor its batch-1 shape; the importer drops the batch
   axis from each (spikeport.convert.onnx_import) and checks its own shapes against these.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import onnx
import onnxruntime as ort

from spikeport.errors import BadInput, UnsupportedOp

INTEGER_INPUTS = {onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int64"}
FLOAT_INPUTS = {onnx.TensorProto.FLOAT: "float32"}


def quiet_session_options() -> ort.SessionOptions:
    """onnxruntime options that keep its warnings (e.g. unused initializers after folding) off
    stderr, so an import error stays one line."""
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    return opts


def load_checked(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """onnx.load + checker; any failure is one line naming the file."""
    try:
        model = onnx.load(str(path))
        opset = max(
            (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
        )
        if opset > onnx.defs.onnx_opset_version():
            raise ValueError(
                f"opset {opset} is newer than this onnx / onnxruntime know "
                f"({onnx.defs.onnx_opset_version()}); export with an older opset"
            )
        onnx.checker.check_model(model)
        _decode_names(model.graph)
        return model
    except Exception as e:  # onnx raises DecodeError, ValidationError, InferenceError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: not a valid ONNX model ({first})") from None


def _decode_names(g: onnx.GraphProto) -> None:
    """Every name must be text: protobuf hands a name that is not UTF-8 back as bytes, which
    fails wherever it is next used; here it is one BadInput line instead."""
    names = [v.name for v in list(g.input) + list(g.output) + list(g.initializer)]
    for n in g.node:
        names += [n.name, n.op_type, n.domain, *n.input, *n.output]
    bad = next((x for x in names if not isinstance(x, str)), None)
    if bad is not None:
        raise ValueError(f"a name is not UTF-8 text: {bad[:40]!r}")


def data_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph inputs that are not initializers (old-style files list both)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def batch_fixed_at_one(model: onnx.ModelProto) -> bool:
    """True when the file's batch axis is a static 1 (then the reference runs sample by
    sample, while spikeport still calibrates and evaluates in batches)."""
    dims = [i.type.tensor_type.shape.dim for i in data_inputs(model)]
    return all(d and d[0].HasField("dim_value") and d[0].dim_value == 1 for d in dims)


def _fix_dims(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]],
    data_shapes: Mapping[str, tuple[int, ...]],
) -> None:
    """Batch axis -> 1; other dynamic axes from `input_shapes` (per-sample shapes, by input
    name), else from `data_shapes` (the calibration file's arrays, by key: the input's name,
    or `x` for a single input), which only ever fill axes the model leaves dynamic."""
    inputs = data_inputs(model)
    for vi in inputs:
        elem = vi.type.tensor_type.elem_type
        if elem not in INTEGER_INPUTS and elem not in FLOAT_INPUTS:
            raise UnsupportedOp(
                f"input '{vi.name}': element type {onnx.TensorProto.DataType.Name(elem)} is not "
                "supported (float32, or int32/int64 ids and masks)"
            )
        dims = vi.type.tensor_type.shape.dim
        if not dims:
            raise BadInput(f"input '{vi.name}' has no shape; it needs at least a batch axis")
        given = input_shapes.get(vi.name)
        dynamic = not all(d.HasField("dim_value") and d.dim_value > 0 for d in dims[1:])
        if given is None and dynamic:
            single = data_shapes.get("x") if len(inputs) == 1 else None
            given = data_shapes.get(vi.name, single)
        if given is not None and len(given) != len(dims) - 1:
            raise BadInput(
                f"input '{vi.name}': shape {'x'.join(map(str, given))} has {len(given)} axes, "
                f"the model's input has {len(dims) - 1} after the batch axis"
            )
        dims[0].ClearField("dim_param")
        dims[0].dim_value = 1
        for k, d in enumerate(dims[1:]):
            static = d.HasField("dim_value") and d.dim_value > 0
            if given is not None:
                if static and d.dim_value != given[k]:
                    raise BadInput(
                        f"input '{vi.name}': axis {k + 1} is {d.dim_value} in the model, "
                        f"the data or --input-shape gives {given[k]}"
                    )
                d.ClearField("dim_param")
                d.dim_value = int(given[k])
            elif not static:
                raise BadInput(
                    f"input '{vi.name}': axis {k + 1} ('{d.dim_param or '?'}') is dynamic; "
                    f"give calibration data or --input-shape {vi.name}=..."
                )
    # Outputs keep only their rank: their sizes follow from the inputs.
    for vo in model.graph.output:
        for d in vo.type.tensor_type.shape.dim:
            d.Clear()


def readers(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """tensor -> the nodes that read it, in graph order."""
    users: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for i in node.input:
            users.setdefault(i, []).append(node)
    return users


def merge_duplicates(g: onnx.GraphProto) -> None:
    """Common-subexpression elimination: a node with the same op, inputs and attributes as an
    earlier one is dropped and its outputs read from that one (some exporters write the mean of
    a LayerNorm twice, which onnxruntime's basic level leaves, so its pattern would not match)."""
    seen: dict[bytes, onnx.NodeProto] = {}
    rename: dict[str, str] = {}
    kept = []
    for n in g.node:
        for k, t in enumerate(n.input):
            n.input[k] = rename.get(t, t)
        key = onnx.NodeProto(
            op_type=n.op_type, domain=n.domain, input=n.input, attribute=n.attribute
        )
        first = seen.get(key.SerializeToString(deterministic=True))
        if first is None or len(first.output) != len(n.output):
            seen.setdefault(key.SerializeToString(deterministic=True), n)
            kept.append(n)
            continue
        rename.update(zip(n.output, first.output, strict=True))
    outputs = {o.name for o in g.output}
    if any(t in outputs for t in rename):  # keep graph output names: leave such graphs alone
        return
    del g.node[:]
    g.node.extend(kept)


def canonicalise(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    data_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> onnx.ModelProto:
    """The batch-1, shape-folded, shape-inferred form of `model` (see the module docstring)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    inits = {i.name for i in model.graph.initializer}
    kept = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    if not kept:
        raise BadInput("the model has no data input (every graph input is an initializer)")
    _fix_dims(model, input_shapes or {}, data_shapes or {})
    del model.graph.value_info[:]
    for i, n in enumerate(model.graph.node):
        n.name = n.name or f"{n.op_type}_{i}"
    opts = quiet_session_options()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with tempfile.TemporaryDirectory() as tmp:
        opts.optimized_model_filepath = os.path.join(tmp, "folded.onnx")
        try:
            ort.InferenceSession(
                model.SerializeToString(),
                opts,
                providers=["CPUExecutionProvider"],
                # its transpose pushing splits written-out LayerNorms (paddle2onnx's SVTR)
                # that onnx_patterns fuses; transposes are data movement here anyway
                disabled_optimizers=["TransposeOptimizer"],
            )
        except Exception as e:  # onnxruntime's own errors: one line
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UnsupportedOp(f"onnxruntime cannot load the model ({first[:300]})") from None
        folded = onnx.load(opts.optimized_model_filepath)
    for i, n in enumerate(folded.graph.node):
        n.name = n.name or f"{n.op_type}_{i}"
    merge_duplicates(folded.graph)
    try:
        return onnx.shape_inference.infer_shapes(folded, data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedOp(f"onnx shape inference fails on the folded model ({first})") from None
