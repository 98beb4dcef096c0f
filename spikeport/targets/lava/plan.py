"""Integer graph (neuron kind "lava") -> a chain of Lava layers, each an LIF population fed by
one Dense (or, for the first, by the host), exact by construction.

How each op maps (LAVA_OPS; anything else is refused by name before anything is written):
  if         one LIF population: du = 4095, dv = 0, vth = the layer's one integer threshold,
             bias_mant = the integer bias (bias_exp 6), v starts at floor(theta / 2) << 6
  dense, conv2d, avgpool2d, reshape
             folded into the Dense in front of the next population: every chain of these
             between two spike tensors is one integer matrix, composed exactly by running the
             simulator's own kernels on impulses (conv and pooling unrolled; average pooling
             is a window sum in the integer graph, so it lowers to weights exactly)
  maxpool2d  (kind "lava") an LIF population with vth 0 behind a Dense of ones: it fires when
             any input of its window fired (the OR of spikes), one step later
  input      direct encoding: the first population's input W x + b is the same at every
             step, so the host computes it once per input and sends it into a_in
  output     an LIF that never fires (vth at its maximum, proven out of reach); v / 64 is the
             output accumulator
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph, Node
from spikeport.sim import kernels as K
from spikeport.sim.arith import initial_potential, int_limit
from spikeport.sim.kinds import LAVA, holds_levels, kind_of
from spikeport.sim.ops import KERNELS
from spikeport.targets.lava import capabilities as cap

LINEAR_OPS = ("dense", "conv2d", "avgpool2d", "reshape")
# op -> how it maps: the README, docs/targets-lava.md and the profile read this table.
LAVA_OPS: dict[str, str] = {
    "dense": "exact: the weights of a Dense (host-side for the first layer)",
    "conv2d": "exact: unrolled into the weights of a Dense",
    "avgpool2d": "exact: a window sum, folded into the next Dense's weights",
    "reshape": "exact: an index map, folded into the next Dense's weights",
    "if": "exact for kind 'lava': an LIF (du 4095, dv 0, reset to zero, v > vth)",
    "maxpool2d": "exact for kind 'lava' (OR of spikes): an LIF with vth 0 behind a Dense of ones",
}
# Kind "sdn" (targets/lava/sdn_plan.py) maps these too, and its own if and maxpool2d.
SDN_OPS: dict[str, str] = {
    **LAVA_OPS,
    "if": "exact for kind 'sdn': a SigmaDelta (ReLU, cum_error off, spike_exp 0, state_exp)",
    "maxpool2d": "exact for kind 'sdn': a tournament of SigmaDelta rounds, relu(u) + relu(v - u)",
    "add": "exact for kind 'sdn' with shift 0 (quantize folds it): synapses of one graded Dense",
    "concat": "exact for kind 'sdn': an index map, folded into one graded Dense",
}
CHUNK = 512  # impulses evaluated at once when composing a linear chain


def refuse(node: str, op: str, why: str) -> CapabilityExceeded:
    return CapabilityExceeded(f"node '{node}' ({op}): {why} on Lava")


@dataclass
class Layer:
    """One LIF population and the connection into it, in the specification's integer units.

    weight (size, n_src) feeds it from layer `src`; src None means the host: the input current
    weight @ codes + bias is computed per input and sent into a_in, and the LIF gets no bias.
    """

    name: str  # the spikeport node it carries ("output" for the output accumulator)
    role: str  # "neuron" | "maxpool" | "output"; kind "sdn": "sdn" | "pool" | "output"
    size: int
    vth: int
    v0: np.ndarray
    bias: np.ndarray
    weight: np.ndarray
    src: str | None
    state_exp: int = 0  # kind "sdn": SigmaDelta's state_exp (messages are state >> it)
    # the largest |message| it sends (1: spikes), for the next a_in bound; kind "sdn": one
    # for each value of the tensor it carries where they differ (a capped neuron's)
    msg_peak: int | np.ndarray = 1
    a_in_peak: float = 0.0  # kind "sdn": the largest |graded input| it receives in a step
    # kind "sdn": more (source layer, weight) pairs, one graded Dense each, summed in a_in
    extra: list[tuple[str, np.ndarray]] = field(default_factory=list)
    # kind "sdn": each neuron's own offset on top of the synapses' bias (a capped neuron's
    # second half: -cap); None: none
    offset: np.ndarray | None = None

    def neuron_bias(self) -> np.ndarray:
        """The SigmaDelta's bias: the synapses' (the host adds its own to its input) plus the
        neuron's offset."""
        own = np.zeros(self.size, np.int64) if self.src is None else self.bias
        return own if self.offset is None else own + self.offset


