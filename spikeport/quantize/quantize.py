"""Float SNN (stage "snn") -> integer SNN (stage "int") for a target profile.

Walks the graph once, carrying the real scale of every tensor:
  input      int8 codes, scale = max|x| / 127 over the calibration data
  dense/conv folds its input scale into the weights (so spikes stay +-1 and a spike's value
             lambda never appears at run time), then int8 weights per output channel when the
             layer feeds neurons only, or (profiles without fold_add, current limits or layer
             thresholds) readers that requantize every element: an add's multipliers, an EC
             function's requant_q, also through reshapes and transposes (a transformer's
             residual, LayerNorm, GELU); per tensor otherwise (a matmul, a graph output), int32 bias
  if         threshold_q = round(theta / input scale); its spikes then carry theta_q * scale
             (a graded neuron's count k carries k times that: the range proof bounds it by K)
  avgpool    sums windows: scale / (kh * kw); maxpool, reshape, concat move scales with values
  add        integer multipliers bring every input to a common output scale (from the output's
             calibrated peak; coarser where synapses read it, so their neurons provably fit)
Then the range analysis proves every value fits its bits for T <= max_timesteps.

A profile may ask for more (all off for the reference profile): `neuron_kind` gives the
graph's neurons that kind first; `layer_threshold` picks per-channel weight scales that give
every neuron of a layer one integer threshold; `max_current` coarsens a layer's weight scale
until its proven per-step current (and an output's T-step sum) fits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spikeport.batch import Batch, is_integer, named, size, take
from spikeport.convert.fold import fold_channel_scales
from spikeport.errors import BadInput, CapabilityExceeded, OverflowWithinSteps
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import (
    ELEMENT_MOVES,
    ROW_LAYERS,
    attr,
    keeps_channels,
    spike_levels,
    value_source,
)
from spikeport.quantize import rounding
from spikeport.quantize.activity import calibration_activity
from spikeport.quantize.outliers import join_outlier_inputs, split_outlier_inputs
from spikeport.quantize.profiles import Profile, check_capabilities
from spikeport.quantize.ranges import BOUNDS, NodeBounds, input_bounds, node_bounds, prove_ranges
from spikeport.quantize.scales import (
    channel_vector,
    compact,
    compact_rows,
    feature_vector,
    input_channels,
    read_requantized,
)
from spikeport.quantize.uniform_inputs import (
    drop_identity,
    insert_uniform_inputs,
    remove_uniform_inputs,
)
from spikeport.registry import registrar
from spikeport.sim.arith import int_limit, round_to_int
from spikeport.sim.kinds import (
    SDN,
    SDN_LEVEL_BITS,
    SDN_MAX_STATE_EXP,
    SDN_VTH_DIVISORS,
    holds_levels,
    kind_of,
    set_kind,
)

if TYPE_CHECKING:
    from spikeport.sim import Simulator

DEFAULT_MAX_TIMESTEPS = 64
ADD_OUT_BITS = 16  # an add's output scale: its calibrated peak spans 2^16 integer steps
ADD_MULT_BITS = 16  # the precision of an add's multipliers (wider only where _widening needs)
FINE_MULT_BITS = 7  # what a widened add's finest multiplier carries
INT64_SAFE = 2.0**62  # an add's sum of products, in int64 with a bit of headroom
MIN_CHANNEL_SCALE = 2.0**-8  # smallest per-channel weight scale, relative to the layer's largest


def _clipped_view(graph: Graph) -> Simulator:
    """The graph's ANN view with every IF neuron clipped to the range its rate can code
    (+-theta times its levels for a bipolar one; 0 up for the others, whose count never goes
    below 0, signed ones included): the values the spiking network can carry. Unclipped, a
    T-aware graph's view drifts from the ANN where refitted weights meet the ANN's own
    activations (docs/results.md: weight refit)."""
    from spikeport.sim import Simulator  # (spikeport.sim imports this package)
    from spikeport.sim.ops import Stateless

    sim = Simulator(graph, "ann")  # (its IF neurons run their reference kernels, wrapped here)

    def clipped(node: Node, k: Callable) -> Callable:
        if node.op != "if" or kind_of(node) == SDN:  # (SDN sends changes, not a rate)
            return k
        top = node.params["threshold"].astype(np.float64) * spike_levels(node)
        low = -top if node.attrs.get("bipolar") else 0.0
        return Stateless(lambda x: np.clip(k(x), low, top))

    sim.kernels = [(n, clipped(n, k)) for n, k in sim.kernels]
    return sim


PEAK_SAMPLES, PEAK_BATCH = 256, 16  # calibrated peaks: this many samples, in batches of this


@dataclass
class _Ctx:
    graph: Graph
    profile: Profile
    scales: dict[str, np.ndarray]
    calib_x: Batch | None = None
    _peaks: dict[str, float] | None = None
    _sums: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)  # for `mean`
    _grams: dict[tuple, np.ndarray] = field(default_factory=dict)  # for `integer_gram`
    weight_rounding: str = rounding.NEAREST  # rounding.ROUNDINGS
    max_timesteps: int = DEFAULT_MAX_TIMESTEPS
    bounds: dict[str, NodeBounds] = field(default_factory=dict)  # proven, of quantized nodes
    notes: list[str] = field(default_factory=list)  # what quantize left out, for the artifact

    def peak(self, tensor: str) -> float:
        """max |value| of `tensor` in the ANN view of the calibration data (computed once).

        Streamed over small batches, keeping only each tensor's running max (the simulator's
        observer sees every tensor and keeps none): recording every tensor of all
        PEAK_SAMPLES at once took GBs on a MobileNetV2 at 64x64 (issue 20)."""
        if self._peaks is None:
            from spikeport.convert.refit import input_gram  # (it imports spikeport.sim)

            sim, peaks, sums = _clipped_view(self.graph), {}, self._sums
            weighed = self._weighed_layers()
            averaged = {  # the tensors whose means _mean_error reads
                n.inputs[0]
                for n in self.graph.nodes
                if n.op == "dense" and _bipolar_fed(self.graph, n.inputs[0])
            }

            def see(name: str, v: np.ndarray) -> None:
                peaks[name] = max(peaks.get(name, 0.0), float(np.abs(v).max(initial=0)))
                if name in averaged:  # batch first, features last
                    total, count = sums.get(name, (0.0, 0))
                    part = v.reshape(-1, v.shape[-1]).sum(axis=0, dtype=np.float64)
                    sums[name] = (total + part, count + v.size // v.shape[-1])
                for key, layer in weighed.get(name, []):
                    gram = input_gram(layer, v).numpy()
                    self._grams[key] = self._grams[key] + gram if key in self._grams else gram

            n = min(size(self.calib_x), PEAK_SAMPLES)
            for start in range(0, n, PEAK_BATCH):
                part = take(self.calib_x, slice(start, min(n, start + PEAK_BATCH)))
                sim.run(part, 1, observe=see)
            self._peaks = peaks
        return self._peaks[tensor]

    def _weighed_layers(self) -> dict[str, list[tuple[tuple, Node]]]:
        """input tensor -> [(Gram key, a layer that reads it)]: the layers whose rounding
        `peak`'s pass weighs (rounding.weighed_layers), none unless they round with feedback."""
        if self.calib_x is None or self.weight_rounding != rounding.FEEDBACK:
            return {}
        layers, why_not = rounding.weighed_layers(self.graph)
        self.notes.extend(why_not)
        by_input: dict[str, list[tuple[tuple, Node]]] = {}
        for key, layer in layers.items():
            by_input.setdefault(layer.inputs[0], []).append((key, layer))
        return by_input

    def integer_gram(self, node: Node) -> np.ndarray | None:
        """The second moments of `node`'s integer inputs, (groups, cols, cols), over the same
        samples and pass as `peak`; None where that pass did not weigh them, or where the
        input's scale is not known yet (ext.py's _uniform_room probes a layer before its
        input's)."""
        if node.op not in ROW_LAYERS or node.inputs[0] not in self.scales:
            return None
        if self.weight_rounding != rounding.FEEDBACK or self.calib_x is None:
            return None
        self.peak(node.inputs[0])
        gram = self._grams.get(rounding.gram_key(node))
        if gram is None:
            return None
        if node.op == "dense":
            scale = dense_input_scale(self, node)
        else:
            kernel = np.prod(node.params["weight"].shape[2:])
            scale = np.repeat(conv_input_scale(self, node), kernel)
        return rounding.integer_gram(gram, scale)

    def mean(self, tensor: str) -> np.ndarray:
        """The mean of a dense layer's bipolar-fed input per feature (its last axis), over the
        same samples and pass as `peak`."""
        self.peak(tensor)
        total, count = self._sums[tensor]
        return np.asarray(total) / max(count, 1)

    def scale_in(self, node: Node, i: int = 0) -> np.ndarray:
        return self.scales[node.inputs[i]]

    def shape_in(self, node: Node, i: int = 0) -> tuple[int, ...]:
        return self.graph.shape(node.inputs[i])

    def per_channel(self, node: Node) -> bool:
        """Per-output-channel weight scales only where neurons absorb them into thresholds,
        directly or behind a max pool of the currents (which a positive per-channel scale
        passes: the max of scaled values is the scaled max)."""
        users = self.graph.consumers(node.output)
        return (
            bool(users)
            and node.output not in self.graph.outputs
            and all(self.per_channel_if(u) or self._pools_for_neurons(u) for u in users)
        )

    def _pools_for_neurons(self, user: Node) -> bool:
        """A max pool that only neurons absorbing per-channel scales read."""
        if user.op != "maxpool2d" or user.output in self.graph.outputs:
            return False
        readers = self.graph.consumers(user.output)
        return bool(readers) and all(self.per_channel_if(r) for r in readers)

    def absorbing_neurons(self, node: Node) -> list[Node]:
        """The nodes that read `node`'s output, or read it through a max pool (per_channel)."""
        out = []
        for user in self.graph.consumers(node.output):
            out += self.graph.consumers(user.output) if self._pools_for_neurons(user) else [user]
        return out

    def channel_weights(self, node: Node) -> bool:
        """Per-output-channel weight scales: where neurons absorb them (`per_channel`), or,
        on a profile whose ops requantize every element on their own (no fold_add, per-step
        current limit or layer threshold), where every reader does so, directly or through
        reshapes and transposes: an add (one multiplier per channel in `mult_q`), or an
        EC function that requantizes its running mean (`requant_q`, one per element)."""
        if self.per_channel(node):
            return True
        if not self.profile.requantizes_elements:
            return False
        return read_requantized(self.graph, node.output, self.per_channel_if)

    def per_channel_if(self, user: Node) -> bool:
        """A neuron that absorbs per-channel scales into its thresholds."""
        return (
            user.op == "if"
            and user.output not in self.graph.outputs
            and keeps_channels(self.graph, user.output)
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
        if ctx.channel_weights(node)
        else (np.full(len(w_eff), top))
    )
    if ctx.profile.layer_threshold and ctx.per_channel(node):
        s_w = _uniform_threshold_scales(ctx, node, absmax)
    _store_weights(ctx, node, w_eff, s_w)
    if ctx.profile.max_current is None:
        return s_w
    return _fit_current(ctx, node, w_eff, s_w)


