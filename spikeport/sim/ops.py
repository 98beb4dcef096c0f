"""Simulator kernels, one per op of the IR registry, in three modes:

  "ann"    the source network, one pass (neurons read as ReLU, max pooling as max)
  "float"  the spiking network with real numbers, one call per timestep
  "int"    the integer spiking network: the specification every target must match

A kernel is made once per node (prepare) and then called once per step with the input
arrays (batch first). Stateful kernels have `reset(batch)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from spikeport.errors import BadInput
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr, spike_levels
from spikeport.registry import registrar
from spikeport.sim import kernels as K
from spikeport.sim.arith import floor_shift, initial_potential
from spikeport.sim.kinds import LAVA, LAVA_V_LIMIT, SDN, kind_of, pair_level, sdn_pool_rounds

MODES = ("ann", "float", "int")


class Kernel(Protocol):
    def reset(self, batch: int) -> None: ...

    def __call__(self, *xs: np.ndarray) -> np.ndarray: ...


class Stateless:
    """Wraps a pure function of the inputs as a kernel."""

    def __init__(self, fn: Callable[..., np.ndarray]):
        self.fn = fn

    def reset(self, batch: int) -> None:
        pass

    def __call__(self, *xs: np.ndarray) -> np.ndarray:
        return self.fn(*xs)


Shape = tuple[int, ...]
Maker = Callable[[Node, str, Shape], Kernel]
KERNELS: dict[str, Maker] = {}


kernel = registrar(KERNELS)


def _p(node: Node, name: str, mode: str) -> np.ndarray:
    """The float param in "ann"/"float" mode, its integer `_q` twin in "int" mode."""
    return node.params[f"{name}_q" if mode == "int" else name]


def _as_int(mode: str, y: np.ndarray) -> np.ndarray:
    return y.astype(np.int64) if mode == "int" else y


@kernel("dense")
def _dense(node: Node, mode: str, shape: Shape) -> Kernel:
    w, b = _p(node, "weight", mode), _p(node, "bias", mode)
    return Stateless(lambda x: _as_int(mode, K.dense(x, w, b)))


@kernel("conv2d")
def _conv(node: Node, mode: str, shape: Shape) -> Kernel:
    w, b, a = _p(node, "weight", mode), _p(node, "bias", mode), node.attrs
    return Stateless(
        lambda x: _as_int(
            mode, K.conv2d(x, w, b, a["strides"], a["pads"], a["dilations"], a["group"])
        )
    )


@kernel("conv_transpose2d")
def _conv_transpose(node: Node, mode: str, shape: Shape) -> Kernel:
    w, b, a = _p(node, "weight", mode), _p(node, "bias", mode), node.attrs
    geo = (a["strides"], a["pads"], a["dilations"], a["group"], a["output_padding"])
    # In "int" mode x and w are integers: the kernel accumulates in int64 itself.
    return Stateless(lambda x: K.conv_transpose2d(x, w, b, *geo))


@kernel("avgpool2d")
def _avgpool(node: Node, mode: str, shape: Shape) -> Kernel:
    a = node.attrs
    area = a["kernel"][0] * a["kernel"][1]
    if mode == "int":  # the 1/area lives in the output scale, never applied at run time
        return Stateless(lambda x: K.window_sum(x, a["kernel"], a["strides"], a["pads"]))
    return Stateless(lambda x: K.window_sum(x, a["kernel"], a["strides"], a["pads"]) / area)


class _ECMaxPool:
    """Expectation-compensated max pooling: out_t = max(S_t) - max(S_{t-1}), S the running sum."""

    def __init__(self, node: Node):
        self.a = node.attrs
        self.total: np.ndarray | float = 0
        self.prev_max: np.ndarray | float = 0

    def reset(self, batch: int) -> None:
        self.total, self.prev_max = 0, 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if np.issubdtype(x.dtype, np.integer):  # int8 input codes: sum in int64, never wrap
            x = x.astype(np.int64)
        self.total = self.total + x
        m = K.window_max(
            np.asarray(self.total), self.a["kernel"], self.a["strides"], self.a["pads"]
        )
        out = m - self.prev_max
        self.prev_max = m
        return out


class _LavaMaxPool:
    """Kind "lava": the per-step OR of the window's spikes (max of 0/1, or of 0/theta in float
    mode), delivered one step late like any spike in Lava (an LIF with threshold 0 behind a
    Dense of ones). `fired` is this step's pooled spikes, before the delay."""

    def __init__(self, node: Node):
        self.a = node.attrs
        self.fired: np.ndarray | None = None

    def reset(self, batch: int) -> None:
        self.fired = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        m = K.window_max(x, self.a["kernel"], self.a["strides"], self.a["pads"])
        out = np.zeros_like(m) if self.fired is None else self.fired
        self.fired = m
        return out


