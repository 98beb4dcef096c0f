"""Joint quantisation of an add for targets whose only arithmetic is synapses (Profile.fold_add).

On such a target (SpiNNaker2) an add feeding neurons is no operation of its own: each of its
inputs becomes synapses into the neurons' population, with integer weight = the input's own
integer weight x the add's multiplier, and no floor shift (a shift is not a synapse). So the
add's output scale s_y is chosen from the weight limit, not from the calibrated range:

  weighted input  a dense / conv2d whose only consumer is this add: re-quantized straight at
                  s_y (w_q = round(w_eff / s_y), bias_q = round(b / s_y)), multiplier 1;
  other input     (spikes, or data movement of them) multiplier round(scale / s_y);
  s_y             per output channel (where neurons alone consume the add, so their
                  thresholds absorb it), the finest at which every composed weight fits:
                  first max(input peaks) / limit, then coarsened where two inputs that read
                  the same tensor (a residual: conv(x) + x) add up beyond the limit.

The reference simulator runs the result as any add (shift 0), so the integer graph computes
exactly what the synapses do. Profiles without fold_add never come here.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Node
from spikeport.quantize.quantize import _Ctx, conv_weights, dense_weights
from spikeport.quantize.scales import compact, compact_rows
from spikeport.sim.arith import int_limit, round_to_int
from spikeport.sim.ops import KERNELS

EFFECTIVE = {"dense": dense_weights, "conv2d": conv_weights}
MAX_COARSENING = 16  # rounds of coarsening before giving up (each one strictly coarsens)
CHUNK = 512  # impulses evaluated at once ...
IMPULSE_VALUES = 1 << 24  # ... and at most this many values per array (128 MiB of float64)


def _channel_axis(shape: tuple[int, ...]) -> int:
    """Channels of an image (C, H, W) lead; a dense layer's features are the last axis."""
    return 0 if len(shape) == 3 else len(shape) - 1


def _per_channel(values: np.ndarray, shape: tuple[int, ...], per_channel: bool) -> np.ndarray:
    """max |values| (full shape) per channel, broadcast back to the full shape (or one max)."""
    v = np.abs(np.broadcast_to(values, shape))
    if not per_channel:
        return np.full(shape, v.max(initial=0))
    ax = _channel_axis(shape)
    others = tuple(a for a in range(len(shape)) if a != ax)
    return np.broadcast_to(v.max(axis=others, keepdims=True, initial=0), shape).copy()


def _owned_synapse(ctx: _Ctx, node: Node, tensor: str) -> Node | None:
    """The dense / conv2d writing `tensor` when this add is its only reader."""
    prod = ctx.graph.producer(tensor)
    if prod is None or prod.op not in EFFECTIVE or tensor in ctx.graph.outputs:
        return None
    readers = ctx.graph.consumers(tensor)
    return prod if readers == [node] and node.inputs.count(tensor) == 1 else None


def _leaf(node: Node, k: int, syn: Node | None) -> str:
    """The tensor whose units become presynaptic for input k (locally: one op back)."""
    return syn.inputs[0] if syn is not None else node.inputs[k]


def _quantize_synapse(ctx: _Ctx, syn: Node, w_eff: np.ndarray, s_out: np.ndarray) -> None:
    """Store syn's integer weight and bias at output scale s_out (full output shape)."""
    lim = int_limit(ctx.profile.weight_bits)
    per_out = np.moveaxis(s_out, _channel_axis(s_out.shape), 0).reshape(len(w_eff), -1)[:, 0]
    shape = (-1,) + (1,) * (w_eff.ndim - 1)
    w_q = np.clip(round_to_int(w_eff / per_out.reshape(shape)), -lim, lim)
    syn.params["weight_q"] = w_q.astype(np.int8 if ctx.profile.weight_bits <= 8 else np.int32)
    bias_q = round_to_int(syn.params["bias"] / per_out)
    if np.abs(bias_q).max(initial=0) > int_limit(ctx.profile.bias_bits):
        raise ctx.refuse(syn, f"bias needs more than {ctx.profile.bias_bits} bits at this scale")
    syn.params["bias_q"] = bias_q.astype(np.int32)