def _current_limit(ctx: _Ctx, node: Node) -> int:
    """The profile's per-step current limit; an output must also hold T steps of it, unless
    it is a level (kind "sdn": the target holds the value itself, not a sum over steps)."""
    limit = int(ctx.profile.max_current or 0)
    if node.output in ctx.graph.outputs and not holds_levels(ctx.graph):
        limit = min(limit, int_limit(ctx.profile.state_bits) // ctx.max_timesteps)
    return limit


def _fit_current(ctx: _Ctx, node: Node, w_eff: np.ndarray, s_w: np.ndarray) -> np.ndarray:
    """Coarsen the weight scale of the output channels whose proven per-step current exceeds
    the profile's `max_current` (fewer effective weight bits there), until every one fits."""
    limit = _current_limit(ctx, node)
    rule = BOUNDS[node.op]
    for _ in range(8):  # rounding can leave a channel just above the limit: go again
        b = ctx.bounds[node.inputs[0]]
        out = rule(node, [b.step], ctx.max_timesteps, [b.total])[0]
        axes = tuple(range(out.ndim - 1)) if node.op == "dense" else tuple(range(1, out.ndim))
        peak = np.broadcast_to(out.max(axis=axes), s_w.shape) if axes else out
        over = np.maximum(peak / limit, _threshold_over(ctx, node, s_w))
        over = np.maximum(over, _bias_over(ctx, node, s_w))
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
    return _readers_max(ctx, node, "threshold")


def _readers_max(ctx: _Ctx, node: Node, key: str) -> np.ndarray:
    """(O,) the largest |param `key`| of the nodes that read `node` (through a max pool of its
    currents too: absorbing_neurons), per output channel."""
    axis = -1 if node.op == "dense" else 0
    top = np.zeros(ctx.graph.shape(node.output)[axis])
    for user in ctx.absorbing_neurons(node):
        shape = ctx.graph.shape(user.inputs[0])  # a max pool's output: the same channels
        t = np.abs(np.broadcast_to(user.params[key], shape).astype(np.float64))
        top = np.maximum(top, np.moveaxis(t, axis, 0).reshape(len(top), -1).max(1))
    return top


def _bias_over(ctx: _Ctx, node: Node, s_w: np.ndarray) -> np.ndarray:
    """How far each channel's integer bias is above the profile's `neuron_bias_bits` (0 where
    the profile has no such register): a graph output's bias as it is; in front of capped
    sigma-delta neurons the mantissas of their bias and of the pair's offset (bias - cap),
    at the state_exp _sdn_if will give the layer at these scales."""
    bits = ctx.profile.neuron_bias_bits
    none = np.zeros_like(s_w)
    if bits is None:
        return none
    bias = np.abs(node.params["bias_q"].astype(np.float64)).reshape(-1)
    bias = bias if bias.size == s_w.size else np.full_like(s_w, bias.max(initial=0))
    if node.output in ctx.graph.outputs:
        return bias / int_limit(bits)
    users = ctx.graph.consumers(node.output)
    if not users or any(kind_of(u) != SDN or "sdn_cap" not in u.params for u in users):
        return none
    cap = _readers_max(ctx, node, "sdn_cap")
    mantissa = (bias + cap / s_w) / 2.0 ** sdn_state_exp(float((cap / s_w).max(initial=1)))
    return mantissa / int_limit(bits)


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
    steps = w_eff / s_w.reshape(shape)
    gram = ctx.integer_gram(node)
    if gram is None:
        w_q = np.clip(round_to_int(steps), -lim, lim)
    else:
        w_q = rounding.round_with_feedback(steps.reshape(len(steps), -1), gram, lim)
    node.params["weight_q"] = w_q.reshape(steps.shape).astype(
        np.int8 if ctx.profile.weight_bits <= 8 else np.int32
    )
    bias = node.params["bias"] - _mean_error(ctx, node, w_eff, s_w)
    bias_q = round_to_int(bias / s_w)
    if np.abs(bias_q).max(initial=0) > int_limit(ctx.profile.bias_bits):
        raise ctx.refuse(node, f"bias needs more than {ctx.profile.bias_bits} bits at this scale")
    node.params["bias_q"] = bias_q.astype(np.int32)


def _mean_error(ctx: _Ctx, node: Node, w_eff: np.ndarray, s_w: np.ndarray) -> np.ndarray | float:
    """The mean error the rounded weights make on a dense layer's output, (O,) real units,
    where bipolar neurons feed it: (W_q s_w - W) E[x] (Nagel et al. 2019, "Data-free
    quantization", bias correction), E[x] in input integer units over the calibration data.
    A neuron that codes x - c (tune's centring) sends about -c / theta every step, the same
    in every sample: its readers' rounded weights would otherwise turn it into an error of
    the same size every step. Measured on all-MiniLM-L6-v2 (1-bit, T = 16, 16 test
    sentences), sentence cosine in integer mode: centred 0.9759 -> 0.9790 (float mode 0.9805,
    12-bit weights 0.9801), not centred 0.9762 -> 0.9765."""
    if node.op != "dense" or not _bipolar_fed(ctx.graph, node.inputs[0]) or ctx.calib_x is None:
        return 0.0
    s_x = dense_input_scale(ctx, node)
    mean_codes = ctx.mean(node.inputs[0]) / s_x
    w_q = node.params["weight_q"].astype(np.float64) * s_w[:, None]
    return (w_q - w_eff) @ mean_codes


def _bipolar_fed(graph: Graph, tensor: str) -> bool:
    """`tensor` holds a bipolar neuron's spikes, directly or through element moves."""
    prod = value_source(graph, tensor)
    return prod is not None and prod.op == "if" and bool(prod.attrs.get("bipolar"))


# How far a dense layer's input scale may vary along the axes it does not weigh apart and
# still count as one per feature (the mean): as far as a threshold of 64 integer steps rounds.
NEAR_SCALE = 2.0**-7


def dense_input_scale(ctx: _Ctx, node: Node) -> np.ndarray:
    """The scale of each input feature of a dense node. A neuron's spikes read after a
    transpose (ResMLP's token mixing reads neurons over per-channel-scaled currents) carry
    their threshold rounded to steps that vary along the non-feature axes: within NEAR_SCALE
    of each other they count as their mean; further apart the node is refused."""
    scale, shape = ctx.scale_in(node), ctx.shape_in(node)
    s_x = feature_vector(scale, shape)
    if s_x is None:
        rows = np.broadcast_to(scale, shape).reshape(-1, shape[-1])
        mean = rows.mean(axis=0)
        if np.all(np.abs(rows / mean - 1) <= NEAR_SCALE):
            return mean
        raise ctx.refuse(node, "input scale varies along non-feature axes")
    return s_x


def dense_weights(ctx: _Ctx, node: Node) -> np.ndarray:
    """The real weights of a dense node with its input scale folded in, (out, in)."""
    return node.params["weight"].astype(np.float64) * dense_input_scale(ctx, node)[None, :]


def conv_input_scale(ctx: _Ctx, node: Node) -> np.ndarray:
    """The scale of each input channel of a conv2d node, (C,)."""
    s_x = channel_vector(ctx.scale_in(node), ctx.shape_in(node))
    if s_x is None:
        raise ctx.refuse(node, "input scale varies inside a channel")
    return s_x


def conv_weights(ctx: _Ctx, node: Node) -> np.ndarray:
    """The real weights of a conv2d node with its input scale folded in, (O, C/g, kh, kw)."""
    w = node.params["weight"].astype(np.float64)
    s_x = conv_input_scale(ctx, node)
    return w * s_x[input_channels(w.shape, node.attrs["group"])][:, :, None, None]


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
    # Coarser if needed so that the coarsest input's multiplier fits the profile's bits, that
    # the add's own worst value fits the state bits, and so do the sums of it that pools and
    # neurons take (inputs that nearly cancel: PoolFormer's pool(x) - x has a calibrated peak
    # far below its inputs'), and that the synapses that read the add (if any) fit them.
    bits = min(ADD_MULT_BITS, ctx.profile.mult_bits)
    s_y = max(
        ctx.peak(node.output) / 2**ADD_OUT_BITS,
        max(float(s.max()) for s in ins) / int_limit(bits),
        _worst_value(ctx, node, ins)
        * _sum_gain(ctx, node)
        / (0.9 * int_limit(ctx.profile.state_bits)),
        _synapse_scale(ctx, node, ins),
        1e-30,
    )
    ratio = np.stack(ins) / s_y
    top = int(math.ceil(math.log2(float(ratio.max()))))
    shift = max(0, bits - 2 - top)  # one bit of headroom: mult < 2^(bits-1)
    shift += _widening(ctx, node, ratio, shift, s_y)
    mult = round_to_int(ratio * 2.0**shift)
    if mult.max() > int_limit(ctx.profile.mult_bits):
        raise ctx.refuse(node, f"inputs differ in scale by more than {ctx.profile.mult_bits} bits")
    for i in sorted({int(k) for k in np.argwhere(mult == 0)[:, 0]}):
        _below_resolution(ctx, node, i, float(ratio[i].min()) * 2.0**shift, s_y)
    node.params["mult_q"] = compact_rows(mult).astype(np.int32)
    node.attrs["shift"] = shift
    return np.full(ins[0].shape, s_y)


def _widening(ctx: _Ctx, node: Node, ratio: np.ndarray, shift: int, s_y: float) -> int:
    """Extra shift for an add whose finest input would get a multiplier of fewer than
    FINE_MULT_BITS bits at the ADD_MULT_BITS precision, a gain error above 0.4 % (RepGhostNet:
    a small branch added to a coarse one; the inliers of an outlier split): enough for
    that input's multiplier to carry FINE_MULT_BITS bits, the coarse multipliers widening up
    to the profile's mult_bits, where the proof bounds every product sum in int64. Inputs
    below half an output step are left out instead (_below_resolution), not widened for."""
    live = [i for i, name in enumerate(node.inputs) if not _left_out(ctx, name, s_y)]
    finest = min((float(ratio[i].min()) for i in live), default=0.0) * 2.0**shift
    if not live or finest >= 2**FINE_MULT_BITS or finest <= 0:
        return 0
    extra = math.ceil(math.log2(2**FINE_MULT_BITS / finest))
    room = ctx.profile.mult_bits - 2 - int(math.ceil(math.log2(float(ratio.max())))) - shift
    extra = max(0, min(extra, room))
    mult = np.abs(ratio) * 2.0 ** (shift + extra)
    worst = sum(
        float((m * ctx.bounds[t].step).max()) for m, t in zip(mult, node.inputs, strict=True)
    )
    return extra if worst < INT64_SAFE else 0


def _left_out(ctx: _Ctx, tensor: str, s_y: float) -> bool:
    """An add input whose whole calibrated range is below half the output's step."""
    return ctx.peak(tensor) < 0.5 * s_y


def _below_resolution(ctx: _Ctx, node: Node, i: int, step: float, s_y: float) -> None:
    """An input whose multiplier rounds to 0. Where its whole calibrated range is below half
    an output step (ConvNeXt's layer scale at 1e-6, a branch that barely contributes) it is
    left out, recorded in the artifact; otherwise refuse, saying how many bits it needs."""
    name = node.inputs[i]
    if _left_out(ctx, name, s_y):
        note = f"node '{node.name}' (add): input '{name}' (peak {ctx.peak(name):.3g}) is below "
        ctx.notes.append(note + f"half an output step ({s_y:.3g}) and is left out")
        return
    need = max(1, math.ceil(math.log2(0.5 / max(step, 1e-300))))
    raise ctx.refuse(
        node,
        f"input '{name}' is below the resolution of the output: its multiplier needs "
        f"{need} more bits than the {ctx.profile.mult_bits} the profile has",
    )


def _synapse_scale(ctx: _Ctx, node: Node, ins: list[np.ndarray]) -> float:
    """The finest output scale of an add read by synapses (a dense or conv reading the add's
    values, not spikes: MobileNetV2's linear-bottleneck residuals feed 1x1 convs) at which
    their neurons' potentials (or an output's sum) provably fit the state bits for T steps.

    An add read by neurons only may have 2^ADD_OUT_BITS steps over its calibrated peak; a
    synapse multiplies that by its weights and fan-in, and its neuron sums T steps of it:
    MobileNetV2's 16-bit residuals overflowed int32 at T = 1. The reader's integer weights
    w_q = w / a do not depend on this scale (it is one scale for the whole add, folded into
    the reader's weight scale s_w = a * s_y); its bias, threshold and the add's worst value
    R (real units, from its inputs' proven bounds) are all divided by s_y. So with W1 the sum
    of |w_q| into one neuron, theta + T (W1 (R / s_y + 1) + |b| / s_w) <= limit solves for s_y.
    Where the scale this leaves has fewer steps over the calibrated peak than an input code,
    the layer needs more state bits than the target has: refuse, saying how many."""
    readers = [u for u in ctx.graph.consumers(node.output) if u.op in ("dense", "conv2d")]
    if not readers:
        return 0.0
    T, lim = ctx.max_timesteps, int_limit(ctx.profile.weight_bits)
    limit = 0.9 * int_limit(ctx.profile.state_bits)  # margin for the rounding of w, b, theta
    worst = _worst_value(ctx, node, ins)
    need = 0.0
    for u in readers:
        w = np.abs(u.params["weight"].astype(np.float64)).reshape(len(u.params["weight"]), -1)
        top = max(float(w.max(initial=0)), 1e-300) / lim
        a = np.maximum(w.max(axis=1) / lim, top * MIN_CHANNEL_SCALE)
        a = a if ctx.channel_weights(u) else np.full(len(w), top)
        w1 = np.minimum(np.floor(w / a[:, None] + 0.5), lim).sum(axis=1)
        bias = np.abs(u.params["bias"].astype(np.float64)) / a
        theta = _channel_thresholds(ctx, u) / a if ctx.per_channel(u) else 0.0
        room = limit - T * w1
        if room.min() <= 0:
            raise ctx.refuse(u, f"{T} steps of its weights alone exceed the state bits")
        need = max(need, float(((theta + T * (w1 * worst + bias)) / room).max()))
    steps = ctx.peak(node.output) / need if need > 0 else np.inf
    floor = 2 ** (ctx.profile.input_bits - 1)
    if steps < floor:
        bits = math.ceil(math.log2(floor / steps))
        raise OverflowWithinSteps(
            f"node '{node.name}' ({node.op}): read by the synapses of '{readers[0].name}', its "
            f"output keeps {steps:.0f} integer steps over its calibrated range for T <= {T}, "
            f"fewer than an input code's {floor}: {bits} more state bit{'s' if bits > 1 else ''}"
            " needed, or a lower --max-T"
        )
    return need


def _sum_gain(ctx: _Ctx, node: Node) -> float:
    """How far the add's widest reader multiplies its values, at least 1: an average pool's
    window or a mean's reduced axes (summed in integers: their 1 / count lives in the output
    scale), what an op passing them on multiplies them by (passing_gain); times --max-T (and
    the readers' summing_reach) where a reader keeps running sums of the add or of that (a
    squeeze-excite gate pooling a residual in MediaPipe's selfie segmenter overflowed there,
    a PReLU then a max pool after a residual in its palm detector, and a PReLU then a 2x
    bilinear resize then a neuron in the same)."""
    shape, gain, T = ctx.graph.shape(node.output), 1.0, ctx.max_timesteps
    for u in ctx.graph.consumers(node.output):
        g = passing_gain(ctx.graph, u) or 1.0
        if u.op == "avgpool2d":
            g = float(np.prod(u.attrs["kernel"]))
        elif u.op in ("reduce_mean", "reduce_sum"):
            g = float(np.prod([shape[a] for a in u.attrs["axes"]]))
        f = max(summing_factor([u]), summing_reach(ctx.graph, u.output))
        gain = max(gain, g * (T * f if f else 1.0))
    return gain


def passing_gain(graph: Graph, node: Node) -> float:
    """How far `node` multiplies its input's integers as it passes them on with no
    requantization, 0 if it does not: data movement 1, a PReLU its steepest slope (at least
    1), a linear resize 2^bits of its integer weights (each output row sums to 2^bits)."""
    if node.op in ELEMENT_MOVES or (node.op == "resize" and attr(node, "mode") == "nearest"):
        return 1.0
    if node.op == "prelu":
        return max(1.0, float(np.abs(node.params["slope"]).max()))
    if node.op == "resize":
        from spikeport.quantize.ext import resize_gain

        return resize_gain(node, graph.shape(node.inputs[0]))
    return 0.0


def summing_reach(graph: Graph, tensor: str) -> float:
    """The largest SUMMING_READERS factor of the readers of `tensor`, also past the ops that
    pass its integers on (each multiplying by its passing_gain); 0 when none keeps running
    sums. The caller multiplies by --max-T."""
    reach = 0.0
    for u in graph.consumers(tensor):
        g = passing_gain(graph, u)
        reach = max(reach, summing_factor([u]), g * summing_reach(graph, u.output) if g else 0.0)
    return reach


# Readers whose state is their input's running sum as it comes, and how far past T times the
# input's step it can reach (a max pool's state: 2 T b, ranges._maxpool). The EC functions
# keep their input's running sum S_t too (they requantize the mean S_t / t, not S_t): a
# MobileViT's LayerNorm after a residual add overflowed there.
EC_FUNCTIONS = ("layernorm", "softmax", "masked_softmax", "gelu", "tanh", "sigmoid",
                "hardsigmoid", "hardswish", "silu", "l2norm")  # fmt: skip
SUMMING_READERS = {"if": 1.0, "prelu": 1.0, "maxpool2d": 2.0} | dict.fromkeys(EC_FUNCTIONS, 1.0)


def summing_factor(nodes: list[Node]) -> float:
    """The largest SUMMING_READERS factor among `nodes`, 0 when none keeps running sums."""
    return max((SUMMING_READERS.get(n.op, 0.0) for n in nodes), default=0.0)


def _worst_value(ctx: _Ctx, node: Node, ins: list[np.ndarray]) -> float:
    """The add's worst |value| at one step in real units, from its inputs' proven bounds."""
    shape = ctx.graph.shape(node.output)
    terms = [
        np.broadcast_to(ctx.bounds[i].step * s, shape)
        for i, s in zip(node.inputs, ins, strict=True)
    ]
    return float(sum(terms).max(initial=0))


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
    if kind_of(node) == SDN:
        return _sdn_if(ctx, node)
    shape = ctx.graph.shape(node.output)
    s = compact(ctx.scale_in(node), shape)
    theta = node.params["threshold"].astype(np.float64)
    th_q = np.maximum(round_to_int(theta / s), 1)
    if th_q.max() > int_limit(ctx.profile.state_bits):
        raise ctx.refuse(node, f"threshold needs more than {ctx.profile.state_bits} bits")
    node.params["threshold_q"] = compact(th_q, shape).astype(np.int32)
    return th_q * s  # the real value one integer spike now carries


def _sdn_if(ctx: _Ctx, node: Node) -> np.ndarray:
    """Kind "sdn": the neuron's state is in its input current's integer units; its messages
    are that right-shifted by `state_exp` e (Lava's SigmaDelta state_exp), chosen so that the
    layer's cap (`sdn_cap`, set_kind; without one its proven peak) spans at most
    2^SDN_LEVEL_BITS message units, but at most 7 (sdn_state_exp; a wider cap spans more
    units): the output (a level) has the input's scale times 2^e.
    The cap in those units (`sdn_cap_q`) is a multiple of 2^e; the readers' weight scales
    then fit their per-step current to the cap's bound (_fit_current, ranges._sdn). Lava
    gives vth and bias as mantissas shifted left by e (16-bit bias), so both are multiples
    of 2^e here: the delta threshold, one integer a layer
    (one vth a population), is the finest channel's theta / scale rounded to one, at least
    one message unit; the bias of the synapses in front is rounded to a multiple."""
    shape = ctx.graph.shape(node.output)
    s = np.broadcast_to(compact(ctx.scale_in(node), shape), shape)
    cap = None
    if "sdn_cap" in node.params:  # the level spans the cap, not the proven input
        cap = np.broadcast_to(node.params["sdn_cap"].astype(np.float64), shape) / s
        peak = float(cap.max(initial=1))
    else:
        peak = float(ctx.bounds[node.inputs[0]].step.max(initial=1))  # proven, in state units
    node.attrs["state_exp"] = e = sdn_state_exp(peak)
    theta = np.broadcast_to(node.params["threshold"].astype(np.float64), shape)
    th = max(1, int(round_to_int(np.min(theta / s) / 2.0**e))) << e
    if th > int_limit(ctx.profile.state_bits):
        raise ctx.refuse(node, f"threshold needs more than {ctx.profile.state_bits} bits")
    node.params["threshold_q"] = np.full((1,) * len(shape), th, np.int32)
    if cap is not None:  # a multiple of 2^e, as Lava's bias mantissa (the pair's offset) is
        cap_q = np.maximum(round_to_int(cap / 2.0**e), 1).astype(np.int64) << e
        node.params["sdn_cap_q"] = compact(cap_q, shape).astype(np.int32)
    if e:
        _round_biases(ctx, node.inputs[0], e)
    return compact(s * 2.0**e, shape)


def sdn_state_exp(peak: float) -> int:
    """The state_exp at which `peak` state units span at most 2^SDN_LEVEL_BITS message units,
    but at most SDN_MAX_STATE_EXP (Lava's 3 bits: a wider peak spans more message units)."""
    return min(max(0, math.ceil(math.log2(max(peak, 1.0))) - SDN_LEVEL_BITS), SDN_MAX_STATE_EXP)


def _round_biases(ctx: _Ctx, tensor: str, e: int) -> None:
    """Round the biases that reach `tensor` unscaled (a dense / conv, or the owned synapses of
    a shift-0 add with multiplier 1, or those behind a concat or an unpadded average pool) to
    multiples of 2^e, and re-prove what they feed."""
    prod = ctx.graph.producer(tensor)
    if prod is None:
        return
    if prod.op in ("dense", "conv2d"):
        prod.params["bias_q"] = (round_to_int(prod.params["bias_q"] / 2.0**e) << e).astype(np.int32)
    elif prod.op == "add" and prod.attrs.get("shift", 0) == 0:
        for i, m in zip(prod.inputs, prod.params["mult_q"], strict=True):
            if np.all(m == 1):
                _round_biases(ctx, i, e)
    elif prod.op == "concat" or (prod.op == "avgpool2d" and not any(prod.attrs["pads"])):
        for i in prod.inputs:  # each bias reaches the neuron unchanged through these
            _round_biases(ctx, i, e)
    else:
        return
    ctx.bounds[prod.output] = node_bounds(prod, ctx.bounds, ctx.max_timesteps)


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
    graph: Graph,
    calib_x: Batch,
    profile: Profile,
    max_timesteps: int | None = None,
    weight_rounding: str = rounding.NEAREST,
) -> Graph:
    """Return the integer graph of a float spiking graph, proven free of overflow for
    T <= `max_timesteps`. A target that runs several neuron kinds gets the one that agrees most
    with the ANN on the calibration data (spikeport.quantize.choose).

    `max_timesteps` None (the CLI's default): DEFAULT_MAX_TIMESTEPS steps, or where those
    overflow, the longest power of two that proves and is at least the T the graph was
    converted for; the artifact's notes say so. A given number is proven or refused.
    `weight_rounding`: rounding.ROUNDINGS, how each weight picks its integer."""
    if graph.stage not in ("snn", "int"):
        raise BadInput(f"quantize needs a converted graph (stage 'snn'), got '{graph.stage}'")
    if max_timesteps is not None and max_timesteps < 1:
        raise BadInput(f"--max-T must be at least 1, got {max_timesteps}")
    if weight_rounding not in rounding.ROUNDINGS:
        raise BadInput(
            f"unknown weight rounding '{weight_rounding}'; known: {', '.join(rounding.ROUNDINGS)}"
        )
    asked = max_timesteps or DEFAULT_MAX_TIMESTEPS
    try:
        return _quantize_for(graph, calib_x, profile, asked, weight_rounding)
    except OverflowWithinSteps as e:
        fits, shorter = _largest_fitting_T(graph, calib_x, profile, asked, weight_rounding)
        if max_timesteps is None and fits >= int(graph.meta.get("default_timesteps", 1)):
            # a model converted for 8 steps need not be proven for 64, but the user hears of it
            note = f"proven free of overflow for T <= {fits}, not the default {asked}: {e}"
            shorter.meta["quantization"].setdefault("notes", []).append(note)
            return shorter
        hint = f" (--max-T {fits} fits)" if fits else " (not even --max-T 1 fits)"
        raise OverflowWithinSteps(f"{e}{hint}") from None


