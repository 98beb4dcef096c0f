"""Fast kernels: the reference kernels of spikeport.sim.ops over all T steps at once, in torch.

The layer-by-layer runner (spikeport.sim.layerwise) hands a kernel every step of its inputs
at once, arrays (T, N, ...). A synaptic op folds T into the batch, so one conv2d call does
the work of T. Ops without a fast kernel here run their reference kernel (the runner's
fallback): the fast backend never computes anything the reference does not define.

"int" mode kernels may work on running sums over steps ("cumulative": x_1 + ... + x_t at
index t-1) instead of per-step values. There a synaptic op is still one linear map
(W X_t + t b); an expectation-compensated max pool is a plain max pool (its outputs telescope
to max(S_t)); a neuron's net spike count N_t follows from its input's running sum C_t alone
(IntIF below); and the graph's output accumulators are the running sums themselves. Linear
ops take either form (ANY) and keep it; neurons take running sums (a per-step input is summed
first), and so do the expectation-compensated operators (spikeport.sim.layerwise), so a
network runs on running sums throughout except after an add that requantizes (which needs
per-step values), with few conversions between the two.

Exactness (bit for bit with the reference): a sum of integers in floating point is exact while
every partial sum stays below 2^24 (float32) or 2^53 (float64), in whatever order the library
sums. The range proof of spikeport.quantize.ranges, rederived from the graph's own integers,
bounds every value (NodeBounds.step), running sum (.total) and neuron state: a kernel takes
float32 where the bounds it needs are below 2^23 (a margin for the floor division of IF) and
float64 otherwise. The "float" and "ann"
modes run float64 per step like the reference, in another summation order: equal to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.ir.graph import Node
from spikeport.ir.ops import spike_levels
from spikeport.quantize.ranges import NodeBounds
from spikeport.registry import registrar
from spikeport.sim import native
from spikeport.sim.arith import initial_potential
from spikeport.sim.int8 import Int8Synapse
from spikeport.sim.kernels import symmetric_pads
from spikeport.sim.kinds import LAVA, SDN, kind_of
from spikeport.sim.ops import Shape

# float32 is exact for integers below 2^24; half of it leaves room for IF's floor division
# (floor(a / b) of integers is exact in floating point when |a| + b is below half the range).
FLOAT32_SAFE = float(1 << 23)
FLOATS = (torch.float32, torch.float64)
# Bytes of unrolled windows a float64 convolution holds at once (_float64_linear)
FLOAT64_PATCHES = 1 << 26
Bounds = dict[str, NodeBounds]


@dataclass
class Steps:
    """What a kernel produced over T steps.

    y:     (T, N, ...) its output: per-step values, or running sums if `cumulative`
    state: (T,) the peak |state| it kept at each step, to be checked like y (or a function
           that computes it, called only where the range proof does not already bound it)
    k:     (T, N, ...) a neuron's per-step spike counts (the reference's stepped neurons)
    form:  y's form where it is not the inputs' (an add that floors per step reads running
           sums and gives per-step values)
    events: a neuron's (events, levels) per step (T,), counted as it ran, where y holds its
           running counts (what the runner would otherwise take from their differences)
    sops:  a neuron's synaptic operations per step (T,), over every synaptic node reading it,
           counted as it ran (FastKernel.weigh_events_by)
    """

    y: np.ndarray
    state: np.ndarray | Callable[[], np.ndarray] | None = None
    k: np.ndarray | None = None
    form: str | None = None
    events: tuple[np.ndarray, np.ndarray] | None = None
    sops: np.ndarray | None = None


STEP, CUM, ANY = "step", "cum", "any"


@dataclass
class FastKernel:
    """run(*inputs (T, N, ...), cumulative=bool) -> Steps, in the form `takes` names: per-step
    values (STEP), running sums (CUM), or either (ANY: the output comes in the inputs' form,
    `cumulative` says which). `dtype` holds its inputs' running sums exactly. `static`, where
    given, runs it on an input that is equal at every step, (N, ...), for T steps, with the
    output in running sums."""

    run: Callable[..., Steps]
    takes: str = STEP
    dtype: torch.dtype = torch.float64
    static: Callable[[np.ndarray, int], Steps] | None = None
    # a neuron that counts the synaptic operations of its readers as it runs: given the
    # fan-out (per sample) of every synaptic node reading it
    weigh_events_by: Callable[[np.ndarray], None] | None = None


# maker(node, mode, per-sample output shape, the range proof's bounds in "int" mode)
FastMaker = Callable[[Node, str, Shape, Bounds | None], FastKernel | None]
FAST_KERNELS: dict[str, FastMaker] = {}

fast_kernel = registrar(FAST_KERNELS)


def running_sum(x: np.ndarray) -> np.ndarray:
    """Cumulative sum over the step axis in x's own type (running_sum_t, on numpy arrays)."""
    t = _torch(x)
    return running_sum_t(t, t.dtype).numpy()


