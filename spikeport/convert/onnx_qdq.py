"""Statically quantized models back to the float network they approximate, before
onnx_load.canonicalise.

onnxruntime.quantization's default format (QuantFormat.QDQ), and most int8 ONNX exports, keep
float ops and wrap every tensor in QuantizeLinear -> DequantizeLinear. spikeport quantizes
for itself (spikeport.quantize), so it imports the float network those pairs approximate:
- DequantizeLinear of a constant (weights, int32 biases): its float value, (q - zero_point) *
  scale per tensor, per axis or per block (onnx's own reference implementation computes it);
- a QuantizeLinear -> DequantizeLinear pair on an activation: where its range starts at 0
  (zero point at the integer type's lowest value) it is the ReLU the quantizer fused away
  (onnxruntime drops a Conv's or MatMul's ReLU into the quantized range), imported as
  Clip(0, top of the range) where its input comes from a weight layer or an add of two
  activations (RELU_BEFORE) and is not already non-negative; a range from 0 elsewhere is the
  data's own (a graph input's pixels, 1 + erf(x) inside a GELU: a neuron there would add a
  layer the float network does not have); every other pair is the identity: its rounding and
  its saturation outside the calibrated range are the int8 model's approximation of the
  float one.
The integer-operator format (QLinearConv, QGemm, QLinearAdd, QLinearConcat...) is first
rewritten into QDQ form: each op as its float op between DequantizeLinear of its inputs and
QuantizeLinear of its output, each move of codes (MaxPool, Reshape...) likewise with its
input's scale. Dynamic quantization computes its activations' scales at run time: its
products (DynamicQuantizeLinear -> MatMulInteger or ConvInteger -> Cast -> Mul by the scales)
become MatMuls or Convs with the dequantized weights, a move of constant codes (an int8
embedding table's Gather) the same move of the dequantized constant; any other dynamic
pattern is refused, naming the node and what to give instead. Every change is listed in the
graph's import notes.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_21

from spikeport.convert.onnx_ctx import refuse
from spikeport.convert.onnx_load import readers

# The integer-operator (QOperator) format's ops, each the float op between its inputs'
# dequantization and its output's quantization: (float op, per quantized input the indices of
# (tensor, scale, zero point), the output's (scale, zero point) or None for a float output,
# the index of an int32 bias whose scale is the first two inputs' product, or None).
QLINEAR = {
    "QLinearConv": ("Conv", [(0, 1, 2), (3, 4, 5)], (6, 7), 8),
    "QLinearMatMul": ("MatMul", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QLinearAdd": ("Add", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QLinearMul": ("Mul", [(0, 1, 2), (3, 4, 5)], (6, 7), None),
    "QLinearAveragePool": ("AveragePool", [(0, 1, 2)], (3, 4), None),
    "QLinearGlobalAveragePool": ("GlobalAveragePool", [(0, 1, 2)], (3, 4), None),
    "QLinearSigmoid": ("Sigmoid", [(0, 1, 2)], (3, 4), None),
    "QLinearLeakyRelu": ("LeakyRelu", [(0, 1, 2)], (3, 4), None),
    "QLinearSoftmax": ("Softmax", [(0, 1, 2)], (3, 4), None),
    "QGemm": ("Gemm", [(0, 1, 2), (3, 4, 5)], (7, 8), 6),
}
# Ops that move or select a quantized tensor's codes as they are (its scale stays): run on
# the dequantized values, then quantized again with the same scale.
CODE_MOVES = frozenset({
    "MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
    "Slice", "Gather", "Concat", "Split", "Resize", "Pad", "Identity", "DepthToSpace",
    "SpaceToDepth",
})  # fmt: skip
# Dynamic quantization computes its activations' scales at run time: no constant to read.
DYNAMIC = frozenset({
    "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeLSTM",
    "DynamicQuantizeMatMul", "MatMulIntegerToFloat",
})  # fmt: skip
# Ops through which a non-negative tensor stays non-negative (one data input).
KEEPS_SIGN = frozenset({
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten",
    "Transpose", "Squeeze", "Unsqueeze", "Identity", "Resize", "Slice", "Gather", "Pad",
})  # fmt: skip
NON_NEGATIVE = frozenset({"Relu", "Sigmoid", "Softmax"})
# Ops after which onnxruntime's quantizer drops a ReLU into the range: weight layers, and adds
# of two activations (residual joins). A range from 0 after anything else (1 + erf(x) inside
# a GELU, a pooling of ReLU outputs) is the data's own.
RELU_BEFORE = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"})


def dequantize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with its QDQ pairs and dequantized constants replaced (module docstring), and
    the notes saying what was replaced; a model without them is returned as it is."""
    ops = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx", "com.microsoft")}
    if "DequantizeLinear" not in ops and not ops & (set(QLINEAR) | DYNAMIC):
        return model, []
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consts.update(
        (n.output[0], numpy_helper.to_array(n.attribute[0].t))
        for n in g.node
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"
    )
    dynamic = _dynamic_as_float(g, consts)
    for n in g.node:
        if n.op_type in DYNAMIC:
            raise refuse(n, "a dynamically quantized model whose pattern spikeport does not "
                            "read back (its activation scales are computed at run time): give "
                            "spikeport the float model, or a statically quantized one "
                            "(onnxruntime.quantization.quantize_static)")  # fmt: skip
    expanded = _qoperators_as_qdq(g, consts)
    counts = _pairs_as_float(g, consts)
    parts = [f"{dynamic} dynamically quantized MatMulIntegers / ConvIntegers taken as float "
             "MatMuls / Convs with their dequantized weights"] if dynamic else []  # fmt: skip
    if expanded:
        parts.append(f"{expanded} integer operators (QLinearConv, QGemm...) taken as their "
                     "float ops between DequantizeLinear and QuantizeLinear")  # fmt: skip
    parts.append(
        f"QDQ model imported as the float network it quantizes: {counts['folded']} dequantized "
        f"constants folded, {counts['relu']} QuantizeLinear/DequantizeLinear pairs whose range "
        f"starts at 0 imported as ReLUs capped at the range's top, {counts['identity']} as the "
        "identity"
    )
    return model, ["; ".join(parts)]


