"""Integer graph -> a SpiNNaker2 network: populations and projections, exact by construction.

How each op maps (the table SPINNAKER2_OPS; anything else is refused by name):
  if         one `lif` population (alpha_decay = 1, reset by subtraction), threshold theta_q
  dense, conv2d, avgpool2d, add, concat, reshape
             folded into projections: between two spiking layers every chain of these is one
             affine integer map, composed exactly (int64) into [pre, post, weight, delay] lists;
             its constant part (biases) becomes the post population's i_offset
  maxpool2d  extra populations that compute the expectation-compensated max of spike trains
             exactly (see maxpool.py), only on the spikes of a neuron layer
  input      direct encoding: the first layer's current W x + b is constant, so the host adds
             it to i_offset per sample (the chip never sees the int8 input)
  output     a population that never fires; its potential is the output accumulator

Time: every projection delays a spike by one step (SYNAPSE_DELAY_STEPS), where the
specification propagates through all layers within a step. So a population at `depth` d runs
the specification's step t at hardware step d + t - 1 (0-based): inputs from shallower layers
get delay d - d_pre - 1, and during its first d steps (before any spike arrives) it is
precharged: v_init = v0 - d * i_offset, so that it reaches the specification's v0 exactly when
the first spikes arrive, without firing on the way (checked, else refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph, Node
from spikeport.sim.arith import initial_potential
from spikeport.sim.ops import KERNELS
from spikeport.targets.spinnaker2 import capabilities as cap

CHUNK = 512  # impulses evaluated at once when composing a linear path


@dataclass
class Population:
    """One py-spinnaker2 population. Integer params in the specification's units."""

    name: str
    size: int
    role: str  # "neuron" | "maxpool" | "comparator" | "output"
    node: str  # the spikeport node (or, for the output, the tensor) it carries
    layer: str  # the node errors name for its incoming synapses
    threshold: np.ndarray
    v0: np.ndarray  # the specification's initial potential
    i_offset: np.ndarray  # constant current added every step
    depth: int = 0
    input_conns: np.ndarray | None = None  # (k, 3) input index, neuron, weight: host current
    model: str = cap.DEFAULT_MODEL
    # What a unit of the carried tensor is worth per neuron: (1,) one neuron a unit; a graded
    # max pool sends each unit as bits, neurons unit * len(code) + i worth code[i] each.
    code: tuple[int, ...] = (1,)


@dataclass
class Projection:
    """[pre, post, weight, delay] connections from one population to another."""

    pre: str
    post: str
    conns: np.ndarray  # (k, 4) int64
    layer: str


@dataclass
class Network:
    graph: Graph
    populations: dict[str, Population] = field(default_factory=dict)
    projections: list[Projection] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # spike tensor -> population
    output: str = "output"
    # The output's populations: itself, and the partial accumulators the host adds to it
    # where its neurons would have more synapses than one neuron holds (prepare.split_output).
    output_parts: list[str] = field(default_factory=lambda: ["output"])

    def add(self, pop: Population) -> Population:
        self.populations[pop.name] = pop
        return pop

    def incoming(self, pop: str) -> list[Projection]:
        return [p for p in self.projections if p.post == pop]

    @property
    def steps_ahead(self) -> int:
        """Hardware steps a run needs beyond T: the deepest population's depth."""
        return max(p.depth for p in self.populations.values())


LINEAR_OPS = ("dense", "conv2d", "avgpool2d", "add", "concat", "reshape")
# op -> how it maps; the README and docs/targets-spinnaker2.md list this table.
SPINNAKER2_OPS: dict[str, str] = {
    **{op: "exact: folded into the integer weights of a projection" for op in LINEAR_OPS},
    "if": "exact: a `lif` population, alpha_decay 1, reset by subtraction (unsigned only)",
    "maxpool2d": "exact: comparator populations on spikes of neuron layers (T <= 15) or on "
    "sums of them, e.g. an average pool (any T)",
}


def refuse(node: str, op: str, why: str) -> CapabilityExceeded:
    return CapabilityExceeded(f"node '{node}' ({op}): {why} on SpiNNaker2")


@dataclass
class Affine:
    """sink = const + sum over leaves of their connections: (k, 3) leaf index, sink index, w."""

    const: np.ndarray
    parts: dict[str, np.ndarray]


def _size(graph: Graph, tensor: str) -> int:
    return int(np.prod(graph.shape(tensor)))


def _cone(graph: Graph, sink: str, leaves: set[str]) -> tuple[list[Node], list[str]]:
    """The linear nodes between the leaves (spike tensors, graph input) and `sink`."""
    needed: set[str] = set()
    used: list[str] = []
    stack = [sink]
    while stack:
        t = stack.pop()
        if t in leaves:
            used += [t] if t not in used else []
            continue
        node = graph.producer(t)
        assert node is not None
        if node.op not in LINEAR_OPS:
            raise refuse(node.name, node.op, "the op is not supported")
        if node.attrs.get("shift", 0):  # a floor shift is not linear: no synapse computes it
            raise refuse(
                node.name,
                node.op,
                f"its floor shift {node.attrs['shift']} has no synapse equivalent (quantize "
                "with --target spinnaker2, which folds an add into weights)",
            )
        if node.name not in needed:
            needed.add(node.name)
            stack.extend(node.inputs)
    return [n for n in graph.nodes if n.name in needed], used


def _evaluate(
    graph: Graph, nodes: list[Node], mode: str, values: dict[str, np.ndarray], sink: str
) -> np.ndarray:
    vals = dict(values)
    for n in nodes:
        kernel = KERNELS[n.op](n, mode, graph.shape(n.output))
        vals[n.output] = kernel(*[vals[i] for i in n.inputs])
    return np.asarray(vals[sink], np.float64).reshape(len(next(iter(values.values()))), -1)


