"""TFLite -> Graph (stage "ann"), float and int8 models alike.

The flatbuffer is read with the schema that ai-edge-litert ships (no TensorFlow). Each builtin
op has one importer, registered by its name, emitting the same IR ops the ONNX importer emits
for its twin (spikeport.convert.onnx_ops); anything else is refused in one line naming the
operator's index and op. What differs from ONNX, and how it is handled:

- Layout. TFLite activations are NHWC; the IR is (C, H, W) per sample. Every rank-4 TFLite
  tensor is an image, (C, H, W) in the IR; every other tensor keeps TFLite's axis order
  (batch dropped). Weights and per-channel constants (PRELU alpha, MUL / ADD operands, PAD
  widths) are moved to the IR layout at import, so nothing is added at run time for them.
  A flatten of an NHWC tensor is an IR reshape of the (C, H, W) tensor, so its values come
  out in C, H, W order instead of TFLite's H, W, C: the fully connected layer after it gets
  its weight columns permuted to match. Any other reshape of an image (a detection head's
  (1, H*W*anchors, 4)) transposes it to (H, W, C) first: one exact data-movement node. Data
  files stay (N, C, H, W) as DESIGN section 4 says; the LiteRT reference is fed transposed
  data (spikeport.convert.litert).
- Fused activations (RELU, RELU6, RELU_N1_TO_1, TANH) become nodes after the op.
- MUL / ADD / SUB / DIV by a constant fold into the conv / fully connected layer right
  before (weights and bias, or bias) when nothing else reads its output and the constant is
  per channel; elsewhere they become `scale` / `channel_scale` / `offset`, as for ONNX.
- int8 (and other quantised) tensors are dequantised: constants as real = scale * (q - zp)
  per tensor or per channel; the graph is the real-valued network the int8 model encodes.
  Every scale and zero point is kept in `meta["tflite"]` (per IR tensor and per node param,
  in IR layout), so the int8 codes stay recoverable as round(w / scale) + zp. An int8
  ReLU's output saturates at scale * (127 - zp): that bound becomes the relu's cap, as the
  model computes it.
- QUANTIZE / DEQUANTIZE of activations are the identity on real values and vanish (noted);
  a DEQUANTIZE of a constant (float16 / int8 weights) becomes that constant, and DENSIFY of
  a sparse constant its dense array.
- SOFTMAX is accepted only as the op that writes a graph output: it does not change the
  argmax, so it is dropped, noted and listed in meta["source"]["dropped_softmax"] (as the
  ONNX importer does); anywhere else it is refused.
- Several graph outputs are kept, in the model's order.

`meta["tflite"]["tensors"]` maps each IR tensor with a TFLite twin to that tensor's index and
layout: the LiteRT calibration runner reads the IR's activations through it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from spikeport.convert.clamp import clamp_steps
from spikeport.errors import BadInput, UnsupportedOp
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import infer_shape
from spikeport.registry import registrar

INSTALL_HINT = "reading .tflite needs ai-edge-litert: pip install 'spikeport[tflite]'"


def schema() -> Any:
    """The TFLite flatbuffer schema (generated Python) shipped by ai-edge-litert."""
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    return schema_py_generated


# Layout of an IR tensor's TFLite twin: ("nhwc",) for (C, H, W) <-> (N, H, W, C);
# ("plain",) for (K,) <-> (N, K); ("hwc", C, H, W) for a flattened NHWC tensor, whose IR
# values are in C, H, W order and TFLite's in H, W, C order.
Layout = tuple[Any, ...]
NHWC: Layout = ("nhwc",)
PLAIN: Layout = ("plain",)

NP_TYPES = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}


def enum_names(cls: type) -> dict[int, str]:
    """Value -> name of a generated flatbuffers enum class."""
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass
class _Op:
    """One TFLite operator as the importers see it."""

    index: int
    name: str  # builtin op name, e.g. "CONV_2D"
    inputs: list[int]  # tensor indices, -1 for an absent optional input
    outputs: list[int]
    opts: Any  # the builtin options object (schema object API) or None
    custom_options: bytes = b""  # a custom op's raw options

    @property
    def node(self) -> str:
        """Name of the IR node made from this op."""
        return f"{self.name.lower()}_{self.index}"

    def refuse(self, why: str) -> UnsupportedOp:
        return UnsupportedOp(f"operator {self.index} ({self.name}): {why}")

    def opt(self, name: str, default: Any = 0) -> Any:
        return getattr(self.opts, name, default) if self.opts is not None else default


@dataclass
class _Ctx:
    """Import state: the flatbuffer, the IR being built, and where each TFLite tensor went."""

    fb: Any
    model: Any
    sub: Any
    data: bytes
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)  # TFLite tensor -> IR tensor
    layouts: dict[str, Layout] = field(default_factory=dict)  # IR tensor -> layout of its twin
    consts: dict[int, np.ndarray] = field(default_factory=dict)  # folded constants (real)
    uses: dict[int, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    own_kernels: list[str] = field(default_factory=list)  # custom ops LiteRT has no kernel for
    quant: dict[str, Any] = field(default_factory=dict)  # provenance: TFLite quantisation
    dropped_softmax: list[str] = field(default_factory=list)  # outputs whose SOFTMAX was dropped

    # -- tensors ---------------------------------------------------------------------------

    def tfl(self, i: int) -> Any:
        return self.sub.tensors[i]

    def tname(self, i: int) -> str:
        name = self.tfl(i).name
        return name.decode() if isinstance(name, bytes) else str(name or f"tensor_{i}")

    def dtype(self, i: int) -> str:
        return enum_names(self.fb.TensorType).get(self.tfl(i).type, "?")

    def qparams(self, i: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """(scale, zero_point, axis) of a quantised tensor, or None."""
        q = self.tfl(i).quantization
        if q is None or q.scale is None or len(q.scale) == 0:
            return None
        zp = np.zeros(len(q.scale), np.int64) if q.zeroPoint is None else np.asarray(q.zeroPoint)
        return np.asarray(q.scale, np.float64), zp.astype(np.int64), int(q.quantizedDimension)

    def raw(self, op: _Op, i: int) -> np.ndarray | None:
        """The stored values of tensor `i`, or None when it is computed at run time."""
        t = self.tfl(i)
        buf = self.model.buffers[t.buffer] if 0 < t.buffer < len(self.model.buffers) else None
        if buf is None:
            return None
        if buf.offset > 1:  # large models keep buffers after the flatbuffer
            if buf.offset + buf.size > len(self.data):
                raise BadInput(f"tensor '{self.tname(i)}': its data lies past the end of the file")
            payload = self.data[buf.offset : buf.offset + buf.size]
        elif buf.data is None or len(buf.data) == 0:
            return None
        else:
            payload = np.asarray(buf.data, np.uint8).tobytes()
        dt = NP_TYPES.get(self.dtype(i))
        if dt is None:
            raise op.refuse(f"tensor '{self.tname(i)}' has type {self.dtype(i)}")
        shape = list(t.shape) if t.shape is not None else []
        values = np.frombuffer(payload, np.dtype(dt).newbyteorder("<"))
        if t.sparsity is not None:  # only the stored (nonzero) values: see DENSIFY
            return values
        try:
            return values.reshape(shape)
        except ValueError:
            raise BadInput(f"tensor '{self.tname(i)}': data does not fit shape {shape}") from None

    def const(self, op: _Op, k: int, what: str) -> np.ndarray:
        """Input `k` of `op` as a real-valued (dequantised) float array."""
        i = op.inputs[k] if k < len(op.inputs) else -1
        if i in self.consts:
            return self.consts[i]
        arr = self.raw(op, i) if i >= 0 else None
        if arr is None:
            src = f"'{self.tname(i)}' is computed at run time" if i >= 0 else "it is absent"
            raise op.refuse(f"{what} must be a constant, {src}")
        q = self.qparams(i)
        if q is None or arr.dtype.kind == "f":
            return arr.astype(np.float32)
        scale, zp, axis = q
        shape = [1] * arr.ndim
        if len(scale) > 1:
            shape[axis] = len(scale)
        return ((arr.astype(np.float64) - zp.reshape(shape)) * scale.reshape(shape)).astype(
            np.float32
        )

    def act(self, op: _Op, k: int = 0) -> str:
        """The IR tensor behind input `k` of `op` (which must be computed, not constant)."""
        i = op.inputs[k]
        if i not in self.names:
            raise op.refuse(f"input {k} ('{self.tname(i)}') must be computed, not a constant")
        return self.names[i]

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensors[name].shape

    # -- building --------------------------------------------------------------------------

    def add(self, node: Node) -> str:
        shape = infer_shape(node, [self.tensors[t].shape for t in node.inputs])
        self.tensors[node.output] = TensorInfo(node.output, shape)
        self.nodes.append(node)
        return node.output

    def bind(self, op: _Op, ir: str, layout: Layout, k: int = 0) -> None:
        """Output `k` of `op` is IR tensor `ir` (checked against the TFLite shape)."""
        i = op.outputs[k]
        want = _ir_shape(self.tfl(i).shape, layout)
        if want is not None and want != self.shape(ir):
            raise BadInput(
                f"operator {op.index} ({op.name}): output '{self.tname(i)}' is declared "
                f"{list(self.tfl(i).shape)}, the op gives {list(self.shape(ir))} per sample"
            )
        self.names[i] = ir
        self.layouts.setdefault(ir, layout)
        q = self.qparams(i)
        if q is not None:
            self.quant.setdefault("tensors", {})[ir] = _qrecord(q, self.dtype(i), None)

    def activation(self, op: _Op, x: str, code: int) -> str:
        """Append the fused activation `code` of `op` after IR tensor `x`."""
        kind = enum_names(self.fb.ActivationFunctionType).get(code, str(code))
        if kind == "NONE":
            return x
        if kind == "TANH":
            name = f"{op.node}_tanh"
            return self.add(Node(name, "tanh", [x], name))
        if kind == "RELU_N1_TO_1":
            return _clamp(self, op, x, -1.0, 1.0, f"{op.node}_relu_n1_to_1")
        if kind not in ("RELU", "RELU6"):
            raise op.refuse(
                f"fused activation {kind} is not supported (RELU, RELU6, RELU_N1_TO_1, TANH)"
            )
        cap = 6.0 if kind == "RELU6" else None
        return self.relu(op, x, cap, f"{op.node}_{kind.lower()}")

    def relu(self, op: _Op, x: str, cap: float | None, name: str) -> str:
        """A relu node; an int8 output's saturation bound becomes (part of) its cap."""
        q = self.qparams(op.outputs[0])
        if q is not None and len(q[0]) == 1:
            hi = np.iinfo(NP_TYPES[self.dtype(op.outputs[0])]).max
            top = float(q[0][0] * (hi - q[1][0]))
            cap = top if cap is None else min(cap, top)
        return self.add(Node(name, "relu", [x], name, {"cap": cap}))

    def record_param(self, op: _Op, k: int, param: str, axis: int | None) -> None:
        """Keep the TFLite quantisation of a constant input (provenance; axis in IR layout)."""
        i = op.inputs[k] if k < len(op.inputs) else -1
        q = self.qparams(i) if i >= 0 else None
        if q is not None:
            rec = _qrecord(q, self.dtype(i), axis)
            self.quant.setdefault("params", {}).setdefault(op.node, {})[param] = rec


