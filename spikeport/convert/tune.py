"""T-aware conversion: `convert -T T` chooses every neuron's threshold, and a bias correction,
for the T the network will run, layer by layer, on the spiking network's own inputs.

One pass over the graph in node order runs the float spiking network for T steps (node-major:
each node's T steps at once) beside the ANN. At each neuron the layers before it are already
chosen, so its input currents are what the spiking network will really feed it, and:
- the threshold theta is picked from a grid (relative to the largest ANN activation, plus the
  percentile threshold balancing gave) to minimise the mean squared error between the
  neuron's T-step rate code (count * theta / T, v0 = theta / 2) and the ANN activation: with
  few steps a lower theta trades clipping for resolution, with many a higher one costs little;
  a neuron that only an average or max pooling reads is scored after the pooling (_pooled_by);
- per channel where the layer already has per-channel thresholds, and per feature for the
  bipolar neurons in front of weight layers (dense, conv), whose scale the next weights absorb
  (transformers' few outlier features otherwise set one threshold for all: LLM.int8(),
  SmoothQuant), and per index of the contracted axis for the bipolar neurons that feed
  products of two activations (Q's and K's features, the attention probabilities' keys),
  which then weigh those indices by integer multipliers (quantize.seq._matmul), or one
  threshold each (a second candidate, below);
- a bipolar neuron with one threshold per feature that only dense layers, or only
  convolutions, read may code x - c instead of x, c the middle of each feature's (channel's)
  range, where that rounds closer (centring: its 2T + 1 levels then span the feature's range,
  not +-max |x|; the search runs twice for such neurons): an offset node in front of it
  (folded into the producer's bias or LayerNorm beta where that alone feeds it), W c added to
  its readers' biases, and after a padded convolution an offset for its border, where the
  window reads padding and not x - c, so the ANN view computes the same function;
- a bipolar neuron layer with one threshold per feature that only dense layers read gives
  its outlier features more than one neuron each, staggered so that their counts add up to
  a finer code, each carrying its share of the feature's weights (split.py: where a feature's
  range times its weight column holds more than 1 / s times the median feature's rounding
  noise, at most s times its features in more neurons, s `convert --extra-neurons`, 1 / 16
  by default), their thresholds searched again for that;
- the bias of the layer that feeds the neuron alone (directly or through adds) moves by the
  shift, from a grid of fractions of theta / T, that minimises the same error jointly with
  theta (bias correction, Li et al. 2021, "A free lunch from ANN"; at T = 1 it also sets where
  the single step fires);
- with `correct` (a second candidate per T), each other layer with a bias, that no neuron's
  search moves and that is not an output (in transformers: the Q, K, V projections, residual
  branches, LayerNorm's beta), moves its bias by minus the mean error of its T-step output
  against the ANN, per channel (the same paper's bias correction for the layers whose error
  no threshold sees: on text_bert at T = 8 it raised accuracy from 95.8 to 97.0 % on
  2,000 training sequences, float mode).
- each dense layer and convolution that reads spikes has its weights and bias refitted, by
  ridge least squares, to give the ANN's output from the spiking network's mean input rates
  (refit.py; Li et al.'s weight calibration in closed form), where a fit on half the
  samples predicts the other half better than the weights it has: its neurons' search then
  runs on the refitted currents. An output layer the search's samples were too few to refit
  (its memory budget holds T steps of every tensor) is refitted after the search, on the
  samples the candidates are scored on, up to TUNE_SAMPLES (_refit_outputs): a 48-channel
  net on 32x32 images searched for T = 16 on 140 samples, too few for its classifier's 49
  weights a class.
- in a text model whose outputs read no padding (a pooled or [CLS] output behind a masked
  attention), the values at padded positions stay out of every fit above: thresholds, bias
  shifts, bias corrections and refits see only what some output reads (padding.py).
Errors do not compound: the next layer sees the spikes this choice produces. Deterministic.
Cost: one float simulation of T steps and one ANN run on TUNE_SAMPLES samples (fewer when a
tensor is large), plus the grid search on at most SEARCH_POSITIONS values per channel; twice
that where the graph has layers to bias-correct (the second search per step count).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
from collections import Counter
from collections.abc import Callable

import numpy as np

from spikeport.batch import Batch, size, take
from spikeport.convert import padding, refit, split
from spikeport.convert.balance import sign_neurons, spiking_pool, threshold_shape
from spikeport.convert.fold import bias_shift, fold_offsets, padded_conv_shift
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import (
    ELEMENT_MOVES,
    ROW_LAYERS,
    class_scores,
    spike_levels,
    static_tensors,
)
from spikeport.progress import progress
from spikeport.sim import native
from spikeport.sim.fast import FAST_KERNELS, FastKernel
from spikeport.sim.ops import KERNELS, IFNeuron, Kernel
from spikeport.threads import release_freed_memory

# Calibration samples the layer-wise search runs on, at most. 512 (all 500 of text_bert's
# sentences) raised text_bert at T = 8 from 95.5 to 96.1 % in float mode but not in integer
# mode (95.4), and lowered it at T = 1 and 2 (61.2 -> 56.7, 75.9 -> 71.9), bench_count_bert
# at T = 2 (69.8 -> 61.4): no better over the family, twice the time.
TUNE_SAMPLES = 256
# Bytes for one tensor's T steps over the samples (fewer samples if more). About three such
# tensors live at once in a transformer's feed-forward block. all-MiniLM-L6-v2 (width 1536
# there, T = 8 so 16 steps for the 2T search): 2^30 keeps 160 sentences (4.4 GB peak with 200
# calibration sentences); 2^28 keeps 40 (1.57 GB) but its graded 4-bit cosine at T = 8 fell
# from 0.9802 to 0.9708; 2^29 keeps 80 (2,005 MiB: issue #20's 2 GB only in binary units);
# 448 MiB keeps 70, still all of the zoo's 64. Small networks keep TUNE_SAMPLES. Each search
# gets the samples its own step count fits (t_aware): a 3x32x32 depthwise net at T = 8 (48
# channels, benchmarks/cnn_family.py --task shapes, relu_dw:50) had searched T on the 70 that
# the 16-step search fits, too few for the pooled candidate (POOLED_VALUES); on 132, 56.1 ->
# 64.1 % at T = 8 (float mode, test split; ANN 78.4).
# Those counts were float64's; the search now records float32 (STORED), so a budget holds
# twice the samples (448 MiB: 140 of those sentences at 16 steps, 200 at 9). On that encoder
# with 200 calibration sentences the default convert -T 8 peaks at 1,885 MiB (issue #20's
# 2 GB; benchmarks/RESULTS.md 3c, 2026-12-06), most of it the widest tensor's steps, its ANN
# values and the kernels' temporaries (_Parts: on parts of the samples).
# `convert --tune-samples N` lifts both limits for a user with the memory: all-MiniLM-L6-v2
# at T = 16 on 256 calibration sentences (1.7 GiB a tensor, 5.5 GB peak, 28 min on 2 cores)
# rose from 0.9839 to 0.9873 (cosine, 64 test sentences; docs/results.md's encoder runs).
MEMORY_BUDGET = 448 << 20
SCORE_SAMPLES = 1024  # calibration samples the candidates are scored on, at most
# and in batches whose widest tensor over T steps holds at most this many bytes: the batches
# of 256 of 32-token sentences made scoring a 22M-parameter encoder peak at 2.6 GB
SCORE_BYTES = 2**26
# The searches for 2T and 4T steps, each only up to this many steps. 4T helps at T = 1 and 2
# (below); at T = 4 its 16-step search was most of conversion's time, and dropping it changed
# no benchmark network's accuracy (digits_cnn 98.89, bench_count_bert graded 4-bit 100.0).
# A 32-step search beside T = 16's (EXTRA_STEPS {2: 32}) lowered all-MiniLM-L6-v2's cosine
# at T = 16 from 0.9823 to 0.9757 (64 test sentences, 2026-12-04): its pick on 64
# calibration sentences did not carry over, at twice the conversion time.
EXTRA_STEPS = {2: 16, 4: 8}
# `convert --search`: "full" runs every candidate t_aware describes (the searches for T, 2T and
# 4T steps, each with and without bias correction, centring, pooled scoring and per-index
# thresholds where the graph has such neurons: up to 16 passes over the network), "quick" the
# search for T alone (one pass; refit, bias shifts and the outlier split still run). The
# candidates earn their time: on benchmarks/cnn_family.py's 15 nets (integer mode, test split,
# 2026-12-05) quick changed accuracy by -4.6 / -0.8 / -0.6 / -0.3 points on average at T = 1 /
# 2 / 4 / 8 (worst -14.6 / -4.3 / -3.3 / -2.2: relu6:7 at T = 1, hswish_se:7 and :8), for 2
# to 17 times less conversion time. So quick is the user's choice for models the full search
# is too slow on (a 416x416 detector: docs/conversion.md), not a default.
SEARCHES = ("full", "quick")
SEARCH_POSITIONS = 4096  # values per channel the grid search scores, at most (evenly spaced)
# and at most this many values over all channels and steps: the search's cost. 2^23 made
# the search most of a ResNet-50's conversion (64x64, 16 samples: several minutes on one
# core); 2^21 changes nothing on layers where channels x steps <= 512 (SEARCH_POSITIONS each).
SEARCH_VALUES = 2**21
# Features of a sequence (channels on the last axis) have few positions each (tokens x
# samples), and the search needs them: at 2^21, all-MiniLM-L6-v2's 1536 features kept 85
# positions each at T = 16, and its graded 4-bit embedding cosine at T = 8 fell from 0.9873 to
# 0.9802 (16 test sentences). Images keep SEARCH_VALUES (pixels x samples per channel).
SEARCH_VALUES_FEATURES = 2**23
THETA_GRID = np.geomspace(0.1, 1.5, 16)  # candidate thresholds, relative to the largest activation
REFINE = 6  # then as many between the best one's neighbours, per channel
SHIFT_GRID = np.linspace(-0.5, 0.5, 11)  # candidate bias shifts, in units of theta / T
WEIGHT_READERS = frozenset({"dense", "conv2d", "conv_transpose2d"})  # absorb an input scale
# The error is |rate - activation| ** ERROR_POWER: a little above 2 weighs the clipped large
# activations, which carry the class evidence, above rounding noise (LAPQ, Nahshan et al. 2021,
# found p of 2.5 to 4 best for 2-4 bit quantisers). On seven digits networks (four trained
# outside the examples) 2.5 beat 2 at T = 1 and 2 and matched it at T = 4 and 8; 3 and 4 lost
# at T = 8 on the text model. For an embedding, scored by cosine, 2 (plain squared error)
# was no better: all-MiniLM-L6-v2 at T = 16, 0.9823 -> 0.9817 (64 test sentences, 2026-12-04).
ERROR_POWER = 2.5
BIAS_OWNERS = {"dense": "bias", "conv2d": "bias", "conv_transpose2d": "bias", "layernorm": "beta"}


def rate_code(
    currents: np.ndarray,
    theta: np.ndarray,
    bipolar: bool,
    levels: int = 1,
    copies: int = 1,
    signed: bool = False,
) -> np.ndarray:
    """The T-step rate code, in real units (sum of counts * theta / T), of the float
    simulator's own IF neurons (reset by subtraction, v0 = theta / 2; bipolar, signed or
    unsigned) with `levels` levels a step and thresholds `theta` (C, 1), driven by `currents`
    (T, C, M). Unsigned and bipolar binary neurons run the same float operations in place (the
    search's hot loop: 34 rate codes a neuron), fused in C where native kernels build
    (native.rate_code, the same values); graded and signed ones run ops.IFNeuron itself.
    `copies` k: the mean code of k neurons per channel, staggered (split.py)."""
    if copies > 1:
        T = len(currents)
        codes = [rate_code(currents + split.stagger(j, copies) * theta / T, theta, bipolar, levels,
                           signed=signed) for j in range(copies)]  # fmt: skip
        return sum(codes) / copies
    if levels != 1 or signed:
        neuron = IFNeuron(theta, signed, False, currents.shape[1:], bipolar=bipolar, levels=levels)
        neuron.reset(1)
        return sum(neuron(current[None])[0] for current in currents) / len(currents)
    theta = np.asarray(theta, np.float64)
    if native.available() and currents.ndim == 3 and theta.shape == (currents.shape[1], 1):
        # the same loop fused in C, the same values (tests/test_accuracy.py checks both)
        currents = np.ascontiguousarray(currents, np.float64)
        return native.rate_code(currents, np.ascontiguousarray(theta[:, 0]), bipolar)
    v = np.broadcast_to(theta / 2, currents.shape[1:]).copy()
    total, spikes = np.zeros(v.shape), np.zeros(v.shape)
    fired, below = np.zeros(v.shape, bool), np.zeros(v.shape, bool)
    for current in currents:
        v += current
        np.greater_equal(v, theta, out=fired)
        if bipolar:  # -1 below 0 (never with fired: theta > 0), as IFNeuron's compare form
            np.subtract(fired, np.less(v, 0, out=below), out=spikes, dtype=np.float64)
        else:
            spikes[...] = fired
        spikes *= theta  # s * theta: exactly +-theta or 0, what IFNeuron returns
        v -= spikes
        total += spikes
    return total / len(currents)


def search(
    currents: np.ndarray,
    target: np.ndarray,
    start: np.ndarray,
    bipolar: bool,
    shifts: bool,
    levels: int = 1,
    pool: Callable[[np.ndarray], np.ndarray] | None = None,
    copies: int = 1,
    signed: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per channel (row of `target` (C, M); `currents` (T, C, M)), the threshold and the bias
    shift (zero unless `shifts`) whose rate code has the least error, and that error.
    Candidates: `start` and THETA_GRID times the channel's largest |activation| over
    `levels` (a graded neuron's full step carries levels * theta), then REFINE between the
    grid neighbours of each channel's best. With `pool` ((C, M) -> (C, M')), the error is
    that of the pooled rates against the pooled activations; with `copies` k, that of k
    staggered neurons a channel (split.py); `signed`: the signed variant's code (which may
    take back a spike it fired, ops.IFNeuron)."""
    T = len(currents)
    # once here, not in each of the 34 rate codes (native.rate_code reads contiguous doubles)
    currents = np.ascontiguousarray(currents, np.float64)
    top = np.maximum(np.abs(target).max(axis=1), 1e-12) / levels
    pool = pool or (lambda r: r)
    target = pool(target)
    best_theta, best_err = start.astype(np.float64), np.full(len(target), np.inf)
    best_shift = np.zeros(len(target))

    def consider(theta: np.ndarray, shift: np.ndarray) -> None:
        nonlocal best_theta, best_shift, best_err
        moved = currents + shift[None, :, None] if np.any(shift) else currents
        rates = rate_code(moved, theta[:, None], bipolar, levels, copies, signed)
        err = _error(pool(rates), target)
        better = err < best_err
        best_theta, best_shift = (
            np.where(better, theta, best_theta),
            np.where(better, shift, best_shift),
        )
        best_err = np.minimum(err, best_err)

    for theta in [np.where(start > 0, start, 1.0)] + [top * f for f in THETA_GRID]:
        consider(theta, best_shift)
    ratio = THETA_GRID[1] / THETA_GRID[0]
    centre = best_theta
    for f in ratio ** np.linspace(-1, 1, REFINE + 2)[1:-1]:
        consider(centre * f, best_shift)
    for f in SHIFT_GRID if shifts else ():
        consider(best_theta, f * best_theta / T)
    return best_theta, best_shift, best_err


def _error(rates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per channel, the mean of |rate - activation| ** ERROR_POWER."""
    d = np.abs(rates - target)
    if ERROR_POWER == 2.5:  # d^2 sqrt(d), in place: 3x numpy's pow, within 4e-16 of it
        root = np.sqrt(d)
        d *= d
        d *= root
        return d.mean(axis=1)
    return (d**ERROR_POWER).mean(axis=1)


def _channels_first(a: np.ndarray, axis: int) -> np.ndarray:
    """(N, ...) batch-first values -> (C, N * rest) with the channel axis first."""
    ax = axis + 1 if axis >= 0 else a.ndim + axis
    return np.moveaxis(a, ax, 0).reshape(a.shape[ax], -1)


def _positions(m: int, channels: int, T: int, features: bool, width: int = 1) -> slice:
    """An even subsample of m positions: at most SEARCH_POSITIONS, and few enough that one
    rate code of all channels over T steps stays within SEARCH_VALUES values
    (SEARCH_VALUES_FEATURES for the features of a sequence). `width`: the length of the
    positions' innermost axis (an image's width, a sequence's length); the stride is made
    prime to it, else it aliases: a stride of 64 over 32x32 images (256 of them) took every
    position from column 0, the padded border (benchmarks/cnn_family.py --task shapes,
    resnet:50 at T = 1 / 2 / 4: 63.6 / 80.8 / 89.5 % before, 97.0 / 99.0 / 99.8 after)."""
    budget = SEARCH_VALUES_FEATURES if features else SEARCH_VALUES
    most = max(64, min(SEARCH_POSITIONS, budget // (channels * T)))
    step = max(1, -(-m // most))
    while step > 1 and math.gcd(step, width) > 1:
        step += 1
    return slice(None, None, step)


def _innermost(shape: tuple[int, ...], axis: int) -> int:
    """The length of the innermost axis of a per-sample `shape` other than its channel `axis`
    (1 where none is left)."""
    rest = [d for i, d in enumerate(shape) if i != axis % max(len(shape), 1)]
    return rest[-1] if rest else 1


def _bias_owner(graph: Graph, tensor: str) -> Node | None:
    """The layer whose bias moves `tensor` one for one and nothing else: the tensor's
    producer if it has a bias, or through an add, one of the add's inputs that does."""
    prod = graph.producer(tensor)
    if prod is None or len(graph.consumers(tensor)) != 1 or tensor in graph.outputs:
        return None
    if prod.op in BIAS_OWNERS:
        return prod
    if prod.op == "offset":  # (a centred convolution's border, _border_offset)
        return _bias_owner(graph, prod.inputs[0])
    if prod.op == "add":
        for t in prod.inputs:
            owner = _bias_owner(graph, t)
            if owner is not None:
                return owner
    return None


def _layout(graph: Graph, node: Node, channels: int, axis: int, per_index: bool = False) -> str:
    """ "channel": one threshold per channel; "layer": one for the tensor. Bipolar neurons
    get one per feature where the next weights absorb it (dense, conv; also through an
    average pooling of an image's channels, `axis` 0, that only they read) or, with
    `per_index` (product_axis found an axis), one per index of the axis that the products of
    two activations they feed contract."""
    if node.params["threshold"].size == channels and channels > 1:
        return "channel"
    users = graph.consumers(node.output)
    pooled = axis in (0, -3) and len(graph.shape(node.output)) == 3
    if node.attrs.get("bipolar") and all(
        u.op in WEIGHT_READERS or (pooled and spiking_pool(graph, u, WEIGHT_READERS)) for u in users
    ):
        return "channel"
    return "channel" if per_index else "layer"


def _absorbing_axis(graph: Graph, node: Node, axis: int) -> int:
    """The axis whose per-channel scale a neuron's readers absorb into their weights: a dense
    layer's input features (last), a convolution's input channels (first of (C, H, W));
    `axis` (the tensor's channel axis) for other readers. They differ where tokens are folded
    back into an image (MobileViT): the tensor still has its features last there, and
    thresholds along it varied inside the convolution's channels (quantize refused)."""
    ops = {u.op for u in graph.consumers(node.output)}
    if ops == {"dense"}:
        return -1
    if ops and ops <= {"conv2d", "conv_transpose2d"} and len(graph.shape(node.output)) == 3:
        return 0
    return axis


def product_axis(graph: Graph, node: Node) -> int | None:
    """The axis of a bipolar neuron's tensor (per sample, last axes first) that reaches every
    product of two activations it feeds as the contracted axis, through data moves only, or
    None. One threshold per index of that axis then becomes one integer multiplier per
    contracted index (quantize.seq._matmul), and the product's output keeps one scale: Q's
    features, K's features (on K or on its transpose), the attention probabilities' keys
    (where the few attention-sink keys otherwise set one threshold for all)."""
    shape = graph.shape(node.output)
    if node.op != "if" or not node.attrs.get("bipolar") or node.params["threshold"].size > 1:
        return None
    for axis in reversed(range(len(shape))):
        if shape[axis] > 1 and _contracted(graph, node.output, axis):
            return axis
    return None


def _product_operands(graph: Graph) -> bool:
    """Whether some neuron of `graph` feeds products of two activations along their contracted
    axis (a candidate choice: one threshold per index there helps at T = 8 and costs at T = 1
    and 2, see t_aware)."""
    return any(product_axis(graph, n) is not None for n in graph.nodes)


def _contracted(graph: Graph, tensor: str, axis: int) -> bool:
    """Whether `tensor`'s `axis` reaches only matmul operands (through data moves), each time
    along the contracted axis alone (or a stack axis): an index array along `axis` is moved as
    the values are and must be equal along the operand matrix's other axis."""
    from spikeport.sim.ops import KERNELS

    shape = graph.shape(tensor)
    index = np.arange(shape[axis], dtype=np.float64).reshape(
        [-1 if a == axis else 1 for a in range(len(shape))]
    )
    values, todo = {tensor: np.broadcast_to(index, (1, *shape)).copy()}, [tensor]
    while todo:
        t = todo.pop()
        if t in graph.outputs or not graph.consumers(t):
            return False
        for user in graph.consumers(t):
            if user.op == "matmul":
                a, b = (graph.shape(i) for i in user.inputs)
                if user.inputs[0] == user.inputs[1] or len(a) != len(b):
                    return False  # (a stack broadcast over another: one multiplier row)
                m = values[t][0] if user.inputs[0] == t else np.swapaxes(values[t][0], -1, -2)
                if not np.all(m == m[..., :1, :]):  # (..., rows, contracted)
                    return False
            elif user.op in ELEMENT_MOVES and len(user.inputs) == 1:
                kernel = KERNELS[user.op](user, "ann", graph.shape(user.output))
                kernel.reset(1)
                values[user.output] = kernel(values[t])
                todo.append(user.output)
            else:
                return False
    return True


# The search records each live tensor's T steps in float32 (STORED); its kernels compute in
# float64. A spike is a float32 threshold, exact either way, and a current's rounding (2^-24
# of it) is far below the grid's spacing. It halves the recorded steps' memory, so the budget
# holds twice the samples: a 3x32x32 inception net at T = 8 (benchmarks/cnn_family.py --task
# shapes, inception:50, 40 channels at full resolution) had searched 159 of its 256
# calibration images in float64, too few also for the classifier's refit, and scored 92.5 %
# against an ANN of 99.9 (96.3 at T = 4); on all 256, 99.4 % (integer mode, test split).
STORED = np.float32


def _stored(value: np.ndarray) -> np.ndarray:
    """One step of a recorded tensor, as the search keeps it (STORED; token ids stay ints)."""
    value = np.asarray(value)
    return value.astype(STORED, copy=False) if value.dtype.kind == "f" else value


def _mapped(
    run: _Run, src: str, f: Callable[[np.ndarray], np.ndarray], replaces: bool = False
) -> list[np.ndarray]:
    """f of each recorded step of `src`, one step at a time. Where the result `replaces`
    src's steps, or the caller is src's last reader (it releases src next), each step of src
    is dropped once used, so the tensor is not held twice (the shifted currents of
    all-MiniLM-L6-v2's feed-forward neurons: 354 MiB a copy on 200 sentences at 9 steps). A
    static tensor's one shared array is mapped once."""
    steps = run.spiking[src]
    if all(c is steps[0] for c in steps):
        return [_stored(f(steps[0]))] * len(steps)
    last = replaces or (run.left[src] == 1 and src not in run.graph.outputs)
    out = []
    for t in range(len(steps)):
        out.append(_stored(f(steps[t])))
        if last:
            steps[t] = None
    return out


def _mean(steps: list[np.ndarray]) -> np.ndarray:
    """The mean over T recorded steps, summed in float64."""
    return sum(np.asarray(c, np.float64) for c in steps) / len(steps)


class _Run:
    """The float spiking network and the ANN, node by node: `spiking[t]` holds each live
    tensor's T per-step values (one shared array when it is static), `ann[t]` its ANN value."""

    def __init__(
        self,
        graph: Graph,
        x: Batch,
        T: int,
        extra_neurons: float = split.EXTRA_NEURONS,
        moved: Batch | None = None,
    ):
        from spikeport.sim.simulator import encode_inputs

        self.graph, self.T = graph, T
        self.extra_neurons = extra_neurons  # the outlier split's budget (split.neuron_copies)
        self.static = static_tensors(graph)
        given = encode_inputs(graph, x, "float")
        self.spiking = {k: [_stored(v)] * T for k, v in given.items()}
        self.ann = dict(given)
        # the ANN on `moved` (padding.moved: x with its padding's token ids changed): where a
        # value differs from self.ann's, it is padding's, and no output reads it (kept)
        self.moved = None if moved is None else dict(encode_inputs(graph, moved, "float"))
        self.left = Counter(i for n in graph.nodes for i in n.inputs)
        # nodes the search inserts (_border_offset), by the node after which they run
        self.inserted: dict[str, list[Node]] = {}

    def ann_output(
        self, node: Node, ann_node: Node, values: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """The ANN's value of `node`'s output: `ann_node` (its ANN twin, whose inputs may be
        named otherwise) run on the ANN values of `node`'s inputs (or on `values`')."""
        values = self.ann if values is None else values
        batch = len(values[node.inputs[0]]) if node.inputs else 1
        kernel = _Parts(ann_node, "ann", self.graph.shape(node.output), batch)
        return kernel([values[i] for i in node.inputs], stored=False)

    def alias(self, tensor: str, src: str) -> None:
        """`tensor` has the ANN value of `src` (a node tune inserted that the ANN view skips)."""
        self.ann[tensor] = self.ann[src]
        if self.moved is not None:
            self.moved[tensor] = self.moved[src]

    def kept(self, tensor: str, axis: int) -> np.ndarray | None:
        """Which positions of `tensor` (columns of _channels_first(value, axis)) some output
        reads: those where some channel's ANN value did not move with the padding (see
        padding.py); None where every position is kept."""
        if self.moved is None:
            return None
        same = _channels_first(self.moved[tensor] == self.ann[tensor], axis).any(axis=0)
        return None if same.all() else same

    def step(self, node: Node, ann_node: Node, ann_output: np.ndarray | None = None) -> None:
        """Run `node` on the spiking values and `ann_node` on the ANN's (unless its output is
        given: _refit computed it already)."""
        batch = len(self.ann[node.inputs[0]]) if node.inputs else 1
        snn_k = _Parts(node, "float", self.graph.shape(node.output), batch)
        if ann_output is None:
            ann_output = self.ann_output(node, ann_node)
        self.ann[node.output] = ann_output
        if self.moved is not None:
            self.moved[node.output] = self.ann_output(node, ann_node, self.moved)
        if node.output in self.static:
            value = snn_k([self.spiking[i][0] for i in node.inputs])
            self.spiking[node.output] = [value] * self.T
        else:
            # inputs this node reads last: each step is dropped once computed, so a wide layer
            # and its successor do not both hold all T steps (a 22M-parameter encoder's
            # feed-forward block: 0.5 GB at 80 sentences and 16 steps)
            kept = set(self.graph.outputs) | self.static
            done = [i for i in node.inputs if self.left[i] == 1 and i not in kept]
            outs = []
            for t in range(self.T):
                outs.append(snn_k([self.spiking[i][t] for i in node.inputs]))
                for i in done:
                    self.spiking[i][t] = None
            self.spiking[node.output] = outs
        for i in node.inputs:
            self.release(i)

    def release(self, tensor: str) -> None:
        """One reader of `tensor` is done with it: drop its values after the last one."""
        self.left[tensor] -= 1
        if self.left[tensor] == 0 and tensor not in self.graph.outputs:
            del self.spiking[tensor], self.ann[tensor]
            if self.moved is not None:
                del self.moved[tensor]


# The ops the search steps with their fast kernels (_OneStep): the synaptic ones, stateless in
# every mode; the others there are neurons and running-sum forms that the search's own
# per-step loop (_Run.step) does not need.
STEPPED_FAST = frozenset({"dense", "conv2d"})


class _OneStep:
    """A fast kernel (spikeport.sim.fast) called like a reference one, on one step: the
    search's convolutions and dense layers then run in torch (float64, all its threads), not
    numpy with one BLAS thread (spikeport.threads): the zoo's mp_palm_detection_lite (192 x
    192, 16 images) converts for T = 4 in 5.6 min (8.0 min of CPU time on 2 cores) where it
    took 23 (22.5 of CPU time), to the same thresholds; the 8x8 digits nets and text_bert
    in the same time as before. One step at a time, as the reference kernels ran, so the
    memory _Run.step saves stays saved."""

    def __init__(self, fast: FastKernel):
        self.fast = fast

    def reset(self, batch: int) -> None:
        pass

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.fast.run(x[None]).y[0]


def _kernel(node: Node, mode: str, shape: tuple[int, ...]) -> Kernel | _OneStep:
    """`node`'s kernel in a float mode: the fast one where spikeport.sim.fast has one."""
    maker = FAST_KERNELS.get(node.op) if node.op in STEPPED_FAST else None
    fast = maker(node, mode, shape, None) if maker is not None else None
    return KERNELS[node.op](node, mode, shape) if fast is None else _OneStep(fast)


# The kernels other than STEPPED_FAST's run on parts of the samples whose one-step float64
# output is at most this many bytes; the kernels are elementwise or per sample, so the values
# are the same. Their temporaries were most of the search's peak: all-MiniLM-L6-v2's GELU in
# its running-sum form, on 140 sentences of 1536 features, holds its sums, its previous
# output and about four temporaries of 55 MiB each at every step, beside 16 steps of input
# and output. (A dense layer or convolution runs whole: its BLAS may sum in another order
# for fewer rows, and its temporaries are its input and output.)
STEP_PART_BYTES = 1 << 24


class _Parts:
    """A node's kernels, one per part of the batch (STEP_PART_BYTES), each reset for its part."""

    def __init__(self, node: Node, mode: str, shape: tuple[int, ...], batch: int):
        rows = max(1, STEP_PART_BYTES // (8 * max(1, math.prod(shape))))
        rows = max(batch, 1) if node.op in STEPPED_FAST or not node.inputs else rows
        self.batch, self.kernels = batch, []
        for start in range(0, max(batch, 1), rows):
            k = _kernel(node, mode, shape)
            k.reset(min(rows, batch - start) if node.inputs else batch)
            self.kernels.append((slice(start, start + rows), k))

    def __call__(self, inputs: list[np.ndarray], stored: bool = True) -> np.ndarray:
        """One step on `inputs` (each sliced where it has the batch's length), joined; as the
        search records it (_stored) unless not `stored`."""
        if len(self.kernels) == 1:
            y = self.kernels[0][1](*inputs)
            return _stored(y) if stored else y
        out = None
        for rows, k in self.kernels:
            y = k(*[v[rows] if np.ndim(v) and len(v) == self.batch else v for v in inputs])
            if out is None:
                dtype = _stored(y[:0]).dtype if stored else y.dtype
                out = np.empty((self.batch,) + y.shape[1:], dtype)
            out[rows] = y  # (float64 -> float32: astype's rounding)
        return out


def _samples(graph: Graph, x: Batch, T: int, wanted: int | None = None) -> Batch:
    """The first `wanted` calibration samples, or by default as many as TUNE_SAMPLES and the
    memory budget allow."""
    if wanted is None:
        largest = max(int(np.prod(graph.shape(n.output))) for n in graph.nodes)
        fits = MEMORY_BUDGET // max(1, largest * np.dtype(STORED).itemsize * (T + 1))
        wanted = int(max(8, min(TUNE_SAMPLES, fits)))
    return take(x, slice(wanted))


def t_aware(
    snn: Graph,
    x: Batch,
    T: int,
    axes: dict[str, int],
    extra_neurons: float = split.EXTRA_NEURONS,
    samples: int | None = None,
    quiet: bool = False,
    search: str = "full",
    signed_twin: bool = False,
) -> tuple[Graph, dict[str, object]]:
    """The float SNN converted for T (see the module docstring), and a record of the choice.
    `extra_neurons`: the outlier split's budget, a share of each split layer's features.
    `samples`: the calibration samples the search runs on (`convert --tune-samples`; default
    _samples' memory budget), whatever memory they take. A progress bar counts the neuron
    layers searched over all candidates (on a terminal, unless `quiet`): a 22M-parameter
    encoder's search takes minutes. `search` (SEARCHES): "full", the candidates below;
    "quick", the search for T alone beside the percentile conversion (QUICK).

    The neuron-by-neuron search scores each neuron alone; the network as a whole decides
    between the searches for T, 2T and 4T steps (EXTRA_STEPS) and the percentile conversion:
    the candidate whose output at T steps is closest to the ANN on the calibration samples
    (for class scores, agreement of the top class first, beyond its paired noise: _pick)
    wins. A search for more steps than T keeps higher thresholds, which at T = 1 and 2
    sometimes carry the network better than the search for T itself (measured on digits CNNs:
    87.6 % -> 94.1 % at T = 1 on one, no change on most).

    Where neurons feed products of two activations, each search runs twice: one threshold
    per index of the contracted axis there (product_axis), and one per operand. As
    candidates they lifted text_bert at T = 8 from 95.5 to 96.3 % and the ViT at T = 1 from
    52.0 to 56.9 (integer mode, test splits); always on, a first version cost text_bert 4.5
    and 5.4 points at T = 1 and 2, where the calibration data prefers one per operand too.
    Transformers' conversion takes twice as long.

    Where bipolar neurons feed dense layers or convolutions, each search runs twice again:
    with and without centring (tune_thresholds' `centre`). Always on, it lifted the ViT at
    T = 1 / 2 / 4 / 8 from 75.6 / 93.9 / 96.5 / 97.4 to 88.5 / 95.2 / 97.6 / 98.0 and
    text_bert at T = 1 and 8 (74.1 -> 79.5, 96.7 -> 97.2), but cost text_bert 3.0 points at
    T = 2 and the counting encoder 9.4 at T = 1 (integer mode, test splits): as a candidate,
    the calibration data decides. Transformers' conversion takes twice as long again, and so
    does that of CNNs with bipolar neurons in front of convolutions (hardswish, SiLU,
    LeakyReLU, squeeze-excitation products; CENTRED_CONVS).

    With `signed_twin` (`convert` without --signed or --unsigned; T > 1, the full search and
    binary neurons: _signable), the chosen search runs once more with its unsigned neurons
    signed (they may take a spike back: DESIGN's signed variant), and the calibration data
    decides between the two as between the others (SIGNED).
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    full = search == "full"
    steps = sorted({T} | {k * T for k, most in EXTRA_STEPS.items() if full and k * T <= most})
    scored = take(x, slice(SCORE_SAMPLES))
    given = size(x)
    # each search on as many samples as the memory budget holds for its own step count (the
    # first ones: the search for T keeps the most, the searches for more steps a prefix)
    by_steps = {t: _samples(snn, x, t, samples) for t in steps}
    x = by_steps[T]
    moved = padding.moved(snn, x)  # padding no output reads: left out of every fit
    moved_by_steps = {t: None if moved is None else take(moved, slice(size(v)))
                      for t, v in by_steps.items()}  # fmt: skip
    reference = _float_outputs(snn, scored, 1, "ann")
    candidates = {"percentile": snn}
    scores = {"percentile": _score(snn, scored, T, reference)}
    corrections = [False, True] if full and _corrected(snn) else [False]
    operands = [True, False] if full and _product_operands(snn) else [True]
    centring = [False, True] if full and _centring(snn, axes) else [False]
    pooling = [False, True] if full and _poolable(snn, axes, size(x)) else [False]
    outcomes: dict[str, dict[str, str]] = {}  # per candidate: _refit_outputs'
    searches = {
        _candidate_name(*s): s
        for s in itertools.product(steps, corrections, operands, centring, pooling)
    }
    twin = signed_twin and T > 1 and full and _signable(snn)
    layers = sum(map(_searched, snn.nodes))
    desc = f"T-aware search, {len(searches) + twin} candidates"

    def try_candidate(name: str, graph: Graph, advance: Callable[[int], None]) -> None:
        t, correct, per_index, centre, pooled = searches[name.removesuffix(SIGNED)]
        tuned = tune_thresholds(graph, by_steps[t], t, axes, correct, per_index, centre, pooled,
                                extra_neurons, moved_by_steps[t], advance)  # fmt: skip
        outputs = None  # the candidate's outputs on `scored`, where the refit made them
        if moved is None:  # (a text model's padding: its output rows are not all read)
            outcomes[name], outputs = _refit_outputs(tuned, scored, T, reference, size(by_steps[t]))
        else:
            unrefitted = _unsearched_outputs(tuned, size(by_steps[t]))
            outcomes[name] = {n.name: PADDED for n in unrefitted}
        candidates[name] = _share_unchanged(tuned, snn)
        scores[name] = _score(tuned, scored, T, reference, outputs)
        for dropped in set(candidates) - set(_undominated(candidates, scores)):
            del candidates[dropped]  # (in place: the closure shares the dict)
        release_freed_memory()  # the search's heap blocks, before the next one's

    with progress((len(searches) + twin) * layers, desc, quiet, "layer") as advance:
        for name in searches:
            try_candidate(name, snn, advance)
        chosen = _pick(scores)
        if twin and chosen != "percentile":
            try_candidate(chosen + SIGNED, sign_neurons(_search_copy(snn)), advance)
        elif twin:  # the percentile conversion won: no search to sign
            advance(layers)
    kept = _pick(scores)
    base = {n.name: n for n in snn.nodes}
    record: dict[str, object] = {
        "T": T,
        "search": search,
        "samples": size(x),
        "calibration_samples": given,  # of which the search for T ran on `samples`
        "samples_per_steps": {str(t): size(v) for t, v in by_steps.items()},
        # whether padding that no output reads was left out of the fit (padding.py)
        "padding_left_out": moved is not None,
        "scored_samples": size(scored),
        "kept": kept,
        # the layers whose weights the kept candidate refitted (refit.py)
        "refitted": [
            n.name
            for n in candidates[kept].nodes
            if n.op in ROW_LAYERS
            and n.name in base
            and n.params["weight"] is not base[n.name].params["weight"]
        ],
        # what became of each output layer the search's own samples were too few to refit
        # (_refit_outputs): refitted on more samples, or kept and why
        "output_refit": outcomes.get(kept, {}),
        "extra_neurons": extra_neurons,  # the split's budget
        # the neuron layers whose outlier features got copies (split.py): extra neurons
        "split_neurons": split.split_neurons(candidates[kept]),
        "candidates": {
            k: {"agreement": float(a.mean()), "relative_error": -e} for k, (a, e) in scores.items()
        },
    }
    return candidates[kept], record


# The signed twin of the chosen search (t_aware's `signed_twin`): its candidate's name suffix.
# Signed neurons take back a spike that later inputs turn out not to warrant (the overshoot
# an unsigned neuron keeps). On 32x32 colour images (benchmarks/cnn_family.py --task shapes,
# 2026-12-07, integer mode, test split, T = 8) `convert --signed` lifted relu_dw:50 from
# 72.9 to 77.8 % (ANN 78.1), maxpool:50 from 89.5 to 90.7 (91.0), maxpool:52 from 88.6 to
# 90.0 (90.5); on the 8x8 digits it moves a net by a few images either way (bench_cnn_bn
# 98.89 / 99.44 / 99.26 -> 98.33 / 98.70 / 99.44 at T = 2 / 4 / 8, bench_resnet 97.22 /
# 98.89 / 99.81 -> 97.78 / 99.44 / 99.63). So it is a candidate: the calibration decides.
SIGNED = ", signed"


def _candidate_name(t: int, correct: bool, per_index: bool, centre: bool, pooled: bool) -> str:
    """A search's name in the record: its step count, then what it does besides."""
    name = f"T={t}" + (", bias corrected" if correct else "")
    name += "" if per_index else ", one threshold per product operand"
    name += ", centred" if centre else ""
    return name + (", pooled" if pooled else "")


def _signable(graph: Graph) -> bool:
    """Whether the signed twin applies: some IF neuron neither signed nor bipolar, and none
    graded (signed, a graded neuron would send a sign bit beyond the --spike-bits chosen)."""
    neurons = [n for n in graph.nodes if n.op == "if"]
    if any(n.attrs.get("spike_bits", 1) > 1 for n in neurons):
        return False
    return any(not n.attrs["signed"] and not n.attrs.get("bipolar") for n in neurons)


def _share_unchanged(tuned: Graph, base: Graph) -> Graph:
    """`tuned` with each parameter array equal to `base`'s replaced by `base`'s own: a
    candidate then holds only the thresholds, biases and refitted weights its search moved
    (four full copies of a 22M-parameter encoder's weights were 360 MB of convert's peak)."""
    by_name = {n.name: n for n in base.nodes}  # (tuned may have centring offsets besides)
    for a in tuned.nodes:
        b = by_name.get(a.name)
        for k, v in a.params.items():
            w = b.params.get(k) if b is not None and b.op == a.op else None
            if w is not None and v.shape == w.shape and v.dtype == w.dtype and np.array_equal(v, w):
                a.params[k] = w
            elif isinstance(v, np.ndarray) and not v.flags.writeable:  # _search_copy's view
                a.params[k] = np.array(v)  # that moved to another node: the candidate's own
    return tuned


def _undominated(
    candidates: dict[str, Graph], scores: dict[str, tuple[np.ndarray, float]]
) -> dict[str, Graph]:
    """The candidates _pick could still choose, whatever others come: one is dropped where
    another agrees with the ANN on every sample it agrees on, with a smaller error (or the
    same scores, and came first: _pick's order). Such a one is tied with any best the dropped
    one is tied with, and wins over it, so _pick's choice is the same. An embedding's
    candidates agree on nothing, so one is held, not all: all-MiniLM-L6-v2's 16 searches kept
    38 MiB of refitted weights and biases each, 600 MiB of convert's peak."""
    names = list(candidates)

    def beats(a: str, b: str) -> bool:
        (agree_a, err_a), (agree_b, err_b) = scores[a], scores[b]
        if np.any(agree_b & ~agree_a):
            return False
        if err_a == err_b and np.array_equal(agree_a, agree_b):
            return names.index(a) < names.index(b)
        return err_a > err_b

    return {b: g for b, g in candidates.items() if not any(beats(a, b) for a in names if a != b)}


def _pick(scores: dict[str, tuple[np.ndarray, float]]) -> str:
    """The candidate of least relative error among those whose top-class agreement with the
    ANN is not significantly below the best one's. Both are counted on the same samples, so
    the comparison is paired (McNemar): of the b samples only the best agrees on and the c
    only the other does, b - c within two standard errors, 2 sqrt(b + c), is noise. The
    relative error of the outputs is the steadier signal: digits_vit at T = 1, 180 samples:
    agreement 55.6 % for one candidate, 54.4 % and a lower error for another, which scored
    52.8 % against 41.1 % on the test split; the zoo's DeiT (16 calibration images, T = 4):
    15 of 16 for one, 13 of 16 and a 25 % lower error for another, which agreed on 12 of 16
    test images against 10. Outputs that are not class scores agree on nothing: the error
    alone decides."""
    best = max(scores, key=lambda k: (scores[k][0].sum(), scores[k][1]))
    top = scores[best][0]

    def tied(agree: np.ndarray) -> bool:
        b, c = int(np.sum(top & ~agree)), int(np.sum(agree & ~top))
        return b - c <= 2 * np.sqrt(b + c)

    return max((k for k, (a, _) in scores.items() if tied(a)), key=lambda k: scores[k][1])


def _score(
    graph: Graph,
    x: Batch,
    T: int,
    reference: list[np.ndarray],
    outputs: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """(whether each sample's top class agrees with the ANN's, if the output is class scores,
    else all False; minus the relative error of the mean outputs at T): larger is closer.
    `outputs`: the graph's mean outputs at T on `x` where already known (_refit_outputs),
    else simulated here."""
    if outputs is None:
        outputs = _float_outputs(graph, x, T, "float")
    agree = np.zeros(len(reference[0]), bool)
    if class_scores(graph, graph.outputs[0]):
        agree = outputs[0].argmax(-1) == reference[0].argmax(-1)
    num = sum(float(np.sum((o - r) ** 2)) for o, r in zip(outputs, reference, strict=True))
    den = sum(float(np.sum(r**2)) for r in reference)
    return agree, -float(np.sqrt(num / max(den, 1e-30)))


def _float_outputs(graph: Graph, x: Batch, T: int, mode: str) -> list[np.ndarray]:
    """Each output's mean over T steps ("float") or its ANN value ("ann", T = 1)."""
    from spikeport.sim.simulator import DEFAULT_BATCH, simulate

    names = [t.name for t in graph.inputs] + [n.output for n in graph.nodes]
    widest = max(int(np.prod(graph.shape(t))) for t in names)
    batch = int(np.clip(SCORE_BYTES // (8 * T * widest), 1, DEFAULT_BATCH))
    res = simulate(graph, x, T, mode, batch_size=batch)
    return [res.outputs[o][-1] / T for o in graph.outputs]


PADDED = "kept its weights: text padding is left out of every fit"  # padding.py


def _unsearched_outputs(graph: Graph, searched: int) -> list[Node]:
    """The output layers (a dense layer or convolution whose output is the graph's, reading
    the network, with float weights) that the search's `searched` samples were too few to
    refit (refit.refittable)."""
    static = static_tensors(graph)
    return [
        n
        for n in graph.nodes
        if n.output in graph.outputs
        and n.op in ROW_LAYERS
        and not _source_codes(graph, n)
        and n.inputs[0] not in static
        and not refit.refittable(n, searched, graph.shape(n.output))
    ]


def _refit_outputs(
    graph: Graph, x: Batch, T: int, reference: list[np.ndarray], searched: int
) -> tuple[dict[str, str], list[np.ndarray] | None]:
    """Refit, in place, each output layer that the search's `searched` samples were too few
    for (_unsearched_outputs), on the first TUNE_SAMPLES of the scoring samples `x` instead,
    against their ANN outputs `reference`; its input is the T-step mean of the float spiking
    network, run as the scoring runs it (streamed steps). Returns each such layer's outcome,
    refitted or kept and why (t_aware's record, `inspect`), and the graph's mean outputs on
    `x` where these layers make all of them from rates of all of `x` (an output layer is
    linear: its T-step mean is its output on its input's T-step mean), which _score would
    otherwise simulate again (relu_dw:50 at T = 16: 59 -> 41 s of conversion, one thread).

    Why: the search holds T steps of every live tensor for all its samples, so its memory
    budget sets how many it runs on (_samples), but no neuron follows an output layer, and
    its input alone is small. relu_dw:50 (benchmarks/cnn_family.py --task shapes: 48 channels
    of 32x32 before a global pooling) searched for T = 16 on 140 images, too few for its
    classifier's 49 weights a class (196 rows), which kept the ANN's weights while the pooled
    rates had per-channel biases of up to 0.7 standard deviations: 64.6 % at T = 16 against
    73.6 at T = 8 (float mode, test split; ANN 78.4). Refitted on the 256 scored images,
    76.7 % at T = 16. Not past TUNE_SAMPLES: given 1,000 calibration images (the digits'
    training split), refitting the digits MLP's classifier on all of them, where the search
    ran on 256, moved it by -5 / -1 / +3 / -3 test images at T = 1 / 2 / 4 / 8 (the digits
    CNN's by -2 / +5 / 0 / +1): what more calibration samples do is the search's question."""
    layers = _unsearched_outputs(graph, searched)
    # the samples the search would have run on but for its memory budget (TUNE_SAMPLES), whose
    # inputs, as simulate returns them (float64, a running sum at each of T steps), fit it
    width = sum(int(np.prod(graph.shape(t))) for t in {n.inputs[0] for n in layers})
    count = min(size(x), TUNE_SAMPLES, MEMORY_BUDGET // (8 * max(width, 1) * T))
    outcomes = {
        n.name: f"kept its weights: {count} samples are too few to refit it"
        f" (it needs {refit.samples_needed(n, graph.shape(n.output)):,})"
        for n in layers
        if not refit.refittable(n, count, graph.shape(n.output))
    }
    layers = [n for n in layers if n.name not in outcomes]
    if not layers:
        return outcomes, None
    # the network up to the layers' inputs, those its outputs
    wanted = sorted({n.inputs[0] for n in layers})
    last = max(i for i, n in enumerate(graph.nodes) if n.output in wanted)
    front = dataclasses.replace(graph, nodes=graph.nodes[: last + 1], outputs=wanted)
    rates = dict(zip(wanted, _float_outputs(front, take(x, slice(count)), T, "float"), strict=True))
    for n in layers:
        wanted_out = reference[graph.outputs.index(n.output)][:count]
        refitted = refit.refit(n, rates[n.inputs[0]], wanted_out)
        outcomes[n.name] = (
            f"refitted on {count} samples"
            if refitted
            else "kept its weights: the cross-validation preferred them"
        )
    made = {n.output for n in layers}
    whole = count == size(x) and set(graph.outputs) <= made and not made & set(wanted)
    return outcomes, _outputs_of(graph, layers, rates) if whole else None


def _outputs_of(graph: Graph, layers: list[Node], rates: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The graph's outputs, each made by one of the linear `layers` from `rates`, its input."""
    from spikeport.sim.simulator import simulate

    inputs = [TensorInfo(t, graph.shape(t)) for t in rates]
    tail = dataclasses.replace(graph, inputs=inputs, nodes=layers, outputs=graph.outputs)
    res = simulate(tail, rates, 1, "ann", batch_size=max(1, size(rates)))
    return [res.outputs[o][-1] for o in graph.outputs]


def tune_thresholds(
    snn: Graph,
    x: Batch,
    T: int,
    axes: dict[str, int],
    correct: bool = False,
    per_index_products: bool = True,
    centre: bool = False,
    pooled: bool = False,
    extra_neurons: float = split.EXTRA_NEURONS,
    moved: Batch | None = None,
    advance: Callable[[int], None] = lambda n: None,
) -> Graph:
    """The float SNN with every neuron's threshold, and its feeding layer's bias, searched for
    T steps, neuron by neuron on the spiking network's own inputs. `axes`: each tensor's
    channel axis (balance.channel_axes). `correct`: also correct the mean error of the other
    layers with a bias (_corrected). `per_index_products`: one threshold per index of the
    contracted axis for the bipolar neurons that feed products of two activations
    (product_axis), else one for each. `centre`: let bipolar neurons in front of dense layers
    or convolutions code x - c where that rounds closer (_centrable, _centre). `pooled`:
    score a neuron that only an average or max pooling reads on its pooled rates (_pooled_by).
    `extra_neurons`: at most this share of a layer's features in extra neurons for its
    outlier features (split.neuron_copies). `moved`: `x` with its padding's token ids
    changed (padding.moved): the values that move with them stay out of every fit.
    `advance(1)` after each neuron layer searched (convert's progress bar). The parameters it
    leaves are read-only views of snn's (_search_copy; t_aware's _share_unchanged gives the
    kept candidate snn's own)."""
    out, axes = _search_copy(snn), dict(axes)  # (centring may add tensors: _border_offset)
    run = _Run(out, x, T, extra_neurons, moved)
    corrected = _corrected(out) if correct else set()
    # a snapshot: centring (_centre) inserts offset nodes into out.nodes as it goes
    for node, original in zip(list(out.nodes), snn.nodes, strict=True):
        if _searched(node):
            axis = axes.get(node.inputs[0], -1)
            _tune_neuron(out, run, node, axis, per_index_products, centre, pooled)
            advance(1)
        ann_output = None
        if node.op in ROW_LAYERS and node.inputs[0] not in run.static:
            ann_output = _refit(run, node, original)
        run.step(node, original, ann_output)
        if node.name in corrected:
            _correct_bias(run, node, axes.get(node.output, -1))
        for offset in run.inserted.pop(node.name, []):
            run.step(offset, _zero_twin(offset))
            axes[offset.output] = axes.get(offset.inputs[0], -1)
    return fold_offsets(out)  # a centre moves into the bias of a dense layer before it


def _search_copy(graph: Graph) -> Graph:
    """A copy of `graph` for one search to change: its own nodes, attributes and tensors, but
    its parameter arrays read-only views of graph's. The search replaces the arrays it changes
    and never writes into one (a write would raise here), so each candidate holds only those,
    not a copy of every weight (152 MiB of all-MiniLM-L6-v2's conversion, for each search)."""
    memo: dict[int, object] = {}
    for node in graph.nodes:
        for value in node.params.values():
            if isinstance(value, np.ndarray):
                view = value.view()
                view.flags.writeable = False
                memo[id(value)] = view
    return copy.deepcopy(graph, memo)


def _searched(node: Node) -> bool:
    """Whether tune_thresholds searches this node's threshold: every IF neuron."""
    return node.op == "if"


def _refit(run: _Run, node: Node, ann_node: Node) -> np.ndarray | None:
    """Refit a dense layer's or convolution's weights to the spiking network's mean input
    (refit.py): the target is the ANN's output, less the border offset that centring put
    after a padded convolution (the spiking network adds it after this layer). A layer whose
    weights are a quantized source's int8 codes (TFLite, meta.tflite.quantization) keeps them:
    quantize recovers those codes exactly (docs/tflite.md). Returns the ANN output it
    computed for the target (None where the layer is left alone), for _Run.step."""
    src = node.inputs[0]
    if _source_codes(run.graph, node) or not refit.refittable(
        node, len(run.ann[src]), run.graph.shape(node.output)
    ):
        return None
    ann_output = run.ann_output(node, ann_node)
    target = ann_output
    for offset in run.inserted.get(node.name, []):
        target = target - offset.params["value"]
    rows = run.kept(src, -1) if node.op == "dense" else None  # a dense layer's rows: positions
    refit.refit(node, _mean(run.spiking[src]), target, rows)
    return ann_output


def _source_codes(graph: Graph, node: Node) -> bool:
    """Whether `node`'s weights are a quantized source's int8 codes (TFLite,
    meta.tflite.quantization), which no refit changes: quantize recovers them exactly."""
    codes = graph.meta.get("tflite", {}).get("quantization", {}).get("params", {})
    return "weight" in codes.get(node.name, {})


def _corrected(graph: Graph) -> set[str]:
    """The layers with a bias (BIAS_OWNERS) whose bias no neuron's search moves and whose
    output is not the network's: in transformers the residual branches, the Q, K, V
    projections (read by products of two activations through reshapes) and the LayerNorms.
    A neuron's own search already shifts the bias in front of it, jointly with its threshold,
    and an output layer's per-class offsets are the ANN's own decision."""
    owners = [_bias_owner(graph, n.inputs[0]) for n in graph.nodes if n.op == "if"]
    owned = {o.name for o in owners if o is not None}
    return {
        n.name
        for n in graph.nodes
        if n.op in BIAS_OWNERS and n.name not in owned and n.output not in graph.outputs
    }


def _correct_bias(run: _Run, node: Node, axis: int) -> None:
    """Move a layer's bias (a LayerNorm's beta) by minus the mean error, per output channel,
    of its T-step output (driven by the spiking network's own inputs) against the ANN's, and
    the recorded values with it."""
    key = BIAS_OWNERS[node.op]
    bias = node.params[key]
    mean = _mean(run.spiking[node.output])
    err = _channels_first(mean - run.ann[node.output], axis)
    kept = run.kept(node.output, axis)
    err = (err if kept is None else err[:, kept]).mean(axis=1)
    if node.output in run.static or bias.shape != err.shape:
        return
    node.params[key] = (bias - err).astype(np.float32)
    moved = threshold_shape(err, len(run.graph.shape(node.output)), axis)
    run.spiking[node.output] = _mapped(run, node.output, lambda c: c - moved, replaces=True)


def _tune_neuron(
    graph: Graph,
    run: _Run,
    node: Node,
    axis: int,
    per_index_products: bool,
    centre: bool,
    pooled: bool = False,
) -> None:
    """Choose one neuron's thresholds and its feeding layer's bias shift; move the recorded
    currents by that shift."""
    src = node.inputs[0]
    bipolar = bool(node.attrs.get("bipolar"))
    axis = _absorbing_axis(graph, node, axis)
    contracted = product_axis(graph, node) if per_index_products else None
    axis = axis if contracted is None else contracted
    pooling = _pooled_by(graph, node, axis, len(run.ann[src])) if pooled else None
    pool = None
    if pooling is not None:
        target, currents, pool = _pool_windows(run.ann[src], run.spiking[src], pooling)
        channels = len(target)
    else:
        target = _channels_first(run.ann[src], axis)
        channels, m = target.shape
        kept = run.kept(src, axis)  # padding no output reads stays out of the fit
        cols = np.arange(m) if kept is None else np.flatnonzero(kept)
        width = _innermost(graph.shape(src), axis)
        pick = cols[_positions(len(cols), channels, run.T, axis == -1, width)]
        currents = np.stack([_channels_first(c, axis)[:, pick] for c in run.spiking[src]])
        target = target[:, pick]
    if not bipolar:
        target = np.maximum(target, 0)  # the ReLU's output; a cap is applied below
    old = node.params["threshold"]
    layout = _layout(graph, node, channels, axis, contracted is not None)
    if layout == "layer":
        currents, target = currents.reshape(len(currents), 1, -1), target.reshape(1, -1)
    start = np.broadcast_to(old.reshape(-1), (len(target),))
    if node.attrs.get("cap") is not None:
        target = np.minimum(target, node.attrs["cap"])
    owner = _bias_owner(graph, src)
    shifts = owner is not None and (layout == "channel" or channels == 1)
    shifts = shifts and owner.params[BIAS_OWNERS[owner.op]].shape == (channels,)
    levels = spike_levels(node)
    signed = bool(node.attrs.get("signed")) and not bipolar
    theta, shift, err = search(currents, target, start, bipolar, shifts, levels, pool,
                               signed=signed)  # fmt: skip
    middles = None
    if centre and layout == "channel" and _centrable(graph, node, axis, run.static):
        # the search again on x - c, c the middle of each feature's range: where that rounds
        # closer, the neuron codes x - c (its 2T + 1 levels span the range, not +-max |x|)
        mid = _middles(target)
        found = search(currents - mid[None, :, None], target - mid[:, None], theta, True,
                       shifts, levels)  # fmt: skip
        better = found[2] < err
        if np.any(better):
            theta, shift = np.where(better, found[0], theta), np.where(better, found[1], shift)
            middles = np.where(better, mid, 0.0)
    copies = None
    if (
        layout == "channel"
        and axis in (-1, len(graph.shape(src)) - 1)
        and split.splittable(graph, node)
    ):
        coded = target - (0.0 if middles is None else middles[:, None])
        copies = split.neuron_copies(
            np.abs(coded).max(axis=1) ** 2 * split.column_power(graph, node), run.extra_neurons
        )
        for k in np.unique(copies[copies > 1]):  # each group searched again for its k neurons
            g = copies == k
            mid = np.zeros(g.sum()) if middles is None else middles[g]
            found = search(currents[:, g] - mid[None, :, None], target[g] - mid[:, None],
                           theta[g], bipolar, shifts, levels, copies=int(k))  # fmt: skip
            theta[g], shift[g] = found[0], found[1]
    if node.attrs.get("cap") is not None:
        theta = np.minimum(theta, node.attrs["cap"])
    theta_arr = threshold_shape(theta, len(graph.shape(src)), axis)
    node.params["threshold"] = theta_arr.astype(np.float32)
    if shifts and np.any(shift):
        key = BIAS_OWNERS[owner.op]
        owner.params[key] = (owner.params[key] + shift).astype(np.float32)
        moved = shift.reshape(theta_arr.shape) if theta_arr.size == channels else shift
        run.spiking[src] = _mapped(run, src, lambda c: c + moved, replaces=True)
    if middles is not None:
        _centre(graph, run, node, threshold_shape(middles, len(graph.shape(src)), axis))
    if copies is not None and copies.max() > 1:
        _copy_neurons(graph, run, node, copies)


def _copy_neurons(graph: Graph, run: _Run, node: Node, copies: np.ndarray) -> None:
    """Give the neuron layer's features `copies` neurons each (split.insert_copies); the
    recorded values follow (the ANN's stay: the network computes the same function)."""
    src = node.inputs[0]
    stagger = split.insert_copies(graph, node, copies, run.T)
    gather = graph.producer(stagger.inputs[0])
    index, value = gather.attrs["indices"], stagger.params["value"]
    run.spiking[stagger.output] = _mapped(run, src, lambda c: np.take(c, index, axis=-1) + value)
    run.alias(stagger.output, src)
    run.left[stagger.output] = 1
    run.release(src)  # the neuron reads the copies now


# POOLED: scoring a neuron read by an average pooling after the pooling. Always on, measured on
# 12 digits CNNs (the benchmark's three, nine of benchmarks/cnn_family.py: depthwise + global
# average pooling with ReLU and ReLU6, residual, BatchNorm + 2x2 pooling), integer mode, test
# split, T-aware conversion for T = 1 / 2 / 4 / 8: mean change +5.1 / +0.9 / +0.5 / -0.1
# points; the depthwise nets gained 3 to 21 points at T = 1 and 0.4 to 3.9 at T = 4, but one
# lost 0.9 at T = 8 (its calibration error rose too: 0.164 -> 0.203), the residual nets moved
# -1.3 to +1.7 at T = 1. So it is a candidate (t_aware), the calibration data decides. It
# needs data: a global pooling leaves one value a channel per sample, and on the zoo's timm
# models (16 calibration images) the pooled search lowered resnet18's cosine to the ANN at
# T = 8 from 0.994 to 0.988; with fewer than POOLED_VALUES windows a channel it is not tried.
# Max pooling too (2026-12-06): a max passes on the window's largest rate, and a spurious spike
# at a small activation wins it, so a per-position fit that trades such spikes for resolution
# is wrong after the pool. On a 3x32x32 task (benchmarks/cnn_family.py --task shapes,
# maxpool:50, ANN 91.5 %) the T-aware search had lost to the percentile conversion (56.9 /
# 71.0 % at T = 2 / 4, SpikingJelly 60.0 / 81.2); scored after the pool, 80.8 / 87.0 (T = 1:
# 55.9 -> 69.3). On digits: digits_cnn 93.15 / 97.59 / 98.70 / 99.07 -> 95.74 / 98.15 / 98.89
# / 99.07 at T = 1 / 2 / 4 / 8, three family nets with 2x2 max pools moved by -6 to +6 images.
POOLED_VALUES = 128


def _poolable(graph: Graph, axes: dict[str, int], samples: int) -> bool:
    """Whether a neuron of the graph would be scored after a pooling (_pooled_by)."""
    return any(
        n.op == "if"
        and _pooled_by(graph, n, _absorbing_axis(graph, n, axes.get(n.inputs[0], -1)), samples)
        for n in graph.nodes
    )


# how a pooling reads its window: the layers after it see only this of the window's rates
POOL_REDUCERS: dict[str, Callable[..., np.ndarray]] = {"avgpool2d": np.mean, "maxpool2d": np.max}
Pooling = tuple[str, int, int]  # (the pooling's op, kernel height, kernel width)


def _pooled_by(graph: Graph, node: Node, axis: int, samples: int) -> Pooling | None:
    """The non-overlapping average or max pooling (global, or stride = kernel) that alone
    reads the neuron's image, if one does and `samples` give it at least POOLED_VALUES windows
    a channel. The layers after it see only each window's mean rate, where the positions'
    rounding errors partly cancel and their clipping does not, or its largest rate (the
    simulator's max pooling passes on exactly the window's largest count), where a position's
    spurious spikes win over the true maximum: so the search scores the pooled rates against
    the pooled activations (POOLED)."""
    users = graph.consumers(node.output)
    if len(users) != 1 or users[0].op not in POOL_REDUCERS or node.output in graph.outputs:
        return None
    attrs, size = users[0].attrs, graph.shape(node.output)[1:]
    if axis not in (0, -3) or len(size) != 2 or any(attrs["pads"]):
        return None
    # (a global pooling's one window may be given any stride)
    windows = zip(attrs["kernel"], attrs["strides"], size, strict=True)
    if not all(k in (s, n) for k, s, n in windows):
        return None
    (kh, kw), (h, w) = attrs["kernel"], size
    if samples * (h // kh) * (w // kw) < POOLED_VALUES:
        return None
    return users[0].op, kh, kw


def _pool_windows(
    ann: np.ndarray, steps: list[np.ndarray], pooling: Pooling
) -> tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """Channels first, the ANN activations (C, M) and the T steps' currents (T, C, M) of whole
    pooling windows of whole samples (an even subsample of them, within SEARCH_VALUES), and
    the pooling of such rows, (C, M) -> (C, M / (kh kw)) (a row may also hold all channels)."""
    n, c, h, w = ann.shape
    op, kh, kw = pooling
    hp, wp, reduce = h // kh, w // kw, POOL_REDUCERS[op]
    keep = max(1, min(n, SEARCH_VALUES // max(1, c * len(steps) * hp * kh * wp * kw)))
    crop = (slice(None, None, -(-n // keep)), slice(None), slice(0, hp * kh), slice(0, wp * kw))
    kept = len(range(n)[crop[0]])

    def pool(rows: np.ndarray) -> np.ndarray:
        windows = reduce(rows.reshape(-1, kept, hp, kh, wp, kw), axis=(3, 5))
        return windows.reshape(len(rows), -1)

    currents = np.stack([_channels_first(step[crop], 0) for step in steps])
    return _channels_first(ann[crop], 0), currents, pool


# Centring (the neuron codes x - c; W c moves into the next dense layers' biases): measured on
# all-MiniLM-L6-v2 at T = 16, per-feature rounding error of the ANN activations (best
# threshold each way) fell 2.3-2.6 times in front of the second feed-forward layers (GELU's
# outputs: -0.17 up to a long positive tail), 1.6-2.0 times in front of the attention output
# projections, 1.25-1.5 times after the LayerNorms. The middle is that of the central
# MIDDLE_PERCENTILES of the ANN activations (a few outliers do not move it).
MIDDLE_PERCENTILES = (0.1, 99.9)


def _middles(target: np.ndarray) -> np.ndarray:
    """(C, M) activations -> (C,) the middle of each channel's central range."""
    lo, hi = np.percentile(target, MIDDLE_PERCENTILES, axis=1)
    return (lo + hi) / 2


def _centrable(
    graph: Graph, node: Node, axis: int = -1, static: frozenset[str] | set[str] = frozenset()
) -> bool:
    """A bipolar neuron with a per-step input (not a static one) and one threshold per feature
    that only layers read whose biases can take W c: dense layers (the last axis), or
    convolutions of an image's channels (axis 0; a padded one also takes an offset after it
    for its border, so its output must not be the graph's)."""
    users, rank = graph.consumers(node.output), len(graph.shape(node.inputs[0]))
    dense = axis % rank == rank - 1 and all(u.op == "dense" for u in users)
    conv = rank == 3 and axis % rank == 0 and all(u.op == "conv2d" for u in users)
    return (
        bool(node.attrs.get("bipolar"))
        and node.attrs.get("cap") is None
        and bool(users)
        and (dense or conv)
        and all("bias" in u.params and u.output not in graph.outputs for u in users)
        and node.output not in graph.outputs
        and node.inputs[0] not in static
    )


# CENTRED_CONVS: centring for the bipolar neurons that convolutions read (their activations,
# hardswish's -0.375 up, SiLU's -0.28 up, a squeeze-excitation product's 0 up, use half the
# 2T + 1 levels of +-max |x|). Measured on benchmarks/cnn_family.py's hardswish and SiLU
# squeeze-excitation nets (four, integer mode, test split), T = 1 / 2 / 4 / 8, mean change
# +12.3 / +4.8 / +3.2 / +0.1 points; one of them lost 8 of 540 images at T = 8 and the
# LeakyReLU net 2 at T = 2, 4, 8, where the calibration split preferred a centred candidate
# (docs/results.md, held-out CNN family). A candidate, as for dense layers: the calibration decides.
def _centring(graph: Graph, axes: dict[str, int]) -> bool:
    """Whether some neuron of `graph` could be centred (_centrable)."""
    return any(
        _centrable(graph, n, _absorbing_axis(graph, n, axes.get(n.inputs[0], -1)))
        for n in graph.nodes
        if n.op == "if"
    )


def _zero_twin(offset: Node) -> Node:
    """The ANN view of an offset that centring (or split.insert_copies) inserted: it adds 0
    (the network computes the ANN's own function; only its spiking view is centred)."""
    zero = {"value": np.zeros((), np.float32)}  # (a scalar: the copies' offset is wider)
    return Node(offset.name, "offset", offset.inputs, offset.output, {}, zero)


def ann_twins(tuned: Graph, snn: Graph) -> list[tuple[Node, Node]]:
    """Each node of `tuned` (tune_thresholds of `snn`) beside the node of `snn` whose "ann"
    kernel computes the ANN's value there (_Run.step): a centring offset's twin adds 0 (the
    network computes the ANN's own function; only its spiking view is centred), the copies of
    outlier neurons' (split.py) pass the ANN's values on as they are (_copy_neurons)."""
    by_name = {n.name: n for n in snn.nodes}

    def twin(n: Node) -> Node:
        if n.name in by_name:
            return by_name[n.name]
        if n.op == "gather" and split.inserted(n):  # the same op (_Run.step), as identity
            every = list(range(tuned.shape(n.inputs[0])[-1]))
            return Node(n.name, "gather", n.inputs, n.output, {**n.attrs, "indices": every})
        return _zero_twin(n)

    return [(n, twin(n)) for n in tuned.nodes]


def _centre(graph: Graph, run: _Run, node: Node, centre: np.ndarray) -> None:
    """The neuron reads x - centre through a new offset node (fold_offsets later moves it into
    the bias, or LayerNorm beta, of the layer that alone feeds x), its readers' biases take
    W centre (fold.bias_shift); the recorded values move with it (the ANN's stay: the network
    computes the same function)."""
    src = node.inputs[0]
    name, tensor = f"{node.name}/centre", f"{src}/centred"
    graph.tensors[tensor] = TensorInfo(tensor, graph.shape(src))
    graph.nodes.insert(
        graph.nodes.index(node),
        Node(name, "offset", [src], tensor, {}, {"value": (-centre).astype(np.float32)}),
    )
    node.inputs = [tensor]
    for user in graph.consumers(node.output):
        if user.op == "conv2d" and any(user.attrs["pads"]):
            shift, border = padded_conv_shift(user, centre, graph.shape(src))
            _border_offset(graph, run, user, border)
        else:
            shift = bias_shift(user, centre, graph.shape(src))
        user.params["bias"] = (user.params["bias"] + shift).astype(np.float32)
    run.spiking[tensor] = _mapped(run, src, lambda c: c - centre)
    run.alias(tensor, src)
    run.left[tensor] = 1
    run.release(src)  # the neuron reads the offset's output now


def _border_offset(graph: Graph, run: _Run, conv: Node, border: np.ndarray) -> None:
    """An offset after a padded convolution that reads a centred neuron: at the border its
    window reads padding (zero, not x - c), so W c in its bias is too much there. The run
    steps it right after the convolution (_Run.inserted)."""
    out, tensor = conv.output, f"{conv.output}/border"
    graph.tensors[tensor] = TensorInfo(tensor, graph.shape(out))
    value = {"value": border.astype(np.float32)}
    offset = Node(f"{conv.name}/border", "offset", [out], tensor, {}, value)
    for reader in graph.consumers(out):
        reader.inputs = [tensor if t == out else t for t in reader.inputs]
    graph.nodes.insert(graph.nodes.index(conv) + 1, offset)
    run.left[tensor], run.left[out] = run.left[out], 1
    run.inserted.setdefault(conv.name, []).append(offset)