@dataclass
class Network:
    layers: list[Layer] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # spike tensor -> layer name
    # tensor -> W -> W', the weights over the tensor's values as weights over the layer's
    # neurons (kind "sdn": a max pool's pairs and a capped neuron's two halves, whose outputs
    # the reader sums); absent: the layer's outputs are the tensor's values
    readout: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    levels: bool = False  # kind "sdn": SigmaDelta layers carrying levels

    def layer(self, name: str) -> Layer:
        return next(la for la in self.layers if la.name == name)


def _chain(
    graph: Graph, sink: str, leaves: set[str], linear: tuple[str, ...] = LINEAR_OPS
) -> tuple[list[Node], set[str]]:
    """The linear nodes between the leaves (spike tensors or the input) and `sink`, and the
    leaves they read."""
    needed: list[Node] = []
    found: set[str] = set()
    stack = [sink]
    while stack:
        t = stack.pop()
        if t in leaves:
            found.add(t)
            continue
        node = graph.producer(t)
        assert node is not None  # check_graph: every tensor but the input has a producer
        if node.op not in linear:
            raise refuse(node.name, node.op, "the op is not supported between two layers")
        if node not in needed:
            needed.append(node)
            stack.extend(node.inputs)
    return [n for n in graph.nodes if n in needed], found


def _run(graph: Graph, nodes: list[Node], vals: dict[str, np.ndarray], sink: str) -> np.ndarray:
    n = len(next(iter(vals.values())))
    for node in nodes:
        vals[node.output] = KERNELS[node.op](node, "int", graph.shape(node.output))(
            *[vals[i] for i in node.inputs]
        )
    return np.asarray(vals[sink], np.float64).reshape(n, -1)