# Layout: a convolution's output is channels-last (faster here, see _conv), and the elementwise
# ops after it (neurons, adds, pools) keep whatever dense layout they get: torch iterates any
# dense strides in memory order, where a .contiguous() would copy every tensor twice (to NCHW
# and back for the next convolution).


def memory_order(x: torch.Tensor | np.ndarray, first: int = 1) -> list[int]:
    """The axes from `first` on, by descending stride: the order in which a dense tensor (a
    channels-last one too) holds its elements in memory."""
    strides = x.stride() if isinstance(x, torch.Tensor) else x.strides
    return sorted(range(first, x.ndim), key=lambda d: -strides[d])


def step_rows(x: torch.Tensor) -> torch.Tensor:
    """(T, ...) -> (T, M), each step's elements in memory order: a view, not a copy, of a dense
    tensor in any layout (a plain reshape copies a channels-last one)."""
    return x.permute(0, *memory_order(x)).reshape(len(x), -1)


def has_gaps(rows: torch.Tensor) -> bool:
    """Whether a step_rows view (T, M) is not one dense block: a row's elements lie apart, or
    its steps do (a slice of a longer batch). The C kernels write their output in the
    layout of a fresh tensor like the input, which is dense."""
    return rows.stride(1) != 1 or (len(rows) > 1 and rows.stride(0) != rows.shape[1])


