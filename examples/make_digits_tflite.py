"""Ship the digits CNN as .tflite too: a float model and a full-integer (int8) one.

What was used, and why: no TensorFlow. TensorFlow is multi-GB and onnx2tf / ai-edge-torch
pull it in, so this script writes the TFLite flatbuffer itself with the schema that
ai-edge-litert ships (`ai_edge_litert.schema_py_generated`, the object API of the official
schema.fbs) and checks the result with ai-edge-litert's own Interpreter.

- The network is exactly examples/digits_cnn.onnx: its weights are read through spikeport's
  ONNX importer (BatchNormalization already folded into the convolutions), laid out the TFLite
  way (NHWC activations, OHWI conv weights, fused ReLU, the flatten in H, W, C order, so the
  fully connected weights' columns are permuted to match).
- digits_cnn.tflite: float32 throughout.
- digits_cnn_int8.tflite: TFLite's int8 quantisation spec done here by hand, the way the
  TFLite converter's post-training full-integer quantisation does it: weights int8 symmetric
  (per output channel for convolutions, per tensor for the fully connected layer), biases int32
  with scale = input scale * weight scale, activations int8 asymmetric per tensor with ranges
  from the float model's min/max on examples/digits_calib.npz (run by LiteRT), pooling and
  reshape outputs sharing their input's parameters, int8 input and output tensors.

Deterministic: the same inputs give byte-identical files.

    .venv/bin/python examples/make_digits_tflite.py   # rewrites examples/digits_cnn*.tflite

`TFLiteWriter` is also what tests/test_tflite.py uses to build its small fixture models.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.interpreter import Interpreter

HERE = Path(__file__).resolve().parent
TYPES = {
    np.dtype(np.float32): fb.TensorType.FLOAT32,
    np.dtype(np.int8): fb.TensorType.INT8,
    np.dtype(np.int32): fb.TensorType.INT32,
}


@dataclass
class Quant:
    """TFLite quantisation parameters: real = scale * (q - zero_point), per tensor or per `axis`."""

    scale: list[float]
    zero_point: list[int]
    axis: int = 0

    def fb(self) -> fb.QuantizationParametersT:
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = self.scale, self.zero_point, self.axis
        return q


@dataclass
class TFLiteWriter:
    """A one-subgraph TFLite model under construction (the object API of schema.fbs)."""

    tensors: list[fb.TensorT] = field(default_factory=list)
    buffers: list[fb.BufferT] = field(default_factory=lambda: [fb.BufferT()])
    opcodes: dict[tuple[int, int, str], int] = field(default_factory=dict)
    operators: list[fb.OperatorT] = field(default_factory=list)

    def tensor(
        self,
        name: str,
        shape: list[int],
        dtype: Any = np.float32,
        data: np.ndarray | None = None,
        quant: Quant | None = None,
    ) -> int:
        """Add a tensor (a constant when `data` is given); return its index."""
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), TYPES[np.dtype(dtype)]
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            t.quantization = quant.fb()
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self,
        code: int,
        inputs: list[int],
        outputs: list[int],
        options: Any = None,
        version: int = 1,
        custom: str = "",
        custom_options: bytes = b"",
    ) -> None:
        """Append an operator; `options` is a *OptionsT object, its union type is derived. A
        custom op (code CUSTOM) is named by `custom` and gets `custom_options` as raw bytes."""
        key = (code, version, custom)
        if key not in self.opcodes:
            self.opcodes[key] = len(self.opcodes)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[key], list(inputs), list(outputs)
        if options is not None:
            o.builtinOptionsType = getattr(fb.BuiltinOptions, type(options).__name__[:-1])
            o.builtinOptions = options
        if custom_options:
            o.customOptions = np.frombuffer(custom_options, np.uint8)
        self.operators.append(o)

    def finish(self, inputs: list[int], outputs: list[int]) -> bytes:
        """Serialise to a .tflite flatbuffer (file identifier TFL3, schema version 3)."""
        sub = fb.SubGraphT()
        sub.tensors, sub.operators, sub.inputs, sub.outputs = (
            self.tensors,
            self.operators,
            inputs,
            outputs,
        )
        sub.name = "main"
        model = fb.ModelT()
        model.version, model.subgraphs, model.buffers = 3, [sub], self.buffers
        model.description = "spikeport examples/make_digits_tflite.py"
        model.operatorCodes = []
        for code, version, custom in self.opcodes:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            oc.customCode = custom or None
            model.operatorCodes.append(oc)
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())


def options(cls: type, **fields: Any) -> Any:
    """A builtin options object with the given fields set (schema field names)."""
    o = cls()
    for k, v in fields.items():
        if not hasattr(o, k):
            raise AttributeError(f"{cls.__name__} has no field {k}")
        setattr(o, k, v)
    return o


# ---- the digits CNN -----------------------------------------------------------------------


@dataclass
class Layer:
    """One TFLite op of the digits CNN in float, before any quantisation."""

    kind: str  # conv | maxpool | avgpool | flatten | dense
    name: str
    out_shape: list[int]  # NHWC / (1, K), batch 1
    weight: np.ndarray | None = None  # TFLite layout (OHWI / (out, in))
    bias: np.ndarray | None = None
    relu: bool = False
    window: list[int] = field(default_factory=list)  # kernel / strides for pools


def digits_layers(onnx_path: Path) -> tuple[list[int], list[Layer]]:
    """The digits CNN's ops in TFLite layout, from spikeport's import of the ONNX file."""
    from spikeport.convert.onnx_import import import_onnx

    graph = import_onnx(onnx_path)
    c, h, w = graph.input.shape
    layers: list[Layer] = []
    for n in graph.nodes:
        shape = graph.shape(n.output)
        nhwc = [1, shape[1], shape[2], shape[0]] if len(shape) == 3 else [1, *shape]
        if n.op == "relu":
            layers[-1].relu = True
        elif n.op == "conv2d":
            if n.attrs["pads"] != [1, 1, 1, 1] or n.attrs["strides"] != [1, 1]:
                raise ValueError(f"{n.name}: only 3x3 SAME convolutions are written here")
            wt = n.params["weight"].transpose(0, 2, 3, 1)
            layers.append(Layer("conv", n.name, nhwc, wt, n.params["bias"]))
        elif n.op in ("maxpool2d", "avgpool2d"):
            win = n.attrs["kernel"] + n.attrs["strides"]
            layers.append(Layer(n.op[:7], n.name, nhwc, window=win))
        elif n.op == "reshape":
            layers.append(Layer("flatten", n.name, nhwc))
            prev = graph.shape(n.inputs[0])
        elif n.op == "dense":
            wt = n.params["weight"]
            # ONNX flattens (C, H, W); TFLite flattens (H, W, C): permute the columns to match.
            wt = wt.reshape(len(wt), *prev).transpose(0, 2, 3, 1).reshape(len(wt), -1)
            layers.append(Layer("dense", n.name, nhwc, wt, n.params["bias"]))
    return [1, h, w, c], layers


def _conv_opts(relu: bool) -> fb.Conv2DOptionsT:
    act = fb.ActivationFunctionType.RELU if relu else fb.ActivationFunctionType.NONE
    return options(
        fb.Conv2DOptionsT,
        padding=fb.Padding.SAME,
        strideW=1,
        strideH=1,
        fusedActivationFunction=act,
    )


def _pool_opts(win: list[int]) -> fb.Pool2DOptionsT:
    return options(
        fb.Pool2DOptionsT,
        padding=fb.Padding.VALID,
        filterHeight=win[0],
        filterWidth=win[1],
        strideH=win[2],
        strideW=win[3],
    )


OP = fb.BuiltinOperator
# int8 kernels need these operator versions (what the TFLite converter writes for them).
INT8_VERSIONS = {OP.CONV_2D: 3, OP.FULLY_CONNECTED: 4, OP.MAX_POOL_2D: 2, OP.AVERAGE_POOL_2D: 2}


def write_digits(
    in_shape: list[int], layers: list[Layer], act_quant: dict[str, Quant] | None = None
) -> bytes:
    """The digits CNN as a .tflite: float, or int8 when `act_quant` (per layer name, plus
    "input") gives the activation quantisation."""
    wr = TFLiteWriter()
    int8 = act_quant is not None
    dt = np.int8 if int8 else np.float32
    q_in = act_quant["input"] if int8 else None
    x = wr.tensor("input", in_shape, dt, quant=q_in)
    first = x
    for layer in layers:
        own = layer.kind in ("conv", "dense")  # pools and reshape keep their input's params
        q_out = (act_quant[layer.name] if own else q_in) if act_quant is not None else None
        y = wr.tensor(layer.name, layer.out_shape, dt, quant=q_out)
        ins, code, opts = _layer_op(wr, layer, x, q_in)
        wr.op(code, ins, [y], opts, INT8_VERSIONS.get(code, 1) if int8 else 1)
        x, q_in = y, q_out
    return wr.finish([first], [x])


def _layer_op(wr: TFLiteWriter, layer: Layer, x: int, q_in: Quant | None) -> tuple:
    if layer.kind in ("maxpool", "avgpool"):
        code = OP.MAX_POOL_2D if layer.kind == "maxpool" else OP.AVERAGE_POOL_2D
        return [x], code, _pool_opts(layer.window)
    if layer.kind == "flatten":
        new = [-1, layer.out_shape[1]]
        shape = wr.tensor(f"{layer.name}/shape", [2], np.int32, np.array(new))
        return [x, shape], OP.RESHAPE, options(fb.ReshapeOptionsT, newShape=new)
    w, b = _weights(wr, layer, q_in)
    if layer.kind == "conv":
        return [x, w, b], OP.CONV_2D, _conv_opts(layer.relu)
    act = fb.ActivationFunctionType.RELU if layer.relu else fb.ActivationFunctionType.NONE
    return (
        [x, w, b],
        OP.FULLY_CONNECTED,
        options(fb.FullyConnectedOptionsT, fusedActivationFunction=act),
    )


def _weights(wr: TFLiteWriter, layer: Layer, q_in: Quant | None) -> tuple[int, int]:
    """Weight and bias tensors: float, or int8 / int32 by TFLite's spec when q_in is set."""
    w, b = layer.weight, layer.bias
    assert w is not None and b is not None
    if q_in is None:
        return (
            wr.tensor(f"{layer.name}/weight", list(w.shape), np.float32, w),
            wr.tensor(f"{layer.name}/bias", list(b.shape), np.float32, b),
        )
    per_channel = layer.kind == "conv"
    absmax = np.abs(w.reshape(len(w), -1)).max(axis=1) if per_channel else np.abs(w).max()
    s_w = np.atleast_1d(np.maximum(absmax, 1e-12) / 127.0).astype(np.float64)
    s_b = s_w * q_in.scale[0]
    bshape = (-1,) + (1,) * (w.ndim - 1)
    w_q = np.clip(np.round(w / (s_w.reshape(bshape) if per_channel else s_w[0])), -127, 127)
    b_q = np.round(b / s_b)
    zeros = [0] * len(s_w)
    return (
        wr.tensor(f"{layer.name}/weight", list(w.shape), np.int8, w_q, Quant(list(s_w), zeros)),
        wr.tensor(f"{layer.name}/bias", list(b.shape), np.int32, b_q, Quant(list(s_b), zeros)),
    )