def affine_many(
    graph: Graph, sink: str, leaves: set[str], linear: tuple[str, ...] = LINEAR_OPS
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({leaf: W}, b): sink = sum of W @ leaf + b over the leaves it reads, from the integer
    kernels run on impulses, one leaf at a time with the others at zero (exact: integers in
    float64, far below 2^53)."""
    nodes, found = _chain(graph, sink, leaves, linear)
    zeros = {leaf: np.zeros((1,) + graph.shape(leaf)) for leaf in found}
    const = _run(graph, nodes, dict(zeros), sink)[0]
    out = {}
    pos = {n.output: i for i, n in enumerate(graph.nodes)}  # the input (absent) comes first
    for leaf in sorted(found, key=lambda t: pos.get(t, -1)):
        shape = graph.shape(leaf)
        n = int(np.prod(shape))
        cols = []
        for start in range(0, n, CHUNK):
            idx = np.arange(start, min(n, start + CHUNK))
            hot = np.zeros((len(idx), n))
            hot[np.arange(len(idx)), idx] = 1
            vals = {k: np.broadcast_to(v, (len(idx),) + v.shape[1:]) for k, v in zeros.items()}
            vals[leaf] = hot.reshape((len(idx),) + shape)
            cols.append(_run(graph, nodes, vals, sink) - const)
        out[leaf] = np.rint(np.concatenate(cols).T).astype(np.int64)
    return out, np.rint(const).astype(np.int64)


def affine(
    graph: Graph, sink: str, leaves: set[str], linear: tuple[str, ...] = LINEAR_OPS
) -> tuple[str, np.ndarray, np.ndarray]:
    """(leaf, W, b): sink = W @ leaf + b, for a sink that reads one leaf (a Dense takes one)."""
    ws, b = affine_many(graph, sink, leaves, linear)
    if len(ws) != 1:
        raise refuse(sink, "synapses", f"reads {len(ws)} spike tensors; one Dense takes one")
    ((leaf, w),) = ws.items()
    return leaf, w, b


def _connect(net: Network, graph: Graph, node_name: str, sink: str) -> tuple:
    leaf, w, b = affine(graph, sink, set(net.sources) | {graph.input.name})
    return (None if leaf == graph.input.name else net.sources[leaf]), w, b


def _neuron(net: Network, graph: Graph, node: Node) -> None:
    th = np.unique(node.params["threshold_q"])
    if len(th) != 1:
        raise refuse(
            node.name,
            node.op,
            "an LIF population has one threshold; quantize with "
            "--target lava gives every neuron of a layer the same one",
        )
    src, w, b = _connect(net, graph, node.name, node.inputs[0])
    size = w.shape[0]
    v0 = np.full(size, int(initial_potential(th)[0]), np.int64)
    net.layers.append(Layer(node.name, "neuron", size, int(th[0]), v0, b, w, src))
    net.sources[node.output] = node.name


def _window_matrix(graph: Graph, node: Node) -> np.ndarray:
    """(outputs, inputs) 0/1: which input cells each pooling window reads (padding reads none)."""
    shape = graph.shape(node.inputs[0])
    n = int(np.prod(shape))
    a = node.attrs
    idx = np.arange(n).reshape((1,) + shape)
    win = K.windows(idx, a["kernel"], a["strides"], a["pads"], pad_value=-1)
    win = win.reshape(-1, a["kernel"][0] * a["kernel"][1])
    w = np.zeros((len(win), n), np.int64)
    rows = np.repeat(np.arange(len(win)), win.shape[1])
    ok = win.ravel() >= 0
    w[rows[ok], win.ravel()[ok]] = 1
    return w


def _maxpool(net: Network, graph: Graph, node: Node) -> None:
    src = node.inputs[0]
    if src not in net.sources:
        raise refuse(node.name, node.op, "its input is not the spikes of a neuron layer")
    w = _window_matrix(graph, node)
    size = w.shape[0]
    zero = np.zeros(size, np.int64)
    net.layers.append(Layer(node.name, "maxpool", size, 0, zero, zero, w, net.sources[src]))
    net.sources[node.output] = node.name


def build(graph: Graph) -> Network:
    """The layer chain of an integer graph (refuses, naming the node, what cannot map)."""
    net = Network()
    for node in graph.nodes:
        if node.op in ("if", "maxpool2d") and kind_of(node) != LAVA:
            raise refuse(node.name, node.op, f"neuron kind '{kind_of(node)}' does not run")
        if node.op == "if":
            _neuron(net, graph, node)
        elif node.op == "maxpool2d":
            _maxpool(net, graph, node)
        elif node.op not in LINEAR_OPS:
            raise refuse(node.name, node.op, "the op is not supported")
    out = graph.outputs[0]
    src, w, b = _connect(net, graph, out, out)
    zero = np.zeros(w.shape[0], np.int64)
    net.layers.append(Layer("output", "output", w.shape[0], cap.OUTPUT_VTH, zero, b, w, src))
    _check_order(net)
    return net


def _check_order(net: Network) -> None:
    """Lava's netx runs a chain: every layer must read the one just before it."""
    for prev, la in zip(net.layers, net.layers[1:], strict=False):
        if la.src != prev.name:
            raise refuse(
                la.name,
                "synapses",
                f"reads '{la.src}', not the layer before it "
                f"('{prev.name}'): only a chain of layers maps",
            )
    if net.layers[0].src is not None:
        raise refuse(net.layers[0].name, "synapses", "the first layer must read the input")


def check(net: Network) -> None:
    """Every number within Lava's registers (raises CapabilityExceeded naming the layer)."""
    a_lim = int_limit(cap.A_IN_BITS)
    for la in net.layers:
        w = la.weight
        if la.src is None:  # host current: |W x + b| for any int8 input
            peak = float((np.abs(w).sum(1) * 127 + np.abs(la.bias)).max(initial=0))
        else:  # spikes are 0/1: the input lies between the sums of negative and positive weights
            peak = float(max(np.clip(w, 0, None).sum(1).max(), -np.clip(w, None, 0).sum(1).min()))
            if np.abs(w).max(initial=0) > int_limit(cap.WEIGHT_BITS):
                raise refuse(
                    la.name,
                    "synapses",
                    f"a composed weight reaches {np.abs(w).max()}, "
                    f"beyond the {cap.WEIGHT_BITS}-bit Dense weights",
                )
            if np.abs(la.bias).max(initial=0) > int_limit(cap.BIAS_BITS):
                raise refuse(
                    la.name,
                    "bias",
                    f"bias reaches {np.abs(la.bias).max()}, beyond "
                    f"the {cap.BIAS_BITS}-bit bias_mant",
                )
        if peak > a_lim:
            raise refuse(
                la.name,
                "synapses",
                f"its input can reach {peak:.0f} in a step, beyond "
                f"the {cap.A_IN_BITS}-bit a_in; quantize with --target lava",
            )
        if not 0 <= la.vth <= cap.VTH_MAX:
            raise refuse(la.name, "threshold", f"{la.vth} is outside vth's 0..{cap.VTH_MAX}")


def prepare(graph: Graph) -> Network:
    """The checked layer chain: LIF layers for kind "lava", SigmaDelta for kind "sdn"."""
    if holds_levels(graph):
        from spikeport.targets.lava.sdn_plan import build_sdn, check_sdn

        net = build_sdn(graph)  # checks its own order: a DAG of layers
        check_sdn(net)
        return net
    net = build(graph)
    check(net)
    return net
