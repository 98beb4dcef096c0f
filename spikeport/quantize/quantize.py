"""Float SNN (stage "snn") -> integer SNN (stage "int") for a target profile.

Walks the graph once, carrying the real scale of every tensor:
  input      int8 codes, scale = max|x| / 127 over the calibration data
  dense/conv folds its input scale into the weights (so spikes stay +-1 and a spike's value
             lambda never appears at run time), then int8 weights per output channel when the
             layer feeds neurons only (per tensor otherwise, so outputs share one scale), int32 bias
  if         threshold_q = round(theta / input scale); its spikes then carry theta_q * scale
  avgpool    sums windows: scale / (kh * kw); maxpool, reshape, concat move scales with values
  add        integer multipliers bring every input to a common output scale
Then the range analysis proves every value fits its bits for T <= max_timesteps.

A profile may ask for more (all off for the reference profile): `neuron_kind` gives the
graph's neurons that kind first; `layer_threshold` picks per-channel weight scales that give
every neuron of a layer one integer threshold; `max_current` coarsens a layer's weight scale
until its proven per-step current (and an output's T-step sum) fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikeport.batch import Batch, is_integer, named, take
from spikeport.errors import BadInput, CapabilityExceeded
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node
from spikeport.quantize.profiles import Profile, check_capabilities
from spikeport.quantize.ranges import BOUNDS, prove_ranges
from spikeport.quantize.scales import channel_vector, compact, feature_vector
from spikeport.registry import registrar
from spikeport.sim.arith import int_limit, round_to_int
from spikeport.sim.kinds import set_kind

DEFAULT_MAX_TIMESTEPS = 64
ADD_OUT_BITS = 16  # an add's output scale: its calibrated peak spans 2^16 integer steps
MIN_CHANNEL_SCALE = 2.0**-8  # smallest per-channel weight scale, relative to the layer's largest


@dataclass
class _Ctx:
    graph: Graph
    profile: Profile
    scales: dict[str, np.ndarray]
    calib_x: Batch | None = None
    _peaks: dict[str, float] | None = None
    max_timesteps: int = DEFAULT_MAX_TIMESTEPS
    bounds: dict[str, np.ndarray] = field(default_factory=dict)  # per-step |value| bounds

    def peak(self, tensor: str) -> float:
        """max |value| of `tensor` in the ANN view of the calibration data (computed once)."""
        if self._peaks is None:
            from spikeport.sim import Simulator

            sample = take(self.calib_x, slice(256))
            trace = Simulator(self.graph, "ann").run(sample, 1, record=True).trace
            self._peaks = {k: float(np.abs(v).max(initial=0)) for k, v in trace.items()}
        return self._peaks[tensor]

    def scale_in(self, node: Node, i: int = 0) -> np.ndarray:
        return self.scales[node.inputs[i]]

    def shape_in(self, node: Node, i: int = 0) -> tuple[int, ...]:
        return self.graph.shape(node.inputs[i])

    def per_channel(self, node: Node) -> bool:
        """Per-output-channel weight scales only where neurons absorb them into thresholds."""
        users = self.graph.consumers(node.output)
        return (
            bool(users)
            and node.output not in self.graph.outputs
            and all(u.op == "if" and u.output not in self.graph.outputs for u in users)
        )

    def refuse(self, node: Node, why: str) -> CapabilityExceeded:
        return CapabilityExceeded(f"node '{node.name}' ({node.op}): {why}")


Handler = Callable[[_Ctx, Node], np.ndarray]
HANDLERS: dict[str, Handler] = {}


handler = registrar(HANDLERS)


def _quantize_weights(ctx: _Ctx, node: Node, w_eff: np.ndarray) -> np.ndarray:
    """Store int weights and bias for real weights w_eff (input scale folded in); return the
    per-output scale (O,)."""
    lim = int_limit(ctx.profile.weight_bits)
    absmax = np.abs(w_eff.reshape(len(w_eff), -1)).max(axis=1)
    top = absmax.max() / lim if absmax.max() > 0 else 1.0
    # Per channel, but a near-dead channel's scale is floored so its threshold stays in range.
    s_w = (
        np.maximum(absmax / lim, top * MIN_CHANNEL_SCALE)
        if ctx.per_channel(node)
        else (np.full(len(w_eff), top))
    )
    if ctx.profile.layer_threshold and ctx.per_channel(node):
        s_w = _uniform_threshold_scales(ctx, node, absmax)
    _store_weights(ctx, node, w_eff, s_w)
    if ctx.profile.max_current is None:
        return s_w
    return _fit_current(ctx, node, w_eff, s_w)


def _current_limit(ctx: _Ctx, node: Node) -> int:
    """The profile's per-step current limit; an output must also hold T steps of it."""
    limit = int(ctx.profile.max_current or 0)
    if node.output in ctx.graph.outputs:
        limit = min(limit, int_limit(ctx.profile.state_bits) // ctx.max_timesteps)
    return limit


def _fit_current(ctx: _Ctx, node: Node, w_eff: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """Coarsen the weight scale of the output channels whose proven per-step current exceeds
    the profile's `max_current` (fewer effective weight bits there), until every one fits."""
    limit = _current_limit(ctx, node)
    rule = BOUNDS[node.op]
    for _ in range(8):  # rounding can leave a channel just above the limit: go again
        b = ctx.bounds[node.inputs[0]]
        out = rule(node, [b], ctx.max_timesteps, [ctx.max_timesteps * b])[0]
        axes = tuple(range(out.ndim - 1)) if node.op == "dense" else tuple(range(1, out.ndim))
        peak = np.broadcast_to(out.max(axis=axes), s_w.shape) if axes else out
        over = np.maximum(peak / limit, _threshold_over(ctx, node, s_w))
        if over.max(initial=0) <= 1:
            return s_w
        over = np.where(over > 1, over * 1.01, 1.0)  # a step past the limit: rounding
        if ctx.profile.layer_threshold and ctx.per_channel(node):
            theta = _channel_thresholds(ctx, node)
            s_w = theta / max(1, math.floor(round(float(theta[0] / s_w[0])) / over.max()))
        else:
            s_w = s_w * (over if ctx.per_channel(node) else over.max())
        _store_weights(ctx, node, w_eff, s_w)
    raise ctx.refuse(node, f"cannot fit its current within {limit} on target {ctx.profile.name}")


def _channel_thresholds(ctx: _Ctx, node: Node) -> np.ndarray:
    """(O,) the largest real threshold of the neurons that each output channel feeds."""
    axis = -1 if node.op == "dense" else 0
    shape = ctx.graph.shape(node.output)
    th = np.zeros(shape[axis])
    for user in ctx.graph.consumers(node.output):
        t = np.abs(np.broadcast_to(user.params["threshold"], shape).astype(np.float64))
        th = np.maximum(th, np.moveaxis(t, axis, 0).reshape(len(th), -1).max(1))
    return th


def _threshold_over(ctx: _Ctx, node: Node, s_w: np.ndarray) -> np.ndarray:
    """How far each channel's threshold in integer units (theta / s_w) is above the state
    limit, for the neurons this node feeds (0 where it feeds none)."""
    if not ctx.per_channel(node):
        return np.zeros_like(s_w)
    return _channel_thresholds(ctx, node) / s_w / int_limit(ctx.profile.state_bits)


def _uniform_threshold_scales(ctx: _Ctx, node: Node, absmax: np.ndarray) -> np.ndarray:
    """Per-channel weight scales s_c = theta_c / TH that give every neuron of the layer one
    integer threshold TH (targets with one threshold per population): the largest TH at
    which every channel's weights still fit the weight bits and TH the state bits."""
    theta = _channel_thresholds(ctx, node)
    lim = int_limit(ctx.profile.weight_bits)
    room = np.where(absmax > 0, lim * theta / np.maximum(absmax, 1e-300), np.inf)
    th = math.floor(min(float(room.min()), int_limit(ctx.profile.state_bits)))
    if th < 1:
        raise ctx.refuse(node, "its channels' thresholds and weights admit no common threshold")
    return theta / th


def _store_weights(ctx: _Ctx, node: Node, w_eff: np.ndarray, s_w: np.ndarray) -> None:
    lim = int_limit(ctx.profile.weight_bits)
    shape = (-1,) + (1,) * (w_eff.ndim - 1)
    node.params["weight_q"] = np.clip(round_to_int(w_eff / s_w.reshape(shape)), -lim, lim).astype(
        np.int8 if ctx.profile.weight_bits <= 8 else np.int32
    )
    bias_q = round_to_int(node.params["bias"] / s_w)
    if np.abs(bias_q).max(initial=0) > int_limit(ctx.profile.bias_bits):
        raise ctx.refuse(node, f"bias needs more than {ctx.profile.bias_bits} bits at this scale")
    node.params["bias_q"] = bias_q.astype(np.int32)


def dense_weights(ctx: _Ctx, node: Node) -> np.ndarray:
    """The real weights of a dense node with its input scale folded in, (out, in)."""
    s_x = feature_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies along non-feature axes")
    return node.params["weight"].astype(np.float64) * s_x[None, :]


def conv_weights(ctx: _Ctx, node: Node) -> np.ndarray:
    """The real weights of a conv2d node with its input scale folded in, (O, C/g, kh, kw)."""
    s_x = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies inside a channel")
    w = node.params["weight"].astype(np.float64)
    og, cg = w.shape[0] // node.attrs["group"], w.shape[1]
    cin = (np.arange(w.shape[0])[:, None] // og) * cg + np.arange(cg)[None, :]  # (O, C/g)
    return w * s_x[cin][:, :, None, None]


@handler("dense")
def _dense(ctx: _Ctx, node: Node) -> np.ndarray:
    return _quantize_weights(ctx, node, dense_weights(ctx, node))


@handler("conv2d")
def _conv(ctx: _Ctx, node: Node) -> np.ndarray:
    return _quantize_weights(ctx, node, conv_weights(ctx, node)).reshape(-1, 1, 1)


def _out_major(w: np.ndarray, group: int) -> np.ndarray:
    """ConvTranspose weights (C, O/g, kh, kw) -> (O, C/g, kh, kw), output channels first like
    conv2d's, so the per-output-channel machinery above applies as is."""
    c, og = w.shape[:2]
    w = w.reshape(group, c // group, og, *w.shape[2:]).swapaxes(1, 2)
    return w.reshape(group * og, c // group, *w.shape[3:])


def _in_major(w: np.ndarray, group: int) -> np.ndarray:
    """The inverse of _out_major: back to ONNX's (C, O/g, kh, kw)."""
    o, cg = w.shape[:2]
    w = w.reshape(group, o // group, cg, *w.shape[2:]).swapaxes(1, 2)
    return w.reshape(group * cg, o // group, *w.shape[3:])


@handler("conv_transpose2d")
def _conv_transpose(ctx: _Ctx, node: Node) -> np.ndarray:
    """As conv2d: input scale folded into the weights (one per input channel, axis 0), int8
    weights per output channel where neurons alone read the output, int32 bias."""
    if ctx.profile.max_current is not None:  # _fit_current reads weight_q mid-way, out-major
        raise ctx.refuse(node, "per-step current limits are not implemented for this op")
    s_x = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies inside a channel")
    g = node.attrs["group"]
    w_eff = node.params["weight"].astype(np.float64) * s_x[:, None, None, None]
    s_w = _quantize_weights(ctx, node, _out_major(w_eff, g))
    node.params["weight_q"] = _in_major(node.params["weight_q"], g)
    return s_w.reshape(-1, 1, 1)


@handler("avgpool2d")
def _avgpool(ctx: _Ctx, node: Node) -> np.ndarray:
    s_x = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies inside a channel")
    k = node.attrs["kernel"]
    return s_x.reshape(-1, 1, 1) / (k[0] * k[1])


@handler("maxpool2d")
def _maxpool(ctx: _Ctx, node: Node) -> np.ndarray:
    s_x = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies inside a channel; max needs one scale")
    return s_x.reshape(-1, 1, 1)


@handler("add")
def _add(ctx: _Ctx, node: Node) -> np.ndarray:
    """y = floor(sum_i mult_i * x_i / 2^shift): every input brought to one output scale, set
    from the output's calibrated range, with integer multipliers of at most `mult_bits`.
    A profile with `fold_add` (a target with no add) folds it into synapses instead."""
    if ctx.profile.fold_add:
        from spikeport.quantize.fold_add import fold_add

        return fold_add(ctx, node)
    shape = ctx.graph.shape(node.output)
    ins = np.broadcast_arrays(*[compact(ctx.scales[i], shape) for i in node.inputs])
    # Coarser if needed so that the coarsest input's multiplier fits the profile's bits.
    s_y = max(
        ctx.peak(node.output) / 2**ADD_OUT_BITS,
        max(float(s.max()) for s in ins) / int_limit(ctx.profile.mult_bits),
        1e-30,
    )
    ratio = np.stack(ins) / s_y
    top = int(math.ceil(math.log2(float(ratio.max()))))
    shift = max(0, ctx.profile.mult_bits - 2 - top)  # one bit of headroom: mult < 2^(bits-1)
    mult = round_to_int(ratio * 2.0**shift)
    if mult.max() > int_limit(ctx.profile.mult_bits):
        raise ctx.refuse(node, f"inputs differ in scale by more than {ctx.profile.mult_bits} bits")
    if (mult == 0).any():
        bad = node.inputs[int(np.argwhere(mult == 0)[0][0])]
        raise ctx.refuse(node, f"input '{bad}' is below the resolution of the output")
    node.params["mult_q"] = compact(mult, mult.shape).astype(np.int32)
    node.attrs["shift"] = shift
    return np.full(ins[0].shape, s_y)


@handler("concat")
def _concat(ctx: _Ctx, node: Node) -> np.ndarray:
    full = [np.broadcast_to(ctx.scales[i], ctx.graph.shape(i)) for i in node.inputs]
    return np.concatenate(full, axis=node.attrs["axis"])


@handler("reshape")
def _reshape(ctx: _Ctx, node: Node) -> np.ndarray:
    full = np.broadcast_to(ctx.scale_in(node), ctx.shape_in(node))
    return full.reshape(ctx.graph.shape(node.output))


@handler("if")
def _if(ctx: _Ctx, node: Node) -> np.ndarray:
    shape = ctx.graph.shape(node.output)
    s = compact(ctx.scale_in(node), shape)
    theta = node.params["threshold"].astype(np.float64)
    th_q = np.maximum(round_to_int(theta / s), 1)
    if th_q.max() > int_limit(ctx.profile.state_bits):
        raise ctx.refuse(node, f"threshold needs more than {ctx.profile.state_bits} bits")
    node.params["threshold_q"] = compact(th_q, shape).astype(np.int32)
    return th_q * s  # the real value one integer spike now carries


def input_scale(x: np.ndarray, bits: int) -> float:
    peak = float(np.abs(x).max()) if x.size else 0.0
    if not np.isfinite(peak) or peak == 0:
        raise BadInput("calibration data is all zeros or not finite; cannot set the input scale")
    return peak / int_limit(bits)


def _input_scales(graph: Graph, calib_x: Batch, bits: int) -> dict[str, np.ndarray]:
    """int8 codes for float inputs; integer inputs (token ids, masks) are not values: scale 1."""
    x = named(graph.inputs, calib_x)
    return {
        t.name: np.full((1,) * len(t.shape), 1.0 if is_integer(t) else input_scale(x[t.name], bits))
        for t in graph.inputs
    }


def quantize(
    graph: Graph, calib_x: Batch, profile: Profile, max_timesteps: int = DEFAULT_MAX_TIMESTEPS
) -> Graph:
    """Return the integer graph of a float spiking graph, proven free of overflow."""
    if graph.stage not in ("snn", "int"):
        raise BadInput(f"quantize needs a converted graph (stage 'snn'), got '{graph.stage}'")
    if max_timesteps < 1:
        raise BadInput(f"--max-T must be at least 1, got {max_timesteps}")
    out = set_kind(graph, profile.neuron_kind)  # a copy, in the target's neuron kind
    for n in out.nodes:
        for k in [k for k in n.params if k.endswith("_q")]:
            del n.params[k]  # re-quantizing starts from the float params
    check_capabilities(out, profile)
    ctx = _Ctx(
        out,
        profile,
        _input_scales(out, calib_x, profile.input_bits),
        calib_x,
        max_timesteps=max_timesteps,
    )
    if profile.max_current is not None:  # lava: one float input of int8 codes
        inp = out.input
        ctx.bounds[inp.name] = np.full(inp.shape, float(int_limit(profile.input_bits)))
    for n in out.nodes:
        ctx.scales[n.output] = compact(HANDLERS[n.op](ctx, n), out.shape(n.output))
        if profile.max_current is not None:
            ins = [ctx.bounds[i] for i in n.inputs]
            res = BOUNDS[n.op](n, ins, max_timesteps, [max_timesteps * b for b in ins])
            ctx.bounds[n.output] = np.broadcast_to(res[0], out.shape(n.output))
    for o in out.outputs:
        if ctx.scales[o].size != 1:
            raise CapabilityExceeded(
                f"graph output '{o}' has per-channel scales; its argmax needs one scale"
            )
    out.stage, out.scales = "int", ctx.scales
    out.meta["quantization"] = {
        "target": profile.name,
        "weight_bits": profile.weight_bits,
        "bias_bits": profile.bias_bits,
        "state_bits": profile.state_bits,
        "mult_bits": profile.mult_bits,
        "input_bits": profile.input_bits,
        "max_timesteps": max_timesteps,
        "input_rounding": "floor(x / scale + 1/2), clamped",
    }
    if profile.neuron_kind != "subtract":  # recorded only where it differs: old graphs unchanged
        out.meta["quantization"]["neuron_kind"] = profile.neuron_kind
    check_graph(out)
    out.meta["quantization"]["proven_peak"] = prove_ranges(out, max_timesteps)
    return out


# Handlers of the sequence-model ops and of spikeport.ir.ext_ops register into the same table.
from spikeport.quantize import ext as _ext  # noqa: E402,F401
from spikeport.quantize import seq as _seq  # noqa: E402,F401