def _qrecord(q: tuple[np.ndarray, np.ndarray, int], dtype: str, axis: int | None) -> dict:
    scale, zp, _ = q
    rec: dict[str, Any] = {"dtype": dtype.lower(), "scale": scale.tolist()}
    rec["zero_point"] = zp.tolist()
    if axis is not None and len(scale) > 1:
        rec["axis"] = axis
    return rec


def _ir_shape(shape: Any, layout: Layout) -> tuple[int, ...] | None:
    """The per-sample IR shape of a TFLite tensor shape under `layout` (None: unknown)."""
    if shape is None or len(shape) == 0:
        return None
    s = [int(d) for d in shape]
    if layout == NHWC and len(s) == 4:
        return (s[3], s[1], s[2])
    if len(s) == 2:
        return (s[1],)
    return tuple(s[1:])


def hwc_perm(c: int, h: int, w: int) -> np.ndarray:
    """perm with tflite_flat[i] = ir_flat[perm[i]]: TFLite flattens H, W, C; the IR C, H, W."""
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)


def same_pads(size: tuple[int, int], k: list[int], s: list[int], d: list[int]) -> list[int]:
    """TensorFlow's SAME padding as IR pads [top, left, bottom, right]."""
    before, after = [], []
    for n, kk, ss, dd in zip(size, k, s, d, strict=True):
        out = -(-n // ss)
        total = max((out - 1) * ss + (kk - 1) * dd + 1 - n, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


def _window(op: _Op, ctx: _Ctx, x: str, k: list[int], stride: list[int], dil: list[int]) -> dict:
    pad = enum_names(ctx.fb.Padding).get(op.opt("padding"), "?")
    if pad not in ("SAME", "VALID"):
        raise op.refuse(f"padding {pad} is not supported")
    hw = ctx.shape(x)[1:]
    pads = same_pads(hw, k, stride, dil) if pad == "SAME" else [0, 0, 0, 0]
    return {"strides": stride, "pads": pads, "dilations": dil}


Importer = Callable[[_Ctx, _Op], None]
IMPORTERS: dict[str, Importer] = {}


importer = registrar(IMPORTERS)


def _nhwc_input(ctx: _Ctx, op: _Op) -> str:
    x = ctx.act(op)
    if ctx.layouts.get(x) != NHWC:
        raise op.refuse(f"expects a 4-D NHWC input, '{ctx.tname(op.inputs[0])}' is not one")
    return x


def _bias(ctx: _Ctx, op: _Op, k: int, n: int) -> np.ndarray:
    if k >= len(op.inputs) or op.inputs[k] < 0:
        return np.zeros(n, np.float32)
    b = ctx.const(op, k, "the bias").reshape(-1)
    if b.size != n:
        raise op.refuse(f"bias has {b.size} values for {n} output channels")
    ctx.record_param(op, k, "bias", 0)
    return b.astype(np.float32)


@importer("CONV_2D", "DEPTHWISE_CONV_2D")
def _conv(ctx: _Ctx, op: _Op) -> None:
    x = _nhwc_input(ctx, op)
    w = ctx.const(op, 1, "the filter")
    cin = ctx.shape(x)[0]
    if w.ndim != 4:
        raise op.refuse(f"filter must be 4-D, got {list(w.shape)}")
    if op.name == "CONV_2D":
        weight = w.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        if cin % w.shape[3]:
            raise op.refuse(f"input has {cin} channels, filter expects a multiple of {w.shape[3]}")
        group = cin // w.shape[3]
    else:
        weight = w.transpose(3, 0, 1, 2)  # 1HW(C*M) -> (C*M)1HW
        if w.shape[3] % cin:
            raise op.refuse(f"{w.shape[3]} output channels are not a multiple of {cin} inputs")
        group = cin
    ctx.record_param(op, 1, "weight", 0)
    dil = [op.opt("dilationHFactor", 1) or 1, op.opt("dilationWFactor", 1) or 1]
    stride = [op.opt("strideH", 1) or 1, op.opt("strideW", 1) or 1]
    attrs = _window(op, ctx, x, list(weight.shape[2:]), stride, dil) | {"group": group}
    b = _bias(ctx, op, 2, weight.shape[0])
    y = ctx.add(Node(op.node, "conv2d", [x], op.node, attrs, {"weight": weight, "bias": b}))
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), NHWC)