def _pairs_as_float(g: onnx.GraphProto, consts: dict[str, np.ndarray]) -> dict[str, int]:
    """Every DequantizeLinear of g replaced (module docstring): of a constant, by its value;
    of a move of constant codes, by the move of the dequantized constant; of a QuantizeLinear,
    by a ReLU or by nothing. Returns how many of each ("folded", "relu", "identity")."""
    producer = {o: n for n in g.node for o in n.output}
    rename: dict[str, str] = {}
    # tensors a range from 0 does not clip: non-negative ones, and the graph inputs through
    # data moves (a range of theirs that starts at 0 says the data is non-negative)
    non_negative = {i.name for i in g.input} - set(consts)
    kept: list[onnx.NodeProto] = []
    counts = dict.fromkeys(("folded", "relu", "identity"), 0)
    for n in g.node:
        n.input[:] = [rename.get(t, t) for t in n.input]
        q = producer.get(n.input[0]) if n.op_type == "DequantizeLinear" else None
        if n.op_type != "DequantizeLinear":
            kept.append(n)
            _track_sign(n, consts, non_negative)
        elif n.input[0] in consts:
            _add_const(g, consts, n.output[0], _dequantized(n, consts))
            counts["folded"] += 1
        elif (chain := _moves_of_constant_codes(producer, n.input[0], consts)) is not None:
            kept += _moved_constant_codes(g, consts, n, chain)
            counts["folded"] += 1
        elif q is None or q.op_type != "QuantizeLinear":
            raise refuse(n, "dequantizes a computed integer tensor, not a constant or a "
                            "QuantizeLinear's output: only QDQ-format models import")  # fmt: skip
        else:
            x = rename.get(q.input[0], q.input[0])
            relu = _fused_relu(g, consts, n, x, producer.get(q.input[0]), non_negative)
            if relu is not None:
                kept.append(relu)
                non_negative.add(n.output[0])
            else:
                rename[n.output[0]] = x
            counts["relu" if relu is not None else "identity"] += 1
    _keep_output_names(g, kept, rename)
    # quantizers, and moves of constant codes, that nothing reads any more
    read = {t for n in kept for t in n.input} | {o.name for o in g.output}
    droppable = CODE_MOVES | {"QuantizeLinear"}
    kept = [n for n in kept if n.op_type not in droppable or set(n.output) & read]
    del g.node[:]
    g.node.extend(kept)
    return counts


