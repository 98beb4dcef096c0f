"""Range analysis: prove that no integer value leaves its bits for T <= max_timesteps.

Each op has a bound rule mapping elementwise bounds of |input| to bounds of |output| (and of
any state it keeps over T steps). Bounds are computed with the simulator's own kernels on
|weights|, so they hold for every input the int8 encoding can produce.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spikeport.batch import is_integer
from spikeport.errors import OverflowWithinSteps
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import spike_levels
from spikeport.registry import registrar
from spikeport.sim import kernels as K
from spikeport.sim.arith import input_bits, int_limit
from spikeport.sim.kinds import LAVA, LAVA_V_LIMIT, SDN, holds_levels, kind_of

# rule(node, per-step bounds of |inputs|, T, bounds of |inputs summed over t <= T steps|)
#   -> (per-step output bound, peak of kept state[, bound of the output summed over steps])
# Every bound array has the full per-sample shape. Without the third element the summed
# output is bounded by T times the per-step bound; data movement moves summed bounds as is.
BoundRule = Callable[..., tuple]
# Linear ops without a bias: the summed output is bounded by the rule applied to summed inputs.
MOVES = frozenset(
    {
        "reshape",
        "transpose",
        "take",
        "gather",
        "slice",
        "scale",
        "concat",
        "avgpool2d",
        "reduce_mean",
    }
    | {"channel_scale", "pad", "reduce_sum", "resize"}
)
SYNAPTIC = frozenset({"dense", "conv2d"})
BOUNDS: dict[str, BoundRule] = {}


bound = registrar(BOUNDS)


def _abs(node: Node, name: str) -> np.ndarray:
    return np.abs(node.params[name].astype(np.float64))


@bound("dense")
def _dense(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple:
    w, bias = _abs(node, "weight_q"), _abs(node, "bias_q")
    return K.dense(b[0], w, bias), 0.0, K.dense(c[0], w, T * bias)


@bound("conv2d")
def _conv(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple:
    a = node.attrs
    w, bias = _abs(node, "weight_q"), _abs(node, "bias_q")
    geo = (a["strides"], a["pads"], a["dilations"], a["group"])
    return (K.conv2d(b[0][None], w, bias, *geo)[0], 0.0, K.conv2d(c[0][None], w, T * bias, *geo)[0])


@bound("avgpool2d")
def _avgpool(
    node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]
) -> tuple[np.ndarray, float]:
    a = node.attrs
    return K.window_sum(b[0][None], a["kernel"], a["strides"], a["pads"])[0], 0.0


@bound("maxpool2d")
def _maxpool(
    node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]
) -> tuple[np.ndarray, float]:
    # S_t moves by at most b per step, so max(S_t) - max(S_{t-1}) does too; S reaches T * b.
    a = node.attrs
    out = K.window_max(b[0][None], a["kernel"], a["strides"], a["pads"])[0]
    if kind_of(node) == SDN:  # tournament of relu(u) + relu(v - u) on levels in [-T, b]:
        return out + T, float(b[0].max(initial=0) + T)  # every stage is in [0, b + T]
    return out, 2.0 * T * float(b[0].max(initial=0))


@bound("add")
def _add(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple:
    # floor(z) lies in [z - 1, z]: |floor(z)| <= |z| + 1 a step, and summed over t steps
    # |sum floor(z_t)| <= |sum z_t| + t, where sum z_t is the same add of the inputs' sums.
    # (Bounding the sum by T times the step bound squared the T of an EC input: (2T - 1) T.)
    mult = np.abs(node.params["mult_q"].astype(np.float64))
    shift = 2 ** node.attrs.get("shift", 0)
    step = sum(m * x for m, x in zip(mult, b, strict=True))
    total = sum(m * x for m, x in zip(mult, c, strict=True))
    return np.floor(step / shift) + 1, 0.0, np.floor(total / shift) + T


@bound("concat")
def _concat(
    node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]
) -> tuple[np.ndarray, float]:
    return np.concatenate(b, axis=node.attrs["axis"]), 0.0


@bound("reshape")
def _reshape(
    node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]
) -> tuple[np.ndarray, float]:
    return b[0].reshape(node.attrs["shape"]), 0.0


@bound("if")
def _if(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple:
    # A step emits at most K = 2^spike_bits - 1 (1: binary). v = v0 + (summed input) - theta *
    # (net count N): |v| <= theta/2 + c + theta |N|; and, step by step, v starts at theta/2 and
    # moves by at most b per step (a reset moves v toward [0, theta), never past it in
    # magnitude): |v| <= theta + T*b.
    # Graded (K > 1): |N| < c/theta + 1 besides T*K. After a step that emits s > 0, v >= 0, so
    # N there is (v0 + C - v) / theta <= 1/2 + c/theta; after one that emits s < 0, v < theta,
    # so N there > -(c/theta) - 1; N between such steps does not move. (Binary neurons keep
    # |N| <= T, so graphs without graded neurons quantize exactly as before.)
    theta = np.broadcast_to(node.params["threshold_q"].astype(np.float64), b[0].shape)
    if kind_of(node) == LAVA:
        # Reset to zero: v <= theta before a step (else it fired), so at most theta + b after
        # it; v saturates at +-LAVA_V_LIMIT (the simulator models it, as Lava's v does).
        return np.ones_like(b[0]), float(np.minimum(theta + b[0], LAVA_V_LIMIT).max(initial=0))
    if kind_of(node) == SDN:
        return _sdn(node, theta, b[0], T)
    k = spike_levels(node)
    net = np.full(b[0].shape, float(T * k))
    if k > 1:
        net = np.minimum(net, np.floor(c[0] / theta) + 1)
    state = np.minimum(theta + T * b[0], theta / 2 + c[0] + net * theta)
    return np.full(b[0].shape, float(k)), float(state.max(initial=0)), net


def _sdn(node: Node, theta: np.ndarray, b: np.ndarray, T: int) -> tuple:
    """Kind "sdn": act = max(I, 0) lies in [0, b]; |residue| < theta, so |delta| =
    |act - act_prev + residue| and every state value are below b + theta. Messages are
    floor(s / 2^e): with e = 0 the level received so far is always a past act (after a message
    residue = 0 and level = act; between messages it does not move), in [0, b]; with e > 0
    each message loses less than one unit to the floor, so the level lies in [-T, b / 2^e]
    (at most T messages, each below its share s / 2^e).
    A capped neuron (param sdn_cap_q, c) is two of them, on I and on I - c; the sum of one's
    messages is its act minus its residue, so the pair's level is clip(I, 0, c) minus the
    difference of two residues, within (-2 theta, c + 2 theta), each floor again costing less
    than a unit a step: whatever b is, the level is bounded by the cap (_sdn_level_bound)."""
    e = node.attrs.get("state_exp", 0)
    state = float((b + np.maximum(theta, 1)).max(initial=0))
    if "sdn_cap_q" in node.params:
        return np.broadcast_to(_sdn_level_bound(node, T), b.shape), state
    if e == 0:
        return b, state
    return np.maximum(np.floor(b / 2.0**e), float(T)), state


def _sdn_level_bound(node: Node, T: int) -> np.ndarray:
    """|level| of a capped sigma-delta neuron (see _sdn), and of one step's change of it, the
    messages its readers get at once: |Δlevel| = |Δclip - Δ(residue difference)| / 2^e plus
    the two floors' unit, below (c + 4 theta) / 2^e + 1. The larger of the two bounds both."""
    e = node.attrs.get("state_exp", 0)
    cap = node.params["sdn_cap_q"].astype(np.float64)
    theta = np.maximum(node.params["threshold_q"].astype(np.float64), 1)
    return np.ceil((cap + 4 * theta) / 2.0**e) + (T if e else 0)