def _flatten(ctx: _Ctx, op: _Op, x: str, name: str) -> tuple[str, Layout]:
    """Flatten an NHWC IR tensor (C, H, W): values in C, H, W order, layout ('hwc', C, H, W)."""
    c, h, w = ctx.shape(x)
    y = ctx.add(Node(name, "reshape", [x], name, {"shape": [c * h * w]}))
    return y, (PLAIN if c == 1 or h * w == 1 else ("hwc", c, h, w))


@importer("FULLY_CONNECTED")
def _fully_connected(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    w = ctx.const(op, 1, "the weight")
    if w.ndim != 2 or op.opt("weightsFormat") != 0:
        raise op.refuse(f"weight must be a plain 2-D matrix, got {list(w.shape)}")
    layout = ctx.layouts[x]
    if layout == NHWC and op.opt("keepNumDims", False):
        raise op.refuse("keep_num_dims on an image applies it per position; not supported")
    if layout == NHWC:  # TFLite flattens a 4-D input implicitly
        x, layout = _flatten(ctx, op, x, f"{op.node}_flatten")
    if ctx.shape(x) != (w.shape[1],):
        raise op.refuse(
            f"input '{ctx.tname(op.inputs[0])}' has {list(ctx.shape(x))} values per sample, "
            f"the weight reads {w.shape[1]} (a per-position FULLY_CONNECTED is not supported)"
        )
    if layout[0] == "hwc":
        perm, cols = hwc_perm(*layout[1:]), w
        w = np.empty_like(cols)
        w[:, perm] = cols
    ctx.record_param(op, 1, "weight", 0)
    b = _bias(ctx, op, 2, w.shape[0])
    y = ctx.add(Node(op.node, "dense", [x], op.node, {}, {"weight": w, "bias": b}))
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), PLAIN)


def _producer(ctx: _Ctx, t: str) -> Node | None:
    return next((n for n in reversed(ctx.nodes) if n.output == t), None)


def ir_const(ctx: _Ctx, op: _Op, c: np.ndarray, x: str) -> np.ndarray:
    """A constant that broadcasts against TFLite tensor `x` (batch first, TFLite layout) as a
    per-sample IR constant that broadcasts against the IR tensor `x` (channels first)."""
    rank = len(ctx.shape(x)) + 1
    if c.ndim > rank or (c.ndim == rank and c.shape[0] != 1):
        raise op.refuse(f"constant {list(c.shape)} does not broadcast per sample")
    c = c.reshape((1,) * (rank - c.ndim) + c.shape)[0]
    layout = ctx.layouts[x]
    if layout == NHWC:
        return np.ascontiguousarray(c.transpose(2, 0, 1))
    if layout[0] == "hwc" and c.size > 1:  # features in H, W, C order -> the IR's C, H, W
        perm, flat = hwc_perm(*layout[1:]), np.broadcast_to(c, ctx.shape(x)).reshape(-1)
        out = np.empty_like(flat)
        out[perm] = flat
        return out
    return c


def _channel_values(ctx: _Ctx, target: Node, c: np.ndarray) -> np.ndarray | None:
    """`c` as one value per output channel of a conv (axis 0) / dense (last axis), or None
    when it varies along another axis (then it cannot be folded into the layer)."""
    out = ctx.shape(target.output)
    try:
        full = np.broadcast_to(c, out)
    except ValueError:
        return None
    axis = 0 if target.op == "conv2d" else len(out) - 1
    moved = np.moveaxis(full, axis, 0).reshape(out[axis], -1)
    return moved[:, 0].astype(np.float64) if np.all(moved == moved[:, :1]) else None


def _aliases(ctx: _Ctx, ir: str) -> list[int]:
    """Every TFLite tensor whose values IR tensor `ir` holds (an identity RESHAPE aliases)."""
    return [t for t, n in ctx.names.items() if n == ir]


def _only_reader(ctx: _Ctx, op: _Op, k: int) -> bool:
    """Whether `op` is the one reader of input `k`'s values (through any alias) and they are
    no graph output: then the op may rewrite the layer that made them."""
    twins = _aliases(ctx, ctx.names[op.inputs[k]])
    outs = {int(o) for o in ctx.sub.outputs}
    return sum(ctx.uses.get(t, 0) for t in twins) == 1 and not outs & set(twins)


def _fold_target(ctx: _Ctx, op: _Op, k: int) -> Node | None:
    """The conv / dense whose output alone feeds input `k` of `op` (folding into it is safe)."""
    p = _producer(ctx, ctx.names[op.inputs[k]])
    ok = p is not None and p.op in ("conv2d", "dense") and _only_reader(ctx, op, k)
    return p if ok else None


def _by_constant(ctx: _Ctx, op: _Op, x: str, c: np.ndarray, k_act: int, fold: bool) -> str:
    """y = x * c (MUL, DIV) or x + c (ADD, SUB): folded into the conv / dense right before
    (weights and bias, or bias) like the ONNX importer, else `scale` / `channel_scale` /
    `offset`."""
    mul = op.name in ("MUL", "DIV")
    target = _fold_target(ctx, op, k_act) if fold else None
    v = _channel_values(ctx, target, c) if target is not None else None
    if target is not None and v is not None:
        if mul:
            w = target.params["weight"]
            target.params["weight"] = (w * v.reshape((-1,) + (1,) * (w.ndim - 1))).astype(
                np.float32
            )
            target.params["bias"] = (target.params["bias"] * v).astype(np.float32)
        else:
            target.params["bias"] = (target.params["bias"] + v).astype(np.float32)
        for t in _aliases(ctx, x):  # the layer's own output is gone: no twin any more
            del ctx.names[t]
        return x
    if not mul:
        params = {"value": c.astype(np.float32)}
        return ctx.add(Node(op.node, "offset", [x], op.node, {}, params))
    if np.any(c == 0):
        raise op.refuse("multiplying by a constant that is 0 somewhere is not supported")
    flat = np.unique(c)
    if flat.size == 1:
        return ctx.add(Node(op.node, "scale", [x], op.node, {"factor": float(flat[0])}))
    params = {"factor": c.astype(np.float32)}
    return ctx.add(Node(op.node, "channel_scale", [x], op.node, {}, params))


