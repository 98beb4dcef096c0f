"""Whole-graph checks: names, topological order, stage, and every shape by the op rules
(`check_graph`, on every save and load), and the values the simulator and the targets rely on
(`check_artifact`, on every load, before check_graph: attrs, finite params, positive
thresholds, the quantization record of an integer graph)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from spikeport.errors import FormatError
from spikeport.ir.graph import STAGES, Graph, Node, TensorInfo
from spikeport.ir.ops import OPS, infer_shape

MAX_ELEMENTS = 1 << 31  # elements of one tensor per sample: beyond, no stage could hold it
# Attributes the kernels read with their registered default (ir.ops.attr): older artifacts
# and nodes that leave them out stay valid. Every other registered attribute must be there.
OPTIONAL_ATTRS = frozenset(
    {"bipolar", "dilations", "cap", "position_pad", "approximate", "alpha", "beta", "eps"}
    | {"mode", "coordinate_transformation_mode", "nearest_mode", "spike_bits"}
)
POSITIVE_LIST_ATTRS = frozenset({"strides", "kernel", "dilations"})
SHIFT_ATTRS = frozenset({"shift", "requant_shift"})
MAX_SHIFT = 62
MAX_INT_CONSTANT = 1 << 40  # the integer functions' constants are int32-sized; far beyond: corrupt
MAX_SPIKE_BITS = 16  # a graded spike's count k fits 2^16 - 1 (targets declare their own limit)
QUANT_BITS = ("weight_bits", "bias_bits", "mult_bits", "input_bits")  # checked where recorded


def check_graph(graph: Graph) -> Graph:
    """Validate `graph` and (re)compute the shape of every node output in `graph.tensors`.

    Raises FormatError / ShapeMismatch naming the first bad node or tensor.
    """
    if graph.stage not in STAGES:
        raise FormatError(f"graph stage '{graph.stage}' is not one of {STAGES}")
    known: dict[str, TensorInfo] = {t.name: t for t in graph.inputs}
    seen_nodes: set[str] = set()
    for node in graph.nodes:
        if node.name in seen_nodes:
            raise FormatError(f"node name '{node.name}' is used twice")
        seen_nodes.add(node.name)
        spec = OPS.get(node.op)
        if spec is None:
            raise FormatError(f"node '{node.name}': unknown op '{node.op}'")
        if graph.stage not in spec.stages:
            raise FormatError(
                f"node '{node.name}': op '{node.op}' is not allowed in a '{graph.stage}' graph"
            )
        for t in node.inputs:
            if t not in known:
                raise FormatError(f"node '{node.name}' reads '{t}' before anything writes it")
        if node.output in known:
            raise FormatError(f"tensor '{node.output}' is written twice")
        try:
            shape = infer_shape(node, [known[t].shape for t in node.inputs])
        except KeyError as e:
            raise FormatError(f"node '{node.name}' ({node.op}): attribute {e} is missing") from None
        except (TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError) as e:
            raise FormatError(
                f"node '{node.name}' ({node.op}): malformed attributes or params ({e})"
            ) from None
        old = graph.tensors.get(node.output)
        known[node.output] = TensorInfo(node.output, shape, old.dtype if old else "float32")
    if not graph.outputs:
        raise FormatError("the graph has no outputs")
    for out in graph.outputs:
        if out not in known:
            raise FormatError(f"graph output '{out}' is not produced by any node")
    graph.tensors = known
    return graph


def _attr_fail(node: Node, key: str, why: str) -> FormatError:
    return FormatError(f"node '{node.name}' ({node.op}): attribute '{key}' {why}")


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return type(value) is int
    if isinstance(default, float):
        return type(value) in (int, float)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def _check_attrs(node: Node) -> None:
    spec = OPS[node.op]
    for key, default in spec.attrs.items():
        if key not in node.attrs:
            if key not in OPTIONAL_ATTRS:
                raise _attr_fail(node, key, "is missing")
            continue
        value = node.attrs[key]
        if not _same_kind(value, default):
            raise _attr_fail(node, key, f"must be like {default!r}, got {value!r:.60}")
        if isinstance(value, list) and not all(type(v) is int for v in value):
            raise _attr_fail(node, key, f"must hold integers, got {value!r:.60}")
        if isinstance(value, list) and key in POSITIVE_LIST_ATTRS | {"pads", "shape"}:
            least = 0 if key == "pads" else 1
            if not all(v >= least for v in value):
                raise _attr_fail(node, key, f"must hold integers >= {least}, got {value!r:.60}")
        if key == "group" and value < 1:
            raise _attr_fail(node, key, f"must be at least 1, got {value}")
        if key == "spike_bits" and not 1 <= value <= MAX_SPIKE_BITS:
            raise _attr_fail(node, key, f"must be in 1..{MAX_SPIKE_BITS}, got {value}")
    for key, value in node.attrs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _attr_fail(node, key, f"is {value}")
    # What quantize adds for the integer simulator: shifts, and the integer constants of an
    # integer function (attrs "int"); which ones an op needs is quantize's and sim's to say.
    for key in SHIFT_ATTRS & node.attrs.keys():
        v = node.attrs[key]
        if type(v) is not int or not 0 <= v <= MAX_SHIFT:
            raise _attr_fail(node, key, f"must be an integer in 0..{MAX_SHIFT}, got {v!r:.40}")
    consts = node.attrs.get("int", {})
    if not isinstance(consts, dict) or not all(
        type(v) is int and abs(v) <= MAX_INT_CONSTANT for v in consts.values()
    ):
        raise _attr_fail(node, "int", f"must map names to integers, got {consts!r:.60}")


def check_artifact(graph: Graph) -> None:
    """The values later stages trust, checked once when an artifact is loaded: every attribute
    the op declares (with its kind, and strides, kernels and groups positive), finite params,
    thresholds > 0, tensors of a sane size, and for an integer graph its quantization record
    and an input scale for every input. Raises FormatError naming the node or entry."""
    for t in [*graph.inputs, *graph.tensors.values()]:
        if math.prod(t.shape) > MAX_ELEMENTS:
            raise FormatError(f"tensor '{t.name}': shape {t.shape} is too large")
    for node in graph.nodes:
        if node.op in OPS:  # an unknown op is check_graph's to name
            _check_attrs(node)
        for pname, arr in node.params.items():
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise FormatError(f"node '{node.name}' ({node.op}): param '{pname}' is not finite")
        if node.op == "if":
            for pname in ("threshold", "threshold_q"):
                arr = node.params.get(pname)
                if arr is not None and not (arr > 0).all():
                    raise FormatError(
                        f"node '{node.name}' (if): param '{pname}' must be positive, "
                        f"min {arr.min().item()}"
                    )
        if graph.stage == "int":
            for pname, arr in node.params.items():
                if pname.endswith("_q") and arr.dtype.kind not in "iu":
                    raise FormatError(
                        f"node '{node.name}' ({node.op}): param '{pname}' must be integer, "
                        f"is {arr.dtype}"
                    )
    for t, arr in graph.scales.items():
        if arr.dtype.kind != "f" or not (np.isfinite(arr) & (arr > 0)).all():
            raise FormatError(f"scale of '{t}' must be finite and positive")
    if graph.stage == "int":
        q = graph.meta.get("quantization")
        if not isinstance(q, dict):
            raise FormatError("an integer graph needs meta 'quantization' (an object)")
        for key in ("max_timesteps", "state_bits", *QUANT_BITS):
            v = q.get(key)
            if v is None and key in QUANT_BITS:
                continue  # not every profile records every width
            top = 64 if key != "max_timesteps" else None
            if type(v) is not int or v < 1 or (top is not None and v > top):
                raise FormatError(
                    f"meta 'quantization' '{key}' must be an integer in 1..{top or 'any'}, "
                    f"got {v!r:.40}"
                )
        for t in graph.inputs:
            if t.name not in graph.scales:
                raise FormatError(f"an integer graph needs the scale of input '{t.name}'")