def decompose(graph: Graph, sink: str, leaves: set[str], mode: str = "int") -> Affine:
    """Write `sink` as an affine map of the leaf tensors by evaluating the linear path on
    impulses with the simulator's own kernels (exact: integers in float64, far below 2^53)."""
    if sink in leaves:
        n = _size(graph, sink)
        eye = np.stack([np.arange(n), np.arange(n), np.ones(n, np.int64)], axis=1)
        return Affine(np.zeros(n), {sink: eye})
    nodes, used = _cone(graph, sink, leaves)
    zeros = {t: np.zeros((1,) + graph.shape(t)) for t in used}
    const = _evaluate(graph, nodes, mode, zeros, sink)[0]
    parts = {}
    for leaf in used:
        n = _size(graph, leaf)
        rows = []
        for start in range(0, n, CHUNK):
            idx = np.arange(start, min(n, start + CHUNK))
            vals = {t: np.zeros((len(idx),) + graph.shape(t)) for t in used}
            hot = np.zeros((len(idx), n))
            hot[np.arange(len(idx)), idx] = 1
            vals[leaf] = hot.reshape((len(idx),) + graph.shape(leaf))
            out = _evaluate(graph, nodes, mode, vals, sink) - const
            j, i = np.nonzero(out)
            rows.append(np.stack([idx[j], i, out[j, i]], axis=1))
        parts[leaf] = np.concatenate(rows)
    return Affine(const, parts)


class Builder:
    """Walks the graph once; POPULATION_BUILDERS says what each non-linear op becomes."""

    def __init__(self, graph: Graph, mode: str = "int"):
        self.graph, self.mode = graph, mode
        self.net = Network(graph)
        self.leaves = {graph.input.name}

    def build(self) -> Network:
        for node in self.graph.nodes:
            make = POPULATION_BUILDERS.get(node.op)
            if make is not None:
                make(self, node)
            elif node.op not in LINEAR_OPS:
                raise refuse(node.name, node.op, "the op is not supported")
        self._output()
        return self.net

    def param(self, node: Node, name: str) -> np.ndarray:
        return node.params[f"{name}_q" if self.mode == "int" else name]

    def connect(self, pop: Population, aff: Affine) -> None:
        """Attach pop's inputs: host current from the graph input, projections from spikes."""
        inp = self.graph.input.name
        spikes = [leaf for leaf in aff.parts if leaf != inp]
        if inp in aff.parts:
            if spikes:
                raise refuse(
                    pop.layer,
                    "synapses",
                    "a layer fed by both the network input and spikes is not supported",
                )
            pop.input_conns = aff.parts[inp]
        pops = self.net.populations
        pop.depth = max((pops[self.net.sources[s]].depth + 1 for s in spikes), default=0)
        for leaf in spikes:
            pre = pops[self.net.sources[leaf]]
            c = _expand(aff.parts[leaf], pre.code)
            delay = np.full((len(c), 1), pop.depth - pre.depth - 1)
            self.net.projections.append(
                Projection(pre.name, pop.name, np.hstack([c, delay]), pop.layer)
            )

    def producer_name(self, tensor: str) -> str:
        node = self.graph.producer(tensor)
        return node.name if node is not None else tensor

    def _output(self) -> None:
        out = self.graph.outputs[0]
        aff = decompose(self.graph, out, self.leaves, self.mode)
        size = _size(self.graph, out)
        pop = Population(
            "output",
            size,
            "output",
            out,
            self.producer_name(out),
            np.full(size, cap.FLOAT_EXACT),
            np.zeros(size, np.int64),
            aff.const,
        )
        self.net.add(pop)
        self.connect(pop, aff)


def _expand(conns: np.ndarray, code: tuple[int, ...]) -> np.ndarray:
    """Connections from units to connections from the neurons that code them."""
    if code == (1,):
        return conns
    n = len(code)
    return np.concatenate(
        [
            np.stack([c[:, 0] * n + i, c[:, 1], c[:, 2] * v], 1)
            for i, v in enumerate(code)
            for c in [conns]
        ]
    )


def _neuron(b: Builder, node: Node) -> None:
    """An `if` node: one population, its input current composed from the layers before it."""
    size = _size(b.graph, node.output)
    theta = np.broadcast_to(b.param(node, "threshold"), b.graph.shape(node.output)).reshape(-1)
    aff = decompose(b.graph, node.inputs[0], b.leaves, b.mode)
    v0 = initial_potential(theta) if b.mode == "int" else theta / 2
    pop = Population(
        node.name, size, "neuron", node.name, b.producer_name(node.inputs[0]), theta, v0, aff.const
    )
    b.net.add(pop)
    b.connect(pop, aff)
    b.net.sources[node.output] = pop.name
    b.leaves.add(node.output)


def _maxpool(b: Builder, node: Node) -> None:
    from spikeport.targets.spinnaker2.maxpool import build_maxpool

    build_maxpool(b, node)


POPULATION_BUILDERS: dict[str, Callable[[Builder, Node], None]] = {
    "if": _neuron,
    "maxpool2d": _maxpool,
}


def build_network(graph: Graph, mode: str = "int") -> Network:
    """The network of populations and projections for `graph` (refuses what cannot map)."""
    net = Builder(graph, mode).build()
    for pop in net.populations.values():
        pop.model = _pick_model(net, pop)
    return net


def _pick_model(net: Network, pop: Population) -> str:
    """The widest-weight model unless an input needs a delay (then `lif`, 4-bit weights)."""
    delays = [int(p.conns[:, 3].max(initial=0)) for p in net.incoming(pop.name)]
    return cap.DELAY_MODEL if max(delays, default=0) > 0 else cap.DEFAULT_MODEL
