"""Range analysis: prove that no integer value leaves its bits for T <= max_timesteps.

Each op has a bound rule mapping elementwise bounds of |input| to bounds of |output| (and of
any state it keeps over T steps). Bounds are computed with the simulator's own kernels on
|weights|, so they hold for every input the int8 encoding can produce.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikeport.batch import is_integer
from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph, Node
from spikeport.registry import registrar
from spikeport.sim import kernels as K
from spikeport.sim.arith import int_limit
from spikeport.sim.kinds import LAVA, LAVA_V_LIMIT, kind_of

# rule(node, per-step bounds of |inputs|, T, bounds of |inputs summed over t <= T steps|)
#   -> (per-step output bound, peak of kept state[, bound of the output summed over steps])
# Every bound array has the full per-sample shape. Without the third element the summed
# output is bounded by T times the per-step bound; data movement moves summed bounds as is.
BoundRule = Callable[..., tuple]
# Linear ops without a bias: the summed output is bounded by the rule applied to summed inputs.
MOVES = frozenset(
    {"reshape", "transpose", "take", "slice", "scale", "concat", "avgpool2d", "reduce_mean"}
    | {"channel_scale", "pad", "reduce_sum", "resize"}
)
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
    return out, 2.0 * T * float(b[0].max(initial=0))


@bound("add")
def _add(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple[np.ndarray, float]:
    mult = np.abs(node.params["mult_q"].astype(np.float64))
    total = sum(m * x for m, x in zip(mult, b, strict=True))
    return np.floor(total / 2 ** node.attrs.get("shift", 0)) + 1, 0.0


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
def _if(node: Node, b: list[np.ndarray], T: int, c: list[np.ndarray]) -> tuple[np.ndarray, float]:
    # v = v0 + (summed input) - theta * (net spikes): |v| <= theta/2 + c + T*theta; and, step by
    # step, v starts at theta/2 and moves by at most b per step: |v| <= theta + T*b.
    theta = np.broadcast_to(node.params["threshold_q"].astype(np.float64), b[0].shape)
    if kind_of(node) == LAVA:
        # Reset to zero: v <= theta before a step (else it fired), so at most theta + b after
        # it; v saturates at +-LAVA_V_LIMIT (the simulator models it, as Lava's v does).
        return np.ones_like(b[0]), float(np.minimum(theta + b[0], LAVA_V_LIMIT).max(initial=0))
    state = np.minimum(theta + T * b[0], theta / 2 + c[0] + T * theta)
    return np.ones_like(b[0]), float(state.max(initial=0))


def prove_ranges(
    graph: Graph, max_timesteps: int, state_bits: int | None = None, target: str = ""
) -> dict[str, object]:
    """Raise CapabilityExceeded naming the first node that could overflow `state_bits` (the
    graph's own by default); return the peak."""
    state_bits = state_bits or graph.meta["quantization"]["state_bits"]
    limit = int_limit(state_bits)
    in_max = float(int_limit(graph.meta["quantization"]["input_bits"]))
    # Integer inputs are token ids and 0/1 masks: their consumers (embed, masked softmax)
    # bound their outputs by their own tables, so the 1 here is never multiplied.
    bounds = {t.name: np.full(t.shape, 1.0 if is_integer(t) else in_max) for t in graph.inputs}
    peak: dict[str, object] = {"value": 0, "node": None}
    cums = {name: max_timesteps * b for name, b in bounds.items()}
    for n in graph.nodes:
        rule = BOUNDS[n.op]
        res = rule(n, [bounds[i] for i in n.inputs], max_timesteps, [cums[i] for i in n.inputs])
        out, state = res[0], res[1]
        if len(res) > 2:
            cums[n.output] = res[2]
        elif n.op in MOVES:
            cums[n.output] = rule(
                n, [cums[i] for i in n.inputs], max_timesteps, [cums[i] for i in n.inputs]
            )[0]
        else:
            cums[n.output] = max_timesteps * out
        bounds[n.output] = out
        worst = max(float(out.max(initial=0)), state)
        if n.output in graph.outputs:  # the output layer accumulates over T steps
            worst = max(worst, max_timesteps * float(out.max(initial=0)))
        if worst > limit:
            raise CapabilityExceeded(
                f"node '{n.name}' ({n.op}) can reach {worst:.0f} within {max_timesteps} steps, "
                f"beyond the {limit} of {state_bits}-bit state{target}; lower --max-T or the "
                "weight bits"
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