@dataclass
class NodeBounds:
    """What the proof knows of one node's output tensor, elementwise over its per-sample shape:
    `step` bounds |value| at any one step, `total` bounds |sum of its values over steps 1..t|
    for every t <= T (what a reader that accumulates sees), `state` the peak of kept state."""

    step: np.ndarray
    total: np.ndarray
    state: float
    nonneg: bool = False  # never negative: unsigned spikes (0 / 1) and data movement of them

    def worst(self, is_output: bool) -> float:
        """The largest integer this node holds: a value, its state, and for a graph output its
        accumulator (the sum over steps, bounded by `total`, not T times `step`: an EC operator's
        single step can reach (2T - 1) max|f| while its outputs telescope to at most T max|f|)."""
        w = max(float(self.step.max(initial=0)), self.state)
        return max(w, float(self.total.max(initial=0))) if is_output else w


def input_bounds(graph: Graph, max_timesteps: int, input_bits: int) -> dict[str, NodeBounds]:
    """Bounds of the graph's inputs: int8 codes (or the target's width); integer inputs are
    token ids and 0/1 masks, whose consumers (embed, masked softmax) bound their outputs by
    their own tables, so the 1 here is never multiplied."""
    out = {}
    for t in graph.inputs:
        b = np.full(t.shape, 1.0 if is_integer(t) else float(int_limit(input_bits)))
        out[t.name] = NodeBounds(b, max_timesteps * b, 0.0)
    return out


