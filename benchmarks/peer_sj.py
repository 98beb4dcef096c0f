"""SpikingJelly 2.0 ann2snn on the digits models: the peer converter of the benchmarks.

SpikingJelly is a benchmark-only dependency. `benchmarks/install_spikingjelly.sh` (run by
`make bench`) installs it with `pip --no-deps --target benchmarks/work/sjlib`, beside the
two small packages it imports (loguru, requests), so it never pulls torchvision, torchaudio
or a CUDA torch and never enters `.venv` or spikeport's dependencies. This module appends
that folder to sys.path (after .venv's packages, so nothing of .venv is shadowed).

The torch ANN is rebuilt from the ONNX file itself: the architecture of
examples/make_digits.py (cnn(), mlp()) with BatchNorm already folded into the convolutions,
as torch.onnx exported it, and every Conv/Gemm initializer loaded in graph order.
`ann_from_onnx` checks the logits against onnxruntime on the test split.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

SJLIB = Path(__file__).resolve().parent / "work" / "sjlib"
VERSION = "2.0.0"
LTB_BATCH = 100  # the calibration batch size of SpikingJelly's own cnn_mnist example


def available() -> bool:
    """Import SpikingJelly from benchmarks/work/sjlib; False when it is not installed."""
    if str(SJLIB) not in sys.path:
        sys.path.append(str(SJLIB))
    try:
        from spikingjelly.activation_based.ann2snn.recipes import (
            local_threshold_balancing,
            rate_coding,
        )
    except ImportError:
        return False
    for module in (rate_coding, local_threshold_balancing):
        module.tqdm = lambda it, **_: it  # its calibration loops draw tqdm bars
    return True


def version() -> str:
    from importlib.metadata import PathDistribution

    dists = list(SJLIB.glob("spikingjelly-*.dist-info"))
    return PathDistribution(dists[0]).version if dists else "unknown"


def architecture(name: str) -> nn.Sequential:
    """examples/make_digits.py's cnn() and mlp() as exported: BN folded, Dropout gone."""
    if name == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 2 * 2, 10),
        )
    if name == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 64),
            nn.ReLU(),
            nn.Linear(64, 10),
        )
    raise ValueError(f"no torch architecture for digits_{name}")


def ann_from_onnx(name: str, onnx_path: Path, x_test: np.ndarray) -> tuple[nn.Module, float]:
    """The torch ANN with the ONNX file's weights; max |logit difference| to onnxruntime."""
    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    net = architecture(name)
    layers = [m for m in net if isinstance(m, nn.Conv2d | nn.Linear)]
    ops = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    if len(ops) != len(layers):
        raise ValueError(f"{onnx_path}: {len(ops)} Conv/Gemm nodes, torch has {len(layers)}")
    for node, layer in zip(ops, layers, strict=True):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        w, b = init[node.input[1]], init[node.input[2]]
        if node.op_type == "Gemm" and not attrs.get("transB", 0):
            w = w.T
        if tuple(w.shape) != tuple(layer.weight.shape):
            raise ValueError(f"{node.name}: weight {w.shape} vs torch {tuple(layer.weight.shape)}")
        layer.weight.data = torch.from_numpy(np.array(w, np.float32))
        layer.bias.data = torch.from_numpy(np.array(b, np.float32))
    net.eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x_test.astype(np.float32)})[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x_test.astype(np.float32))).numpy()
    return net, float(np.abs(ref - got).max())


def recipes(x_calib: torch.Tensor) -> dict[str, tuple[str, Callable[[], Any]]]:
    """SpikingJelly's ann2snn recipes, each on the whole calibration split.

    The rate-coding recipes get the split as one batch, so their statistic (max, 99.9th
    percentile) is exactly that of the split (their momentum only averages across batches).
    Local threshold balancing updates its thresholds once per batch: it gets the split in
    batches of 100, one pass, as in SpikingJelly's cnn_mnist example.
    """
    from spikingjelly.activation_based import ann2snn

    one = [x_calib]
    return {
        "sj_max": (
            "RateCodingRecipe(mode='max'): layer-wise max norm",
            lambda: ann2snn.RateCodingRecipe(dataloader=one, mode="max"),
        ),
        "sj_robust": (
            "RateCodingRecipe(mode='99.9%'): layer-wise robust norm",
            lambda: ann2snn.RateCodingRecipe(dataloader=one, mode="99.9%"),
        ),
        "sj_half_max": (
            "RateCodingRecipe(mode=1/2): layer-wise, half the max",
            lambda: ann2snn.RateCodingRecipe(dataloader=one, mode=0.5),
        ),
        "sj_channel_half": (
            "RateCodingRecipe(mode='99.9%', channel_wise, half_threshold, "
            "pre_spike_maxpool): channel-wise, v0 = theta/2",
            lambda: ann2snn.RateCodingRecipe(
                dataloader=one,
                mode="99.9%",
                channel_wise=True,
                half_threshold=True,
                pre_spike_maxpool=True,
            ),
        ),
        "sj_ltb": (
            "LocalThresholdBalancingRecipe: channel-wise, v0 = theta/2",
            lambda: ann2snn.LocalThresholdBalancingRecipe(
                dataloader=list(x_calib.split(LTB_BATCH))
            ),
        ),
    }


def convert(ann: nn.Module, recipe: Any) -> tuple[nn.Module, float]:
    """(SNN, seconds) through ann2snn.Converter (FXConverter) on CPU."""
    from spikingjelly.activation_based import ann2snn

    t0 = time.perf_counter()
    snn = ann2snn.Converter(recipe=recipe, device="cpu").convert(copy.deepcopy(ann))
    return snn.eval(), time.perf_counter() - t0


def accuracy_vs_t(snn: nn.Module, x: np.ndarray, y: np.ndarray, ts: list[int]) -> dict[int, float]:
    """Accuracy of the output summed over t steps (as SpikingJelly's own val()), every t in ts.

    Direct encoding: the image is the input at every step, as in spikeport.
    """
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    xt = torch.from_numpy(x.astype(np.float32))
    acc: dict[int, float] = {}
    out = None
    with torch.no_grad():
        for t in range(1, max(ts) + 1):
            step = snn(xt)
            out = step if out is None else out + step
            if t in ts:
                acc[t] = float((out.argmax(1).numpy() == y).mean())
    return acc


def runner(snn: nn.Module, x: np.ndarray, T: int, step_mode: str) -> Callable[[], None]:
    """One inference of the whole batch over T steps in SpikingJelly's torch simulation.

    step_mode 's': T calls of the single-step network (its cnn_mnist example's loop);
    'm': one call of the multi-step network on the input repeated T times.
    """
    from spikingjelly.activation_based import functional

    net = copy.deepcopy(snn)
    functional.set_step_mode(net, step_mode)
    xt = torch.from_numpy(x.astype(np.float32))
    xs = xt.unsqueeze(0).repeat(T, *([1] * xt.dim()))

    def run() -> None:
        functional.reset_net(net)
        with torch.inference_mode():
            if step_mode == "m":
                net(xs).sum(0)
            else:
                out = net(xt)
                for _ in range(T - 1):
                    out = out + net(xt)

    return run
