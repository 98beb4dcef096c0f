"""ONNX -> Graph (stage "ann"): the one import path for every graph, CNN or transformer.

1. spikeport.convert.onnx_qdq: a QDQ-quantized model becomes the float network it quantizes.
   spikeport.convert.onnx_load: check, batch axis fixed to 1, other dynamic axes from the data
   or --input-shape, onnxruntime's basic optimiser folds shapes and constants, shape inference.
2. spikeport.convert.onnx_patterns: fuse what exporters spell in several nodes (erf GELU,
   decomposed LayerNorm, additive attention masks), each fusion checked.
3. spikeport.convert.onnx_ops: one importer per op, over per-sample shapes (the batch axis is
   dropped from every tensor alike, wherever the exporter put it; see onnx_ctx).
Anything else is refused with one line naming the node and its op.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import onnx
from onnx import numpy_helper

from spikeport.convert import onnx_ops  # noqa: F401  (fills IMPORTERS)
from spikeport.convert.onnx_ctx import IMPORTERS, Ctx, refuse
from spikeport.convert.onnx_load import (
    INTEGER_INPUTS,
    batch_fixed_at_one,
    canonicalise,
    data_inputs,
    load_checked,
)
from spikeport.convert.onnx_patterns import (
    SPIKEPORT_DOMAIN,
    fuse_decomposed_layernorm,
    fuse_erf_gelu,
    fuse_l2norm,
    fuse_layernorm_by_value,
    fuse_masked_mean,
    fuse_one_hot_matmul,
    fuse_tanh_gelu,
    lift_1d_windows,
    plan_masks,
)
from spikeport.convert.onnx_qdq import dequantize
from spikeport.errors import SpikeportError, UnsupportedOp
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, TensorInfo

# Ops through which an integer input (ids) keeps its values: aliased, not imported.
ID_MOVES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Identity", "Cast", "Flatten"})
# A classifier's last op that keeps the argmax: dropped, and said so in meta and inspect.
ARGMAX_KEEPING = frozenset({"softmax"})


def _onnx_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = v.type.tensor_type.shape.dim
        if v.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[v.name] = tuple(int(d.dim_value) for d in dims)
    return shapes


def _graph_inputs(model: onnx.ModelProto) -> list[TensorInfo]:
    infos = []
    for i in data_inputs(model):
        dims = [d.dim_value for d in i.type.tensor_type.shape.dim]
        dtype = INTEGER_INPUTS.get(i.type.tensor_type.elem_type, "float32")
        infos.append(TensorInfo(i.name, tuple(dims[1:]), dtype))
    return infos


def _count_uses(ctx: Ctx, model: onnx.ModelProto) -> None:
    for n in model.graph.node:
        for i in n.input:
            ctx.uses[i] = ctx.uses.get(i, 0) + 1


def _drop_argmax_keeping_tail(ctx: Ctx, outputs: list[str]) -> list[str]:
    """A Softmax / LogSoftmax that only gives a graph output is dropped: the accumulated logits
    have the same argmax, and no target then needs an integer softmax at the very end."""
    kept = []
    for out in outputs:
        node = ctx.producer(out)
        if node is not None and node.op in ARGMAX_KEEPING and ctx.uses.get(out, 0) == 0:
            ctx.notes.append(  # the node itself goes with the unread ones (_prune)
                f"node '{node.name}' (softmax over the last axis) gave graph output '{out}': "
                f"dropped, the output is its input '{node.inputs[0]}' (same argmax)"
            )
            out = node.inputs[0]
            ctx.dropped_softmax.append(out)
        kept.append(out)
    return kept


def _prune(ctx: Ctx, outputs: list[str]) -> None:
    """Drop nodes nothing reads (the Sigmoid of a fused x * Sigmoid(x), a dropped branch)."""
    needed = set(outputs)
    kept = []
    for node in reversed(ctx.nodes):
        if node.output in needed:
            kept.append(node)
            needed.update(node.inputs)
    ctx.nodes = kept[::-1]


def _check_outputs(ctx: Ctx, outputs: list[str]) -> None:
    for out in outputs:
        if out not in ctx.tensors:
            raise UnsupportedOp(f"graph output '{out}' is not computed from the data inputs")
        if ctx.bpos.get(out) != 0:
            raise UnsupportedOp(f"graph output '{out}' does not keep the batch axis first")


def _import_node(ctx: Ctx, n: onnx.NodeProto) -> None:
    """Run n's importer. An importer that meets an attribute or shape combination it was not
    written for says so naming the node, rather than ending the import in a traceback."""
    try:
        IMPORTERS[n.op_type](ctx, n)
    except SpikeportError:
        raise
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
        detail = str(e).splitlines()[0][:200] if str(e) else ""
        raise refuse(n, f"cannot be imported ({type(e).__name__}: {detail})") from e


def import_onnx(
    path: str | os.PathLike[str],
    input_shapes: Mapping[str, tuple[int, ...]] | None = None,
    data_shapes: Mapping[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Read an ONNX model into a float ANN graph, refusing what it cannot represent (naming
    the node). `input_shapes` gives per-sample shapes of inputs with dynamic axes; where it
    does not, `data_shapes` (a data file's per-sample shapes by key) fills dynamic axes."""
    p = existing_file(path, "ONNX model")
    original = load_checked(p)
    model, qdq_notes = dequantize(original)
    model = canonicalise(model, input_shapes, data_shapes)
    model = fuse_decomposed_layernorm(fuse_tanh_gelu(fuse_erf_gelu(model)))
    model = lift_1d_windows(fuse_layernorm_by_value(model))
    model = fuse_l2norm(fuse_masked_mean(fuse_one_hot_matmul(model)))
    plan = plan_masks(model)
    inputs = _graph_inputs(model)
    ctx = Ctx(
        consts={i.name: numpy_helper.to_array(i) for i in model.graph.initializer},
        tensors={t.name: t for t in inputs},
        onnx_shapes=_onnx_shapes(model),
        bpos={t.name: 0 for t in inputs},
        masks=plan.adds,
        graph_outputs={o.name for o in model.graph.output},
        model=model,
        input_info={i.name: i for i in model.graph.input},
        derived=plan.derived,
    )
    ctx.notes.extend(qdq_notes)
    _count_uses(ctx, model)
    for n in model.graph.node:
        if n.name in plan.skip:
            live = [i for i in n.input if i and not ctx.is_const(i)]
            if n.op_type in ID_MOVES and len(live) == 1 and ctx.name(live[0]) in ctx.tensors:
                ctx.alias[n.output[0]] = live[0]  # ids reshaped as they are
            continue  # computes the attention mask: fused into the masked softmax
        if n.output[0] in plan.adds:
            ctx.alias[n.output[0]] = plan.adds[n.output[0]][0]  # scores; the mask goes to Softmax
            continue
        if n.domain not in ("", "ai.onnx", SPIKEPORT_DOMAIN) or n.op_type not in IMPORTERS:
            raise refuse(n, "op is not in spikeport's vocabulary")
        _import_node(ctx, n)
    outputs = [ctx.name(o.name) for o in model.graph.output]
    outputs = _drop_argmax_keeping_tail(ctx, outputs)
    _check_outputs(ctx, outputs)
    _prune(ctx, outputs)
    source = {
        "format": "onnx",
        "file": os.path.basename(p),
        "sha256": sha256_file(p),
        "opset": max(
            (o.version for o in original.opset_import if o.domain in ("", "ai.onnx")), default=0
        ),
        "batch_fixed_at_one": batch_fixed_at_one(original),
        "outputs": [o.name for o in original.graph.output],
        "notes": ctx.notes,
        # outputs whose final softmax was dropped: the source model's output is softmax(them)
        "dropped_softmax": ctx.dropped_softmax,
    }
    graph = Graph(inputs=inputs, nodes=ctx.nodes, outputs=outputs, meta={"source": source})
    return check_graph(graph)