def _quantize_for(
    graph: Graph, calib_x: Batch, profile: Profile, max_timesteps: int, weight_rounding: str
) -> Graph:
    if profile.kind_profiles:
        from spikeport.quantize.choose import choose_kind

        return choose_kind(graph, calib_x, profile, max_timesteps, weight_rounding)
    return quantize_kind(graph, calib_x, profile, max_timesteps, weight_rounding=weight_rounding)


def _largest_fitting_T(
    graph: Graph, calib_x: Batch, profile: Profile, failed: int, weight_rounding: str
) -> tuple[int, Graph | None]:
    """The largest power of two below `failed` steps that the range proof passes (it only
    gets easier with fewer steps) and the graph quantized for it; 0 and None if none."""
    T = 1 << ((failed - 1).bit_length() - 1) if failed > 1 else 0
    while T >= 1:
        try:
            return T, _quantize_for(graph, calib_x, profile, T, weight_rounding)
        except CapabilityExceeded:
            T //= 2
    return 0, None


def quantize_kind(
    graph: Graph,
    calib_x: Batch,
    profile: Profile,
    max_timesteps: int = DEFAULT_MAX_TIMESTEPS,
    vth_divisor: int = SDN_VTH_DIVISORS[1],
    caps: Mapping[str, np.ndarray] | None = None,
    uniform_inputs: bool = True,
    weight_rounding: str = rounding.NEAREST,
) -> Graph:
    """quantize in the profile's own neuron kind (`vth_divisor`, `caps`: kind "sdn"'s, see
    set_kind; the caps are the calibrated peaks, measured here where not given). With
    `uniform_inputs` the graph outputs' weight layers read their input at one scale
    (uniform_inputs.py), unless its larger integers overflow where the plain ones prove:
    then without. `weight_rounding`: as quantize's."""
    if profile.neuron_kind == SDN and caps is None:
        from spikeport.convert.calibrate import activation_peaks

        caps = activation_peaks(graph, calib_x)
    args = (graph, calib_x, profile, max_timesteps, vth_divisor, caps, weight_rounding)
    if uniform_inputs:
        try:
            return _quantize_kind(*args, uniform=True)
        except OverflowWithinSteps:
            plain = _quantize_kind(*args, uniform=False)
            plain.meta["quantization"].setdefault("notes", []).append(
                "the output layers read their inputs at each channel's scale: requantized "
                f"to one scale (uniform_inputs) they would overflow within {max_timesteps} "
                "steps, so their weights keep each channel's input scale folded in"
            )
            return plain
    return _quantize_kind(*args, uniform=False)