def asymmetric(lo: float, hi: float) -> Quant:
    """TFLite's int8 activation parameters for a float range (widened to hold 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(np.round(-128 - lo / scale), -128, 127))
    return Quant([float(scale)], [zp])


def float_ranges(model: bytes, x_nchw: np.ndarray) -> dict[str, tuple[float, float]]:
    """min / max of every activation tensor of a float .tflite on calibration data (LiteRT)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        interp = Interpreter(model_content=model, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    details = interp.get_tensor_details()
    inp = interp.get_input_details()[0]["index"]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}
    for sample in x_nchw.transpose(0, 2, 3, 1):
        interp.set_tensor(inp, sample[None].astype(np.float32))
        interp.invoke()
        for d in details:
            if d["dtype"] == np.float32 and "/" not in d["name"]:
                v = interp.get_tensor(d["index"])
                lo[d["name"]] = min(lo.get(d["name"], 0.0), float(v.min()))
                hi[d["name"]] = max(hi.get(d["name"], 0.0), float(v.max()))
    return {k: (lo[k], hi[k]) for k in lo}


def run_tflite(model: bytes, x_nchw: np.ndarray) -> np.ndarray:
    """Logits of a .tflite (float or int8 I/O) on NCHW data, one sample at a time."""
    interp = Interpreter(model_content=model)
    interp.allocate_tensors()
    i, o = interp.get_input_details()[0], interp.get_output_details()[0]
    out = []
    for sample in x_nchw.transpose(0, 2, 3, 1):
        v = sample[None]
        if i["dtype"] == np.int8:
            s, zp = i["quantization"]
            v = np.clip(np.floor(v / s + 0.5) + zp, -128, 127)
        interp.set_tensor(i["index"], v.astype(i["dtype"]))
        interp.invoke()
        y = interp.get_tensor(o["index"]).astype(np.float64)
        if o["dtype"] == np.int8:
            s, zp = o["quantization"]
            y = (y - zp) * s
        out.append(y[0])
    return np.array(out)


