"""Generated ONNX fixture models (random weights, deterministic) that cover the op vocabulary
beyond the two digits examples: residual Add, Concat, AvgPool with padding, MaxPool,
GlobalAveragePool, BatchNormalization, Clip, MatMul + bias Add, Identity, Dropout, and a layer
with fan-in above 1,000. Each builder returns (onnx.ModelProto, calibration x)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, arr: np.ndarray, name: str | None = None) -> str:
        name = name or f"c{len(self.inits)}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs: object) -> str:
        self.count += 1
        out = f"t{self.count}"
        self.nodes.append(
            helper.make_node(
                op_type, inputs, [out], name=f"{op_type.lower()}_{self.count}", **attrs
            )
        )
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, pad: int) -> str:
        w = self.rng.normal(0, np.sqrt(2 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        b = self.rng.normal(0, 0.05, cout).astype(np.float32)
        return self.op(
            "Conv", [x, self.const(w), self.const(b)], pads=[pad] * 4, kernel_shape=[k, k]
        )

    def bn(self, x: str, c: int) -> str:
        r = self.rng
        parts = [
            r.uniform(0.5, 1.5, c),
            r.normal(0, 0.1, c),
            r.normal(0, 0.1, c),
            r.uniform(0.5, 1.5, c),
        ]
        return self.op(
            "BatchNormalization", [x] + [self.const(p.astype(np.float32)) for p in parts]
        )

    def gemm(self, x: str, fin: int, fout: int) -> str:
        w = self.rng.normal(0, np.sqrt(2 / fin), (fout, fin)).astype(np.float32)
        b = self.rng.normal(0, 0.05, fout).astype(np.float32)
        return self.op("Gemm", [x, self.const(w), self.const(b)], transB=1)

    def model(self, x_shape: tuple[int, ...], out: str, n_out: int) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes,
            "fixture",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
            [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", n_out])],
            self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def residual() -> tuple[onnx.ModelProto, np.ndarray]:
    """Conv-BN-ReLU, Conv + skip Add, ReLU, GlobalAveragePool, Flatten, Gemm."""
    b = _Builder(1)
    h = b.op("Relu", [b.bn(b.conv("x", 3, 8, 3, 1), 8)])
    r = b.op("Add", [b.conv(h, 8, 8, 3, 1), h])
    g = b.op("GlobalAveragePool", [b.op("Relu", [r])])
    out = b.gemm(b.op("Flatten", [g], axis=1), 8, 5)
    return b.model((3, 8, 8), out, 5), b.rng.uniform(0, 1, (64, 3, 8, 8)).astype(np.float32)


def concat_pool() -> tuple[onnx.ModelProto, np.ndarray]:
    """Two conv branches, Concat, padded AvgPool, MaxPool, MatMul + bias Add, Clip(0, 6)."""
    b = _Builder(2)
    a1 = b.op("Relu", [b.conv("x", 2, 4, 1, 0)])
    a2 = b.op("Relu", [b.conv("x", 2, 6, 3, 1)])
    c = b.op("Concat", [a1, a2], axis=1)
    p = b.op(
        "AveragePool",
        [c],
        kernel_shape=[3, 3],
        strides=[1, 1],
        pads=[1, 1, 1, 1],
        count_include_pad=1,
    )
    m = b.op("MaxPool", [p], kernel_shape=[2, 2], strides=[2, 2])
    f = b.op("Reshape", [m, b.const(np.array([-1, 10 * 4 * 4], np.int64))])
    w = b.rng.normal(0, 0.2, (160, 16)).astype(np.float32)
    h = b.op(
        "Add",
        [b.op("MatMul", [f, b.const(w)]), b.const(b.rng.normal(0, 0.1, 16).astype(np.float32))],
    )
    h = b.op("Clip", [h, b.const(np.array(0, np.float32)), b.const(np.array(6, np.float32))])
    out = b.gemm(h, 16, 3)
    return b.model((2, 8, 8), out, 3), b.rng.uniform(0, 1, (64, 2, 8, 8)).astype(np.float32)


def wide_mlp() -> tuple[onnx.ModelProto, np.ndarray]:
    """Flatten, Gemm with fan-in 1,200, ReLU, Dropout, Identity, Gemm."""
    b = _Builder(3)
    h = b.op("Relu", [b.gemm(b.op("Flatten", ["x"], axis=1), 1200, 32)])
    h = b.op("Identity", [b.op("Dropout", [h])])
    out = b.gemm(h, 32, 4)
    return b.model((3, 20, 20), out, 4), b.rng.normal(0, 1, (64, 3, 20, 20)).astype(np.float32)


def concat_maxpool() -> tuple[onnx.ModelProto, np.ndarray]:
    """Two conv branches, Concat, MaxPool straight on the concat of spikes, Gemm-ReLU, Gemm.
    Not in FIXTURES: the targets that map max pooling of spikes test it themselves."""
    b = _Builder(7)
    a1 = b.op("Relu", [b.conv("x", 2, 3, 1, 0)])
    a2 = b.op("Relu", [b.conv("x", 2, 4, 3, 1)])
    m = b.op("MaxPool", [b.op("Concat", [a1, a2], axis=1)], kernel_shape=[2, 2], strides=[2, 2])
    h = b.op("Relu", [b.gemm(b.op("Flatten", [m], axis=1), 7 * 16, 12)])
    out = b.gemm(h, 12, 3)
    return b.model((2, 8, 8), out, 3), b.rng.uniform(0, 1, (48, 2, 8, 8)).astype(np.float32)


def preact_dense() -> tuple[onnx.ModelProto, np.ndarray]:
    """Pre-activation blocks (DenseNet's): BatchNorm on a convolution that the concat reads
    too, on the concat (of spikes and two convolutions), and after an average pool, so no
    layer alone produces what they normalize and conversion keeps them as channel_scale +
    offset. Not in FIXTURES: the targets with no per-channel multiply test it
    (tests/test_fold_channel_scales.py)."""
    b = _Builder(8)
    s = b.op("Relu", [b.conv("x", 2, 4, 3, 1)])
    a = b.conv(s, 4, 4, 3, 1)
    h = b.conv(b.op("Relu", [b.bn(a, 4)]), 4, 4, 1, 0)
    c = b.op("Relu", [b.bn(b.op("Concat", [s, a, h], axis=1), 12)])
    p = b.op("AveragePool", [b.conv(c, 12, 6, 1, 0)], kernel_shape=[2, 2], strides=[2, 2])
    g = b.op("GlobalAveragePool", [b.op("Relu", [b.bn(p, 6)])])
    out = b.gemm(b.op("Flatten", [g], axis=1), 6, 3)
    return b.model((2, 8, 8), out, 3), b.rng.uniform(0, 1, (64, 2, 8, 8)).astype(np.float32)


def bipolar_mlp() -> tuple[onnx.ModelProto, np.ndarray]:
    """Gemm-ReLU, then Gemm straight into Gemm (no activation between: convert puts a bipolar
    neuron there), ReLU, Gemm. Not in FIXTURES: the graded-spike tests of the C target use it."""
    b = _Builder(11)
    h = b.op("Relu", [b.gemm(b.op("Flatten", ["x"], axis=1), 48, 24)])
    h = b.op("Relu", [b.gemm(b.gemm(h, 24, 20), 20, 16)])
    out = b.gemm(h, 16, 4)
    return b.model((3, 4, 4), out, 4), b.rng.normal(0, 1, (64, 3, 4, 4)).astype(np.float32)


def outlier_mlp() -> tuple[onnx.ModelProto, np.ndarray]:
    """Gemm-ReLU of 96 units, units 3 and 17 boosted 40 times, then a Gemm of it plus a Gemm
    of the input (an Add, like a residual), ReLU, Gemm: outlier features (and a few dead
    units, whose placeholder thresholds look alike), for which quantize gives the Add's first
    Gemm's outlier columns a dense layer of their own (spikeport.quantize.outliers)."""
    b = _Builder(11)
    flat = b.op("Flatten", ["x"], axis=1)
    boost = np.ones(96, np.float32)
    boost[[3, 17]] = 40.0
    h = b.op("Relu", [b.op("Mul", [b.gemm(flat, 48, 96), b.const(boost)])])
    h = b.op("Relu", [b.op("Add", [b.gemm(h, 96, 16), b.gemm(flat, 48, 16)])])
    out = b.gemm(h, 16, 4)
    return b.model((3, 4, 4), out, 4), b.rng.uniform(0, 1, (64, 3, 4, 4)).astype(np.float32)


FIXTURES: dict[str, Callable[[], tuple[onnx.ModelProto, np.ndarray]]] = {
    "residual": residual,
    "concat_pool": concat_pool,
    "wide_mlp": wide_mlp,
    "outlier_mlp": outlier_mlp,
}
