"""Torch layers, one per op of the IR registry (spikeport.ir.ops.OPS), with the float-mode
semantics of the reference simulator (spikeport.sim.ops) written in differentiable torch.

A layer is made once per node and then called once per timestep with that step's inputs
(batch first), like a simulator kernel; `reset()` clears its state before a run. Layers with
trainable params name them as the node does (`weight`, `bias`, `threshold`) and give them back
with `export()`. A missing op is refused by `make_layer` naming the node.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikeport.errors import UnsupportedOp
from spikeport.finetune.grid import on_grid
from spikeport.finetune.surrogate import Shape, spike
from spikeport.ir.graph import Node
from spikeport.ir.ops import spike_levels
from spikeport.registry import registrar
from spikeport.sim.kinds import LAVA, SDN, kind_of, pair_level, sdn_pool_rounds

THRESHOLD_FLOOR = 1e-3  # a threshold never drops below this fraction of its converted value


class Layer(nn.Module):
    """A step function of the op; stateless unless it overrides `reset`."""

    def reset(self) -> None:
        """Forget all state: the next call is step t = 1."""

    def export(self) -> dict[str, np.ndarray]:
        """The node's float params as they are now (float32, the node's shapes)."""
        return {k: p.detach().cpu().to(torch.float32).numpy() for k, p in self.named_parameters()}

    def constrain(self) -> None:
        """Project params back into their valid set after an optimiser step."""


Maker = Callable[[Node, tuple[int, ...], Shape], Layer]
LAYERS: dict[str, Maker] = {}


layer = registrar(LAYERS)


def make_layer(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    """The torch layer of `node`, or UnsupportedOp naming it when its op has none."""
    maker = LAYERS.get(node.op)
    if maker is None:
        raise UnsupportedOp(
            f"node '{node.name}' ({node.op}): fine-tuning has no torch layer for this op; "
            "register one in spikeport/finetune/layers.py"
        )
    return maker(node, shape, surrogate)


def as_param(arr: np.ndarray) -> nn.Parameter:
    """A trainable float32 copy of a node param."""
    return nn.Parameter(torch.as_tensor(np.asarray(arr, np.float32).copy()))


def _pad(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """ONNX pads (top, left, bottom, right) on an (N, C, H, W) tensor."""
    top, left, bottom, right = pads
    if not any(pads):
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class Fn(Layer):
    """A stateless op without params, from a function of the step inputs."""

    def __init__(self, fn: Callable[..., torch.Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


class _Weighted(Layer):
    """A synapse with a trainable weight and bias and the node's attributes. With a grid
    (`on_weight_grid`, quantization-aware fine-tuning) the forward pass reads the weights
    rounded to it."""

    def __init__(self, node: Node):
        super().__init__()
        self.weight, self.bias = as_param(node.params["weight"]), as_param(node.params["bias"])
        self.a = node.attrs
        self.register_buffer("step", None)  # the weight grid's step, once on one

    def on_weight_grid(self, step: np.ndarray) -> None:
        self.step = torch.as_tensor(step, dtype=self.weight.dtype, device=self.weight.device)

    def w(self) -> torch.Tensor:
        return self.weight if self.step is None else on_grid(self.weight, self.step)

    def export(self) -> dict[str, np.ndarray]:
        """On a grid, the weights as trained: rounded to it. quantize then finds them on its
        grid, so its correction of the rounded weights' mean error (quantize._mean_error)
        does not undo what training already made of the rounding."""
        out = super().export()
        out["weight"] = self.w().detach().cpu().to(torch.float32).numpy()
        return out


class Dense(_Weighted):
    """y = x W^T + b over the last axis (b (out,) or broadcastable to the output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.w()) + self.bias


class Conv2d(_Weighted):
    """ONNX Conv: explicit (possibly asymmetric) zero padding, then an unpadded conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a
        return F.conv2d(
            _pad(x, a["pads"]),
            self.w(),
            self.bias,
            stride=a["strides"],
            dilation=a["dilations"],
            groups=a["group"],
        )


class ConvTranspose2d(_Weighted):
    """ONNX ConvTranspose: torch's unpadded transposed conv gives the full output; the
    output_padding cells are zeros appended at the end (torch's own output_padding must stay
    below the stride), pads are cropped, then the bias goes on every cell that is left."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a
        y = F.conv_transpose2d(
            x, self.weight, stride=a["strides"], dilation=a["dilations"], groups=a["group"]
        )
        y = F.pad(y, (0, a["output_padding"][1], 0, a["output_padding"][0]))
        top, left, bottom, right = a["pads"]
        y = y[:, :, top : y.shape[2] - bottom, left : y.shape[3] - right]
        return y + self.bias.view(1, -1, 1, 1)


