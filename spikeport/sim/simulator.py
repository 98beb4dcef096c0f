"""The reference simulator: runs a Graph over T timesteps, batch-vectorised with numpy.

Its "int" mode is the specification of what a network computes (DESIGN.md section 6):
every target must reproduce its output accumulators and every layer's spikes bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from spikeport.batch import Batch, is_integer, named, size, take
from spikeport.errors import BadInput, SimulationOverflow
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import OPS, spike_levels, static_tensors
from spikeport.quantize.ranges import range_bounds
from spikeport.sim.arith import input_bits, int_limit, quantize_input
from spikeport.sim.fast import FAST_KERNELS, FastKernel
from spikeport.sim.kernels import conv_fanout, conv_transpose_fanout
from spikeport.sim.kinds import SDN, SDN_STATE_BITS, holds_levels, kind_of
from spikeport.sim.layerwise import join, run_layers
from spikeport.sim.ops import KERNELS, MODES, IFNeuron, Kernel

DEFAULT_BATCH = 256
Observer = Callable[[str, np.ndarray], None]
# "reference": the numpy kernels one step at a time, the specification as written;
# "fast": the same results (bit for bit in "int" mode, tested on every fixture) from torch
# kernels run layer by layer over all T steps (spikeport.sim.layerwise).
BACKENDS = ("reference", "fast")
DEFAULT_BACKEND = "fast"


@dataclass
class SimResult:
    """What one run produced, per timestep t = 1..T (index t-1).

    outputs: graph output -> (T, N, ...) output accumulated over steps 1..t ("ann": (1, N, ...))
    spikes:  (T,) neuron spike events (nonzero counts s) emitted at step t, summed over
             neurons and batch
    sops:    (T,) synaptic operations at step t: for every dense/conv, nonzero inputs x fan-out
    trace:   tensor -> (T, N, ...) every tensor at every step (only when recorded)
    levels:  (T,) sum of |s| at step t (equal to `spikes` where every neuron is binary)
    event_bits: (T,) sum over events of the bits one event carries (event_bits(node))
    """

    outputs: dict[str, np.ndarray]
    spikes: np.ndarray
    sops: np.ndarray
    trace: dict[str, np.ndarray] | None = None
    levels: np.ndarray | None = None
    event_bits: np.ndarray | None = None


def event_bits(node: Node) -> int:
    """Bits a spike event of this neuron carries: enough to tell apart the nonzero counts it
    may emit (K of them unsigned, 2K signed or bipolar; K = 2^spike_bits - 1), at least 1.
    Binary: 1; graded b bits: b unsigned, b + 1 signed. A sigma-delta neuron (kind "sdn")
    sends a graded message of SDN_STATE_BITS (Lava's 24-bit s_out) whatever its value."""
    if kind_of(node) == SDN:
        return SDN_STATE_BITS
    k = spike_levels(node)
    values = 2 * k if node.attrs.get("signed") or node.attrs.get("bipolar") else k
    return max(1, (values - 1).bit_length())


def _fanout(graph: Graph, node: Node) -> np.ndarray | int:
    if node.op == "dense":
        return int(node.params["weight"].shape[0])
    a = node.attrs
    if node.op == "conv_transpose2d":
        return conv_transpose_fanout(
            graph.shape(node.inputs[0]),
            node.params["weight"].shape,
            a["strides"],
            a["pads"],
            a["dilations"],
            a["output_padding"],
        )
    return conv_fanout(
        graph.shape(node.inputs[0]),
        node.params["weight"].shape,
        a["strides"],
        a["pads"],
        a["dilations"],
        a["group"],
    )


def encode_inputs(graph: Graph, x: Batch, mode: str = "int") -> dict[str, np.ndarray]:
    """The network's inputs at every step: int8 codes in "int" mode, x itself otherwise;
    integer inputs (token ids, masks) are indices and flags and pass unchanged."""
    given = named(graph.inputs, x)
    values = {}
    for t in graph.inputs:
        v = given[t.name]
        if is_integer(t):
            values[t.name] = np.asarray(v, np.int64)
        elif mode == "int":  # at the profile's input width, which quantize calibrated for
            bits = input_bits(graph)
            values[t.name] = quantize_input(v, graph.scales[t.name], bits)
        else:
            values[t.name] = np.asarray(v, np.float64)
    return values


class Simulator:
    """Prepare once (kernels, checks), then `run(x, T)` any number of batches."""

    def __init__(self, graph: Graph, mode: str = "int", backend: str | None = None):
        backend = backend or DEFAULT_BACKEND  # read at call time: tests switch it globally
        if mode not in MODES:
            raise BadInput(f"simulator mode '{mode}' is not one of {MODES}")
        if backend not in BACKENDS:
            raise BadInput(f"simulator backend '{backend}' is not one of {BACKENDS}")
        if mode == "int" and graph.stage != "int":
            raise BadInput(
                f"integer mode needs a quantized graph (stage 'int'), this one is "
                f"'{graph.stage}': run `spikeport quantize` first"
            )
        if mode == "float" and graph.stage == "ann":
            raise BadInput("float spiking mode needs a converted graph: run `spikeport convert`")
        self.graph, self.mode = graph, mode
        quant = graph.meta.get("quantization", {})
        self.limit = int_limit(quant.get("state_bits", 32))
        self.max_t = quant.get("max_timesteps") if mode == "int" else None
        self.kernels: list[tuple[Node, Kernel]] = [
            (n, KERNELS[n.op](n, mode, graph.shape(n.output))) for n in graph.nodes
        ]
        self.static = static_tensors(graph)
        self.fanout = {n.name: _fanout(graph, n) for n in graph.nodes if OPS[n.op].synaptic}
        self.bits = {n.name: event_bits(n) for n in graph.nodes if n.op == "if"}
        self.backend = backend
        self.levels_out = holds_levels(graph)  # accumulate t * output_t (kinds.holds_levels)
        # The range proof, rederived from this graph's integers: it picks the float width of
        # every fast kernel's sums and spares the run-time checks it already guarantees. It is
        # made for the T of each run (for_steps): running sums over 8 steps are bounded far
        # tighter than over max-T, so more kernels sum in float32.
        self._proof_needed = backend == "fast" and mode == "int" and self.max_t is not None
        self._by_steps: dict[int, tuple[dict | None, dict[str, FastKernel]]] = {}
        self.bounds: dict | None = None  # set by for_steps, which run() calls
        self.fast: dict[str, FastKernel] = {}
        names = [t.name for t in graph.inputs] + [n.output for n in graph.nodes]
        self.widest = max(math.prod(graph.shape(t)) for t in names)  # values per sample

    def for_steps(self, T: int) -> None:
        """Take the range proof and fast kernels for runs of at most T steps (made once)."""
        if T not in self._by_steps:
            self.bounds = range_bounds(self.graph, T) if self._proof_needed else None
            self._by_steps[T] = (self.bounds, self._fast_kernels())
        self.bounds, self.fast = self._by_steps[T]

    def _fast_kernels(self) -> dict[str, FastKernel]:
        """The fast kernel of every node that has one (the others run their reference one)."""
        out = {}
        for n in self.graph.nodes:
            make = FAST_KERNELS.get(n.op)
            k = make(n, self.mode, self.graph.shape(n.output), self.bounds) if make else None
            if k is not None and (self.mode != "int" or self.bounds is not None):
                out[n.name] = k
                if k.weigh_events_by is not None:
                    k.weigh_events_by(self._read_fanout(n.output))
        return out

    def _read_fanout(self, tensor: str) -> np.ndarray:
        """Each element's fan-out over every synaptic node reading `tensor` (as its first
        input, which is what the synaptic operations count), per sample."""
        shape = self.graph.shape(tensor)
        total = np.zeros(shape, np.int64)
        for n in self.graph.nodes:
            if n.name in self.fanout and n.inputs[0] == tensor:
                total += np.broadcast_to(self.fanout[n.name], shape).astype(np.int64)
        return total

    def proven(self, tensor: str) -> bool:
        """The range proof bounds every value and state of `tensor`'s node within the limit."""
        return self.bounds is not None and self.bounds[tensor].worst(False) <= self.limit

    def binary(self, tensor: str) -> bool:
        """`tensor` provably holds unsigned binary spikes (0 or 1 at every step)."""
        b = self.bounds[tensor] if self.bounds is not None else None
        return b is not None and b.nonneg and float(b.step.max(initial=0)) <= 1

    def encode(self, x: Batch) -> dict[str, np.ndarray]:
        return encode_inputs(self.graph, x, self.mode)

    def run(
        self, x: Batch, T: int, record: bool = False, observe: Observer | None = None
    ) -> SimResult:
        """Run x for T steps. record: keep every tensor at every step in `trace`. observe:
        called with (tensor, its values at one step, batch first) for every tensor and step,
        as they are made: a reader of every tensor that keeps none of them."""
        if self.mode == "ann":
            T = 1
        elif self.max_t is not None and T > self.max_t:
            raise BadInput(
                f"T={T} exceeds the {self.max_t} timesteps quantize proved free of "
                f"overflow; quantize again with --max-T {T}"
            )
        if self.backend == "fast" and size(x):  # an empty batch: the reference's empty result
            self.for_steps(T)
            return run_layers(self, x, T, record, observe)
        for _, k in self.kernels:
            k.reset(size(x))
        values = self.encode(x)
        acc: dict[str, np.ndarray | float] = {o: 0 for o in self.graph.outputs}
        outputs: dict[str, list[np.ndarray]] = {o: [] for o in self.graph.outputs}
        trace: dict[str, list[np.ndarray]] = {}
        spikes, sops = np.zeros(T, np.int64), np.zeros(T, np.int64)
        levels, bits = np.zeros(T, np.int64), np.zeros(T, np.int64)
        for t in range(T):
            for node, k in self.kernels:
                if t > 0 and node.output in self.static:
                    continue
                ins = [values[i] for i in node.inputs]
                values[node.output] = y = k(*ins)
                if self.mode == "int":
                    self._check_range(node, k, y, t)
                if node.name in self.fanout:
                    sops[t] += int(((ins[0] != 0) * self.fanout[node.name]).sum())
                if isinstance(k, IFNeuron):  # a delayed kind counts its own step's spikes
                    events = int(np.count_nonzero(k.k))
                    spikes[t] += events
                    levels[t] += int(np.abs(k.k).sum())
                    bits[t] += events * self.bits[node.name]
            for o in self.graph.outputs:
                acc[o] = values[o] * (t + 1) if self.levels_out else acc[o] + values[o]
                outputs[o].append(np.asarray(acc[o]).copy())
            for name, v in values.items():
                if record:
                    trace.setdefault(name, []).append(v)
                if observe:
                    observe(name, v)
        return SimResult(
            {o: np.stack(v) for o, v in outputs.items()},
            spikes,
            sops,
            {k: np.stack(v) for k, v in trace.items()} if record else None,
            levels,
            bits,
        )

    def _check_range(self, node: Node, k: Kernel, y: np.ndarray, t: int) -> None:
        """The spec asserts every value fits its bit width at run time; overflow is never silent."""
        worst = int(np.abs(y).max(initial=0))
        if isinstance(k, IFNeuron):
            worst = max(worst, int(np.abs(k.v).max(initial=0)))
        worst = max(worst, getattr(k, "state_peak", 0))  # running sums of EC operators
        if worst > self.limit:
            raise SimulationOverflow(
                f"node '{node.name}' ({node.op}) reached {worst} at step "
                f"{t + 1}, beyond the {self.limit} its state bits allow"
            )


def mean_output(graph: Graph, res: SimResult, mode: str, name: str | None = None) -> np.ndarray:
    """The output in real units averaged over steps 1..t, (T, N, ...): comparable to the ANN."""
    name = name or graph.outputs[0]
    acc = res.outputs[name].astype(np.float64)
    steps = np.arange(1, len(acc) + 1).reshape((-1,) + (1,) * (acc.ndim - 1))
    scale = graph.scales[name] if mode == "int" else 1.0
    return acc * scale / steps


def simulate(
    graph: Graph,
    x: Batch,
    T: int,
    mode: str = "int",
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int], None] | None = None,
    backend: str | None = None,
) -> SimResult:
    """Run `x` in batches and join the results (trace is not kept here)."""
    sim = Simulator(graph, mode, backend)
    parts = []
    for start in range(0, size(x), batch_size):
        chunk = take(x, slice(start, start + batch_size))
        parts.append(sim.run(chunk, T))
        if progress:
            progress(size(chunk))
    return join(parts)