def _add_const(g: onnx.GraphProto, consts: dict[str, np.ndarray], name: str, v: np.ndarray) -> None:
    g.initializer.append(numpy_helper.from_array(v, name))
    consts[name] = v


def _moves_of_constant_codes(
    producer: dict[str, onnx.NodeProto], t: str, consts: dict[str, np.ndarray]
) -> list[onnx.NodeProto] | None:
    """The CODE_MOVES nodes, from a constant outwards, that make t, if t is constant codes
    moved (an int8 embedding table gathered by the ids, then transposed); else None."""
    chain = []
    while (p := producer.get(t)) is not None and p.op_type in CODE_MOVES:
        chain.append(p)
        t = p.input[0]
        if t in consts:
            return chain[::-1]
    return None


def _moved_constant_codes(
    g: onnx.GraphProto,
    consts: dict[str, np.ndarray],
    dq: onnx.NodeProto,
    chain: list[onnx.NodeProto],
) -> list[onnx.NodeProto]:
    """DequantizeLinear(moves(constant codes)) as the same moves of the dequantized constant."""
    table = onnx.NodeProto()
    table.CopyFrom(dq)  # its scale, zero point, axis and block size, on the constant codes
    table.input[0], table.output[0] = chain[0].input[0], f"{dq.name}:table"
    _add_const(g, consts, table.output[0], _dequantized(table, consts))
    moved, x = [], table.output[0]
    for k, move in enumerate(chain):
        node = onnx.NodeProto()
        node.CopyFrom(move)
        # named after the DequantizeLinear too: two of them may read the same moved codes
        node.input[0], node.name = x, f"{dq.name}:{move.name}"
        node.output[0] = x = dq.output[0] if k == len(chain) - 1 else f"{dq.name}:{move.output[0]}"
        moved.append(node)
    return moved


def _fused_relu(
    g: onnx.GraphProto,
    consts: dict[str, np.ndarray],
    dq: onnx.NodeProto,
    x: str,
    before: onnx.NodeProto | None,
    non_negative: set[str],
) -> onnx.NodeProto | None:
    """The Clip(x, 0, top) a QuantizeLinear/DequantizeLinear pair stands for where its range
    starts at 0 after a layer a ReLU could have followed (RELU_BEFORE), else None."""
    lo, hi = _range(dq, consts)
    if lo != 0 or x in non_negative or not _linear(before, consts):
        return None
    clip = f"{dq.name or dq.output[0]}:relu"
    for k, v in (("min", lo), ("max", hi)):
        _add_const(g, consts, f"{clip}:{k}", np.asarray(v, np.float32))
    # (QDQ needs opset 10 at least, 13 for per-axis scales: Clip reads its bounds as inputs
    # from opset 11, which onnxruntime.quantization requires)
    return helper.make_node("Clip", [x, f"{clip}:min", f"{clip}:max"], [dq.output[0]], name=clip)