def _composed_peak(
    ctx: _Ctx, node: Node, syns: list[Node | None], mult: np.ndarray, per_channel: bool
) -> np.ndarray:
    """Largest |composed integer weight| into each output channel from a leaf that two or more
    inputs read (a residual's conv and identity), evaluated together on impulses (exact
    integers). A leaf read by one input needs no check: its weights were clipped to the limit
    and its multiplier is at most the limit by the choice of s_y."""
    shape = ctx.graph.shape(node.output)
    peak = np.zeros(shape)
    leaves = [_leaf(node, k, s) for k, s in enumerate(syns)]
    for leaf in {x for x in leaves if leaves.count(x) > 1}:
        users = [k for k, x in enumerate(leaves) if x == leaf]
        n = int(np.prod(ctx.graph.shape(leaf)))
        chunk = max(1, min(CHUNK, IMPULSE_VALUES // max(n, int(np.prod(shape)))))
        for start in range(0, n, chunk):
            idx = np.arange(start, min(n, start + chunk))
            hot = np.zeros((len(idx), n))
            hot[np.arange(len(idx)), idx] = 1
            hot = hot.reshape((len(idx),) + ctx.graph.shape(leaf))
            total = sum(mult[k] * _response(ctx, syns[k], hot) for k in users)
            peak = np.maximum(peak, np.abs(total).max(axis=0))
    return _per_channel(peak, shape, per_channel)


def _response(ctx: _Ctx, syn: Node | None, hot: np.ndarray) -> np.ndarray:
    """Integer response of one input to impulses on its leaf (bias excluded)."""
    if syn is None:
        return hot
    kernel = KERNELS[syn.op](syn, "int", ctx.graph.shape(syn.output))
    return kernel(hot) - kernel(np.zeros_like(hot[:1]))


def fold_add(ctx: _Ctx, node: Node) -> np.ndarray:
    """Quantize the add `node` and its owned synapses jointly; return the add's output scale."""
    lim = int_limit(ctx.profile.weight_bits)
    shape = ctx.graph.shape(node.output)
    per_channel = ctx.per_channel(node)
    syns = [_owned_synapse(ctx, node, t) for t in node.inputs]
    w_eff = [EFFECTIVE[s.op](ctx, s) if s is not None else None for s in syns]
    peaks = []
    for t, s, w in zip(node.inputs, syns, w_eff, strict=True):
        if s is None:
            peaks.append(_per_channel(ctx.scales[t], shape, per_channel))
        else:
            per_out = np.abs(w.reshape(len(w), -1)).max(axis=1)
            bshape = [1] * len(shape)
            bshape[_channel_axis(shape)] = len(per_out)
            peaks.append(_per_channel(per_out.reshape(bshape), shape, per_channel))
    s_y = np.maximum(np.max(peaks, axis=0), 1e-30) / lim
    for _ in range(MAX_COARSENING):
        mult = _multipliers(ctx, node, syns, s_y)
        for s, w in zip(syns, w_eff, strict=True):
            if s is not None:
                _quantize_synapse(ctx, s, w, s_y)
        composed = _composed_peak(ctx, node, syns, mult, per_channel)
        if composed.max(initial=0) <= lim:
            break
        s_y = np.where(composed > lim, s_y * composed / lim, s_y)
    else:
        raise ctx.refuse(node, f"composed weights do not fit {ctx.profile.weight_bits} bits")
    for s in syns:
        if s is not None:
            ctx.scales[s.output] = compact(s_y, shape)
    node.params["mult_q"] = compact_rows(mult).astype(np.int32)
    node.attrs["shift"] = 0
    return compact(s_y, shape)


def _multipliers(ctx: _Ctx, node: Node, syns: list[Node | None], s_y: np.ndarray) -> np.ndarray:
    """(n_inputs, *shape): 1 for an owned synapse, round(scale / s_y) for any other input."""
    shape = ctx.graph.shape(node.output)
    mult = []
    for t, s in zip(node.inputs, syns, strict=True):
        if s is not None:
            mult.append(np.ones(shape, np.int64))
            continue
        m = round_to_int(np.broadcast_to(ctx.scales[t], shape) / s_y)
        if (m == 0).any():
            raise ctx.refuse(node, f"input '{t}' is below the resolution of the output")
        mult.append(m)
    return np.stack(mult)
