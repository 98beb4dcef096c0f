"""One small importer per ONNX op, in one registry (spikeport.convert.onnx_ctx.IMPORTERS).

Each reads the batch-1 ONNX node and emits IR nodes over per-sample tensors, mapping axes
through `Ctx.axis`. Constants that scale or shift the output of a Conv/Gemm alone (bias Add,
BatchNormalization, per-channel Mul/Div/Sub) are folded into it; elsewhere they become
`channel_scale` / `offset`. Anything an importer cannot map exactly is refused naming the node.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from spikeport.convert.clamp import clamp_steps
from spikeport.convert.onnx_ctx import Ctx, attrs, importer, refuse
from spikeport.convert.onnx_patterns import constant_ids, position_pad
from spikeport.ir.graph import Node
from spikeport.ir.ops import window_out

# -- constants and pass-throughs ------------------------------------------------------------


@importer("Constant")
def _constant(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = n.attribute[0]
    if a.name == "value":
        ctx.consts[n.output[0]] = numpy_helper.to_array(a.t)
    elif a.name in ("value_float", "value_floats", "value_int", "value_ints"):
        ctx.consts[n.output[0]] = np.asarray(onnx.helper.get_attribute_value(a))
    else:
        raise refuse(n, f"constant attribute '{a.name}' is not supported")


@importer("Identity", "Dropout")
def _passthrough(ctx: Ctx, n: onnx.NodeProto) -> None:
    if ctx.is_const(n.input[0]):
        ctx.consts[n.output[0]] = ctx.consts[n.input[0]]
    if len(n.output) > 1 and n.output[1] and ctx.uses.get(n.output[1]):
        raise refuse(n, "its mask output is used")
    ctx.alias[n.output[0]] = n.input[0]


@importer("Cast")
def _cast(ctx: Ctx, n: onnx.NodeProto) -> None:
    to = int(attrs(n)["to"])
    if to not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        raise refuse(n, f"a cast to {onnx.TensorProto.DataType.Name(to)} of an activation")
    ctx.alias[n.output[0]] = n.input[0]


# -- synapses -------------------------------------------------------------------------------


def _image_input(ctx: Ctx, n: onnx.NodeProto) -> tuple[int, int, int]:
    """The (C, H, W) per-sample shape of n's input; a batch-1 (1, C, H, W) tensor whose batch
    axis was merged and split again is given its batch axis first (a reshape, aliased)."""
    x = n.input[0]
    full = ctx.onnx_full(x)
    if ctx.batch(x) != 0 and len(full) == 4 and full[0] == 1:
        first = f"{ctx.name(x)}:batch_first"
        if first not in ctx.tensors:  # the same batch-1 tensor: emit finds its batch axis at 0
            ctx.onnx_shapes[first] = full
            ctx.emit(n, Node(first, "reshape", [x], first, {"shape": list(full[1:])}))
        ctx.alias[x] = first
    if ctx.batch(x) != 0 or len(ctx.shape(x)) != 3:
        raise refuse(n, f"expects an (N, C, H, W) input, got batch-1 shape {full}")
    return ctx.shape(x)  # type: ignore[return-value]


def _window(ctx: Ctx, n: onnx.NodeProto, kernel: list[int]) -> dict[str, list[int]]:
    """strides / pads / dilations of a 2-D window op, with auto_pad and ceil_mode resolved to
    explicit pads (ceil_mode: extra end padding that padding never wins, see window_max)."""
    a = attrs(n)
    if len(kernel) != 2:
        raise refuse(n, f"only 2-D windows are supported, got kernel {kernel}")
    _, h, w = _image_input(ctx, n)
    st = [int(s) for s in a.get("strides", [1, 1])]
    dil = [int(d) for d in a.get("dilations", [1, 1])]
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0, 0, 0, 0]
        for i, size in enumerate((h, w)):
            total = max(0, (-(-size // st[i]) - 1) * st[i] + dil[i] * (kernel[i] - 1) + 1 - size)
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    if a.get("ceil_mode", 0):
        full = ctx.onnx_shapes.get(n.output[0])
        if full is None:
            raise refuse(n, "ceil_mode=1 needs the output shape, which shape inference lacks")
        for i, size in enumerate((h, w)):
            want = full[2 + i]
            got = window_out(size, kernel[i], st[i], pads[i], pads[i + 2], dil[i])
            pads[i + 2] += max(0, (want - got) * st[i])
    return {"strides": st, "pads": pads, "dilations": dil}


@importer("Conv")
def _conv(ctx: Ctx, n: onnx.NodeProto) -> None:
    w = ctx.const(n, 1, "the weight").astype(np.float32)
    b = ctx.optional_const(n, 2, "the bias")
    b = np.zeros(w.shape[0]) if b is None else b
    if w.ndim != 4:
        raise refuse(n, f"only 2-D convolution is supported, weight is {w.shape}")
    win = _window(ctx, n, list(w.shape[2:]))
    win["group"] = int(attrs(n).get("group", 1))
    if _across_features(ctx, n, w, win):
        return
    params = {"weight": w, "bias": b.astype(np.float32)}
    ctx.emit(n, Node(n.name, "conv2d", [n.input[0]], n.output[0], win, params))


MAX_BANDED_WIDTH = 2048  # longest row a one-channel 1-D conv inside the net becomes a dense of


def _across_features(ctx: Ctx, n: onnx.NodeProto, w: np.ndarray, win: dict) -> bool:
    """A one-channel 1-D conv along a row of features inside the network (ECA's Conv1d across
    a pooled image's channels) as a dense of its banded matrix over that row: the same linear
    map, but each feature keeps its own scale (a conv needs one scale along its row, and the
    channels of an image have one each). Emits it and returns True where it applies."""
    x = n.input[0]
    shape = ctx.shape(x)
    if w.shape[:3] != (1, 1, 1) or win["group"] != 1 or ctx.producer(x) is None:
        return False
    if len(shape) != 3 or shape[:2] != (1, 1) or shape[2] > MAX_BANDED_WIDTH:
        return False
    width, (stride, dilation) = shape[2], (win["strides"][1], win["dilations"][1])
    pad = win["pads"][1]  # ONNX order: top, left, bottom, right
    out_len = (width + pad + win["pads"][3] - dilation * (w.shape[3] - 1) - 1) // stride + 1
    band = np.zeros((out_len, width), np.float64)
    for o in range(out_len):
        for k, wk in enumerate(w[0, 0, 0]):
            i = o * stride - pad + k * dilation
            if 0 <= i < width:
                band[o, i] += wk
    b = ctx.optional_const(n, 2, "the bias")
    bias = np.full(out_len, 0.0 if b is None else float(b.reshape(-1)[0]))
    _dense(ctx, n, x, band, bias)
    return True


@importer("Gemm")
def _gemm(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = attrs(n)
    if a.get("transA", 0):
        raise refuse(n, "transA=1 is not supported")
    if ctx.batch(n.input[0]) == 1:
        raise refuse(n, "the batch axis is the multiplied axis")
    w = ctx.const(n, 1, "the weight (B)").astype(np.float64)
    w = (w if a.get("transB", 0) else w.T) * float(a.get("alpha", 1.0))
    b = np.zeros(w.shape[0])
    c = ctx.optional_const(n, 2, "the bias (C)")
    if c is not None:
        b = b + float(a.get("beta", 1.0)) * np.broadcast_to(c.reshape(-1), b.shape)
    _dense(ctx, n, n.input[0], w, b)


def _dense(ctx: Ctx, n: onnx.NodeProto, x: str, w: np.ndarray, b: np.ndarray) -> None:
    params = {"weight": w.astype(np.float32), "bias": b.astype(np.float32)}
    ctx.emit(n, Node(n.name, "dense", [x], n.output[0], {}, params))


@importer("MatMul")
def _matmul(ctx: Ctx, n: onnx.NodeProto) -> None:
    a, b = n.input[0], n.input[1]
    if ctx.is_const(a):
        raise refuse(n, "a constant first operand (W @ x) is not supported; export x @ W^T")
    if not ctx.is_const(b):
        if ctx.rank(b) != ctx.rank(a):
            raise refuse(n, "operands of different rank are not supported")
        if any(ctx.batch(t) is not None and ctx.batch(t) >= ctx.rank(t) - 2 for t in (a, b)):
            # The size-1 axis taken for the batch is a matrix axis here (the batch was merged
            # into another axis, as MobileViT's patches do): keep every axis of both operands.
            a, b = _undrop(ctx, n, a), _undrop(ctx, n, b)
        ctx.emit(n, Node(n.name, "matmul", [a, b], n.output[0]))
        return
    w = ctx.consts[b]
    if w.ndim != 2:
        raise refuse(n, f"a constant weight must be 2-D, got {w.shape}")
    if ctx.batch(a) == ctx.rank(a) - 1:
        raise refuse(n, "the batch axis is the multiplied axis")
    _dense(ctx, n, a, w.T.astype(np.float64), np.zeros(w.shape[1]))


# -- elementwise arithmetic -------------------------------------------------------------------


def _per_channel(ctx: Ctx, target: Node, x: str, c: np.ndarray) -> np.ndarray | None:
    """`c` (per-sample, broadcast against `x`: the target's output, or a reshape of it that
    keeps its channel axis) as one value per output channel of a Conv (C, 1, 1) / dense
    (..., O) layer, or None when it varies otherwise."""
    out = ctx.shape(x)
    try:
        full = np.broadcast_to(c, out)
    except ValueError:
        return None
    axis = len(out) - 1 if target.op == "dense" else 0
    first = np.take(full, np.arange(out[axis]), axis=axis)
    moved = np.moveaxis(first, axis, 0).reshape(out[axis], -1)
    if not np.all(moved == moved[:, :1]):
        return None
    return moved[:, 0].astype(np.float64)


def _fold_scale(ctx: Ctx, x: str, c: np.ndarray, out: str) -> bool:
    """y = c * x with x the output of a Conv/Gemm alone: fold c into its weights and bias."""
    target = ctx.fold_target(x)
    v = None if target is None else _per_channel(ctx, target, x, c)
    if target is None or v is None:
        return False
    w = target.params["weight"]
    if target.op == "conv_transpose2d":  # weight (C_in, C_out / group, kh, kw)
        g = int(target.attrs["group"])
        per_group = v.reshape(g, 1, -1, 1, 1)
        scaled = w.reshape(g, w.shape[0] // g, *w.shape[1:]) * per_group
        target.params["weight"] = scaled.reshape(w.shape).astype(np.float32)
    else:
        target.params["weight"] = (w * v.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    target.params["bias"] = (target.params["bias"] * v).astype(np.float32)
    ctx.rename_output(ctx.producer(x), out)  # the target, or the reshape after it
    return True


def _fold_shift(ctx: Ctx, x: str, c: np.ndarray, out: str) -> bool:
    """y = x + c with x the output of a Conv/Gemm alone: fold c into its bias (a dense bias
    may vary along its leading axes, e.g. a position embedding)."""
    target = ctx.fold_target(x)
    if target is None:
        return False
    v = _per_channel(ctx, target, x, c)
    if v is not None:
        target.params["bias"] = (target.params["bias"] + v).astype(np.float32)
    elif target.op == "dense" and ctx.producer(x) is target:  # c is shaped as the layer's
        target.params["bias"] = (target.params["bias"] + c).astype(np.float32)
    else:
        return False
    ctx.rename_output(ctx.producer(x), out)
    return True


def _scale(ctx: Ctx, n: onnx.NodeProto, x: str, c: np.ndarray, out: str, name: str) -> None:
    if _fold_scale(ctx, x, c, out):
        return
    if np.any(c == 0):
        raise refuse(n, "multiplying by a constant that is 0 somewhere is not supported")
    if c.size == 1:
        ctx.emit(n, Node(name, "scale", [x], out, {"factor": float(c.reshape(()))}))
        return
    params = {"factor": c.astype(np.float32)}
    ctx.emit(n, Node(name, "channel_scale", [x], out, {}, params))


def _shift(ctx: Ctx, n: onnx.NodeProto, x: str, c: np.ndarray, out: str, name: str) -> None:
    if not _fold_shift(ctx, x, c, out):
        ctx.emit(n, Node(name, "offset", [x], out, {}, {"value": c.astype(np.float32)}))


def _negate(ctx: Ctx, n: onnx.NodeProto, x: str) -> str:
    out = f"{n.name}:neg"
    ctx.onnx_shapes.setdefault(out, ctx.onnx_full(x))
    ctx.emit(n, Node(out, "scale", [x], out, {"factor": -1.0}))
    return out


@importer("Add", "Sub", "Mul", "Div")
def _arith(ctx: Ctx, n: onnx.NodeProto) -> None:
    a, b = n.input[0], n.input[1]
    out, op = n.output[0], n.op_type
    if ctx.is_const(a) and op in ("Add", "Mul"):
        a, b = b, a
    if not ctx.is_const(b):
        if ctx.is_const(a):  # c - x, c / x
            if op == "Div":
                raise refuse(n, "dividing a constant by an activation is not supported")
            c = ctx.sample_const(ctx.consts[a], b)
            _shift(ctx, n, _negate(ctx, n, b), c, out, n.name)
            return
        _two_streams(ctx, n, a, b)
        return
    c = ctx.sample_const(ctx.consts[b], a)
    if op == "Add":
        _shift(ctx, n, a, c, out, n.name)
    elif op == "Sub":
        _shift(ctx, n, a, -c, out, n.name)
    elif op == "Mul":
        _scale(ctx, n, a, c, out, n.name)
    else:
        if np.any(c == 0):
            raise refuse(n, "division by a constant that is 0 somewhere")
        _scale(ctx, n, a, 1.0 / c, out, n.name)


def _aligned(ctx: Ctx, n: onnx.NodeProto, a: str, b: str) -> str:
    """`b` reshaped to `a`'s per-sample shape where both are the same ONNX tensor shape but
    their batch axes were tracked differently (one merged, then split again)."""
    if ctx.shape(a) == ctx.shape(b) or ctx.onnx_full(a) != ctx.onnx_full(b):
        return b
    out = f"{n.name}:aligned"
    ctx.onnx_shapes.setdefault(out, ctx.onnx_full(a))
    ctx.emit(n, Node(out, "reshape", [b], out, {"shape": list(ctx.shape(a))}), ctx.batch(a))
    return out


def _undrop(ctx: Ctx, n: onnx.NodeProto, t: str) -> str:
    """`t` with its batch-1 ONNX shape as its per-sample shape (its size-1 batch axis kept as
    data: exact, a batch-1 tensor is one sample)."""
    if ctx.batch(t) is None:
        return t
    out = f"{ctx.name(t)}:whole"
    if out not in ctx.tensors:  # the same batch-1 tensor: emit finds no batch axis to drop
        ctx.onnx_shapes[out] = ctx.onnx_full(t)
        ctx.emit(n, Node(out, "reshape", [t], out, {"shape": list(ctx.onnx_full(t))}))
    return out


def _broadcast(ctx: Ctx, n: onnx.NodeProto, x: str, shape: tuple[int, ...], tag: str) -> str:
    """`x` repeated to the per-sample `shape` it broadcasts to, for an add of two activations
    ((T, D) + (1, D), x - mean(x) with keepdims): leading size-1 axes by a reshape, each
    size-1 axis by a gather of index 0 (data movement, exact in every mode and target)."""
    have = ctx.shape(x)
    if have == shape:
        return x
    if len(have) < len(shape):
        have = (1,) * (len(shape) - len(have)) + have
        out = f"{n.name}:{tag}:rank"
        ctx.emit(n, Node(out, "reshape", [x], out, {"shape": list(have)}), ctx.batch(x))
        x = out
    for axis, (size, want) in enumerate(zip(have, shape, strict=True)):
        if size != want:
            out = f"{n.name}:{tag}:repeat{axis}"
            attrs = {"axis": axis, "indices": [0] * want}
            ctx.emit(n, Node(out, "gather", [x], out, attrs), ctx.batch(x))
            x = out
    return x


@importer("Expand")
def _expand(ctx: Ctx, n: onnx.NodeProto) -> None:
    """An activation repeated to a larger shape (ECA's and MobileViTv2's attention weights,
    expand_as before a product), by _broadcast's exact data movement."""
    x = n.input[0]
    if ctx.is_const(x):
        raise refuse(n, "expanding a constant that onnxruntime did not fold")
    full, b = ctx.onnx_shapes.get(n.output[0]), ctx.batch(x)
    if full is None or b is None or len(full) != ctx.rank(x) or full[b] != 1:
        raise refuse(n, f"expands {ctx.onnx_full(x)} to {full}: only the per-sample axes may grow")
    y = _broadcast(ctx, n, x, tuple(d for j, d in enumerate(full) if j != b), "expand")
    ctx.alias[n.output[0]] = y


def _two_streams(ctx: Ctx, n: onnx.NodeProto, a: str, b: str) -> None:
    out, op = n.output[0], n.op_type
    if ctx.batch(b) is None:
        b = _aligned(ctx, n, a, b)
    elif ctx.batch(a) is None:
        a = _aligned(ctx, n, b, a)
    if op in ("Add", "Sub"):
        try:
            shape = tuple(np.broadcast_shapes(ctx.shape(a), ctx.shape(b)))
        except ValueError:
            msg = f"adding {ctx.shape(a)} and {ctx.shape(b)}: they do not broadcast"
            raise refuse(n, msg) from None
        a, b = _broadcast(ctx, n, a, shape, "a"), _broadcast(ctx, n, b, shape, "b")
        inputs = [a, _negate(ctx, n, b) if op == "Sub" else b]
        ctx.emit(n, Node(n.name, "add", inputs, out))
        return
    if op == "Mul":
        for x, g in ((a, b), (b, a)):
            p = ctx.producer(g)
            if p is not None and p.op == "sigmoid" and p.inputs[0] == ctx.name(x):
                ctx.emit(n, Node(n.name, "silu", [x], out))  # x * sigmoid(x)
                return
        ctx.emit(n, Node(n.name, "mul", [a, b], out))
        return
    ctx.emit(n, Node(n.name, "div", [a, b], out))


@importer("Sum")
def _sum(ctx: Ctx, n: onnx.NodeProto) -> None:
    if any(ctx.is_const(i) for i in n.input):
        raise refuse(n, "a Sum with a constant term is not supported")
    if len(n.input) == 1:
        ctx.alias[n.output[0]] = n.input[0]
        return
    ctx.emit(n, Node(n.name, "add", list(n.input), n.output[0]))


@importer("BatchNormalization")
def _batchnorm(ctx: Ctx, n: onnx.NodeProto) -> None:
    gamma, beta, mean, var = (
        ctx.const(n, i, k).astype(np.float64)
        for i, k in enumerate(("scale", "B", "mean", "var"), 1)
    )
    scale = gamma / np.sqrt(var + float(attrs(n).get("epsilon", 1e-5)))
    shift = beta - mean * scale
    x, out = n.input[0], n.output[0]
    rank = ctx.rank(x)
    as_const = (1, -1) + (1,) * (rank - 2)  # channels on ONNX axis 1
    c_scale = ctx.sample_const(scale.reshape(as_const), x)
    c_shift = ctx.sample_const(shift.reshape(as_const), x)
    target = ctx.fold_target(x)
    shift_v = None if target is None else _per_channel(ctx, target, x, c_shift)
    if shift_v is not None and _fold_scale(ctx, x, c_scale, out):  # the layer now writes out
        target.params["bias"] = (target.params["bias"] + shift_v).astype(np.float32)
        return
    mid = f"{n.name}:scaled"
    ctx.onnx_shapes.setdefault(mid, ctx.onnx_full(x))
    _scale(ctx, n, x, c_scale, mid, mid)
    _shift(ctx, n, mid, c_shift, out, n.name)


# -- activations ---------------------------------------------------------------------------


@importer("Relu")
def _relu(ctx: Ctx, n: onnx.NodeProto) -> None:
    ctx.emit(n, Node(n.name, "relu", [n.input[0]], n.output[0], {"cap": None}))


@importer("Clip")
def _clip(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = attrs(n)
    bounds = []
    for i, key in ((1, "min"), (2, "max")):
        v = ctx.optional_const(n, i, key)
        if v is not None and np.size(v) != 1:
            raise refuse(n, f"its {key} has shape {np.shape(v)}; only a scalar maps to a neuron")
        bounds.append(float(np.reshape(v, ())) if v is not None else a.get(key))
    _clamp(ctx, n, n.input[0], *bounds)


@importer("Max", "Min")
def _max_min(ctx: Ctx, n: onnx.NodeProto) -> None:
    """max(x, c) or min(x, c) with c a scalar constant (a variance floored at 0, a clamp written
    as two ops); max(x, a x) for 0 < a < 1 or min(x, a x) for a > 1, a leaky ReLU written by
    hand. Any other max of two activations has no neuron."""
    if len(n.input) == 2 and not any(ctx.is_const(t) for t in n.input):
        if _leaky(ctx, n):
            return
    if len(n.input) != 2 or sum(ctx.is_const(t) for t in n.input) != 1:
        raise refuse(n, "only the max or min of one activation and a constant maps to a neuron")
    x, c = (n.input[1], n.input[0]) if ctx.is_const(n.input[0]) else n.input
    value = np.asarray(ctx.consts[c])
    if value.size != 1:
        raise refuse(n, f"the constant has shape {value.shape}; only a scalar maps to a neuron")
    bound = float(value.reshape(()))
    _clamp(ctx, n, x, bound if n.op_type == "Max" else None, bound if n.op_type == "Min" else None)


def _leaky(ctx: Ctx, n: onnx.NodeProto) -> bool:
    """max(x, a x) (0 < a < 1) or min(x, a x) (a > 1) as prelu with slope a, if it is one."""
    for x, ax in (n.input, n.input[::-1]):
        p = ctx.producer(ax)
        if p is None or p.op != "scale" or p.inputs != [ctx.name(x)]:
            continue
        a = p.attrs["factor"]
        if (0 < a < 1) if n.op_type == "Max" else (a > 1):
            params = {"slope": np.asarray(a, np.float32)}
            ctx.emit(n, Node(n.name, "prelu", [x], n.output[0], {}, params))
            return True  # the scale goes with the other unread nodes (_prune)
    return False


def _clamp(ctx: Ctx, n: onnx.NodeProto, x: str, lo: float | None, hi: float | None) -> None:
    """y = min(max(x, lo), hi) (clamp.clamp_steps); its shifts fold into the layers beside
    the neuron after import (fold.fold_offsets)."""
    try:
        steps = clamp_steps(lo, hi)
    except ValueError as e:
        raise refuse(n, str(e)) from None
    if not steps:
        ctx.alias[n.output[0]] = x
    for i, (op, node_attrs, params) in enumerate(steps):
        last = i == len(steps) - 1
        y = n.output[0] if last else f"{n.name}:clamp{i}"
        ctx.onnx_shapes.setdefault(y, ctx.onnx_full(x))
        ctx.emit(n, Node(n.name if last else y, op, [x], y, node_attrs, params))
        x = y


@importer("LeakyRelu", "PRelu")
def _prelu(ctx: Ctx, n: onnx.NodeProto) -> None:
    if n.op_type == "LeakyRelu":
        slope = np.asarray(float(attrs(n).get("alpha", 0.01)))
    else:
        slope = ctx.sample_const(ctx.const(n, 1, "the slope"), n.input[0])
    params = {"slope": np.asarray(slope, np.float32)}
    ctx.emit(n, Node(n.name, "prelu", [n.input[0]], n.output[0], {}, params))


@importer("Sigmoid", "HardSwish", "Tanh")
def _unary(ctx: Ctx, n: onnx.NodeProto) -> None:
    op = {"Sigmoid": "sigmoid", "HardSwish": "hardswish", "Tanh": "tanh"}[n.op_type]
    ctx.emit(n, Node(n.name, op, [n.input[0]], n.output[0]))


@importer("HardSigmoid")
def _hardsigmoid(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = attrs(n)
    kw = {"alpha": float(a.get("alpha", 0.2)), "beta": float(a.get("beta", 0.5))}
    ctx.emit(n, Node(n.name, "hardsigmoid", [n.input[0]], n.output[0], kw))


@importer("Gelu")
def _gelu(ctx: Ctx, n: onnx.NodeProto) -> None:
    form = attrs(n).get("approximate", b"none")
    form = form.decode() if isinstance(form, bytes) else str(form)
    ctx.emit(n, Node(n.name, "gelu", [n.input[0]], n.output[0], {"approximate": form}))


def _last_axis(ctx: Ctx, n: onnx.NodeProto, default: int) -> None:
    x = n.input[0]
    if ctx.axis(n, x, int(attrs(n).get("axis", default))) != len(ctx.shape(x)) - 1:
        raise refuse(n, "only the last axis is supported")


@importer("Softmax")
def _softmax(ctx: Ctx, n: onnx.NodeProto) -> None:
    x = n.input[0]
    axis = ctx.axis(n, x, int(attrs(n).get("axis", -1)))
    if axis != len(ctx.shape(x)) - 1 and x not in ctx.masks:
        inner = lambda a, b: ctx.emit(n, Node(f"{n.name}:last", "softmax", [a], b))  # noqa: E731
        _on_last_axis(ctx, n, axis, inner)
        return
    if n.input[0] in ctx.masks:  # scores + additive attention mask, fused (plan_masks)
        scores, mask = ctx.masks[n.input[0]]
        ctx.emit(n, Node(n.name, "masked_softmax", [scores, mask], n.output[0]))
        return
    ctx.emit(n, Node(n.name, "softmax", [n.input[0]], n.output[0]))


@importer("LogSoftmax")
def _log_softmax(ctx: Ctx, n: onnx.NodeProto) -> None:
    if n.output[0] not in ctx.graph_outputs or ctx.uses.get(n.output[0]):
        raise refuse(n, "LogSoftmax is supported only as the last op of a classifier")
    _last_axis(ctx, n, -1)
    ctx.emit(n, Node(n.name, "softmax", [n.input[0]], n.output[0]))  # dropped at the end


def _on_last_axis(ctx: Ctx, n: onnx.NodeProto, axis: int, inner) -> None:  # noqa: ANN001
    """An op of the last axis applied to per-sample `axis` of n's input: move that axis last,
    `inner(moved, result)` emits the op, move it back."""
    x = n.input[0]
    rank = len(ctx.shape(x))
    perm = [a for a in range(rank) if a != axis] + [axis]
    back = [perm.index(a) for a in range(rank)]
    moved, done = f"{n.name}:moved", f"{n.name}:done"
    ctx.emit(n, Node(moved, "transpose", [x], moved, {"perm": perm}))
    inner(moved, done)
    ctx.emit(n, Node(n.name, "transpose", [done], n.output[0], {"perm": back}))


@importer("AxisLayerNorm")
def _axis_layernorm(ctx: Ctx, n: onnx.NodeProto) -> None:
    """A norm over one inner axis (e.g. the channels of an image), written out by the exporter
    (onnx_patterns.fuse_decomposed_layernorm)."""
    axis = ctx.axis(n, n.input[0], int(attrs(n)["axis"]))
    _on_last_axis(ctx, n, axis, lambda a, b: _layernorm_node(ctx, n, a, b, f"{n.name}:norm"))


@importer("LayerNormalization")
def _layernorm(ctx: Ctx, n: onnx.NodeProto) -> None:
    _last_axis(ctx, n, -1)
    _layernorm_node(ctx, n, n.input[0], n.output[0], n.name)


@importer("InstanceNormalization")
def _instance_norm(ctx: Ctx, n: onnx.NodeProto) -> None:
    """Each channel normalised over its own positions: a LayerNorm of each channel's flattened
    positions (gamma 1, beta 0), then the per-channel scale and bias. GroupNorm exports as
    Reshape (N, G, -1) -> InstanceNormalization -> Reshape -> Mul -> Add (PoolFormer's and
    MobileViTv2's GroupNorm(1), a LayerNorm over C, H and W)."""
    x, out = n.input[0], n.output[0]
    shape = ctx.shape(x)
    if ctx.batch(x) != 0 or len(shape) < 2:
        raise refuse(n, f"needs (batch, channels, positions...), got per-sample shape {shape}")
    scale = ctx.const(n, 1, "scale").astype(np.float32).reshape(-1)
    bias = ctx.const(n, 2, "B").astype(np.float32).reshape(-1)
    width = int(np.prod(shape[1:]))
    rows = x
    if len(shape) > 2:
        rows = f"{n.name}:rows"
        ctx.emit(n, Node(rows, "reshape", [x], rows, {"shape": [shape[0], width]}))
    column = (len(scale),) + (1,) * (len(shape) - 1)
    steps = [("reshape", None)] if len(shape) > 2 else []
    steps += [("scale", scale)] if np.any(scale != 1) else []
    steps += [("shift", bias)] if np.any(bias != 0) else []
    params = {"gamma": np.ones(width, np.float32), "beta": np.zeros(width, np.float32)}
    eps = {"epsilon": float(attrs(n).get("epsilon", 1e-5))}
    y = f"{n.name}:normed" if steps else out
    ctx.emit(n, Node(y, "layernorm", [rows], y, eps, params))
    for k, (step, c) in enumerate(steps):
        x, last = y, k == len(steps) - 1
        y = out if last else f"{n.name}:{step}"
        name = n.name if last else y
        if step == "reshape":
            ctx.emit(n, Node(name, "reshape", [x], y, {"shape": list(shape)}))
        else:
            (_scale if step == "scale" else _shift)(ctx, n, x, c.reshape(column), y, name)


def _layernorm_node(ctx: Ctx, n: onnx.NodeProto, x: str, out: str, name: str) -> None:
    gamma = ctx.const(n, 1, "scale").astype(np.float32).reshape(-1)
    beta = ctx.optional_const(n, 2, "bias")
    beta = (np.zeros_like(gamma) if beta is None else beta).astype(np.float32).reshape(-1)
    width = ctx.shape(x)[-1]
    gamma, beta = (np.broadcast_to(v, (width,)).copy() for v in (gamma, beta))
    eps = {"epsilon": float(attrs(n).get("epsilon", 1e-5))}
    params = {"gamma": gamma, "beta": beta}
    ctx.emit(n, Node(name, "layernorm", [x], out, eps, params))


# -- pooling and reductions -------------------------------------------------------------------


@importer("AveragePool")
def _avgpool(ctx: Ctx, n: onnx.NodeProto) -> None:
    kernel = [int(k) for k in attrs(n)["kernel_shape"]]
    win = _window(ctx, n, kernel)
    if win["dilations"] != [1, 1]:
        raise refuse(n, "dilated average pooling is not supported")
    win.pop("dilations")
    explicit = [int(p) for p in attrs(n).get("pads", [0, 0, 0, 0])]
    counts_pad = attrs(n).get("count_include_pad", 0)
    if win["pads"] == explicit and (counts_pad or not any(win["pads"])):
        ctx.emit(n, Node(n.name, "avgpool2d", [n.input[0]], n.output[0], {"kernel": kernel, **win}))
        return
    # Border windows divide by the cells they really cover: an average pool that counts the
    # padding, then a fixed per-position factor (kh*kw / count), both exact linear maps.
    covered = _covered(ctx.shape(n.input[0])[1:], kernel, win, explicit if counts_pad else None)
    mid = f"{n.name}:window"
    ctx.onnx_shapes.setdefault(mid, ctx.onnx_shapes[n.output[0]])
    ctx.emit(n, Node(mid, "avgpool2d", [n.input[0]], mid, {"kernel": kernel, **win}))
    factor = (kernel[0] * kernel[1] / covered)[None].astype(np.float32)
    ctx.emit(n, Node(n.name, "channel_scale", [mid], n.output[0], {}, {"factor": factor}))


def _covered(hw: tuple[int, ...], kernel: list[int], win: dict, counted: list[int] | None):
    """Per output position, how many cells its window divides by: the input cells it covers,
    plus the explicit padding when it is counted (count_include_pad=1)."""
    ones = np.zeros(
        (1, hw[0] + win["pads"][0] + win["pads"][2], hw[1] + win["pads"][1] + win["pads"][3])
    )
    p = win["pads"]
    ones[:, p[0] : p[0] + hw[0], p[1] : p[1] + hw[1]] = 1
    if counted is not None:  # the explicit pads count, the ceil_mode extension does not
        ones[
            :,
            p[0] - counted[0] : p[0] + hw[0] + counted[2],
            p[1] - counted[1] : p[1] + hw[1] + counted[3],
        ] = 1
    st = win["strides"]
    oh = window_out(hw[0], kernel[0], st[0], p[0], p[2])
    ow = window_out(hw[1], kernel[1], st[1], p[1], p[3])
    out = np.empty((oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[i, j] = ones[
                0, i * st[0] : i * st[0] + kernel[0], j * st[1] : j * st[1] + kernel[1]
            ].sum()
    return out


@importer("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx: Ctx, n: onnx.NodeProto) -> None:
    _, h, w = _image_input(ctx, n)
    op = "avgpool2d" if n.op_type == "GlobalAveragePool" else "maxpool2d"
    a = {"kernel": [h, w], "strides": [1, 1], "pads": [0, 0, 0, 0]}
    ctx.emit(n, Node(n.name, op, [n.input[0]], n.output[0], a))


@importer("MaxPool")
def _maxpool(ctx: Ctx, n: onnx.NodeProto) -> None:
    kernel = [int(k) for k in attrs(n)["kernel_shape"]]
    win = _window(ctx, n, kernel)
    if win.pop("dilations") != [1, 1]:
        raise refuse(n, "dilated max pooling is not supported")
    if len(n.output) > 1 and n.output[1]:
        raise refuse(n, "the indices output is not supported")
    ctx.emit(n, Node(n.name, "maxpool2d", [n.input[0]], n.output[0], {"kernel": kernel, **win}))


def _reduce_axes(ctx: Ctx, n: onnx.NodeProto) -> list[int]:
    x = n.input[0]
    given = ctx.optional_const(n, 1, "axes")
    axes = [int(a) for a in np.atleast_1d(given)] if given is not None else None
    if axes is None:
        axes = [int(a) for a in attrs(n).get("axes", [])] or None
    if axes is None:
        if attrs(n).get("noop_with_empty_axes", 0):
            raise refuse(n, "a reduction over no axes is not supported")
        axes = [a for a in range(ctx.rank(x)) if a != ctx.batch(x)]
    return [ctx.axis(n, x, a) for a in axes]


@importer("ReduceMean", "ReduceSum")
def _reduce(ctx: Ctx, n: onnx.NodeProto) -> None:
    x, out = n.input[0], n.output[0]
    axes = sorted(_reduce_axes(ctx, n))
    keep = int(attrs(n).get("keepdims", 1))
    shape = ctx.shape(x)
    if n.op_type == "ReduceMean" and len(shape) == 3 and axes == [1, 2] and ctx.batch(x) == 0:
        # The mean over H, W of an image is global average pooling (x.mean((2, 3)) in torch).
        pooled = out if keep else f"{n.name}:pool"
        ctx.onnx_shapes.setdefault(pooled, (1, shape[0], 1, 1))
        kw = {"kernel": list(shape[1:]), "strides": [1, 1], "pads": [0, 0, 0, 0]}
        ctx.emit(n, Node(pooled if not keep else n.name, "avgpool2d", [x], pooled, kw))
        if not keep:
            ctx.emit(n, Node(n.name, "reshape", [pooled], out, {"shape": [shape[0]]}))
        return
    if n.op_type == "ReduceSum" and len(axes) == 1 and 1 < shape[axes[0]] <= MAX_SUMMED_SLICES:
        _sum_of_slices(ctx, n, x, axes[0], keep)
        return
    op = "reduce_mean" if n.op_type == "ReduceMean" else "reduce_sum"
    ctx.emit(n, Node(n.name, op, [x], out, {"axes": axes, "keepdims": keep}))


MAX_SUMMED_SLICES = 4  # a sum over an axis this short is an add of its slices


def _sum_of_slices(ctx: Ctx, n: onnx.NodeProto, x: str, axis: int, keep: int) -> None:
    """A sum over a short axis (SKNet's and ResNeSt's branches, stacked then summed) as an add
    of its slices: the branches may carry different scales in integer mode, which an add
    brings to one and a reduce_sum cannot."""
    parts = []
    for k in range(ctx.shape(x)[axis]):
        part = f"{n.name}:slice{k}"
        ctx.emit(n, Node(part, "take", [x], part, {"axis": axis, "index": k}))
        parts.append(part)
    if not keep:
        ctx.emit(n, Node(n.name, "add", parts, n.output[0]))
        return
    summed, kept = f"{n.name}:sum", list(ctx.shape(x))
    kept[axis] = 1
    ctx.emit(n, Node(summed, "add", parts, summed))
    ctx.emit(n, Node(n.name, "reshape", [summed], n.output[0], {"shape": kept}))


# -- data movement ----------------------------------------------------------------------------


def _reshape_to(ctx: Ctx, n: onnx.NodeProto, x: str, out: str, name: str) -> None:
    """Any reshape-like op (Reshape, Flatten, Squeeze, Unsqueeze): the output's batch-1 shape
    comes from shape inference; its batch axis is the size-1 axis that splits the elements
    where the input's batch axis did, else it was merged (None)."""
    full = ctx.onnx_shapes.get(out)
    if full is None:
        raise refuse(n, "shape inference gives no output shape")
    b_in = ctx.batch(x)
    ones = [j for j, d in enumerate(full) if d == 1]
    if b_in is not None:
        before = int(np.prod(ctx.onnx_full(x)[:b_in]))
        b_out = next((j for j in ones if int(np.prod(full[:j])) == before), None)
    else:
        # A merged batch axis (e.g. (L*N, E) -> (L, N, E)) comes back as a size-1 axis; with
        # batch 1 any size-1 axis holds the same values, so taking one is exact.
        b_out = ones[0] if ones else None
    shape = [d for j, d in enumerate(full) if j != b_out]
    ctx.emit(n, Node(name, "reshape", [x], out, {"shape": shape}), hint=b_out)


@importer("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(ctx: Ctx, n: onnx.NodeProto) -> None:
    if ctx.is_const(n.input[0]):
        raise refuse(n, "reshaping a constant that onnxruntime did not fold")
    _reshape_to(ctx, n, n.input[0], n.output[0], n.name)


@importer("Transpose")
def _transpose(ctx: Ctx, n: onnx.NodeProto) -> None:
    x = n.input[0]
    rank, b = ctx.rank(x), ctx.batch(x)
    perm = [int(p) for p in attrs(n).get("perm", list(range(rank))[::-1])]
    if b is not None:
        perm = [p - (p > b) for p in perm if p != b]
    if perm == sorted(perm):
        _reshape_to(ctx, n, x, n.output[0], n.name)  # only size-1 axes moved
        return
    ctx.emit(n, Node(n.name, "transpose", [x], n.output[0], {"perm": perm}))


@importer("Concat")
def _concat(ctx: Ctx, n: onnx.NodeProto) -> None:
    if len(n.input) == 1:  # a list of one tensor (DenseNet's first layer of each block)
        _passthrough(ctx, n)
        return
    live = [i for i in n.input if not ctx.is_const(i)]
    ref = live[0]
    axis = ctx.axis(n, ref, int(attrs(n)["axis"]))
    if len(live) == len(n.input):
        ctx.emit(n, Node(n.name, "concat", list(n.input), n.output[0], {"axis": axis}))
        return
    if len(live) > 1:
        raise refuse(n, "a constant between several activations is not supported")
    # A constant joined to one activation (a CLS / distillation token): zero-pad the activation
    # where the constant goes, then add the constant there (pad and offset are both exact).
    parts = [ctx.sample_const(ctx.consts[i], ref) if ctx.is_const(i) else None for i in n.input]
    rank = len(ctx.shape(ref))
    parts = [p.reshape((1,) * (rank - p.ndim) + p.shape) if p is not None else None for p in parts]
    k = list(n.input).index(ref)
    before = sum(p.shape[axis] for p in parts[:k])
    after = sum(p.shape[axis] for p in parts[k + 1 :])
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = before, after
    padded = f"{n.name}:pad"
    ctx.onnx_shapes.setdefault(padded, ctx.onnx_shapes[n.output[0]])
    ctx.emit(n, Node(padded, "pad", [ref], padded, {"pads": pads}))
    shape = ctx.shape(ref)
    value = np.concatenate(
        [
            np.broadcast_to(p, shape[:axis] + (p.shape[axis],) + shape[axis + 1 :])
            if p is not None
            else np.zeros(shape)
            for p in parts
        ],
        axis=axis,
    )
    ctx.emit(
        n, Node(n.name, "offset", [padded], n.output[0], {}, {"value": value.astype(np.float32)})
    )


@importer("Gather")
def _gather(ctx: Ctx, n: onnx.NodeProto) -> None:
    data, idx = n.input[0], n.input[1]
    if ctx.is_const(data) and not ctx.is_const(idx):
        _embedding(ctx, n)
        return
    index = ctx.const(n, 1, "the index")
    axis = ctx.axis(n, data, int(attrs(n).get("axis", 0)))
    if index.ndim == 0:
        a = {"axis": axis, "index": int(index) % ctx.shape(data)[axis]}
        ctx.emit(n, Node(n.name, "take", [data], n.output[0], a))
        return
    size = ctx.shape(data)[axis]
    index = index % size
    steps = np.diff(index) if index.ndim == 1 and len(index) > 1 else None
    if steps is not None and np.all(steps == steps[0]) and steps[0] != 0:
        start, step = int(index[0]), int(steps[0])
        stop = start + step * len(index)
        spec = {"axes": [axis], "starts": [start], "ends": [max(stop, -1)], "steps": [step]}
        ctx.emit(n, Node(n.name, "slice", [data], n.output[0], spec))
        return
    runs = _runs(index) if index.ndim == 1 else []
    if 1 < len(runs) <= MAX_GATHER_RUNS:  # a channel permutation: slices joined again
        parts = []
        for k, (start, stop) in enumerate(runs):
            part = f"{n.name}:{k}"
            spec = {"axes": [axis], "starts": [start], "ends": [stop], "steps": [1]}
            ctx.emit(n, Node(part, "slice", [data], part, spec))
            parts.append(part)
        ctx.emit(n, Node(n.name, "concat", parts, n.output[0], {"axis": axis}))
        return
    spec = {"axis": axis, "indices": [int(i) for i in index.reshape(-1)]}
    if index.ndim == 1:
        ctx.emit(n, Node(n.name, "gather", [data], n.output[0], spec))
        return
    # A multi-axis index (dynamo's as_strided, unfold): a gather by its flattened positions,
    # then the reshape that splits the gathered axis into the index's axes.
    flat = f"{n.name}:flat"
    ctx.emit(n, Node(flat, "gather", [data], flat, spec))
    _reshape_to(ctx, n, flat, n.output[0], n.name)


MAX_GATHER_RUNS = 16  # a gather by index becomes at most this many slices and a concat


def _runs(index: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs of consecutive indices: [0, 1, 2, 6, 7, 3] -> (0, 3), (6, 8), (3, 4)."""
    runs, start = [], 0
    for k in range(1, len(index) + 1):
        if k == len(index) or index[k] != index[k - 1] + 1:
            runs.append((int(index[start]), int(index[k - 1]) + 1))
            start = k
    return runs


def _embedding(ctx: Ctx, n: onnx.NodeProto) -> None:
    """Gather(table, ids): a lookup of token embeddings by an integer model input."""
    table = ctx.consts[n.input[0]]
    if table.ndim != 2 or int(attrs(n).get("axis", 0)) != 0:
        raise refuse(n, f"only row lookups in a 2-D table are supported, table is {table.shape}")
    ids, attrs_ = n.input[1], {}
    info = ctx.tensors.get(ctx.name(ids))
    if info is None or info.dtype != "int64":
        sources = ctx.derived.get(ids, set())
        pad = None
        if len(sources) == 1:
            (source,) = sources
            fixed = constant_ids(ctx.model, ids, ctx.input_info[source])
            if fixed is not None:  # the same rows for every input: a constant
                ctx.consts[n.output[0]] = table[fixed]
                return
            pad = position_pad(ctx.model, ids, ctx.input_info[source])
        if pad is None:
            raise refuse(
                n, f"the ids '{ids}' must be an integer model input or its RoBERTa position ids"
            )
        ids, attrs_ = source, {"position_pad": pad}
    params = {"table": table.astype(np.float32)}
    ctx.emit(n, Node(n.name, "embed", [ids], n.output[0], attrs_, params))


def _emit_slice(ctx: Ctx, n: onnx.NodeProto, out: str, name: str, spec: list[tuple]) -> None:
    """One slice node from (ONNX axis, start, end, step) tuples, clamped like ONNX Slice."""
    x = n.input[0]
    shape = ctx.shape(x)
    a: dict[str, list[int]] = {"axes": [], "starts": [], "ends": [], "steps": []}
    big = np.iinfo(np.int64).max
    for axis, start, end, step in spec:
        if step == 0:
            raise refuse(n, "a step of 0 is not a slice")
        if int(axis) % ctx.rank(x) == ctx.batch(x) and _whole_batch(start, end, step):
            continue  # keeps every sample (jax2tf's strided slices name every axis)
        ax = ctx.axis(n, x, int(axis))
        s, e, _ = slice(
            int(max(min(start, big), -big)), int(max(min(end, big), -big)), int(step)
        ).indices(shape[ax])
        for k, v in zip(a, (ax, s, e, int(step)), strict=True):
            a[k].append(v)
    ctx.emit(n, Node(name, "slice", [x], out, a))


def _whole_batch(start: int, end: int, step: int) -> bool:
    """Whether a slice of the batch axis keeps all of it at any batch size: forwards from the
    first sample to an end no batch reaches (exporters write 1e9, 2^31 - 1 or 2^63 - 1)."""
    return step == 1 and start in (0, -np.iinfo(np.int64).max - 1) and end >= 2**24


@importer("Slice")
def _slice(ctx: Ctx, n: onnx.NodeProto) -> None:
    starts = ctx.const(n, 1, "starts")
    ends = ctx.const(n, 2, "ends")
    axes = ctx.optional_const(n, 3, "axes")
    axes = np.arange(len(starts)) if axes is None else axes
    steps = ctx.optional_const(n, 4, "steps")
    steps = np.ones(len(starts), np.int64) if steps is None else steps
    spec = list(zip(axes, starts, ends, steps, strict=True))
    _emit_slice(ctx, n, n.output[0], n.name, spec)


@importer("Split")
def _split(ctx: Ctx, n: onnx.NodeProto) -> None:
    """Split into k outputs: k slice nodes, named after the Split node and output index."""
    x = n.input[0]
    onnx_axis = int(attrs(n).get("axis", 0))
    size = ctx.shape(x)[ctx.axis(n, x, onnx_axis)]
    given = ctx.optional_const(n, 1, "the split sizes")
    if given is not None:
        sizes = [int(s) for s in given]
    elif "split" in attrs(n):
        sizes = [int(s) for s in attrs(n)["split"]]
    else:
        k = len(n.output)
        chunk = -(-size // k)  # ONNX: equal parts, the last one smaller
        sizes = [min(chunk, size - i * chunk) for i in range(k)]
    start = 0
    for i, (out, part) in enumerate(zip(n.output, sizes, strict=True)):
        if out:
            _emit_slice(ctx, n, out, f"{n.name}:{i}", [(onnx_axis, start, start + part, 1)])
        start += part


@importer("Pad")
def _pad(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = attrs(n)
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = ctx.optional_const(n, 1, "the pads")
    pads = [int(p) for p in (pads if pads is not None else a.get("pads", []))]
    value = ctx.optional_const(n, 2, "the pad value")
    value = (
        float(value.reshape(-1)[0])
        if value is not None and value.size
        else float(a.get("value", 0.0))
    )
    if mode not in ("constant", "edge", "reflect"):
        raise refuse(n, f"mode '{mode}' is not supported (constant, edge, reflect)")
    if ctx.optional_const(n, 3, "the axes") is not None:
        raise refuse(n, "Pad with an axes input is not supported")
    x = n.input[0]
    rank, b = ctx.rank(x), ctx.batch(x)
    if min(pads, default=0) < 0:
        raise refuse(n, "negative pads (cropping) are not supported")
    if b is not None and (pads[b] or pads[rank + b]):
        raise refuse(n, "it pads the batch axis")
    keep = [i for i in range(rank) if i != b]
    per_sample = [pads[i] for i in keep] + [pads[rank + i] for i in keep]
    if mode != "constant":
        _pad_by_gathers(ctx, n, x, per_sample, mode)
        return
    if value == 0.0:
        ctx.emit(n, Node(n.name, "pad", [x], n.output[0], {"pads": per_sample}))
        return
    # Another constant (EfficientViT's linear attention pads its values with ones): zero
    # padding, then that constant added on the padded cells only (both exact).
    zeros = f"{n.name}:zeros"
    ctx.emit(n, Node(zeros, "pad", [x], zeros, {"pads": per_sample}))
    border = np.full(ctx.shape(zeros), value, np.float32)
    inner = tuple(slice(p, p + d) for p, d in zip(per_sample, ctx.shape(x), strict=False))
    border[inner] = 0.0
    ctx.emit(n, Node(n.name, "offset", [zeros], n.output[0], {}, {"value": border}))


def _pad_by_gathers(ctx: Ctx, n: onnx.NodeProto, x: str, pads: list[int], mode: str) -> None:
    """Edge or reflect padding as one gather per padded axis: its index list is numpy's pad
    of the axis's positions in that mode (data movement, exact everywhere)."""
    rank = len(ctx.shape(x))
    axes = [a for a in range(rank) if pads[a] or pads[rank + a]]
    if not axes:
        _passthrough(ctx, n)
        return
    for k, axis in enumerate(axes):
        size = ctx.shape(x)[axis]
        if mode == "reflect" and max(pads[axis], pads[rank + axis]) >= size:
            raise refuse(
                n, f"reflect padding of {pads[axis]}/{pads[rank + axis]} on an axis of {size}"
            )
        index = np.pad(np.arange(size), (pads[axis], pads[rank + axis]), mode=mode)
        last = k == len(axes) - 1
        y = n.output[0] if last else f"{n.name}:axis{axis}"
        name = n.name if last else y
        ctx.emit(n, Node(name, "gather", [x], y, {"axis": axis, "indices": index.tolist()}))
        x = y


@importer("Resize", "Upsample")
def _resize(ctx: Ctx, n: onnx.NodeProto) -> None:
    a = attrs(n)
    _image_input(ctx, n)

    def text(k: str, default: str) -> str:
        v = a.get(k, default)
        return v.decode() if isinstance(v, bytes) else str(v)

    mode = text("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise refuse(n, f"mode '{mode}' is not supported (nearest, linear)")
    full = ctx.onnx_shapes.get(n.output[0])
    if full is None or full[:2] != ctx.onnx_full(n.input[0])[:2]:
        raise refuse(n, "only the spatial axes of (N, C, H, W) may be resized")
    kw = {
        "mode": mode,
        "out_shape": list(full[1:]),
        "coordinate_transformation_mode": text("coordinate_transformation_mode", "half_pixel"),
        "nearest_mode": text("nearest_mode", "round_prefer_floor"),
    }
    ctx.emit(n, Node(n.name, "resize", [n.input[0]], n.output[0], kw))


# -- fused patterns (spikeport.convert.onnx_patterns) ------------------------------------------


@importer("MaskedMean")
def _masked_mean(ctx: Ctx, n: onnx.NodeProto) -> None:
    """The mean of h over the tokens its 0/1 mask keeps (masked mean pooling)."""
    h, mask = n.input
    a = {"axis": ctx.axis(n, h, int(attrs(n)["axis"])), "keepdims": int(attrs(n)["keepdims"])}
    ctx.emit(n, Node(n.name, "masked_mean", [h, mask], n.output[0], a))


@importer("L2Norm")
def _l2norm(ctx: Ctx, n: onnx.NodeProto) -> None:
    x = n.input[0]
    if ctx.axis(n, x, int(attrs(n)["axis"])) != len(ctx.shape(x)) - 1:
        raise refuse(n, "only an L2 normalisation over the last axis is supported")
    a = {"axis": -1, "eps": float(attrs(n)["epsilon"])}
    ctx.emit(n, Node(n.name, "l2norm", [x], n.output[0], a))


@importer("SpaceToDepth", "DepthToSpace")
def _space_depth(ctx: Ctx, n: onnx.NodeProto) -> None:
    """Pixel (un)shuffles are reshape, transpose, reshape (ONNX's own definition)."""
    c, h, w = _image_input(ctx, n)
    b = int(attrs(n)["blocksize"])
    mode = attrs(n).get("mode", b"DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if n.op_type == "SpaceToDepth":
        split, perm, out = [c, h // b, b, w // b, b], [2, 4, 0, 1, 3], [c * b * b, h // b, w // b]
    elif mode == "DCR":
        split, perm, out = [b, b, c // (b * b), h, w], [2, 3, 0, 4, 1], [c // (b * b), h * b, w * b]
    else:  # CRD
        split, perm, out = [c // (b * b), b, b, h, w], [0, 3, 1, 4, 2], [c // (b * b), h * b, w * b]
    first, moved = f"{n.name}:split", f"{n.name}:moved"
    ctx.emit(n, Node(first, "reshape", [n.input[0]], first, {"shape": split}), hint=0)
    ctx.emit(n, Node(moved, "transpose", [first], moved, {"perm": perm}), hint=0)
    ctx.emit(n, Node(n.name, "reshape", [moved], n.output[0], {"shape": out}))


@importer("ConvTranspose")
def _conv_transpose(ctx: Ctx, n: onnx.NodeProto) -> None:
    """ONNX ConvTranspose, 2-D. auto_pad and output_shape become explicit pads, split between
    start and end as onnxruntime splits them."""
    w = ctx.const(n, 1, "the weight").astype(np.float32)
    if w.ndim != 4:
        raise refuse(n, f"only 2-D transposed convolution is supported, weight is {w.shape}")
    a = attrs(n)
    g = int(a.get("group", 1))
    b = ctx.optional_const(n, 2, "the bias")
    b = np.zeros(w.shape[1] * g) if b is None else b
    if list(a.get("kernel_shape", w.shape[2:])) != list(w.shape[2:]):
        raise refuse(n, f"kernel_shape {a['kernel_shape']} differs from the weight {w.shape}")
    _, h, wd = _image_input(ctx, n)
    st = [int(s) for s in a.get("strides", [1, 1])]
    dil = [int(d) for d in a.get("dilations", [1, 1])]
    pads = [int(p) for p in a.get("pads", [0, 0, 0, 0])]
    out_pad = [int(p) for p in a.get("output_padding", [0, 0])]
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    want = [int(s) for s in a.get("output_shape", [])][-2:]
    if not want and auto in ("SAME_UPPER", "SAME_LOWER"):
        want = [h * st[0], wd * st[1]]
    if auto == "VALID":
        pads = [0, 0, 0, 0]
    if want:
        for i, size in enumerate((h, wd)):
            full = (size - 1) * st[i] + (w.shape[2 + i] - 1) * dil[i] + 1 + out_pad[i]
            total = full - want[i]
            if total < 0:  # onnxruntime refuses it too
                raise refuse(n, f"output_shape {want} exceeds the full output on axis {i}")
            # onnxruntime crops the odd cell at the end for SAME_UPPER, at the start otherwise
            small, big = total // 2, total - total // 2
            pads[i], pads[i + 2] = (small, big) if auto == "SAME_UPPER" else (big, small)
    win = {"strides": st, "pads": pads, "dilations": dil, "group": g, "output_padding": out_pad}
    params = {"weight": w, "bias": b.astype(np.float32)}
    ctx.emit(n, Node(n.name, "conv_transpose2d", [n.input[0]], n.output[0], win, params))