def sdn_tournament(cells: np.ndarray) -> np.ndarray:
    """The kind "sdn" max of the last axis: sdn_pool_rounds' pairwise relu(u) + relu(v - u)
    (the window max wherever the cells are >= 0; a level a floor made negative counts as 0)."""
    vals = list(np.moveaxis(cells, -1, 0))
    for rnd in sdn_pool_rounds(len(vals)):
        vals = [
            np.maximum(vals[p[0]], 0)
            + (np.maximum(vals[p[1]] - vals[p[0]], 0) if len(p) > 1 else 0)
            for p in rnd
        ]
    return vals[0]


class _SDNMaxPool:
    """Kind "sdn": the tournament max (sdn_tournament) of each window of the levels it reads,
    one step late per round (each round is a layer of sigma-delta neurons with theta 0 on
    Lava, which pass their values on exactly). Padding cells read 0."""

    def __init__(self, node: Node):
        self.a = node.attrs
        self.depth = len(sdn_pool_rounds(node.attrs["kernel"][0] * node.attrs["kernel"][1]))
        self.queue: list[np.ndarray] = []

    def reset(self, batch: int) -> None:
        self.queue = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        win = K.windows(x, self.a["kernel"], self.a["strides"], self.a["pads"])
        self.queue.append(sdn_tournament(win.reshape(win.shape[:4] + (-1,))))
        if len(self.queue) <= self.depth:  # nothing has come through the rounds yet
            return np.zeros_like(self.queue[-1])
        return self.queue.pop(0)


@kernel("maxpool2d")
def _maxpool(node: Node, mode: str, shape: Shape) -> Kernel:
    a = node.attrs
    if mode == "ann":
        return Stateless(lambda x: K.window_max(x, a["kernel"], a["strides"], a["pads"]))
    if kind_of(node) == LAVA:
        return _LavaMaxPool(node)
    if kind_of(node) == SDN:
        return _SDNMaxPool(node)
    return _ECMaxPool(node)


@kernel("add")
def _add(node: Node, mode: str, shape: Shape) -> Kernel:
    if mode != "int":
        return Stateless(lambda *xs: sum(xs[1:], xs[0]))
    mult = node.params["mult_q"].astype(np.int64)  # (n_inputs, *channel shape)
    shift = node.attrs.get("shift", 0)
    return Stateless(
        lambda *xs: floor_shift(sum(m * x for m, x in zip(mult, xs, strict=True)), shift)
    )


@kernel("concat")
def _concat(node: Node, mode: str, shape: Shape) -> Kernel:
    ax = node.attrs["axis"]
    return Stateless(lambda *xs: np.concatenate(xs, axis=ax + 1 if ax >= 0 else ax))


@kernel("reshape")
def _reshape(node: Node, mode: str, shape: Shape) -> Kernel:
    shape = tuple(node.attrs["shape"])
    return Stateless(lambda x: x.reshape((x.shape[0],) + shape))


def _relu(cap: float | None) -> Kernel:
    return Stateless(lambda x: np.clip(x, 0, cap) if cap is not None else np.maximum(x, 0))


@kernel("relu")
def _relu_kernel(node: Node, mode: str, shape: Shape) -> Kernel:
    return _relu(node.attrs["cap"])


