"""SpikingJelly 2.0 ann2snn on the digits models: the peer converter of the benchmarks.

SpikingJelly is a benchmark-only dependency. `benchmarks/install_spikingjelly.sh` (run by
`make bench`) installs it with `pip --no-deps --target benchmarks/work/sjlib`, beside the
two small packages it imports (loguru, requests), so it never pulls torchvision, torchaudio
or a CUDA torch and never enters `.venv` or spikeport's dependencies. This module appends
that folder to sys.path (after .venv's packages, so nothing of .venv is shadowed).

The torch ANN is rebuilt from the ONNX file itself: the architecture of
examples/make_digits.py (cnn(), mlp()) or benchmarks/nets.py's module, with BatchNorm already
folded into the convolutions as torch.onnx exported it, and every Conv/Gemm initializer loaded
in graph order.
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


def ann_from_onnx(
    name: str | nn.Module, onnx_path: Path, x_test: np.ndarray
) -> tuple[nn.Module, float]:
    """The torch ANN with the ONNX file's weights; max |logit difference| to onnxruntime.

    `name`: a digits example ("cnn", "mlp": `architecture`) or a module whose BatchNorm is
    already folded (benchmarks/nets.py's `fold_bn`). Its Conv2d/Linear layers, in the order
    they run on one input, take the weights of the file's Conv/Gemm nodes in graph order.
    """
    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    net = architecture(name) if isinstance(name, str) else name
    layers: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda m, _: layers.append(m) if m not in layers else None)
        for m in net.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        net.eval()(torch.from_numpy(x_test[:1].astype(np.float32)))
    for h in hooks:
        h.remove()
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
            "RateCodingRecipe(mode=0.5): layer-wise, half the max (its '1/2')",
            lambda: ann2snn.RateCodingRecipe(dataloader=one, mode=0.5),
        ),
        "sj_channel_half": (
            "RateCodingRecipe(mode='99.9%', channel_wise=True, half_threshold=True, "
            "pre_spike_maxpool=True): channel-wise thresholds, v0 = theta/2, max pooling "
            "of the currents before the neuron",
            lambda: ann2snn.RateCodingRecipe(
                dataloader=one,
                mode="99.9%",
                channel_wise=True,
                half_threshold=True,
                pre_spike_maxpool=True,
            ),
        ),
        "sj_ltb": (
            "LocalThresholdBalancingRecipe(): channel-wise thresholds, v0 = theta/2, max "
            "pooling of the currents before the neuron",
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


class _Counter:
    """Events and synaptic operations of one run, counted as spikeport's simulator counts
    them: a neuron's nonzero outputs are its events; a Conv2d or Linear does, per step, one
    operation for every (nonzero input, output it reaches) pair (the exact fan-out, padding
    and stride included; the first layer's input current counts too), an average pooling
    one per nonzero input (each input reaches one output of a non-overlapping window)."""

    def __init__(self, snn: nn.Module):
        from spikingjelly.activation_based.neuron import BaseNode

        self.events = 0
        self.sops = 0
        self.hooks = []
        for m in snn.modules():
            if isinstance(m, BaseNode):
                self.hooks.append(m.register_forward_hook(self._neuron))
            elif isinstance(m, nn.Conv2d | nn.Linear | nn.AvgPool2d | nn.AdaptiveAvgPool2d):
                self.hooks.append(m.register_forward_pre_hook(self._synapses))

    def _neuron(self, _m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        self.events += int((out != 0).sum())

    def _synapses(self, m: nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        nz = (inp[0] != 0).to(torch.float32)
        if isinstance(m, nn.Linear):
            self.sops += int(nz.sum()) * m.out_features
        elif isinstance(m, nn.Conv2d):
            ones = torch.ones_like(m.weight)
            reach = torch.nn.functional.conv2d(
                nz, ones, None, m.stride, m.padding, m.dilation, m.groups
            )
            self.sops += int(reach.sum())
        else:
            self.sops += int(nz.sum())

    def remove(self) -> None:
        for h in self.hooks:
            h.remove()


def accuracy_vs_t(
    snn: nn.Module, x: np.ndarray, y: np.ndarray, ts: list[int]
) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Accuracy of the output summed over t steps (as SpikingJelly's own val()), every t in ts;
    events and synaptic operations per inference over steps 1..t (`_Counter`).

    Direct encoding: the image is the input at every step, as in spikeport.
    """
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    xt = torch.from_numpy(x.astype(np.float32))
    acc: dict[int, float] = {}
    events: dict[int, float] = {}
    sops: dict[int, float] = {}
    out = None
    count = _Counter(snn)
    try:
        with torch.no_grad():
            for t in range(1, max(ts) + 1):
                step = snn(xt)
                out = step if out is None else out + step
                if t in ts:
                    acc[t] = float((out.argmax(1).numpy() == y).mean())
                    events[t] = count.events / len(x)
                    sops[t] = count.sops / len(x)
    finally:
        count.remove()
    return acc, events, sops


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


# ---------------------------------------------------------------------------------------------
# The digits ViT: SpikingJelly's STA transformer recipe


class _EncoderBlock(nn.Module):
    """One pre-norm nn.TransformerEncoderLayer, unrolled so that torch.fx sees its parts.

    SpikingJelly's transformer recipes refuse nn.TransformerEncoder(Layer) as an opaque
    module; the same weights called in the same order (eval mode: no dropout) trace.
    """

    def __init__(self, layer: nn.TransformerEncoderLayer):
        super().__init__()
        layer.self_attn.dropout = 0.0  # TD attention requires it; eval mode drops nothing anyway
        self.norm1, self.self_attn, self.norm2 = layer.norm1, layer.self_attn, layer.norm2
        self.linear1, self.gelu, self.linear2 = layer.linear1, nn.GELU(), layer.linear2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        attn = self.self_attn(h, h, h, need_weights=False)
        attn[1]  # noqa: B018  SpikingJelly's step-mode adapter recognises the MHA tuple by it
        x = x + attn[0]
        return x + self.linear2(self.gelu(self.linear1(self.norm2(x))))


class _UnrolledViT(nn.Module):
    """examples/make_transformers.py's TinyViT with its encoder layers unrolled."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.embed, self.pos, self.norm, self.head = vit.embed, vit.pos, vit.norm, vit.head
        self.blocks = nn.ModuleList(_EncoderBlock(layer) for layer in vit.encoder.layers)
        self.patch, self.grid = vit.patch, 8 // vit.patch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, g = self.patch, self.grid
        patches = x.reshape(-1, 1, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(-1, g * g, p * p)
        h = self.embed(patches) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h.mean(dim=1)))


def vit_from_onnx(onnx_path: Path, x_test: np.ndarray) -> tuple[nn.Module, float]:
    """TinyViT with the ONNX file's weights (MatMul weights are stored transposed, in the
    order of the state dict's missing names), unrolled; max |logit difference| to
    onnxruntime."""
    sys.path.insert(0, str(onnx_path.resolve().parent))
    from make_transformers import TinyViT

    model = onnx.load(str(onnx_path))
    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    vit = TinyViT().eval()
    shapes = {k: tuple(v.shape) for k, v in vit.state_dict().items()}
    by_order = [k for k in shapes if k not in init]
    matmul = [
        init[i] for n in model.graph.node if n.op_type == "MatMul" for i in n.input if i in init
    ]
    if len(by_order) != len(matmul):
        raise ValueError(f"{onnx_path}: {len(matmul)} MatMul weights for {len(by_order)} names")
    state = {k: init[k] for k in shapes if k in init}
    state.update({k: w.T for k, w in zip(by_order, matmul, strict=True)})
    for k, v in state.items():
        if tuple(v.shape) != shapes[k]:
            raise ValueError(f"{onnx_path}: {k} has shape {v.shape}, torch {shapes[k]}")
    vit.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in state.items()})
    net = _UnrolledViT(vit).eval()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: x_test.astype(np.float32)})[0]
    with torch.no_grad():
        got = net(torch.from_numpy(x_test.astype(np.float32))).numpy()
    return net, float(np.abs(ref - got).max())


STA_WHAT = (
    "STATransformerRecipe(mode='spiking_encoder', time_steps=T): one conversion per T; "
    "float Linear, LayerNorm, softmax and GELU on running sums, calibrated spike encoders "
    "after LayerNorm, GELU and attention; input first real then zero, output summed (its "
    "imagenet_vit_sta example)"
)


def sta_accuracy(
    net: nn.Module, x_calib: torch.Tensor, x: np.ndarray, y: np.ndarray, ts: list[int]
) -> tuple[dict[int, float], float]:
    """Accuracy at each T of the STA spiking-encoder recipe converted for that T; seconds."""
    from spikingjelly.activation_based import ann2snn, functional

    acc: dict[int, float] = {}
    seconds = 0.0
    for T in ts:
        recipe = ann2snn.STATransformerRecipe(
            dataloader=[x_calib], time_steps=T, mode="spiking_encoder"
        )
        snn, s = convert(net, recipe)
        seconds += s
        functional.set_step_mode(snn, "m")
        functional.reset_net(snn)
        seq = torch.zeros((T,) + x.shape)
        seq[0] = torch.from_numpy(x.astype(np.float32))
        with torch.no_grad():
            out = snn(seq).sum(0)
        acc[T] = float((out.argmax(1).numpy() == y).mean())
    return acc, seconds


def sta_runner(net: nn.Module, x_calib: torch.Tensor, x: np.ndarray, T: int) -> Callable[[], None]:
    """One multi-step inference of the STA spiking-encoder network converted for T."""
    from spikingjelly.activation_based import ann2snn, functional

    recipe = ann2snn.STATransformerRecipe(
        dataloader=[x_calib], time_steps=T, mode="spiking_encoder"
    )
    snn, _ = convert(net, recipe)
    functional.set_step_mode(snn, "m")
    seq = torch.zeros((T,) + x.shape)
    seq[0] = torch.from_numpy(x.astype(np.float32))

    def run() -> None:
        functional.reset_net(snn)
        with torch.inference_mode():
            snn(seq).sum(0)

    return run
