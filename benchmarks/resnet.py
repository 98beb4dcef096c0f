"""A ResNet-18-shaped ONNX model with random weights, for conversion cost at scale.

CIFAR-style ResNet-18 (He et al. 2016): a 3x3 stem convolution of `width` channels at 32x32,
four stages of two basic blocks (width x 1, 2, 4, 8; stride 2 and a 1x1 projection shortcut
at the start of stages 2 to 4), residual Add + ReLU, global average pool, a 10-way Gemm.
BatchNorm is left out (spikeport folds it into the convolution before anything else), so the
convolutions carry a bias. He-normal weights from a fixed seed; built with onnx.helper, no
torch export. width = 64 is ResNet-18's own width (11.2 M parameters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def resnet18_onnx(path: Path, width: int = 64, size: int = 32, seed: int = 0) -> int:
    """Write the model to `path`; return its parameter count."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def tensor(prefix: str) -> str:
        return f"{prefix}{len(nodes)}_{len(inits)}"

    def conv(x: str, cin: int, cout: int, k: int, stride: int, relu: bool) -> str:
        w = rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))
        b = 0.01 * rng.standard_normal(cout)
        wn, bn, y = tensor("w"), tensor("b"), tensor("conv")
        inits.append(numpy_helper.from_array(w.astype(np.float32), wn))
        inits.append(numpy_helper.from_array(b.astype(np.float32), bn))
        p = k // 2
        nodes.append(
            helper.make_node(
                "Conv", [x, wn, bn], [y], kernel_shape=[k, k], strides=[stride] * 2, pads=[p] * 4
            )
        )
        return relu_of(y) if relu else y

    def relu_of(x: str) -> str:
        y = tensor("relu")
        nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def block(x: str, cin: int, cout: int, stride: int) -> str:
        h = conv(conv(x, cin, cout, 3, stride, True), cout, cout, 3, 1, False)
        shortcut = conv(x, cin, cout, 1, stride, False) if stride != 1 or cin != cout else x
        s = tensor("add")
        nodes.append(helper.make_node("Add", [h, shortcut], [s]))
        return relu_of(s)

    h, cin = conv("x", 3, width, 3, 1, True), width
    for stage, mult in enumerate((1, 2, 4, 8)):
        for j in range(2):
            h = block(h, cin, width * mult, 2 if j == 0 and stage > 0 else 1)
            cin = width * mult
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1))
    fc = rng.standard_normal((10, cin)) * np.sqrt(1.0 / cin)
    inits.append(numpy_helper.from_array(fc.astype(np.float32), "fc_w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc_b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        f"resnet18_w{width}_random",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return sum(int(np.prod(i.dims)) for i in inits)