def main() -> None:
    import onnxruntime as ort

    onnx_path = HERE / "digits_cnn.onnx"
    calib = np.load(HERE / "digits_calib.npz")["x"]
    test = np.load(HERE / "digits_test.npz")
    in_shape, layers = digits_layers(onnx_path)
    model_f = write_digits(in_shape, layers)
    ranges = float_ranges(model_f, calib)
    act_quant = {name: asymmetric(*r) for name, r in ranges.items()}
    model_q = write_digits(in_shape, layers, act_quant)
    (HERE / "digits_cnn.tflite").write_bytes(model_f)
    (HERE / "digits_cnn_int8.tflite").write_bytes(model_q)

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: test["x"]})[0]
    for name, model in (("digits_cnn.tflite", model_f), ("digits_cnn_int8.tflite", model_q)):
        logits = run_tflite(model, test["x"])
        acc = float((logits.argmax(1) == test["y"]).mean())
        agree = float((logits.argmax(1) == ref.argmax(1)).mean())
        err = float(np.abs(logits - ref).max())
        print(
            f"{name}: {len(model)} bytes, test accuracy {acc:.4f}, "
            f"agreement with onnxruntime {agree:.4f}, max |logit diff| {err:.2e}"
        )


if __name__ == "__main__":
    main()