def _negate(ctx: _Ctx, op: _Op, x: str) -> str:
    name = f"{op.node}_neg"
    return ctx.add(Node(name, "scale", [x], name, {"factor": -1.0}))


def _silu(ctx: _Ctx, op: _Op) -> str | None:
    """x * LOGISTIC(x) as one `silu` node (as the ONNX importer fuses it); the LOGISTIC goes
    when nothing else reads it."""
    for k in (0, 1):
        x, g = ctx.names[op.inputs[k]], ctx.names[op.inputs[1 - k]]
        p = _producer(ctx, g)
        if p is None or p.op != "sigmoid" or p.inputs[0] != x:
            continue
        if _only_reader(ctx, op, 1 - k):
            ctx.nodes.remove(p)
            del ctx.tensors[g]
            for t in _aliases(ctx, g):
                del ctx.names[t]
        return ctx.add(Node(op.node, "silu", [x], op.node))
    return None


def _two_streams(ctx: _Ctx, op: _Op, a: str, b: str) -> str:
    if ctx.layouts[a] != ctx.layouts[b]:  # broadcasting rules differ between the layouts
        raise op.refuse(f"operands differ in layout ({ctx.layouts[a][0]}, {ctx.layouts[b][0]})")
    if op.name in ("ADD", "SUB"):
        if ctx.shape(a) != ctx.shape(b):
            raise op.refuse(f"adds {list(ctx.shape(a))} and {list(ctx.shape(b))}: no broadcast")
        ins = [a, _negate(ctx, op, b) if op.name == "SUB" else b]
        return ctx.add(Node(op.node, "add", ins, op.node))
    if op.name == "MUL":
        return _silu(ctx, op) or ctx.add(Node(op.node, "mul", [a, b], op.node))
    return ctx.add(Node(op.node, "div", [a, b], op.node))


@importer("ADD", "SUB", "MUL", "DIV")
def _arith(ctx: _Ctx, op: _Op) -> None:
    const = [k for k in (0, 1) if op.inputs[k] not in ctx.names]
    if len(const) == 2:
        raise op.refuse("both operands are constants (an unfolded constant expression)")
    if not const:
        a, b = ctx.act(op, 0), ctx.act(op, 1)
        y = _two_streams(ctx, op, a, b)
        ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), ctx.layouts[a])
        return
    k_act = 1 - const[0]
    x = ctx.act(op, k_act)
    layout = ctx.layouts[x]
    c = ir_const(ctx, op, ctx.const(op, const[0], "the constant").astype(np.float64), x)
    if op.name == "DIV":
        if k_act == 1:
            raise op.refuse("dividing a constant by an activation is not supported")
        if np.any(c == 0):
            raise op.refuse("division by a constant that is 0 somewhere")
        c = 1.0 / c
    fold = True
    if op.name == "SUB":
        if k_act == 1:  # c - x = (-x) + c; the negation sits between: nothing to fold into
            x, fold = _negate(ctx, op, x), False
        else:
            c = -c
    y = _by_constant(ctx, op, x, c, k_act, fold)
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), layout)