class ECMaxPool(Layer):
    """Expectation-compensated max pooling: out_t = max(S_t) - max(S_{t-1}), S the running sum
    of the input; the outputs sum to the windowed max of the summed input (simulator: _ECMaxPool).
    """

    def __init__(self, node: Node):
        super().__init__()
        self.a = node.attrs
        self.reset()

    def reset(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.prev: torch.Tensor | float = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.total = self.total + x
        a = self.a
        m = F.max_pool2d(_pad(self.total, a["pads"], -torch.inf), a["kernel"], a["strides"])
        out, self.prev = m - self.prev, m
        return out


def staircase(
    v: torch.Tensor, step: torch.Tensor, levels: int, surrogate: Shape, bipolar: bool = False
) -> torch.Tensor:
    """The count clamp(floor(v / step), lo, levels) (lo = -levels if bipolar, else 0) as a sum
    of Heaviside steps one `step` apart, sum_j H(v - j step) (j = 1..levels), minus, if
    bipolar, sum_j [v < -j step] (j = 0..levels - 1), each with its surrogate gradient."""
    s = spike(v - step, step, surrogate)
    for j in range(2, levels + 1):
        s = s + spike(v - j * step, step, surrogate)
    if bipolar:  # v < -j step is "not (v >= -j step)"
        for j in range(levels):
            s = s - (1.0 - spike(v + j * step, step, surrogate))
    return s


class IF(Layer):
    """Integrate-and-fire, reset by subtraction, v0 = theta / 2; returns spikes * theta.

    Signed variant: a neuron whose running count is positive emits -1 (v += theta) when v < 0;
    bipolar variant: any neuron emits -1 when v < 0 (no floor on the count).
    Graded (spike_bits b, K = 2^b - 1): the count clamp(floor(v / theta), lo, K) is a sum of K
    steps, s = sum_j H(v - j theta) (j = 1..K), minus, for signed / bipolar neurons,
    sum_j [v < -(j - 1) theta] (gated by count >= j for signed ones): the same integers as the
    simulator's floor, and each step brings its own surrogate, so the gradient is a staircase
    of K bumps one threshold apart (b = 1: the binary neuron, term for term).
    The threshold is trained as it is stored (no reparametrisation), so the forward pass uses
    exactly the value the simulator reads; `constrain` keeps it positive.
    """

    def __init__(self, node: Node, surrogate: Shape):
        super().__init__()
        self.threshold = as_param(node.params["threshold"])
        self.register_buffer("floor", self.threshold.detach().abs() * THRESHOLD_FLOOR)
        self.signed, self.surrogate = bool(node.attrs["signed"]), surrogate
        self.bipolar = bool(node.attrs.get("bipolar", False))
        self.levels = spike_levels(node)
        self.reset()

    def reset(self) -> None:
        self.v: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        theta = self.threshold
        v = (theta / 2 if self.v is None else self.v) + current
        s = staircase(v, theta, self.levels, self.surrogate, self.bipolar)
        if self.signed and not self.bipolar:
            count = torch.zeros_like(v) if self.count is None else self.count
            # v < 0 is "not (v >= 0)"; the count gate carries no gradient
            s = s - (1.0 - spike(v, theta, self.surrogate)) * (count > 0).to(v.dtype)
            for j in range(1, self.levels):
                below = 1.0 - spike(v + j * theta, theta, self.surrogate)
                s = s - below * (count > j).to(v.dtype)
            self.count = count + s.detach()
        self.v = v - s * theta
        return s * theta

    def export(self) -> dict[str, np.ndarray]:
        return {"threshold": self.threshold.detach().cpu().to(torch.float32).numpy()}

    @torch.no_grad()
    def constrain(self) -> None:
        self.threshold.copy_(torch.maximum(self.threshold, self.floor))


class LavaIF(IF):
    """Kind "lava" (spikeport.sim.kinds): reset to zero, fire when v > theta, v0 = theta / 2,
    and the spikes reach the next layer one step late (simulator: LavaIFNeuron, float mode).
    Strict compare as 1 - H(theta - v); the reset multiplies v by (1 - s), so gradients also
    flow through what a spike wipes out."""

    def reset(self) -> None:
        super().reset()
        self.prev: torch.Tensor | None = None

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        theta = self.threshold
        v = (theta / 2 if self.v is None else self.v) + current
        s = 1.0 - spike(theta - v, theta, self.surrogate)
        out = torch.zeros_like(v) if self.prev is None else self.prev
        self.v, self.prev = v * (1.0 - s), s * theta
        return out


class LavaMaxPool(Layer):
    """Kind "lava": the per-step max (OR) of the window's spikes, one step late (simulator:
    _LavaMaxPool)."""

    def __init__(self, node: Node):
        super().__init__()
        self.a = node.attrs
        self.reset()

    def reset(self) -> None:
        self.prev: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.a
        m = F.max_pool2d(_pad(x, a["pads"], -torch.inf), a["kernel"], a["strides"])
        out = torch.zeros_like(m) if self.prev is None else self.prev
        self.prev = m
        return out


class SigmaDeltaIF(IF):
    """Kind "sdn" (simulator: SigmaDeltaNeuron, float mode): act = relu(I), the change of act
    plus the residue is sent once |change| >= theta, and the output is the level sent up to
    the previous step; a capped neuron (param sdn_cap, c) is two such on I and I - c, its
    level the first's minus the second's (min(relu(I), c)). The message threshold is a step
    with no useful gradient, so the backward pass is straight-through: the level's gradient
    goes to the activation it approximates (the ANN's clipped ReLU, one step earlier). The
    delta threshold and the cap are kept, not trained."""

    def __init__(self, node: Node, surrogate: Shape):
        super().__init__(node, surrogate)
        cap = node.params.get("sdn_cap")
        self.capped = cap is not None
        self.register_buffer(
            "cap", torch.as_tensor(np.asarray(cap if self.capped else 0, np.float32))
        )

    def reset(self) -> None:
        super().reset()
        self.act: torch.Tensor | None = None  # the pair's acts, stacked
        self.residue: torch.Tensor | float = 0.0
        self.level: torch.Tensor | float = 0.0

    def forward(self, current: torch.Tensor) -> torch.Tensor:
        offsets = [0.0, -self.cap] if self.capped else [0.0]
        act = torch.stack([(current + off).clamp(min=0) for off in offsets])
        prev = torch.zeros_like(act) if self.act is None else self.act
        value = pair_level(prev)  # the clipped ReLU
        out = (self.level - value.detach()) + value  # forward: the level; backward: value
        with torch.no_grad():
            delta = act - prev + self.residue
            sent = torch.where(delta.abs() >= self.threshold, delta, torch.zeros_like(delta))
            self.residue = delta - sent
            self.level = self.level + pair_level(sent)
        self.act = act
        return out

    def constrain(self) -> None:
        pass  # not trained (see the class docstring)


class SDNMaxPool(Layer):
    """Kind "sdn": the tournament max (relu(u) + relu(v - u) pairwise, padding reads 0) of the
    levels in each window, one step late per round (simulator: _SDNMaxPool)."""

    def __init__(self, node: Node):
        super().__init__()
        self.a = node.attrs
        self.rounds = sdn_pool_rounds(self.a["kernel"][0] * self.a["kernel"][1])
        self.reset()

    def reset(self) -> None:
        self.queue: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, (n, c) = self.a, x.shape[:2]
        cols = F.unfold(_pad(x, a["pads"]), a["kernel"], stride=a["strides"])
        ho = (x.shape[2] + a["pads"][0] + a["pads"][2] - a["kernel"][0]) // a["strides"][0] + 1
        cells = list(cols.reshape(n, c, -1, ho, cols.shape[-1] // ho).unbind(2))
        for rnd in self.rounds:
            cells = [
                cells[p[0]].clamp(min=0)
                + ((cells[p[1]] - cells[p[0]]).clamp(min=0) if len(p) > 1 else 0)
                for p in rnd
            ]
        self.queue.append(cells[0])
        if len(self.queue) <= len(self.rounds):
            return torch.zeros_like(cells[0])
        return self.queue.pop(0)


@layer("dense")
def _dense(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return Dense(node)


@layer("conv2d")
def _conv2d(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return Conv2d(node)


@layer("conv_transpose2d")
def _conv_transpose2d(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return ConvTranspose2d(node)


@layer("avgpool2d")
def _avgpool(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    a = node.attrs  # padded cells count as zeros: pad first, constant divisor kh * kw
    return Fn(lambda x: F.avg_pool2d(_pad(x, a["pads"]), a["kernel"], a["strides"]))


@layer("maxpool2d")
def _maxpool(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    if kind_of(node) == SDN:
        return SDNMaxPool(node)
    return LavaMaxPool(node) if kind_of(node) == LAVA else ECMaxPool(node)


@layer("add")
def _add(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    return Fn(lambda *xs: sum(xs[1:], xs[0]))


@layer("concat")
def _concat(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    ax = node.attrs["axis"]
    return Fn(lambda *xs: torch.cat(xs, dim=ax + 1 if ax >= 0 else ax))


@layer("reshape")
def _reshape(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    out = tuple(node.attrs["shape"])
    return Fn(lambda x: x.reshape((x.shape[0],) + out))


@layer("relu")
def _relu(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    cap = node.attrs["cap"]  # only in "ann" graphs; kept so every op of the IR has a layer
    return Fn(lambda x: x.clamp(0, cap) if cap is not None else x.clamp(min=0))


@layer("if")
def _if(node: Node, shape: tuple[int, ...], surrogate: Shape) -> Layer:
    if kind_of(node) == LAVA and spike_levels(node) > 1:
        raise UnsupportedOp(
            f"node '{node.name}' (if): kind 'lava' has binary spikes only (Lava's LIF), "
            f"not spike_bits {node.attrs['spike_bits']}"
        )
    if kind_of(node) == SDN:
        return SigmaDeltaIF(node, surrogate)
    return LavaIF(node, surrogate) if kind_of(node) == LAVA else IF(node, surrogate)


# Layers of the sequence-model ops and of spikeport.ir.ext_ops register into the same table.
from spikeport.finetune import ext_layers as _ext_layers  # noqa: E402,F401
from spikeport.finetune import seq_layers as _seq_layers  # noqa: E402,F401