class IFNeuron:
    """Integrate-and-fire with reset by subtraction (see spikeport.ir.ops, op "if").

    Returns the spike counts s (in 0..K, or -K..K for signed and bipolar neurons; K = 1 for
    binary neurons) in "int" mode and s * theta (their real value) in "float" mode:
    s = clamp(floor(v / theta), lo, K), v -= s * theta. `v`, `count` and `k` (the last step's
    counts) are exposed for state checks, recording and event counts.
    """

    def __init__(
        self,
        theta: np.ndarray,
        signed: bool,
        integer: bool,
        shape: Shape,
        bipolar: bool = False,
        levels: int = 1,
    ):
        self.theta = np.asarray(theta, np.int64 if integer else np.float64)
        self.signed, self.integer, self.shape, self.bipolar = signed, integer, shape, bipolar
        self.levels = levels
        self.v: np.ndarray = np.zeros(0)
        self.count: np.ndarray = np.zeros(0)
        self.k: np.ndarray = np.zeros(0, np.int64)

    def reset(self, batch: int) -> None:
        v0 = initial_potential(self.theta) if self.integer else self.theta / 2
        self.v = np.broadcast_to(v0, (batch,) + self.shape).copy()
        self.count = np.zeros(self.v.shape, np.int64)
        self.k = np.zeros(self.v.shape, np.int64)

    def __call__(self, current: np.ndarray) -> np.ndarray:
        self.v += current
        if self.levels == 1:  # binary: the compare form, the same rule as the formula below
            pos = self.v >= self.theta
            spikes = pos.astype(np.int64)
            if self.bipolar:
                spikes -= ~pos & (self.v < 0)
            elif self.signed:
                spikes -= ~pos & (self.v < 0) & (self.count > 0)
        else:  # floor division on integers is exact; on floats it rounds toward -inf too
            low = 0
            if self.bipolar:
                low = -self.levels
            elif self.signed:
                low = -np.minimum(self.count, self.levels)
            spikes = np.clip(np.floor_divide(self.v, self.theta), low, self.levels)
            spikes = spikes.astype(np.int64)
        self.v -= spikes * self.theta
        self.count += spikes
        self.k = spikes
        return spikes if self.integer else spikes * self.theta


class LavaIFNeuron(IFNeuron):
    """Kind "lava" (spikeport.sim.kinds): Lava's fixed-point LIF with du = 4095 (u is the
    step's input) and dv = 0 (no leak), behind a Dense that delivers spikes one step late.

    Each step: v += I; in "int" mode v saturates at +-LAVA_V_LIMIT (Lava's 24-bit v in these
    units); fire when v > theta (strict); a neuron that fired resets to 0. Returns the spikes
    fired at the previous step (zeros at step 1): that is what the next layer's Dense delivers
    now. `fired` holds this step's own spikes, which is what Lava records as the LIF's s_out.
    """

    def __init__(self, theta: np.ndarray, integer: bool, shape: Shape):
        super().__init__(theta, False, integer, shape)
        self.fired: np.ndarray = np.zeros(0, np.int64)

    def reset(self, batch: int) -> None:
        super().reset(batch)
        self.fired = np.zeros(self.v.shape, np.int64)

    def __call__(self, current: np.ndarray) -> np.ndarray:
        out = self.fired
        self.v += current
        if self.integer:
            np.clip(self.v, -LAVA_V_LIMIT, LAVA_V_LIMIT, out=self.v)
        fired = self.v > self.theta
        self.v[fired] = 0
        self.fired = self.k = fired.astype(np.int64)
        self.count += self.fired
        return out if self.integer else out * self.theta