def from_rows(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """step_rows undone: rows (T, M) as a (T, ...) view laid out like `like` (whose step axis
    may have another length)."""
    order = memory_order(like)
    y = rows.reshape(len(rows), *[like.shape[d] for d in order])
    return y.permute(0, *[1 + order.index(d) for d in range(1, like.dim())])


def laid_out_like(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample tensor p (its shape x's trailing axes) in the memory order of x's samples:
    an elementwise pass over x with p is then one contiguous run per sample, where a p in
    another order (an NCHW threshold beside a channels-last current) takes twice as long."""
    if p.dim() == 0:
        return p
    sample = x[(0,) * (x.dim() - p.dim())]  # a view of one sample, whatever x's strides
    if sample.stride() == p.stride():
        return p
    return torch.empty_like(sample, dtype=p.dtype).copy_(p)


def per_row(p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample tensor p as step_rows(x) meets it: (S,) contiguous, repeated every S
    elements of a row where x's samples lie one after another in memory (any dense layout
    with the batch outermost), else (M,), the whole step."""
    step = laid_out_like(p, x).expand(x.shape[1:]).permute(*[a - 1 for a in memory_order(x)])
    rows = step.reshape(-1, p.numel())  # a view, stride (0, 1), where the layout allows it
    if rows.stride() == (0, 1) or len(rows) == 1:
        return rows[0].contiguous()
    return rows.reshape(-1).contiguous()


def running_sum_t(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Cumulative sum over the step axis, in `dtype` and x's layout: one whole-tensor add a
    step, in the reference's order (torch.cumsum along the step axis is six times slower
    here, numpy's cumsum along axis 0 several times)."""
    out = x.to(dtype, copy=True)  # in x's layout
    for t in range(1, len(x)):
        out[t].add_(out[t - 1])
    return out


def step_values(cum: torch.Tensor) -> torch.Tensor:
    """Per-step values of running sums (T, N, ...): x_1 = S_1, x_t = S_t - S_{t-1}, in the
    sums' own type (exact: each step's value is within the sums' bound) and layout. One
    subtraction into a fresh tensor (torch.diff with a prepended zero concatenates first:
    twice the time here)."""
    out = torch.empty_like(cum)
    out[0] = cum[0]
    torch.sub(cum[1:], cum[:-1], out=out[1:])
    return out


def input_peaks(sums: list[np.ndarray]) -> np.ndarray:
    """The reference's state_peak of an expectation-compensated operator at each step: the
    largest |S_t| over its inputs' running sums (T, N, ...)."""
    peaks = [np.abs(step_rows(_torch(s)).numpy()).max(axis=1) for s in sums]
    return np.max(peaks, axis=0)


def _torch(x: np.ndarray) -> torch.Tensor:
    """x as a torch tensor, copied where torch cannot wrap it: a read-only view (a static
    tensor repeated over T by broadcasting) or one with negative strides (a reversing
    slice)."""
    wraps = x.flags.writeable and all(s >= 0 for s in x.strides)
    return torch.from_numpy(x if wraps else np.array(x))


def _fold(x: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """(T, N, ...) numpy -> (T*N, ...) torch, of `dtype` if given (T folds into the batch)."""
    y = _torch(x).reshape((-1,) + x.shape[2:])
    return y if dtype is None else y.to(dtype)


def _unfold(y: torch.Tensor, T: int) -> torch.Tensor:
    return y.reshape((T, -1) + tuple(y.shape[1:]))


def reach(b: NodeBounds, cumulative: bool) -> np.ndarray:
    """The proof's bound on a tensor's running sums (cumulative) or its values at any step."""
    return b.total if cumulative else b.step


def sum_dtype(
    bounds: Bounds | None, node: Node, cumulative: bool = True, extra: float = 0.0
) -> torch.dtype:
    """float32 where the proof bounds the node's inputs and output (their running sums if
    `cumulative`, else their values at any step; plus `extra`) below FLOAT32_SAFE, else
    float64."""
    if bounds is None:
        return torch.float64
    tensors = [*node.inputs, node.output]
    worst = max(float(reach(bounds[t], cumulative).max(initial=0)) for t in tensors) + extra
    return torch.float32 if worst < FLOAT32_SAFE else torch.float64


def _dtypes(bounds: Bounds | None, node: Node, mode: str) -> dict[bool, torch.dtype]:
    """The float type of per-step (False) and cumulative (True) sums; float64 outside "int"."""
    if mode != "int":
        return {False: torch.float64, True: torch.float64}
    return {c: sum_dtype(bounds, node, c) for c in (False, True)}


def _param(node: Node, name: str, mode: str) -> np.ndarray:
    return node.params[f"{name}_q" if mode == "int" else name]


def _param_t(node: Node, name: str, mode: str, dt: torch.dtype) -> torch.Tensor | None:
    p = node.params.get(f"{name}_q" if mode == "int" else name)
    return None if p is None else torch.from_numpy(p.astype(np.float64)).to(dt)


def _pad(x: torch.Tensor, pads: list[int], value: float = 0.0) -> torch.Tensor:
    """ONNX pads (top, left, bottom, right), which may be asymmetric."""
    t, left, b, r = pads
    return F.pad(x, (left, r, t, b), value=value) if any(pads) else x


def _with_bias(
    y: torch.Tensor, b: torch.Tensor | None, T: int, cumulative: bool, channels: int
) -> np.ndarray:
    """y (T*N, ...) plus the bias b (O,) along a sample's axis `channels` at every step; summed
    over t steps that is t * b. Added with that axis last (a view: contiguous where y is
    channels-last, as a convolution's output is here), so b broadcasts along the innermost."""
    y = _unfold(y, T)
    if b is not None:  # in place: y is the op's own fresh output
        steps = torch.arange(1, T + 1, dtype=y.dtype).reshape((T,) + (1,) * (y.dim() - 1))
        y.movedim(2 + channels if channels >= 0 else channels, -1).add_(
            b * steps if cumulative else b
        )
    return y.numpy()


def _linear(
    node: Node, mode: str, bounds: Bounds | None, op: Callable, channels: int
) -> FastKernel | None:
    """A synaptic op: op(x folded (T*N, ...), weights) then the bias (along a sample's axis
    `channels`), in float32 where the proof allows it for the form it gets. Where the inputs
    it gets are small integers (running sums of a few steps of spikes, input codes), int8
    products instead (spikeport.sim.int8): the same integers. The "float" and "ann" modes run
    float64 (_float64_linear)."""
    if mode != "int":
        return _float64_linear(node, mode, op, channels)
    dts = _dtypes(bounds, node, mode)
    params = {}
    for dt in set(dts.values()):
        w, b = _param_t(node, "weight", mode, dt), _param_t(node, "bias", mode, dt)
        params[dt] = (w, b)
    int8 = Int8Synapse.of(node)

    def zero_point(x: np.ndarray, folded: torch.Tensor, cumulative: bool) -> int | None:
        """int8's zero point for the inputs as they come, from the proof's bound, else (no
        proof, or one step: a static input, whose codes the proof bounds by +-127 whatever
        their sign, and which is T times smaller than any other) from the inputs themselves."""
        if int8 is None:
            return None
        b = bounds[node.inputs[0]] if bounds is not None else None
        if b is not None:
            zp = int8.zero_point(
                float(reach(b, cumulative and len(x) > 1).max(initial=0)), b.nonneg
            )
            if zp is not None or len(x) > 1:
                return zp
        lo, hi = torch.aminmax(folded) if folded.numel() else (0, 0)
        return int8.zero_point(max(-float(lo), float(hi)), float(lo) >= 0)

    def run(x: np.ndarray, cumulative: bool = False) -> Steps:
        w, b = params[dts[cumulative]]
        folded = _fold(x)
        zp = zero_point(x, folded, cumulative)
        if zp is not None and int8 is not None and int8.exact_on(folded.shape[1:], zp):
            y = int8(folded, zp).to(w.dtype)
        else:
            y = op(folded.to(w.dtype), w)
        return Steps(_with_bias(y, b, len(x), cumulative, channels))

    return FastKernel(run, ANY if mode == "int" else STEP, dts[True])


def _float64_linear(node: Node, mode: str, op: Callable, channels: int) -> FastKernel:
    """The "float" / "ann" mode's synaptic op in torch's float64: the reference's sums in
    another order (equal to rounding), on torch's threads where the reference's numpy BLAS
    has one (spikeport.threads). A convolution with more than one input channel a group
    runs on slices of the folded batch that unroll at most FLOAT64_PATCHES bytes of windows:
    torch's float64 convolution unrolls its whole batch at once (2.3 GB for 128 images of
    24 x 96 x 96 and a 3x3 kernel, and slower than slices)."""
    w = _param_t(node, "weight", mode, torch.float64)
    b = _param_t(node, "bias", mode, torch.float64)

    def rows_at_once(folded: torch.Tensor) -> int:
        if node.op != "conv2d" or w.shape[1] == 1 or not folded.numel():
            return max(1, len(folded))  # a dense layer, a depthwise convolution: no unrolling
        # windows x input channels a group x kernel, per sample, over the output's positions
        windows = int(np.prod(w.shape[1:])) * folded.shape[2] * folded.shape[3]
        unrolled = windows // int(np.prod(node.attrs["strides"])) * 8 * node.attrs["group"]
        return max(1, FLOAT64_PATCHES // max(1, unrolled))

    def run(x: np.ndarray, cumulative: bool = False) -> Steps:
        folded = _fold(x, torch.float64)
        parts = [op(part, w) for part in folded.split(rows_at_once(folded))]
        y = parts[0] if len(parts) == 1 else torch.cat(parts)
        return Steps(_with_bias(y, b, len(x), False, channels))

    return FastKernel(run, STEP, torch.float64)


@fast_kernel("conv2d")
def _conv(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    a = node.attrs

    def conv(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        pads = symmetric_pads(a["pads"])  # symmetric: the convolution pads, no padded copy
        x = x if pads else _pad(x, a["pads"])
        if mode != "int":  # float64 in NCHW: channels-last float64 ran 1.1-4x slower here
            return F.conv2d(x, w, None, a["strides"], pads or 0, a["dilations"], a["group"])
        # oneDNN runs channels-last (NHWC) convolutions about twice as fast as NCHW here
        x = x.contiguous(memory_format=torch.channels_last)
        w = w.contiguous(memory_format=torch.channels_last)
        y = F.conv2d(x, w, None, a["strides"], pads or 0, a["dilations"], a["group"])
        # channels-last out even where torch reads one input channel as NCHW: every tensor
        # after it then shares one layout (elementwise passes over mixed layouts are slow)
        return y.contiguous(memory_format=torch.channels_last)

    return _linear(node, mode, bounds, conv, 0)


@fast_kernel("dense")
def _dense(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    return _linear(node, mode, bounds, lambda x, w: x @ w.T, -1)


def _pooled(
    x: torch.Tensor, a: dict, first: Callable, rest: Callable, pad_value: float = 0.0
) -> torch.Tensor:
    """A pooling window's reduction as strided views: over the kh rows of each window first,
    then over the kw columns of that (separable: 2x2 takes two whole-tensor ops, not four,
    many times faster here than torch's max_pool2d / avg_pool2d on small images). `first`
    joins two views into a new tensor, `rest` folds one more in place."""
    x = _pad(x, a["pads"], pad_value)
    (kh, kw), (sh, sw) = a["kernel"], a["strides"]
    ho, wo = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1
    rows = [x[..., i : i + sh * (ho - 1) + 1 : sh, :] for i in range(kh)]
    out = _fold_views(rows, first, rest)
    return _fold_views([out[..., j : j + sw * (wo - 1) + 1 : sw] for j in range(kw)], first, rest)


def _fold_views(views: list[torch.Tensor], first: Callable, rest: Callable) -> torch.Tensor:
    if len(views) == 1:
        return views[0].clone()
    out = first(views[0], views[1])
    for v in views[2:]:
        rest(out, v)
    return out


def _window_sum(x: torch.Tensor, a: dict) -> torch.Tensor:
    """Sum of each pooling window, zero padding (exact on integers: see sum_dtype)."""
    return _pooled(x, a, torch.add, torch.Tensor.add_)


def _window_max(x: torch.Tensor, a: dict) -> torch.Tensor:
    """Max of each pooling window; padding never wins (-inf, or the integer type's least)."""
    low = -float("inf") if x.is_floating_point() else float(torch.iinfo(x.dtype).min)
    return _pooled(x, a, torch.maximum, lambda out, v: torch.maximum(out, v, out=out), low)


@fast_kernel("avgpool2d")
def _avgpool(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel:
    a, integer = node.attrs, mode == "int"
    dts = _dtypes(bounds, node, mode)
    area = a["kernel"][0] * a["kernel"][1]  # "int": 1/area lives in the output scale

    def run(x: np.ndarray, cumulative: bool = False) -> Steps:
        y = _window_sum(_fold(x, dts[cumulative]), a)
        return Steps(_unfold(y if integer else y / area, len(x)).numpy())

    return FastKernel(run, ANY if integer else STEP, dts[True])


@fast_kernel("maxpool2d")
def _maxpool(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    """ "ann": the window max. Otherwise expectation-compensated (ops._ECMaxPool): its outputs
    over t steps sum to max(S_t), the window max of the input's running sum S_t; per step
    (the "float" mode) that is the difference of consecutive maxima."""
    a = node.attrs
    if kind_of(node) in (LAVA, SDN) and mode != "ann":
        return None  # a delay, not a running sum: the reference kernel runs it

    def window_max(x: np.ndarray, cumulative: bool = False) -> Steps:
        return Steps(_unfold(_window_max(_fold(x), a), len(x)).numpy())

    if mode != "float":  # "ann": one step; "int": running sums in, running sums out
        return FastKernel(
            window_max, CUM if mode == "int" else STEP, _dtypes(bounds, node, mode)[True]
        )

    def run(x: np.ndarray, cumulative: bool = False) -> Steps:
        m = window_max(running_sum(x)).y  # the reference's total = total + x, in order
        return Steps(np.diff(m, axis=0, prepend=np.zeros_like(m[:1])))

    return FastKernel(run)


@fast_kernel("if")
def _if(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    if mode == "ann" or kind_of(node) in (LAVA, SDN):
        # ReLU / identity, Lava's delayed LIF and sigma-delta neuron: the reference kernels
        return None
    if mode == "int":
        # running sums only: summing a per-step input (one add a step) and IntIF's loop
        # cost less than stepping the neuron with a state check every step (StepIF)
        assert bounds is not None
        cum = IntIF(node, shape, bounds)

        def run(current: np.ndarray, cumulative: bool = True) -> Steps:
            return cum(current)

        return FastKernel(run, CUM, cum.dt, cum.static, cum.weigh_events_by)
    return FastKernel(StepIF(node, shape, None))


@fast_kernel("add")
def _add(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    """ "int": floor(sum m_i x_i / 2^shift) (ops._add) per step, in the narrowest exact type
    for the proof's bound on sum |m_i| |x_i| (_exact_type); int64, as the reference, without a
    proof once multipliers pass 16 bits. With shift 0 it is linear (floor of an integer is
    itself), so it takes running sums too and a residual block stays in running sums. With a
    shift it takes running sums where their weighted sum D_t = sum m_i S_i,t has an exact
    type: the step's sum is D_t - D_{t-1} (one difference, not one per input), floored, out
    per step (the C kernel, fused: out as running sums of those, what a neuron reads)."""
    if mode != "int":
        return None  # a plain sum: the reference kernel, folded
    m64 = [m.astype(np.float64) for m in node.params["mult_q"]]
    shift = node.attrs.get("shift", 0)
    if bounds is None:
        wide = max(float(np.abs(m).max()) for m in m64) >= 2**16
        # |x| < 2^31 and 16-bit m: every product and sum below 2^53
        dts = {False: torch.int64 if wide else torch.float64}
        outs = {False: torch.float64}
    else:
        dts, outs = {}, {}
        for cum in (False, True):
            peak = sum(
                np.abs(m).max() * reach(bounds[i], cum).max()
                for m, i in zip(m64, node.inputs, strict=True)
            )
            dts[cum] = _exact_type(float(peak))
            out = float(reach(bounds[node.output], cum).max(initial=0))
            outs[cum] = torch.float32 if out < FLOAT32_SAFE else torch.float64
    # whole per-sample tensors, to be laid out like the inputs (see laid_out_like)
    full = [np.array(np.broadcast_to(m, shape)) for m in m64]  # a copy: writable
    mults = {dt: [torch.from_numpy(m).to(dt) for m in full] for dt in set(dts.values())}

    def fused(ins: list[torch.Tensor], cumulative: bool) -> Steps | None:
        """The same in one pass (spikeport.sim.native: csrc/weighted_add.c), in double: where
        the proof bounds the sums below 2^53 and the inputs share one dense layout. Out in
        the inputs' form, shift or not: a neuron after it reads running sums as they come."""
        if not native.available() or bounds is None or dts[cumulative] == torch.int64:
            return None  # no C, no proof, or sums past 2^53
        if not ins[0].numel():
            return None
        rows = [step_rows(x) for x in ins]
        if any(x.dtype not in native.INPUT_KINDS or x.stride() != ins[0].stride() for x in ins) or (
            len(ins[0]) and has_gaps(rows[0])
        ):
            return None
        out = torch.empty_like(ins[0], dtype=outs[cumulative])
        mults64 = [per_row(torch.from_numpy(m), ins[0]) for m in full]
        native.weighted_add(rows, mults64, shift, cumulative, step_rows(out))
        return Steps(out.numpy())

    def run(*xs: np.ndarray, cumulative: bool = False) -> Steps:
        """A step at a time into one output (a step's tensors stay in cache), in place."""
        ins = [_torch(x) for x in xs]
        done = fused(ins, cumulative)
        if done is not None:
            return done
        dt = dts[cumulative]
        ms = [laid_out_like(m, ins[0]) for m in mults[dt]]
        out = torch.empty_like(ins[0], dtype=outs[cumulative and not shift])
        total = torch.empty_like(ins[0][0], dtype=dt)  # D_t
        prev, step = (torch.zeros_like(total), torch.empty_like(total)) if shift else (None, None)
        for t in range(len(out)):
            total.copy_(ins[0][t]).mul_(ms[0])
            for m, x in zip(ms[1:], ins[1:], strict=True):
                total.addcmul_(x[t].to(dt), m)
            if not shift:
                out[t].copy_(total)
                continue
            if cumulative:  # D_t - D_{t-1}: exact in D's type (|a step's sum| <= D's bound)
                torch.sub(total, prev, out=step)
                prev, total = total, prev
            else:
                step, total = total, step
            if not dt.is_floating_point:  # an arithmetic shift right: floor division by 2^k
                out[t].copy_(step.bitwise_right_shift_(shift))
            else:
                out[t].copy_(step.mul_(2.0**-shift).floor_())  # exact: a power of two
        return Steps(out.numpy(), form=STEP if shift and cumulative else None)

    if True not in dts:
        return FastKernel(run, STEP)
    return FastKernel(run, ANY if shift == 0 else CUM, dts[True])


@fast_kernel("offset")
def _offset(node: Node, mode: str, shape: Shape, bounds: Bounds | None) -> FastKernel | None:
    """ "int": x + v at every step; on running sums S_t + t v, so it keeps either form (a
    centred neuron after a LayerNorm reads running sums through it, no differences taken).
    Exact in the type the proof gives its input and output (sum_dtype)."""
    if mode != "int":
        return None  # float64 per step: the reference kernel, folded
    dts = _dtypes(bounds, node, mode)
    value = np.broadcast_to(node.params["value_q"].astype(np.float64), shape)
    values = {dt: torch.from_numpy(np.array(value)).to(dt) for dt in set(dts.values())}

    def run(x: np.ndarray, cumulative: bool = False) -> Steps:
        dt = dts[cumulative]
        y = _torch(x).to(dt, copy=True)  # in x's layout
        v = laid_out_like(values[dt], y)
        if not cumulative:
            return Steps(y.add_(v).numpy())
        for t in range(len(y)):  # S_t + t v, a step at a time (no T-fold temporary)
            y[t].add_(v, alpha=t + 1)
        return Steps(y.numpy())

    return FastKernel(run, ANY, dts[True])


def _exact_type(peak: float) -> torch.dtype:
    """The narrowest type whose sums of integers up to `peak` are exact: float32 below 2^23,
    int32 (half float64's memory traffic; a shift is floor division) below 2^31, float64 below
    2^53, else int64."""
    if peak < FLOAT32_SAFE:
        return torch.float32
    if peak < 2.0**31:
        return torch.int32
    return torch.float64 if peak < 2.0**53 else torch.int64


class IntIF:
    """ops.IFNeuron ("int" mode) on running sums: C_t of its input current in, N_t (its net
    spike count after step t) out.

    Before step t's spikes v = v0 + C_t - theta * N_{t-1}, and the reference emits
    s = clamp(floor(v / theta), lo, K) = clamp(q_t - N_{t-1}, lo, K) with
    q_t = floor((v0 + C_t) / theta) (theta * N is a multiple of theta). So N_t = clamp(q_t,
    N_{t-1} + lo, N_{t-1} + K): a loop over t of in-place ops on one step's tensors.
    lo = 0 (unsigned), -min(N, K) (signed: the count never goes below 0), -K (bipolar).
    (The compare form s = [v0 + C_t - theta >= theta * N_{t-1}] took more passes and two
    allocations a step.)
    """

    def __init__(self, node: Node, shape: Shape, bounds: Bounds):
        theta = np.broadcast_to(node.params["threshold_q"].astype(np.int64), shape)
        self.dt = sum_dtype(bounds, node, True, 2.0 * float(theta.max(initial=0)))
        self.theta = torch.from_numpy(theta.astype(np.float64)).to(self.dt)
        self.v0 = torch.from_numpy(initial_potential(theta).astype(np.float64)).to(self.dt)
        self.K = spike_levels(node)
        self.signed, self.bipolar = node.attrs["signed"], node.attrs.get("bipolar", False)
        self.fanout: torch.Tensor | None = None  # weigh_events_by

    def weigh_events_by(self, fanout: np.ndarray) -> None:
        """Count the synaptic operations its spikes cause as it runs (the C loop only): the
        fan-out of each neuron (per sample, int64) over every synaptic node reading it."""
        self.fanout = torch.from_numpy(np.ascontiguousarray(fanout, np.int64))

    def __call__(self, current: np.ndarray) -> Steps:
        c = _torch(current).to(self.dt)  # running sums of the input current (see Layout above)
        n, events, sops = self._levels(c)
        return Steps(n.numpy(), lambda: self._state(c, n), events=events, sops=sops)

    def static(self, current: np.ndarray, T: int) -> Steps:
        """The same for an input current I equal at every step (a first layer's): q_t =
        floor((v0 + t I) / theta) then changes by at most K a step in the direction of I
        (0 <= v0 < theta), so the clamps above reduce to N_t = clamp(q_t, lo t, K t), with lo
        = -K for bipolar neurons and 0 otherwise (a signed neuron's count starts at 0 and
        cannot go below it). All T steps at once, no loop; the clamps act on I (below)."""
        i = _torch(current).to(self.dt)
        t = torch.arange(1, T + 1, dtype=self.dt).reshape((T,) + (1,) * i.dim())
        if native.available() and i.dtype in FLOATS and i.numel():  # the C loop on C_t = t I
            n, events, sops = self._native_levels(i[None], T)
            return Steps(n.numpy(), lambda: self._state(i[None] * t, n), events=events, sops=sops)
        theta, v0 = laid_out_like(self.theta, i), laid_out_like(self.v0, i)
        # The clamps move to the current, once: with I in [lo theta, K theta] the count is
        # already in [lo t, K t] (0 <= v0 < theta), and at either end it is exactly lo t or K t.
        low = -self.K * theta if self.bipolar else torch.zeros_like(theta)
        clamped = torch.minimum(torch.maximum(i, low), self.K * theta)
        # v0 + t I, exact (see FLOAT32_SAFE), in I's layout (a channels-last one too: torch
        # lays a result out like its first operand, and a mixed-layout pass is twice as slow)
        n = torch.mul(clamped[None], t).add_(v0)
        n.div_(theta).floor_()  # in place: one tensor of T steps, no temporaries
        return Steps(n.numpy(), lambda: self._state(i[None] * t, n))

    def _levels(
        self, c: torch.Tensor
    ) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray], np.ndarray | None]:
        """N_t = N_{t-1} + clamp(q_t - N_{t-1}, lo, K), in place in the output (lo: see the
        class docstring); and each step's events (nonzero counts) and levels (sum of |count|),
        taken while the step's counts are in cache."""
        if native.available() and c.dtype in FLOATS and c.numel():
            return self._native_levels(c)
        theta, v0 = laid_out_like(self.theta, c), laid_out_like(self.v0, c)
        n = torch.empty_like(c)
        prev = torch.zeros_like(c[0])
        events, levels = np.zeros(len(c), np.int64), np.zeros(len(c), np.int64)
        for t in range(len(c)):
            # q_t a step at a time, in place: the step's tensors stay in cache (twice as fast
            # here as q for all T steps first); exact: see FLOAT32_SAFE
            d = torch.add(c[t], v0, out=n[t]).div_(theta).floor_().sub_(prev)
            if self.bipolar:
                d.clamp_(-self.K, self.K)
            elif self.signed:
                torch.maximum(d.clamp_(max=self.K), -torch.clamp(prev, max=self.K), out=d)
            else:
                d.clamp_(0, self.K)
            events[t], levels[t] = self._count(d)
            prev = d.add_(prev)
        return n, (events, levels), None

    def _native_levels(
        self, c: torch.Tensor, ramp: int = 0
    ) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray], np.ndarray | None]:
        """The same in one fused pass (spikeport.sim.native: csrc/if_levels.c), on each step's
        elements in memory order, the counts out in c's layout; and the synaptic operations
        its spikes cause where weigh_events_by gave the fan-out. With `ramp` = T, c is one
        step of a current equal at every step, and the running sums are t c for T steps."""
        rows = step_rows(c)
        if c.numel() and has_gaps(rows):  # a copy that is dense, as the counts will be
            c = torch.empty_like(c, memory_format=torch.contiguous_format).copy_(c)
            rows = step_rows(c)
        theta, v0 = (per_row(p, c) for p in (self.theta, self.v0))
        rule = native.BIPOLAR if self.bipolar else native.SIGNED if self.signed else native.UNSIGNED
        # in c's layout: its rows are rows' twins
        n = from_rows(torch.empty((ramp, rows.shape[1]), dtype=c.dtype), c) if ramp else None
        n = torch.empty_like(c) if n is None else n
        fanout = per_row(self.fanout, c) if self.fanout is not None else None
        events, levels, sops = native.if_levels(
            rows, theta, v0, self.K, rule, step_rows(n), fanout, ramp=bool(ramp)
        )
        return n, (events, levels), sops

    def _count(self, d: torch.Tensor) -> tuple[int, int]:
        """One step's events (nonzero counts) and levels (sum of |count|): dot products (a
        fifth of the time of abs and sum, ten of a nonzero count, here); exact in float32
        while the sum stays below 2^24, else in float64 (|count| <= K)."""
        flat = d.permute(*memory_order(d, 0)).reshape(-1)  # a view in any dense layout
        if flat.numel() * self.K >= FLOAT32_SAFE:
            flat = flat.to(torch.float64)
        if self.K == 1 and not (self.signed or self.bipolar):  # 0 / 1
            return (int(flat.sum()),) * 2
        if self.K == 1:  # -1 / 0 / 1: |d| = d^2
            return (int(torch.dot(flat, flat)),) * 2
        sign = torch.sign(flat)
        return int(torch.dot(sign, sign)), int(torch.dot(sign, flat))

    def _state(self, c: torch.Tensor, n: torch.Tensor) -> np.ndarray:
        """Peak |v| after each step: v_t = v0 + C_t - theta * N_t."""
        v = step_rows(c + self.v0 - self.theta * n).abs()
        return v.max(dim=1).values.to(torch.float64).numpy().astype(np.int64)


class StepIF:
    """ops.IFNeuron over all T steps on per-step currents, in torch: the same rule in the same
    order, one step at a time on whole tensors. "int" mode (bounds given): float32 where the
    proof bounds |v| + |current| + theta below FLOAT32_SAFE, else float64 (exact either way),
    spike counts out; "float" mode: float64, spikes * theta out, the counts in k. The runner
    uses it in "float" mode only (its "int" neurons run IntIF on running sums); the "int" mode
    is the same rule per step, tested equal to the reference beside IntIF."""

    def __init__(self, node: Node, shape: Shape, bounds: Bounds | None):
        self.integer = bounds is not None
        theta = np.asarray(_param(node, "threshold", "int" if self.integer else "float"))
        theta = np.broadcast_to(theta.astype(np.int64 if self.integer else np.float64), shape)
        v0 = initial_potential(theta) if self.integer else theta / 2
        self.dt = torch.float64
        if bounds is not None:
            b = bounds[node.inputs[0]]
            room = bounds[node.output].state + float(b.step.max(initial=0))
            self.dt = sum_dtype(bounds, node, False, room + 2.0 * float(theta.max(initial=0)))
        self.theta = torch.from_numpy(theta.astype(np.float64)).to(self.dt)
        self.v0 = torch.from_numpy(np.asarray(v0, np.float64)).to(self.dt)
        self.K = spike_levels(node)
        self.signed, self.bipolar = node.attrs["signed"], node.attrs.get("bipolar", False)

    def spikes(self, v: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        if self.integer and (self.K > 1 or self.signed or self.bipolar):
            # clamp(floor(v / theta), lo, K): exact on integers below FLOAT32_SAFE / 2^53
            k = torch.floor(v / self.theta)
            if self.bipolar:
                return torch.clamp(k, -self.K, self.K)
            if self.signed:
                return torch.clamp(torch.maximum(k, -torch.clamp(count, max=self.K)), max=self.K)
            return torch.clamp(k, 0, self.K)
        if self.K == 1:  # binary: the compare form (ops.IFNeuron)
            pos = v >= self.theta
            s = pos.to(v.dtype)
            if self.bipolar:
                s -= (~pos & (v < 0)).to(v.dtype)
            elif self.signed:
                s -= (~pos & (v < 0) & (count > 0)).to(v.dtype)
            return s
        low = torch.zeros_like(count)
        if self.bipolar:
            low = low - self.K
        elif self.signed:
            low = -torch.clamp(count, max=self.K)
        k = torch.floor_divide(v, self.theta)  # integers: exact (see FLOAT32_SAFE)
        return torch.clamp(torch.maximum(k, low), max=self.K)

    def __call__(self, current: np.ndarray, cumulative: bool = False) -> Steps:
        cur = _torch(current).to(self.dt)  # in its own layout (see Layout above)
        v = torch.empty_like(cur[0]).copy_(self.v0.expand(cur.shape[1:]))
        count = torch.zeros_like(v)
        k = torch.empty_like(cur)
        state = np.zeros(len(cur), np.int64)
        for t in range(len(cur)):
            v += cur[t]
            k[t] = s = self.spikes(v, count)
            v -= s * self.theta
            count += s
            if self.integer:
                lo, hi = torch.aminmax(v)
                state[t] = max(int(hi), -int(lo))
        kn = k.numpy()
        if self.integer:
            return Steps(kn, state, kn)
        return Steps(kn * self.theta.numpy(), None, kn)


from spikeport.sim import fast_seq as _fast_seq  # noqa: E402,F401  (registers its kernels)