def node_bounds(n: Node, bounds: dict[str, NodeBounds], max_timesteps: int) -> NodeBounds:
    """Bounds of one (quantized) node's output from the bounds of its inputs."""
    T, rule = max_timesteps, BOUNDS[n.op]
    steps, totals = [bounds[i].step for i in n.inputs], [bounds[i].total for i in n.inputs]
    nonneg = all(bounds[i].nonneg for i in n.inputs)
    if n.op in SYNAPTIC and nonneg:
        # Inputs in [0, b] (unsigned spikes): W x + bias lies in [-W- b, W+ b] + bias, so
        # |W x + bias| <= max(W+ b, W- b) + |bias|, about half of |W| b (a bit per layer).
        w = n.params["weight_q"].astype(np.float64)
        parts = [
            rule(Node(n.name, n.op, n.inputs, n.output, n.attrs, {**n.params, "weight_q": p}),
                 steps, T, totals)
            for p in (np.maximum(w, 0), np.maximum(-w, 0))
        ]  # fmt: skip
        res = tuple(np.maximum(a, b) for a, b in zip(*parts, strict=True))
    else:
        res = rule(n, steps, T, totals)
    if len(res) > 2:
        total = res[2]
    elif n.op in MOVES:
        total = rule(n, totals, T, totals)[0]
    else:
        total = T * res[0]
    if n.op == "if":
        nonneg = not (n.attrs.get("signed") or n.attrs.get("bipolar"))
        if kind_of(n) == SDN:  # a shifted level, or a capped pair's, may go below 0 (_sdn)
            nonneg = n.attrs.get("state_exp", 0) == 0 and "sdn_cap_q" not in n.params
    elif n.op == "scale":
        nonneg = nonneg and n.attrs["factor"] >= 0
    elif n.op == "channel_scale":
        nonneg = nonneg and bool(np.all(n.params["factor"] >= 0))
    elif n.op == "maxpool2d":
        # max(S_t) of nondecreasing running sums never falls: its steps stay in [0, b]; a
        # sigma-delta tournament's levels do go below 0 (see _maxpool)
        nonneg = nonneg and kind_of(n) != SDN
    elif n.op not in MOVES:
        nonneg = False  # synapses, adds, other EC operators (their steps swing both ways)
    return NodeBounds(res[0], np.broadcast_to(total, res[0].shape), float(res[1]), nonneg)


def range_bounds(graph: Graph, max_timesteps: int) -> dict[str, NodeBounds]:
    """Bounds of every node's output for T <= max_timesteps, in graph order (inputs first)."""
    out = input_bounds(graph, max_timesteps, input_bits(graph))
    for n in graph.nodes:
        out[n.output] = node_bounds(n, out, max_timesteps)
    return out


def prove_ranges(
    graph: Graph, max_timesteps: int, state_bits: int | None = None, target: str = ""
) -> dict[str, object]:
    """Raise CapabilityExceeded naming the first node that could overflow `state_bits` (the
    graph's own by default), and by how many bits; return the peak."""
    state_bits = state_bits or graph.meta["quantization"]["state_bits"]
    limit = int_limit(state_bits)
    peak: dict[str, object] = {"value": 0, "node": None}
    bounds = range_bounds(graph, max_timesteps)
    sums = not holds_levels(graph)  # a level output is held as it is, not summed over steps
    for n in graph.nodes:
        worst = bounds[n.output].worst(sums and n.output in graph.outputs)
        if worst > limit:
            extra = math.ceil(math.log2((worst + 1) / (limit + 1)))
            raise OverflowWithinSteps(
                f"node '{n.name}' ({n.op}) can reach {worst:.0f} within {max_timesteps} steps, "
                f"beyond the {limit} of {state_bits}-bit state{target} ({extra} bit"
                f"{'s' if extra > 1 else ''} more); lower --max-T or the weight bits"
            )
        if worst > peak["value"]:
            peak = {"value": int(worst), "node": n.name}
    return peak


@bound("conv_transpose2d")
def _conv_transpose(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple:
    a = node.attrs
    w, bias = _abs(node, "weight_q"), _abs(node, "bias_q")
    geo = (a["strides"], a["pads"], a["dilations"], a["group"], a["output_padding"])
    step = K.conv_transpose2d(b[0][None], w, bias, *geo)[0]
    return step, 0.0, K.conv_transpose2d(c[0][None], w, T * bias, *geo)[0]