class SigmaDeltaNeuron(IFNeuron):
    """Kind "sdn" (spikeport.sim.kinds): Lava's fixed-point SigmaDelta with ReLU activation,
    spike_exp = state_exp = 0 and no cumulative error, behind a graded Dense.

    The input current I is what Lava's sigma + bias holds (the synapses read levels, see
    below). Each step, in this order (lava/proc/sdn/models.py, AbstractSigmaDeltaModel and
    PySigmaDeltaModelFixed.run_spk): act = max(I, 0); delta = act - act_prev + residue;
    s = delta where |delta| >= theta (not strict), else 0; residue = delta - s;
    act_prev = act; the message is m = s >> state_exp (floor: the bits shifted out are lost,
    not kept in the residue). The output is the level the next layer's Dense has delivered:
    the sum of the messages up to the previous step (zeros at step 1). The float mode runs
    the same with real numbers and no shift.

    With a `cap` c (per channel) the neuron is two SigmaDelta neurons with the rule above, one
    on I and one on I - c, and the level is the first's minus the second's: Lava's pair
    relu(I) - relu(I - c) = min(relu(I), c). `fired` (and `k`) is this step's messages, the
    pair's side by side per sample ((N, 2 * size): the Lava population's order), `v` the
    deltas, the widest state, for the range checks.
    """

    def __init__(
        self,
        theta: np.ndarray,
        integer: bool,
        shape: Shape,
        state_exp: int = 0,
        cap: np.ndarray | None = None,
    ):
        super().__init__(theta, False, integer, shape)
        self.state_exp = state_exp if integer else 0
        dt = np.int64 if integer else np.float64
        # the offsets of the neurons that carry one value: 0, and -cap for a capped one
        self.offsets = [0] if cap is None else [0, -np.asarray(cap, dt)]
        self.act = self.residue = self.level = self.fired = np.zeros(0, dt)

    def reset(self, batch: int) -> None:
        super().reset(batch)
        dt = np.int64 if self.integer else np.float64
        pair = np.zeros((len(self.offsets), batch) + self.shape, dt)
        self.v, self.act, self.residue = pair, pair, pair
        self.level = self.fired = self.k = np.zeros((batch,) + self.shape, dt)

    def __call__(self, current: np.ndarray) -> np.ndarray:
        out = self.level
        act = np.stack([np.maximum(current + off, 0) for off in self.offsets])
        delta = act - self.act + self.residue
        sent = np.where(np.abs(delta) >= self.theta, delta, 0)
        self.residue, self.act, self.v = delta - sent, act, delta
        if self.state_exp:
            sent = np.right_shift(sent, self.state_exp)  # floor, as numpy's right_shift
        self.level = self.level + pair_level(sent)
        n = len(current)
        self.fired = self.k = (
            sent[0] if len(sent) == 1 else np.concatenate([m.reshape(n, -1) for m in sent], axis=1)
        )
        self.count = self.count + (sent[0] != 0)
        return out


@kernel("if")
def _if(node: Node, mode: str, shape: Shape) -> Kernel:
    if mode == "ann":  # a bipolar neuron stands for a signed value: the ANN view is identity
        return Stateless(lambda x: x) if node.attrs.get("bipolar") else _relu(node.attrs["cap"])
    if kind_of(node) == LAVA:
        if spike_levels(node) > 1:
            raise BadInput(
                f"node '{node.name}' (if): kind 'lava' has binary spikes only (Lava's LIF), "
                f"not spike_bits {attr(node, 'spike_bits')}"
            )
        return LavaIFNeuron(_p(node, "threshold", mode), mode == "int", shape)
    if kind_of(node) == SDN:
        exp = node.attrs.get("state_exp", 0)
        cap = _p(node, "sdn_cap", mode) if "sdn_cap" in node.params else None
        return SigmaDeltaNeuron(_p(node, "threshold", mode), mode == "int", shape, exp, cap)
    return IFNeuron(
        _p(node, "threshold", mode),
        node.attrs["signed"],
        mode == "int",
        shape,
        node.attrs.get("bipolar", False),
        spike_levels(node),
    )


# Sequence-model kernels and those of spikeport.ir.ext_ops register into the same KERNELS table.
from spikeport.sim import ext_ops as _ext_ops  # noqa: E402,F401
from spikeport.sim import seq_ops as _seq_ops  # noqa: E402,F401