def _dynamic_as_float(g: onnx.GraphProto, consts: dict[str, np.ndarray]) -> int:
    """Each dynamically quantized product, DynamicQuantizeLinear(x) -> MatMulInteger or
    ConvInteger(x codes, W codes) -> Cast -> Mul(x scale * W scale) (onnxruntime's
    quantize_dynamic; the bias is a float Add after it), as MatMul or Conv of x and W's
    dequantized values; the DynamicQuantizeLinear goes once nothing reads it. Returns how many
    were rewritten; anything else dynamic stays (and is refused: older exports add an int32
    bias, quantized with the run-time scale, before the Cast)."""
    producer = {o: n for n in g.node for o in n.output}
    users = readers(g)
    dead, done = set(), 0
    for m in [n for n in g.node if n.op_type in ("MatMulInteger", "ConvInteger")]:
        d = producer.get(m.input[0])
        cast = _only(users, m.output[0], "Cast")
        mul = _only(users, cast.output[0], "Mul") if cast is not None else None
        if d is None or d.op_type != "DynamicQuantizeLinear" or mul is None:
            continue
        scale = producer.get(next((t for t in mul.input if t != cast.output[0]), ""))
        w_scale = next((t for t in scale.input if t in consts), None) if scale else None
        if m.input[1] not in consts or w_scale is None or d.output[1] not in scale.input:
            continue
        q = consts[m.input[1]].astype(np.float64)
        zp = consts.get(m.input[3]) if len(m.input) > 3 and m.input[3] else np.zeros(())
        ws = consts[w_scale]
        if m.op_type == "ConvInteger":  # per output channel: the kernel's first axis
            zp, ws = (np.reshape(v, (-1,) + (1,) * (q.ndim - 1)) for v in (zp, ws))
        name = f"{m.name}:weight"
        _add_const(g, consts, name, ((q - zp) * ws).astype(np.float32))
        op = "MatMul" if m.op_type == "MatMulInteger" else "Conv"
        attrs = {a.name: helper.get_attribute_value(a) for a in m.attribute}
        product = helper.make_node(op, [d.input[0], name], [mul.output[0]], name=m.name, **attrs)
        g.node.insert(list(g.node).index(mul), product)
        dead.update(id(n) for n in (m, cast, mul))
        if len(users.get(scale.output[0], [])) == 1:
            dead.add(id(scale))
        done += 1
    kept = [n for n in g.node if id(n) not in dead]
    read = {t for n in kept for t in n.input} | {o.name for o in g.output}
    kept = [n for n in kept if n.op_type != "DynamicQuantizeLinear" or set(n.output) & read]
    del g.node[:]
    g.node.extend(kept)
    return done


def _only(users: dict, t: str, op: str) -> onnx.NodeProto | None:
    """The one reader of t, if it is an `op`."""
    u = users.get(t, [])
    return u[0] if len(u) == 1 and u[0].op_type == op else None


def _qoperators_as_qdq(g: onnx.GraphProto, consts: dict[str, np.ndarray]) -> int:
    """Rewrite each QLINEAR op as DequantizeLinear of its quantized inputs, the float op, and
    QuantizeLinear of its output; each CODE_MOVES op on quantized codes likewise (the scale of
    its first quantized input). Returns how many integer operators were rewritten."""
    scales: dict[str, tuple[str, str]] = {}  # quantized tensor -> (scale, zero point) names
    nodes, expanded = [], 0
    for n in g.node:
        if n.op_type == "QuantizeLinear":
            scales[n.output[0]] = (n.input[1], n.input[2] if len(n.input) > 2 else "")
            nodes.append(n)
        elif n.op_type in QLINEAR:
            nodes += _expand(g, n, consts, scales)
            expanded += 1
        elif n.op_type == "QLinearConcat":
            nodes += _expand_concat(n, scales)
            expanded += 1
        elif n.op_type in CODE_MOVES and n.input and n.input[0] in scales:
            coded = [k for k, t in enumerate(n.input) if t in scales]
            nodes += _dequantize_around(g, n, coded, [scales[n.input[k]] for k in coded], scales)
        else:
            nodes.append(n)
    if expanded:
        del g.node[:]
        g.node.extend(nodes)
    return expanded