@importer("RELU", "RELU6")
def _relu(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    y = ctx.relu(op, x, 6.0 if op.name == "RELU6" else None, op.node)
    ctx.bind(op, y, ctx.layouts[x])


@importer("RELU_0_TO_1")
def _relu01(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    ctx.bind(op, ctx.relu(op, x, 1.0, op.node), ctx.layouts[x])


@importer("RELU_N1_TO_1")
def _relu_n1(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    ctx.bind(op, _clamp(ctx, op, x, -1.0, 1.0, op.node), ctx.layouts[x])


@importer("MAXIMUM", "MINIMUM")
def _max_min(ctx: _Ctx, op: _Op) -> None:
    """max(x, c) or min(x, c) with c a scalar constant; of two activations: refused."""
    const = [k for k in (0, 1) if op.inputs[k] not in ctx.names]
    if len(const) != 1:
        raise op.refuse("only the max or min of one activation and a constant maps to a neuron")
    x, c = ctx.act(op, 1 - const[0]), ctx.const(op, const[0], "the bound")
    if c.size != 1:
        raise op.refuse(f"the bound has shape {list(c.shape)}; only a scalar maps to a neuron")
    bound = float(c.reshape(()))
    lo, hi = (bound, None) if op.name == "MAXIMUM" else (None, bound)
    ctx.bind(op, _clamp(ctx, op, x, lo, hi, op.node), ctx.layouts[x])


def _clamp(ctx: _Ctx, op: _Op, x: str, lo: float | None, hi: float | None, name: str) -> str:
    """min(max(x, lo), hi) as clamp.clamp_steps' chain, its last node named `name`."""
    try:
        steps = clamp_steps(lo, hi)
    except ValueError as e:
        raise op.refuse(str(e)) from None
    for i, (kind, attrs, params) in enumerate(steps):
        y = name if i == len(steps) - 1 else f"{name}:clamp{i}"
        x = ctx.add(Node(y, kind, [x], y, attrs, params))
    return x


# Elementwise functions with no linear spiking twin: expectation-compensated IR ops.
UNARY = {"LOGISTIC": "sigmoid", "HARD_SWISH": "hardswish", "TANH": "tanh"}


@importer(*UNARY)
def _unary(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    ctx.bind(op, ctx.add(Node(op.node, UNARY[op.name], [x], op.node)), ctx.layouts[x])


@importer("PRELU", "LEAKY_RELU")
def _prelu(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    if op.name == "LEAKY_RELU":
        slope = np.asarray(float(op.opt("alpha", 0.2)))
    else:
        slope = ir_const(ctx, op, ctx.const(op, 1, "alpha"), x)
        ctx.record_param(op, 1, "slope", None)
    params = {"slope": slope.astype(np.float32)}
    ctx.bind(op, ctx.add(Node(op.node, "prelu", [x], op.node, {}, params)), ctx.layouts[x])


def ir_axes(ctx: _Ctx, op: _Op, x: str) -> list[int]:
    """The TFLite axis (batch = 0) behind each per-sample IR axis of `x`."""
    layout = ctx.layouts[x]
    if layout == NHWC:
        return [3, 1, 2]
    if layout == PLAIN:
        return list(range(1, len(ctx.shape(x)) + 1))
    raise op.refuse("its input is a flattened image (H, W, C order); not supported here")


@importer("PAD", "PADV2")
def _pad(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    pads = ctx.const(op, 1, "the paddings").astype(np.int64).reshape(-1, 2)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        value = ctx.const(op, 2, "the pad value")
        if np.any(value != 0):
            raise op.refuse(f"only zero padding is supported, the value is {value.tolist()}")
    if len(pads) != len(ctx.shape(x)) + 1 or pads.min() < 0 or pads[0].any():
        raise op.refuse(f"paddings {pads.tolist()} are not >= 0 per sample axis")
    axes = ir_axes(ctx, op, x)
    attrs = {"pads": [int(pads[a, 0]) for a in axes] + [int(pads[a, 1]) for a in axes]}
    ctx.bind(op, ctx.add(Node(op.node, "pad", [x], op.node, attrs)), ctx.layouts[x])


@importer("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR")
def _resize(ctx: _Ctx, op: _Op) -> None:
    """TFLite's coordinate rules are ONNX Resize modes: align_corners -> align_corners,
    half_pixel_centers -> half_pixel (nearest: floor((x + 0.5) * scale), ONNX's round up),
    neither -> asymmetric (nearest: floor)."""
    x = _nhwc_input(ctx, op)
    size = [int(v) for v in ctx.const(op, 1, "the size").reshape(-1)]
    corners, half = bool(op.opt("alignCorners", False)), bool(op.opt("halfPixelCenters", False))
    if corners and half:
        raise op.refuse("align_corners with half_pixel_centers has no ONNX twin")
    how = "align_corners" if corners else "half_pixel" if half else "asymmetric"
    nearest = op.name == "RESIZE_NEAREST_NEIGHBOR"
    attrs = {
        "mode": "nearest" if nearest else "linear",
        "out_shape": [ctx.shape(x)[0], *size],
        "coordinate_transformation_mode": how,
        "nearest_mode": "floor" if how == "asymmetric" else "round_prefer_ceil",
    }
    ctx.bind(op, ctx.add(Node(op.node, "resize", [x], op.node, attrs)), NHWC)


@importer("STRIDED_SLICE")
def _strided_slice(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    begin, end, steps = (
        [int(v) for v in ctx.const(op, k, what).reshape(-1)]
        for k, what in ((1, "begin"), (2, "end"), (3, "strides"))
    )
    if op.opt("ellipsisMask") or op.opt("newAxisMask") or op.opt("offset", False):
        raise op.refuse("ellipsis, new-axis and offset masks are not supported")
    shape_in = [1, *_tfl_order(ctx, x)]
    if len(begin) != len(shape_in):
        raise op.refuse(f"slices {len(begin)} axes of a rank-{len(shape_in)} tensor")
    spec = []
    for a, size in enumerate(shape_in):
        if op.opt("shrinkAxisMask") >> a & 1:  # one index; the axis goes away below
            lo, hi, st = begin[a] % size, begin[a] % size + 1, 1
        else:
            b = None if op.opt("beginMask") >> a & 1 else begin[a]
            e = None if op.opt("endMask") >> a & 1 else end[a]
            if steps[a] == 0:
                raise op.refuse(f"stride 0 on axis {a}")
            lo, hi, st = slice(b, e, steps[a]).indices(size)
        if a == 0 and len(range(lo, hi, st)) != 1:
            raise op.refuse("it slices the batch axis")
        spec.append((lo, hi, st))
    axes = ir_axes(ctx, op, x)
    sl = {"axes": [], "starts": [], "ends": [], "steps": []}
    for i, a in enumerate(axes):
        lo, hi, st = spec[a]
        if (lo, hi, st) != (0, shape_in[a], 1):
            for k, v in zip(sl, (i, lo, hi, st), strict=True):
                sl[k].append(v)
    shrink = [a for a in range(1, len(shape_in)) if op.opt("shrinkAxisMask") >> a & 1]
    name = f"{op.node}_slice" if shrink else op.node
    y = ctx.add(Node(name, "slice", [x], name, sl)) if sl["axes"] else x
    if shrink:  # the shrunk axes disappear: a reshape in TFLite's order
        out = [1] + [len(range(*spec[a])) for a in range(1, len(shape_in)) if a not in shrink]
        ctx.layouts.setdefault(y, ctx.layouts[x])
        _reshape_to(ctx, op, y, out)
    else:
        ctx.bind(op, y, ctx.layouts[x])


def _tfl_order(ctx: _Ctx, x: str) -> list[int]:
    """The per-sample shape of IR tensor `x` in TFLite's axis order."""
    s = ctx.shape(x)
    return [s[1], s[2], s[0]] if ctx.layouts[x] == NHWC else list(s)


@importer("AVERAGE_POOL_2D", "MAX_POOL_2D")
def _pool(ctx: _Ctx, op: _Op) -> None:
    x = _nhwc_input(ctx, op)
    k = [op.opt("filterHeight"), op.opt("filterWidth")]
    if min(k) < 1:
        raise op.refuse(f"filter {k} is empty")
    stride = [op.opt("strideH", 1) or 1, op.opt("strideW", 1) or 1]
    win = _window(op, ctx, x, k, stride, [1, 1])
    if op.name == "AVERAGE_POOL_2D" and any(win["pads"]):
        raise op.refuse(
            "SAME padding averages border windows over a varying count; use VALID "
            "padding or an explicit PAD"
        )
    attrs = {"kernel": k, "strides": win["strides"], "pads": win["pads"]}
    op_ir = "avgpool2d" if op.name == "AVERAGE_POOL_2D" else "maxpool2d"
    y = ctx.add(Node(op.node, op_ir, [x], op.node, attrs))
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), NHWC)


@importer("MEAN")
def _mean(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    rank = len(ctx.shape(x)) + 1
    axes = sorted({int(a) % rank for a in ctx.const(op, 1, "the axes").reshape(-1)})
    keep = bool(op.opt("keepDims", False))
    if 0 in axes:
        raise op.refuse("a mean over the batch axis mixes samples")
    layout = ctx.layouts[x]
    if layout == NHWC and axes == [1, 2]:  # over H, W: global average pooling, anywhere
        _, h, w = ctx.shape(x)
        attrs = {"kernel": [h, w], "strides": [1, 1], "pads": [0, 0, 0, 0]}
        y = ctx.add(Node(op.node, "avgpool2d", [x], op.node, attrs))
        if keep:
            ctx.bind(op, y, NHWC)
            return
        name = f"{op.node}_squeeze"
        c = ctx.shape(y)[0]
        ctx.bind(op, ctx.add(Node(name, "reshape", [y], name, {"shape": [c]})), PLAIN)
        return
    if layout == NHWC and keep:  # stays an image: mean over the matching IR axes
        ir_axes = sorted({1: 1, 2: 2, 3: 0}[a] for a in axes)
        attrs = {"axes": ir_axes, "keepdims": 1}
        ctx.bind(op, ctx.add(Node(op.node, "reduce_mean", [x], op.node, attrs)), NHWC)
        return
    p = to_plain(ctx, op.node, x)
    attrs = {"axes": [a - 1 for a in axes], "keepdims": int(keep)}
    ctx.bind(op, ctx.add(Node(op.node, "reduce_mean", [p], op.node, attrs)), PLAIN)


def _new_shape(ctx: _Ctx, op: _Op) -> list[int]:
    out = ctx.tfl(op.outputs[0]).shape
    if out is not None and len(out) and all(int(d) > 0 for d in out):
        return [int(d) for d in out]  # the declared static shape says it all
    if len(op.inputs) > 1 and op.inputs[1] >= 0:
        return [int(d) for d in ctx.const(op, 1, "the new shape").reshape(-1)]
    return list(op.opt("newShape", None) or [])


def to_plain(ctx: _Ctx, name: str, x: str) -> str:
    """`x` with its values in TFLite's order (layout plain): an NHWC image is transposed to
    (H, W, C), a flattened one is put back in H, W, C order. Data movement, exact."""
    layout = ctx.layouts[x]
    if layout == PLAIN:
        return x
    if layout[0] == "hwc":
        c, h, w = layout[1:]
        x = ctx.add(Node(f"{name}_chw", "reshape", [x], f"{name}_chw", {"shape": [c, h, w]}))
    y = ctx.add(Node(f"{name}_hwc", "transpose", [x], f"{name}_hwc", {"perm": [1, 2, 0]}))
    if layout[0] == "hwc":
        flat = {"shape": [int(np.prod(ctx.shape(x)))]}
        y = ctx.add(Node(f"{name}_flat", "reshape", [y], f"{name}_flat", flat))
    ctx.layouts[y] = PLAIN
    return y


def _reshape_to(ctx: _Ctx, op: _Op, x: str, shape: list[int]) -> None:
    """Output 0 of `op` is `x` reshaped to the TFLite shape `shape` (batch first). Rank-4
    tensors are NHWC images in the IR (C, H, W), everything else keeps TFLite's order."""
    n = int(np.prod(ctx.shape(x)))
    if len(shape) < 1 or shape[0] not in (1, -1):
        raise op.refuse(f"reshape to {shape} moves data across the batch axis")
    rest = list(shape[1:])
    if rest.count(-1) == 1:
        known = int(np.prod([d for d in rest if d != -1]))
        rest[rest.index(-1)] = n // max(known, 1)
    if int(np.prod(rest)) != n:
        raise op.refuse(f"cannot reshape {n} values per sample to {shape}")
    layout = ctx.layouts[x]
    if len(rest) == 1 and layout == NHWC:  # a flatten: let the dense after it absorb the order
        y, lay = _flatten(ctx, op, x, op.node)
        ctx.bind(op, y, lay)
        return
    if len(rest) == 3 and layout == NHWC and (rest[2], *rest[:2]) == ctx.shape(x):
        ctx.names[op.outputs[0]] = x  # same image: nothing to do
        return
    p = to_plain(ctx, op.node, x)
    if len(rest) == 3:  # back to an image: (H, W, C) -> (C, H, W)
        hwc = (
            p
            if tuple(rest) == ctx.shape(p)
            else ctx.add(Node(f"{op.node}_hwc", "reshape", [p], f"{op.node}_hwc", {"shape": rest}))
        )
        y = ctx.add(Node(op.node, "transpose", [hwc], op.node, {"perm": [2, 0, 1]}))
        ctx.bind(op, y, NHWC)
    elif tuple(rest) == ctx.shape(p):
        ctx.names[op.outputs[0]] = p
        ctx.layouts.setdefault(p, PLAIN)
    else:
        ctx.bind(op, ctx.add(Node(op.node, "reshape", [p], op.node, {"shape": rest})), PLAIN)


@importer("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def _reshape(ctx: _Ctx, op: _Op) -> None:
    x = ctx.act(op)
    shape = _new_shape(ctx, op)
    if op.name != "RESHAPE" and not all(d > 0 for d in shape):
        raise op.refuse("the output shape is not static")
    _reshape_to(ctx, op, x, shape)


@importer("CONCATENATION")
def _concat(ctx: _Ctx, op: _Op) -> None:
    xs = [ctx.act(op, k) for k in range(len(op.inputs))]
    layout = ctx.layouts[xs[0]]
    if any(ctx.layouts[x] != layout for x in xs) or layout not in (NHWC, PLAIN):
        raise op.refuse("inputs must all be NHWC images or all plain (batch, features)")
    rank = 4 if layout == NHWC else 2
    axis = op.opt("axis") % rank
    if axis == 0:
        raise op.refuse("concatenating along the batch axis is not supported")
    ir_axis = {1: 1, 2: 2, 3: 0}[axis] if layout == NHWC else axis - 1
    y = ctx.add(Node(op.node, "concat", xs, op.node, {"axis": ir_axis}))
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), layout)


@importer("QUANTIZE", "DEQUANTIZE")
def _requantize(ctx: _Ctx, op: _Op) -> None:
    i, o = op.inputs[0], op.outputs[0]
    if i not in ctx.names:  # DEQUANTIZE of stored weights (float16 / int8)
        ctx.consts[o] = ctx.const(op, 0, "the input")
        return
    ctx.names[o] = ctx.names[i]
    q = ctx.qparams(o)
    if q is not None:
        ctx.quant.setdefault("tensors", {})[ctx.names[i]] = _qrecord(q, ctx.dtype(o), None)
    ctx.notes.append(
        f"operator {op.index} ({op.name}): {ctx.dtype(i).lower()} -> {ctx.dtype(o).lower()}, "
        "the identity on real values"
    )


def densify(values: np.ndarray, shape: list[int], sp: Any) -> np.ndarray:
    """The dense array of a sparse TFLite constant (TACO-style: per traversed dimension DENSE
    or SPARSE_CSR, optional block dimensions), as TFLite's FormatConverter expands it."""
    order, rank = [int(d) for d in sp.traversalOrder], len(shape)
    blocks = [int(d) for d in (sp.blockMap if sp.blockMap is not None else [])]
    coords = np.zeros((1, 0), np.int64)  # one row per stored prefix, traversal order
    pos = np.zeros(1, np.int64)  # each prefix's position at its level
    for dm in sp.dimMetadata:
        if dm.format == 0:  # DENSE: every index, positions row-major under the parent
            n = int(dm.denseSize)
            coords = np.hstack([np.repeat(coords, n, 0), np.tile(np.arange(n), len(pos))[:, None]])
            pos = (pos[:, None] * n + np.arange(n)).reshape(-1)
        else:  # SPARSE_CSR: the parent's segment of stored indices
            seg = np.asarray(dm.arraySegments.values, np.int64)
            idx = np.asarray(dm.arrayIndices.values, np.int64)
            counts = seg[pos + 1] - seg[pos]
            pos = np.concatenate([np.arange(seg[p], seg[p + 1]) for p in pos] + [pos[:0]])
            coords = np.hstack([np.repeat(coords, counts, 0), idx[pos][:, None]])
    expanded = np.empty_like(coords)
    expanded[:, order] = coords
    full = expanded[:, :rank].copy()
    for j, d in enumerate(blocks):  # block dimension rank + j splits original dimension d
        size = int(sp.dimMetadata[order.index(rank + j)].denseSize)
        full[:, d] = full[:, d] * size + expanded[:, rank + j]
    out = np.zeros(shape, values.dtype)
    out[tuple(full.T)] = values[pos]
    return out


@importer("DENSIFY")
def _densify(ctx: _Ctx, op: _Op) -> None:
    i = op.inputs[0]
    t = ctx.tfl(i)
    values = ctx.raw(op, i)
    if values is None or t.sparsity is None:
        raise op.refuse(f"'{ctx.tname(i)}' is not a stored sparse constant")
    dense = densify(values, [int(d) for d in t.shape], t.sparsity)
    q = ctx.qparams(i)
    if q is not None and dense.dtype.kind != "f":
        scale, zp, axis = q
        shape = [1] * dense.ndim
        if len(scale) > 1:
            shape[axis] = len(scale)
        dense = (dense - zp.reshape(shape)) * scale.reshape(shape)
    ctx.consts[op.outputs[0]] = dense.astype(np.float32)


@importer("DEPTH_TO_SPACE")
def _depth_to_space(ctx: _Ctx, op: _Op) -> None:
    """TFLite's depth order is (row offset, column offset, channel): in the IR a reshape to
    (b, b, C, H, W), a transpose to (C, H, b, W, b) and a reshape to (C, H*b, W*b)."""
    x = _nhwc_input(ctx, op)
    b = int(op.opt("blockSize"))
    cin, h, w = ctx.shape(x)
    if b < 1 or cin % (b * b):
        raise op.refuse(f"{cin} channels do not split into blocks of {b}x{b}")
    c = cin // (b * b)
    split = f"{op.node}_split"
    y = ctx.add(Node(split, "reshape", [x], split, {"shape": [b, b, c, h, w]}))
    moved = f"{op.node}_move"
    y = ctx.add(Node(moved, "transpose", [y], moved, {"perm": [2, 3, 0, 4, 1]}))
    y = ctx.add(Node(op.node, "reshape", [y], op.node, {"shape": [c, h * b, w * b]}))
    ctx.bind(op, y, NHWC)


@importer("TRANSPOSE_CONV")
def _transpose_conv(ctx: _Ctx, op: _Op) -> None:
    """Inputs: output shape, filter (OHWI), x, optional bias; TFLite pads as the forward
    convolution from the output size back to the input size."""
    x = ctx.act(op, 2)
    if ctx.layouts.get(x) != NHWC:
        raise op.refuse(f"expects a 4-D NHWC input, '{ctx.tname(op.inputs[2])}' is not one")
    w = ctx.const(op, 1, "the filter").astype(np.float64)  # (Cout, kh, kw, Cin)
    out_shape = [int(v) for v in ctx.const(op, 0, "the output shape").reshape(-1)]
    if len(out_shape) != 4 or w.ndim != 4 or out_shape[3] != w.shape[0]:
        raise op.refuse(f"filter {list(w.shape)} does not fit output {out_shape}")
    st = [op.opt("strideH", 1) or 1, op.opt("strideW", 1) or 1]
    out = out_shape[1:3]
    pad = enum_names(ctx.fb.Padding).get(op.opt("padding"), "?")
    if pad not in ("SAME", "VALID"):
        raise op.refuse(f"padding {pad} is not supported")
    k = list(w.shape[1:3])
    before = same_pads((out[0], out[1]), k, st, [1, 1])[:2] if pad == "SAME" else [0, 0]
    y = _sub_pixel_deconv(ctx, op, x, w, _bias(ctx, op, 3, w.shape[0]), st, before, out)
    ctx.bind(op, ctx.activation(op, y, op.opt("fusedActivationFunction")), NHWC)


@importer("CUSTOM:Convolution2DTransposeBias")
def _transpose_conv_bias(ctx: _Ctx, op: _Op) -> None:
    """MediaPipe's transposed convolution with a bias (selfie and hair segmentation): inputs
    x, filter (OHWI), bias; options the raw struct (padding, stride_w, stride_h) of int32s,
    padding 1 = SAME, 2 = VALID. Its output is s (in - 1) + k - P, cropped by P // 2 before,
    with P = max(0, k - (in - 1) % s - 1) for SAME and 0 for VALID (its Prepare and Eval)."""
    if len(op.custom_options) < 12:
        raise op.refuse(
            f"options are {len(op.custom_options)} bytes, not (padding, stride_w, stride_h)"
        )
    padding, stride_w, stride_h = (int(v) for v in np.frombuffer(op.custom_options[:12], "<i4"))
    if padding not in (1, 2) or min(stride_w, stride_h) < 1:
        raise op.refuse(f"padding {padding} / strides {stride_w}x{stride_h} are not supported")
    x = _nhwc_input(ctx, op)
    w = ctx.const(op, 1, "the filter").astype(np.float64)
    if w.ndim != 4:
        raise op.refuse(f"filter {list(w.shape)} is not (out, kh, kw, in)")
    st, k = [stride_h, stride_w], list(w.shape[1:3])
    _, h, wd = ctx.shape(x)
    lost = [
        max(0, k[a] - (n - 1) % st[a] - 1) if padding == 1 else 0 for a, n in enumerate((h, wd))
    ]
    out = [st[a] * (n - 1) + k[a] - lost[a] for a, n in enumerate((h, wd))]
    b = _bias(ctx, op, 2, w.shape[0])
    y = _sub_pixel_deconv(ctx, op, x, w, b, st, [p // 2 for p in lost], out)
    ctx.bind(op, y, NHWC)
    ctx.own_kernels.append(op.name)
    ctx.notes.append(
        f"operator {op.index} ({op.name}): MediaPipe's kernel, which LiteRT runs only in its "
        "XNNPACK delegate (no intermediate tensors): calibration reads spikeport's ANN view of "
        "the graph (equal to LiteRT + XNNPACK at its outputs), eval --tflite LiteRT + XNNPACK"
    )


def _sub_pixel_deconv(
    ctx: _Ctx, op: _Op, x: str, w: np.ndarray, b: np.ndarray, st: list[int], before: list[int],
    out: list[int],
) -> str:  # fmt: skip
    """A transposed convolution of x (NHWC, checked by the caller) by w (Cout, kh, kw, Cin)
    plus b, cropped to `out` from `before`, exactly, as sub-pixel convolution: output row
    u = q*s + r (phase r) sums x[q - m] * W[r + s*m], an ordinary convolution of x with the
    taps of phase r, flipped. One conv2d gives every phase as a channel group, ordered (r_h,
    r_w, c) like DEPTH_TO_SPACE's depth; then the phases are interleaved (reshape,
    transpose, reshape) and cropped (slice)."""
    cin, h, wd = ctx.shape(x)
    cout, k = w.shape[0], list(w.shape[1:3])
    if w.shape[3] != cin:
        raise op.refuse(f"filter {list(w.shape)} does not fit input channels {cin}")
    m = [-(-k[a] // st[a]) for a in (0, 1)]
    q = [h + m[0] - 1, wd + m[1] - 1]  # rows of each phase's convolution (pads m - 1 each side)
    if any(before[a] + out[a] > q[a] * st[a] for a in (0, 1)):
        raise op.refuse(f"output {out} does not fit the input {[h, wd]} at strides {st}")
    sub = np.zeros((st[0], st[1], cout, cin, m[0], m[1]))
    for rh in range(st[0]):
        for jh in range(m[0]):
            kh = rh + st[0] * (m[0] - 1 - jh)
            for rw in range(st[1]):
                for jw in range(m[1]):
                    kw = rw + st[1] * (m[1] - 1 - jw)
                    if kh < k[0] and kw < k[1]:
                        sub[rh, rw, :, :, jh, jw] = w[:, kh, kw, :]
    params = {
        "weight": sub.reshape(-1, cin, m[0], m[1]).astype(np.float32),
        "bias": np.tile(b, st[0] * st[1]).astype(np.float32),
    }
    attrs = {"strides": [1, 1], "pads": [m[0] - 1, m[1] - 1] * 2, "dilations": [1, 1], "group": 1}
    phases = f"{op.node}_phases"
    y = ctx.add(Node(phases, "conv2d", [x], phases, attrs, params))
    ctx.record_param(op, 1, "weight", None)
    split = f"{op.node}_split"
    y = ctx.add(Node(split, "reshape", [y], split, {"shape": [st[0], st[1], cout, *q]}))
    moved = f"{op.node}_move"
    y = ctx.add(Node(moved, "transpose", [y], moved, {"perm": [2, 3, 0, 4, 1]}))
    full = f"{op.node}_full"
    y = ctx.add(Node(full, "reshape", [y], full, {"shape": [cout, q[0] * st[0], q[1] * st[1]]}))
    crop = {
        "axes": [1, 2],
        "starts": before,
        "ends": [before[0] + out[0], before[1] + out[1]],
        "steps": [1, 1],
    }
    return ctx.add(Node(op.node, "slice", [y], op.node, crop))


@importer("SOFTMAX")
def _softmax(ctx: _Ctx, op: _Op) -> None:
    if op.outputs[0] not in ctx.sub.outputs or ctx.uses.get(op.outputs[0], 0):
        raise op.refuse("softmax is supported only as the op that writes the graph output")
    if op.opt("beta", 1.0) <= 0:
        raise op.refuse(f"beta {op.opt('beta')} changes the argmax")
    ctx.names[op.outputs[0]] = ctx.act(op)
    ctx.dropped_softmax.append(ctx.act(op))
    ctx.notes.append(
        f"operator {op.index} (SOFTMAX) at the output dropped: it does not change the argmax; "
        "the graph outputs its input (logits)"
    )


# ---- the file --------------------------------------------------------------------------------


def _read(path: str | os.PathLike[str]) -> tuple[Any, bytes]:
    """Parse and fully unpack the flatbuffer; a damaged file is one line of BadInput."""
    fb = schema()
    p = existing_file(path, "TFLite model")
    data = p.read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise BadInput(f"{p}: not a TFLite flatbuffer (no 'TFL3' identifier)")
    try:
        model = fb.ModelT.InitFromPackedBuf(data, 0)
    except Exception as e:  # flatbuffers raises IndexError, struct.error, ValueError...
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(
            f"{p}: truncated or damaged TFLite flatbuffer of {len(data)} bytes ({why})"
        ) from None
    if model.version != 3 or not model.subgraphs:
        raise BadInput(f"{p}: TFLite schema version {model.version} with no subgraph")
    return model, data


def _op_name(fb: Any, model: Any, op: Any, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    name = names.get(builtin, f"BUILTIN_{builtin}")
    if name == "CUSTOM":
        custom = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        name = f"CUSTOM:{custom}"
    return name


def _ops(fb: Any, model: Any, sub: Any) -> list[_Op]:
    names = enum_names(fb.BuiltinOperator)
    out = []
    for i, op in enumerate(sub.operators or []):
        ins = [int(t) for t in (op.inputs if op.inputs is not None else [])]
        outs = [int(t) for t in (op.outputs if op.outputs is not None else [])]
        custom = bytes(bytearray(op.customOptions)) if op.customOptions is not None else b""
        out.append(_Op(i, _op_name(fb, model, op, names), ins, outs, op.builtinOptions, custom))
    return out


def _graph_input(ctx: _Ctx, path: Any) -> TensorInfo:
    ins = [int(i) for i in ctx.sub.inputs]
    if len(ins) != 1:
        raise UnsupportedOp(f"the model has {len(ins)} inputs; CNN/MLP import takes exactly one")
    i = ins[0]
    shape = [int(d) for d in ctx.tfl(i).shape]
    if len(shape) not in (2, 4) or any(d <= 0 for d in shape[1:]):
        raise BadInput(
            f"{path}: input '{ctx.tname(i)}' is {shape}; spikeport takes (batch, H, W, C) "
            "images or (batch, features) vectors with static sizes"
        )
    layout = NHWC if len(shape) == 4 else PLAIN
    name = re.sub(r"[^A-Za-z0-9_]", "_", ctx.tname(i)) or "input"
    info = TensorInfo(name, _ir_shape(shape, layout) or ())
    ctx.tensors[name], ctx.names[i], ctx.layouts[name] = info, name, layout
    q = ctx.qparams(i)
    if q is not None:
        ctx.quant.setdefault("tensors", {})[name] = _qrecord(q, ctx.dtype(i), None)
    return info


def _tensor_map(ctx: _Ctx) -> dict[str, dict[str, Any]]:
    """IR tensor -> its TFLite twin (index, name, layout): what the LiteRT runner reads."""
    out: dict[str, dict[str, Any]] = {}
    for i, ir in ctx.names.items():
        if ir in out:
            continue  # an alias (QUANTIZE, a dropped SOFTMAX...): the first twin wrote the values
        out[ir] = {"index": i, "name": ctx.tname(i), "layout": list(ctx.layouts[ir])}
    return out


def import_tflite(path: str | os.PathLike[str]) -> Graph:
    """Read a float or int8 TFLite CNN/MLP into a float ANN graph, refusing what it cannot
    represent (the op's name and index in the message)."""
    fb = schema()
    model, data = _read(path)
    sub = model.subgraphs[0]
    ctx = _Ctx(fb, model, sub, data)
    inp = _graph_input(ctx, path)
    ops = _ops(fb, model, sub)
    for op in ops:
        for i in op.inputs:
            ctx.uses[i] = ctx.uses.get(i, 0) + 1
    for op in ops:
        if op.name not in IMPORTERS:
            raise op.refuse("op is not in spikeport's TFLite vocabulary")
        IMPORTERS[op.name](ctx, op)
    return _graph(ctx, path, inp)


def _graph(ctx: _Ctx, path: Any, inp: TensorInfo) -> Graph:
    outs = [int(o) for o in ctx.sub.outputs]
    if not outs:
        raise UnsupportedOp("the model has no output")
    for k, i in enumerate(outs):
        if i not in ctx.names:
            raise UnsupportedOp(
                f"graph output {k} ('{ctx.tname(i)}') is not computed from the input"
            )
        if ctx.layouts[ctx.names[i]][0] == "hwc":  # a flattened image: back in TFLite's order
            ctx.names[i] = to_plain(ctx, f"output_{k}", ctx.names[i])
    out = [ctx.names[i] for i in outs]
    is_int = any(ctx.dtype(i) in ("INT8", "UINT8") for i in ctx.names)
    meta = {
        "source": {
            "format": "tflite",
            "file": os.path.basename(path),
            "sha256": sha256_file(path),
            "schema_version": int(ctx.model.version),
            "activations": "int8 (dequantised)" if is_int else "float",
            "outputs": [ctx.tname(i) for i in outs],
            "notes": ctx.notes,
            # outputs whose final SOFTMAX was dropped: the source model's output is softmax(them)
            "dropped_softmax": ctx.dropped_softmax,
        },
        "tflite": {
            "tensors": _tensor_map(ctx),
            "quantization": ctx.quant,
            "own_kernels": sorted(set(ctx.own_kernels)),
        },
    }
    graph = Graph(inputs=[inp], nodes=ctx.nodes, outputs=out, meta=meta)
    return check_graph(graph)