def _quantize_kind(
    graph: Graph,
    calib_x: Batch,
    profile: Profile,
    max_timesteps: int,
    vth_divisor: int,
    caps: Mapping[str, np.ndarray] | None,
    weight_rounding: str,
    uniform: bool,
) -> Graph:
    out = set_kind(graph, profile.neuron_kind, vth_divisor, caps)  # a copy, in the kind
    join_outlier_inputs(out)  # quantized before: start from the layers as converted
    remove_uniform_inputs(out)
    if "channel_scale" not in profile.ops:  # into copies of the layers in front, where it can
        fold_channel_scales(out)
    for n in out.nodes:
        for k in [k for k in n.params if k.endswith("_q")]:
            del n.params[k]  # re-quantizing starts from the float params
    check_capabilities(out, profile)
    split = split_outlier_inputs(out, profile)
    uniform_in = insert_uniform_inputs(out, profile) if uniform else []
    ctx = _Ctx(
        out,
        profile,
        _input_scales(out, calib_x, profile.input_bits),
        calib_x,
        max_timesteps=max_timesteps,
        weight_rounding=weight_rounding,
    )
    # The range proof runs along: a handler may size its scale from its inputs' proven bounds.
    ctx.bounds = input_bounds(out, max_timesteps, profile.input_bits)
    for n in out.nodes:
        ctx.scales[n.output] = compact(HANDLERS[n.op](ctx, n), out.shape(n.output))
        if n.op == "add":  # fold_add may have re-quantized the synapses that feed it
            for i in n.inputs:
                prod = out.producer(i)
                if prod is not None and prod.op in ("dense", "conv2d"):
                    ctx.bounds[i] = node_bounds(prod, ctx.bounds, max_timesteps)
        ctx.bounds[n.output] = node_bounds(n, ctx.bounds, max_timesteps)
    uniform_in = drop_identity(out, uniform_in)
    for t in set(ctx.scales) - set(out.tensors):  # the dropped nodes' outputs
        del ctx.scales[t]
        ctx.bounds.pop(t, None)
    for o in out.outputs:
        # Class scores are compared as integers (argmax): one scale. Other outputs (boxes,
        # embeddings, maps) are read in real units by the simulator; a target's emitted code
        # reports one scale per output, so target profiles need one everywhere.
        if ctx.scales[o].size != 1 and (len(out.shape(o)) == 1 or profile.name != "sim"):
            why = (
                "its argmax needs one scale"
                if len(out.shape(o)) == 1
                else (f"target '{profile.name}' reports one scale per output")
            )
            raise CapabilityExceeded(f"graph output '{o}' has per-channel scales; {why}")
    out.stage, out.scales = "int", ctx.scales
    out.meta["quantization"] = {
        "target": profile.name,
        "weight_bits": profile.weight_bits,
        "bias_bits": profile.bias_bits,
        "state_bits": profile.state_bits,
        "mult_bits": profile.mult_bits,
        "input_bits": profile.input_bits,
        "weight_rounding": weight_rounding,
        "max_timesteps": max_timesteps,
        "input_rounding": "floor(x / scale + 1/2), clamped",
    }
    if profile.neuron_kind != "subtract":  # recorded only where it differs: old graphs unchanged
        out.meta["quantization"]["neuron_kind"] = profile.neuron_kind
    if profile.neuron_kind == SDN and any(kind_of(n) != SDN for n in graph.nodes if n.op == "if"):
        out.meta["quantization"]["sdn_vth_divisor"] = vth_divisor  # set here, not in finetune
    check_graph(out)
    if split:  # recorded only where it happened: other artifacts unchanged
        out.meta["quantization"]["outlier_inputs_split"] = split
    if uniform_in:  # recorded only where it happened: other artifacts unchanged
        out.meta["quantization"]["uniform_inputs"] = uniform_in
    if ctx.notes:  # recorded only where something was left out: other artifacts unchanged
        out.meta["quantization"]["notes"] = ctx.notes
    out.meta["quantization"]["proven_peak"] = prove_ranges(out, max_timesteps)
    if profile.record_activity:
        out.meta["quantization"]["activity"] = calibration_activity(out, calib_x, max_timesteps)
    return out


# Handlers of the sequence-model ops and of spikeport.ir.ext_ops register into the same table.
from spikeport.quantize import ext as _ext  # noqa: E402,F401
from spikeport.quantize import seq as _seq  # noqa: E402,F401