def _expand(g: onnx.GraphProto, n: onnx.NodeProto, consts: dict[str, np.ndarray],
            scales: dict[str, tuple[str, str]]) -> list[onnx.NodeProto]:  # fmt: skip
    op, quantized, out, bias = QLINEAR[n.op_type]
    a = {k.name: helper.get_attribute_value(k) for k in n.attribute}
    if a.pop("channels_last", 0):
        raise refuse(n, "channels-last integer operators are not supported")
    a.pop("opset", None)  # QLinearSoftmax's: the Softmax written here is the current one
    made, floats = [], []
    for k, (t, s, z) in enumerate(quantized):
        name = f"{n.name}:dq{k}"
        axis = _weight_axis(n, consts.get(n.input[s]), consts.get(n.input[t]))
        made.append(helper.make_node("DequantizeLinear", [n.input[t], n.input[s], n.input[z]],
                                     [name], name=name, axis=axis))  # fmt: skip
        floats.append(name)
    if bias is not None and bias < len(n.input) and n.input[bias]:
        b, s0, s1 = (consts.get(n.input[i]) for i in (bias, quantized[0][1], quantized[1][1]))
        if b is None or s0 is None or s1 is None:
            raise refuse(n, "its bias or scales are computed, not constants")
        floats.append(f"{n.name}:bias")
        _add_const(g, consts, floats[-1], (b.astype(np.float64) * s0 * s1).astype(np.float32))
    if out is None or out[0] >= len(n.input) or not n.input[out[0]]:
        return made + [helper.make_node(op, floats, [n.output[0]], name=n.name, **a)]
    y = f"{n.name}:float"
    scale, zp = n.input[out[0]], n.input[out[1]] if out[1] < len(n.input) else ""
    scales[n.output[0]] = (scale, zp)
    quantize = helper.make_node("QuantizeLinear", [y, scale, zp], [n.output[0]], name=f"{n.name}:q")
    return made + [helper.make_node(op, floats, [y], name=n.name, **a), quantize]


def _expand_concat(n: onnx.NodeProto, scales: dict[str, tuple[str, str]]) -> list[onnx.NodeProto]:
    """QLinearConcat(Y scale, Y zero point, then (X, scale, zero point) per input) as
    DequantizeLinear of each input, Concat, QuantizeLinear."""
    made, floats = [], []
    for k in range(2, len(n.input), 3):
        floats.append(f"{n.name}:dq{k // 3}")
        made.append(helper.make_node("DequantizeLinear", list(n.input[k : k + 3]), [floats[-1]],
                                     name=floats[-1]))  # fmt: skip
    axis = next((a.i for a in n.attribute if a.name == "axis"), None)
    if axis is None:  # required by the contrib op's schema
        raise refuse(n, "has no 'axis' attribute")
    scales[n.output[0]] = (n.input[0], n.input[1])
    return made + [
        helper.make_node("Concat", floats, [f"{n.name}:float"], name=n.name, axis=axis),
        helper.make_node("QuantizeLinear", [f"{n.name}:float", n.input[0], n.input[1]],
                         [n.output[0]], name=f"{n.name}:q"),
    ]  # fmt: skip


def _weight_axis(n: onnx.NodeProto, scale: np.ndarray | None, q: np.ndarray | None) -> int:
    """The axis a per-channel scale runs along: a Conv's output channels (0), a MatMul's
    columns (the last axis), a Gemm's outputs (0 with transB, else 1)."""
    if scale is None or scale.size == 1 or q is None:
        return 1
    if n.op_type == "QGemm":
        transposed = any(a.name == "transB" and a.i for a in n.attribute)
        return 0 if transposed else 1
    return 0 if n.op_type == "QLinearConv" else q.ndim - 1


def _dequantize_around(g: onnx.GraphProto, n: onnx.NodeProto, coded: list[int],
                       params: list[tuple[str, str]],
                       scales: dict[str, tuple[str, str]]) -> list[onnx.NodeProto]:  # fmt: skip
    """n on the dequantized values of its quantized inputs, each output quantized again with
    the first one's scale (a move of codes keeps it)."""
    node = onnx.NodeProto()
    node.CopyFrom(n)
    before, after = [], []
    for k, (scale, zp) in zip(coded, params, strict=True):
        node.input[k] = f"{n.name}:dq{k}"
        before.append(helper.make_node("DequantizeLinear", [n.input[k], scale, zp],
                                       [node.input[k]], name=node.input[k]))  # fmt: skip
    scale, zp = params[0]
    for j, out in enumerate(n.output):
        node.output[j] = f"{out}:float"
        scales[out] = (scale, zp)
        after.append(helper.make_node("QuantizeLinear", [node.output[j], scale, zp], [out],
                                      name=f"{n.name}:q{j}"))  # fmt: skip
    return before + [node] + after


def _dequantized(n: onnx.NodeProto, consts: dict[str, np.ndarray]) -> np.ndarray:
    """A DequantizeLinear's float value on constant inputs, by onnx's reference op (per tensor,
    per axis and per block alike)."""
    if any(t and t not in consts for t in n.input[1:]):
        raise refuse(n, "its scale or zero point is computed, not a constant")
    a = {k.name: helper.get_attribute_value(k) for k in n.attribute}
    args = [consts[t] for t in n.input if t]
    y = DequantizeLinear_21.eval(*args, axis=a.get("axis", 1), block_size=a.get("block_size", 0))
    return np.asarray(y, np.float32)


def _range(n: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[float, float]:
    """The float range a DequantizeLinear's integer type spans: (lowest - zp) * scale to
    (highest - zp) * scale; one scale and zero point for the whole tensor."""
    scale = consts.get(n.input[1])
    zp = consts.get(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros((), np.uint8)
    if scale is None or zp is None:
        raise refuse(n, "its scale or zero point is computed, not a constant")
    if scale.size != 1 or zp.size != 1:
        raise refuse(n, "quantizes an activation per axis; only one scale per activation maps "
                        "to spikeport's thresholds")  # fmt: skip
    try:
        info = np.iinfo(zp.dtype)
    except ValueError:
        raise refuse(n, f"quantizes to {zp.dtype}, not an integer type") from None
    s, z = float(scale.reshape(())), int(zp.reshape(()))
    return (info.min - z) * s, (info.max - z) * s


def _linear(n: onnx.NodeProto | None, consts: dict[str, np.ndarray]) -> bool:
    """Whether a ReLU could have followed n (RELU_BEFORE, or an add of two activations)."""
    if n is None:
        return False
    if n.op_type in ("Add", "Sub"):
        return not any(t in consts for t in n.input)
    return n.op_type in RELU_BEFORE


def _track_sign(n: onnx.NodeProto, consts: dict[str, np.ndarray], non_negative: set[str]) -> None:
    """Record n's output as non-negative when it is: a ReLU, sigmoid or softmax, a Clip from 0
    up, or a data move or pooling of a non-negative tensor."""
    data = [t for t in n.input if t and t not in consts]
    low = consts.get(n.input[1]) if n.op_type == "Clip" and len(n.input) > 1 else None
    if (
        n.op_type in NON_NEGATIVE
        or (low is not None and low.size == 1 and float(low.reshape(())) >= 0)
        or (n.op_type in KEEPS_SIGN and len(data) == 1 and data[0] in non_negative)
    ):
        non_negative.add(n.output[0])


def _keep_output_names(g: onnx.GraphProto, kept: list[onnx.NodeProto], rename: dict) -> None:
    """A graph output that was a dropped DequantizeLinear's keeps its name: an Identity of the
    tensor that replaced it."""
    for o in g.output:
        if o.name in rename:
            kept.append(helper.make_node("Identity", [rename[o.name]], [o.name],
                                         name=f"{o.name}:identity"))  # fmt: skip
