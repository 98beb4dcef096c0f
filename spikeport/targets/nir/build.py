"""Spiking graph -> nir.NIRGraph (nir 1.0.x), the float network of spikeport's float simulator.

Units. NIR's IF fires 0/1 spikes and every consumer keeps one threshold per layer best, so each
IF gets v_threshold = 1: its potential is ours divided by theta. A tensor's NIR value times its
`sigma` is its real value: the input has sigma 1, an IF output sigma theta (a spike is worth
theta), an IF input sigma theta, the graph output sigma 1. Affine and Conv2d absorb the sigmas
of their input and output into their weights (W' = W sigma_in / sigma_out, b' = b / sigma_out);
AvgPool2d and Flatten carry sigma along; where two sigmas must meet (an add of spikes and a
current, an IF right after a pool) a 1x1 scaling node is inserted. Add and Concat have no NIR
node: edges into one node are summed (NIR's rule), Concat by embedding each input into its
slot with a 1x1 Conv2d or an Affine. MaxPool2d has no NIR node either: on the spikes of an IF
layer it becomes comparator IF nodes with recurrent Conv2d edges (maxpool.py), whose 0/1
output carries the input's sigma.

The op table NIR_OPS is the one list of what maps; anything else is refused by name.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph, Node
from spikeport.quantize import DEFAULT_MAX_TIMESTEPS
from spikeport.quantize.profiles import signed_fix
from spikeport.quantize.scales import input_channels

# What the file records about the neuron, for consumers and people (NIR does not encode it).
NEURON_METADATA = {
    "spikeport_neuron": "integrate-and-fire, discrete time, one step per input sample",
    "reset": "subtract",  # v -= v_threshold on a spike (NIR >= 1.0.6 documents reset to v_reset)
    "spike_condition": "v >= v_threshold",
    "v_initial": "0.5 * v_threshold",  # spikeport starts every neuron at half its threshold
    "input": "direct encoding: the same input at every step",
}


# NIR's own nodes, and attributes every torch module has (nirtorch makes each node one).
RESERVED_NAMES = frozenset(
    {
        "input",
        "output",
        "forward",
        "training",
        "train",
        "eval",
        "to",
        "type",
        "float",
        "double",
        "half",
        "cpu",
        "cuda",
        "apply",
        "modules",
        "children",
        "parameters",
        "buffers",
        "state_dict",
    }
)
NAMES_METADATA = "spikeport_node_names"  # {NIR node name: spikeport node name}, where they differ


def nir_names(graph: Graph) -> dict[str, str]:
    """{spikeport node name: NIR node name}. Exporters write names such as `/0/Conv` or
    `conv.weight`; NIR's HDF5 file nests groups at '/', and its torch consumers make every node
    a module attribute. So a NIR name keeps letters, digits and '_' (anything else becomes
    '_'), does not start with a digit, is no reserved name or Python keyword, and is unique
    (a suffix _2, _3, ...). Names that already are so stay as they are. Emit and verify both
    use this mapping; model.nir records it in its metadata."""
    used = set(RESERVED_NAMES)
    out: dict[str, str] = {}
    for n in graph.nodes:
        base = re.sub(r"\W", "_", n.name, flags=re.ASCII)
        if not base or base[0].isdigit() or base in RESERVED_NAMES or keyword.iskeyword(base):
            base = f"n_{base}"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        out[n.name] = name
    return out


@dataclass
class Edge:
    """A NIR node feeding a tensor, and the sigma (full tensor shape) of what it carries."""

    src: str
    sigma: np.ndarray


def refuse(node: Node, why: str) -> CapabilityExceeded:
    return CapabilityExceeded(f"node '{node.name}' ({node.op}): {why} on target 'nir'")


class NirBuilder:
    """Walks the graph once; NIR_OPS says what each op becomes."""

    def __init__(self, graph: Graph):
        import nir  # a dependency of this target only

        self.nir, self.graph = nir, graph
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.handles: dict[str, list[Edge]] = {}
        self.names = nir_names(graph)
        shape = graph.input.shape
        self.nodes["input"] = nir.Input(input_type={"input": np.array(shape)})
        self.handles[graph.input.name] = [Edge("input", np.ones(shape))]

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.graph.shape(tensor)

    def name(self, node: Node) -> str:
        """The NIR name of `node` (nir_names); derived nodes append '.suffix' to it."""
        return self.names[node.name]

    def demand(self, tensor: str) -> np.ndarray | None:
        """The sigma the consumers of `tensor` want, if they agree on one."""
        if tensor in self.graph.outputs:
            return np.ones(self.shape(tensor))
        wants = []
        for user in self.graph.consumers(tensor):
            if user.op == "if":
                wants.append(self.theta(user))
            elif user.op == "add":
                wants.append(self.demand(user.output))
            else:
                wants.append(None)
        first = wants[0] if wants else None
        same = all(w is not None and np.array_equal(w, first) for w in wants)
        return first if same else None

    def theta(self, node: Node) -> np.ndarray:
        th = np.asarray(node.params["threshold"], np.float64)
        return np.broadcast_to(th, self.shape(node.output)).copy()

    def add_node(self, name: str, nir_node: Any, inputs: list[Edge]) -> str:
        self.nodes[name] = nir_node
        self.edges += [(e.src, name) for e in inputs]
        return name

    def unify(self, node: Node, inputs: list[Edge], sigma: np.ndarray) -> list[Edge]:
        """Edges that all carry `sigma`: scale those that do not with a 1x1 node."""
        out = []
        for k, e in enumerate(inputs):
            if np.array_equal(e.sigma, sigma):
                out.append(e)
            else:
                name = f"{self.name(node)}.scale{k}"
                out.append(
                    Edge(self.add_node(name, self.scaler(node, e.sigma / sigma), [e]), sigma)
                )
        return out

    def scaler(self, node: Node, ratio: np.ndarray) -> Any:
        """Multiply a tensor by `ratio` (per channel / feature) with an Affine or 1x1 Conv2d."""
        if ratio.ndim == 1:
            return self.nir.Affine(weight=np.diag(ratio), bias=np.zeros(len(ratio)))
        # A full diagonal 1x1 kernel: nir's shape inference ignores `groups`.
        return _embedder(self, np.diag(channel_sigma(node, ratio)), ratio.shape)

    def build(self) -> Any:
        for node in self.graph.nodes:
            make = NIR_OPS.get(node.op)
            if make is None:
                raise refuse(node, "the op has no NIR node")
            self.handles[node.output] = make(self, node)
        out = self.graph.outputs[0]
        last = self.graph.producer(out)
        assert last is not None
        edges = self.unify(last, self.handles[out], np.ones(self.shape(out)))
        output = self.nir.Output(output_type={"output": np.array(self.shape(out))})
        self.add_node("output", output, edges)
        renamed = {new: old for old, new in self.names.items() if new != old}
        metadata: dict[str, Any] = {"spikeport": dict(NEURON_METADATA)}
        if renamed:
            metadata[NAMES_METADATA] = renamed
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=metadata)


def channel_sigma(node: Node, sigma: np.ndarray) -> np.ndarray:
    """(C,) of a (C, H, W) sigma, or refuse where it varies inside a channel."""
    flat = sigma.reshape(len(sigma), -1)
    if not np.all(flat == flat[:, :1]):
        raise refuse(node, "a scale varies inside a channel")
    return flat[:, 0]


def feature_sigma(node: Node, sigma: np.ndarray) -> np.ndarray:
    if sigma.ndim != 1:
        raise refuse(node, "a dense layer needs a 1-D input")
    return sigma


def _single(b: NirBuilder, node: Node, k: int = 0) -> list[Edge]:
    """The edges feeding input k, brought to one sigma (the first edge's)."""
    edges = b.handles[node.inputs[k]]
    return b.unify(node, edges, edges[0].sigma)


def _weighted_out_sigma(b: NirBuilder, node: Node) -> np.ndarray:
    want = b.demand(node.output)
    return want if want is not None else np.ones(b.shape(node.output))


def _dense(b: NirBuilder, node: Node) -> list[Edge]:
    ins = _single(b, node)
    s_in = feature_sigma(node, ins[0].sigma)
    s_out = _weighted_out_sigma(b, node)
    so = feature_sigma(node, s_out)
    w = np.asarray(node.params["weight"], np.float64) * s_in[None, :] / so[:, None]
    bias = np.asarray(node.params["bias"], np.float64) / so
    return [Edge(b.add_node(b.name(node), b.nir.Affine(weight=w, bias=bias), ins), s_out)]


def _symmetric(node: Node, pads: list[int]) -> tuple[int, int]:
    top, left, bottom, right = pads
    if top != bottom or left != right:
        raise refuse(node, f"NIR pads both sides alike; pads {pads} are not symmetric")
    return top, left


def _conv(b: NirBuilder, node: Node) -> list[Edge]:
    ins = _single(b, node)
    a = node.attrs
    w = np.asarray(node.params["weight"], np.float64)
    g = a["group"]
    s_in = channel_sigma(node, ins[0].sigma)
    s_out = _weighted_out_sigma(b, node)
    so = channel_sigma(node, s_out)
    w = w * s_in[input_channels(w.shape, g)][:, :, None, None] / so[:, None, None, None]
    conv = b.nir.Conv2d(
        input_shape=tuple(b.shape(node.inputs[0])[1:]),
        weight=_ungrouped(w, g),
        stride=tuple(a["strides"]),
        padding=_symmetric(node, a["pads"]),
        dilation=tuple(a["dilations"]),
        groups=1,
        bias=np.asarray(node.params["bias"], np.float64) / so,
    )
    return [Edge(b.add_node(b.name(node), conv, ins), s_out)]


def _ungrouped(w: np.ndarray, groups: int) -> np.ndarray:
    """A grouped kernel (C_out, C_in / g, kh, kw) as the full kernel (C_out, C_in, kh, kw), zero
    between groups: nir's shape inference ignores `groups` (a depthwise convolution's input
    would be typed with one channel), and the same sums come out."""
    if groups == 1:
        return w
    full = np.zeros((w.shape[0], w.shape[1] * groups, *w.shape[2:]), w.dtype)
    full[np.arange(w.shape[0])[:, None], input_channels(w.shape, groups)] = w
    return full


def _avgpool(b: NirBuilder, node: Node) -> list[Edge]:
    ins = _single(b, node)
    a = node.attrs
    sig = channel_sigma(node, ins[0].sigma)
    pool = b.nir.AvgPool2d(
        kernel_size=np.array(a["kernel"]),
        stride=np.array(a["strides"]),
        padding=np.array(_symmetric(node, a["pads"])),
    )
    shape = b.shape(node.output)
    return [
        Edge(b.add_node(b.name(node), pool, ins), np.broadcast_to(sig[:, None, None], shape).copy())
    ]


def _reshape(b: NirBuilder, node: Node) -> list[Edge]:
    shape_in, shape_out = b.shape(node.inputs[0]), b.shape(node.output)
    if len(shape_out) != 1:
        raise refuse(node, f"only a flatten to one axis maps to NIR, not {shape_in} -> {shape_out}")
    ins = _single(b, node)
    if len(shape_in) == 1:
        return ins
    flat = b.nir.Flatten(input_type={"input": np.array(shape_in)}, start_dim=0, end_dim=-1)
    return [Edge(b.add_node(b.name(node), flat, ins), ins[0].sigma.reshape(-1))]


def _add(b: NirBuilder, node: Node) -> list[Edge]:
    """No node: every input's edges go on to the consumer, which sums them, at one sigma."""
    want = b.demand(node.output)
    edges = [e for t in node.inputs for e in b.handles[t]]
    return b.unify(node, edges, want if want is not None else edges[0].sigma)


def _concat(b: NirBuilder, node: Node) -> list[Edge]:
    """Each input goes into its slot of the output by a 1x1 Conv2d / an Affine (zeros elsewhere)."""
    shape = b.shape(node.output)
    if node.attrs["axis"] % len(shape) != 0:
        raise refuse(node, "only a concat along the first (channel / feature) axis maps to NIR")
    want = b.demand(node.output)
    s_out = want if want is not None else np.ones(shape)
    per = channel_sigma(node, s_out) if len(shape) == 3 else s_out
    edges, offset = [], 0
    for k, t in enumerate(node.inputs):
        ins = b.unify(node, b.handles[t], b.handles[t][0].sigma)
        s_in = ins[0].sigma
        n = b.shape(t)[0]
        per_in = channel_sigma(node, s_in) if len(shape) == 3 else s_in
        embed = np.zeros((shape[0], n))
        embed[offset + np.arange(n), np.arange(n)] = per_in / per[offset : offset + n]
        offset += n
        edges.append(
            Edge(b.add_node(f"{b.name(node)}.in{k}", _embedder(b, embed, shape), ins), s_out)
        )
    return edges


def _embedder(b: NirBuilder, embed: np.ndarray, shape: tuple[int, ...]) -> Any:
    if len(shape) == 1:
        return b.nir.Affine(weight=embed, bias=np.zeros(shape[0]))
    return b.nir.Conv2d(
        input_shape=tuple(shape[1:]),
        weight=embed[:, :, None, None],
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=np.zeros(shape[0]),
    )


def _if(b: NirBuilder, node: Node) -> list[Edge]:
    if node.attrs["signed"]:
        raise refuse(node, f"NIR's IF has no negative spikes; {signed_fix(node)}")
    theta = b.theta(node)
    ins = b.unify(node, b.handles[node.inputs[0]], theta)
    ones = np.ones(theta.shape)
    neuron = b.nir.IF(
        r=ones,
        v_threshold=ones,
        v_reset=np.zeros(theta.shape),
        metadata=dict(NEURON_METADATA),
    )
    return [Edge(b.add_node(b.name(node), neuron, ins), theta)]


def _maxpool(b: NirBuilder, node: Node) -> list[Edge]:
    """Comparator IF nodes with recurrent Conv2d edges: on the spikes of an IF layer
    (maxpool.py, exact for T up to the graph's --max-T); on counts of spikes per cell (a
    concat of IF layers: 0..1, an average pool of spikes: 0..window) times a unit per channel
    (maxpool_graded.py, exact for any T)."""
    from spikeport.targets.nir.maxpool import MaxPoolBuilder
    from spikeport.targets.nir.maxpool_graded import GradedMaxPool

    node = _composite_pool(b, node) or node
    _symmetric(node, node.attrs["pads"])
    edges = b.unify(node, b.handles[node.inputs[0]], b.handles[node.inputs[0]][0].sigma)
    prod = b.graph.producer(node.inputs[0])
    if prod is not None and prod.op == "if":
        t_max = b.graph.meta.get("quantization", {}).get("max_timesteps", DEFAULT_MAX_TIMESTEPS)
        outs = [MaxPoolBuilder(b, node, edges[0].src, t_max, NEURON_METADATA).build()]
        unit = channel_sigma(node, edges[0].sigma)
    else:
        theta, m = _spike_counts(b, node.inputs[0])
        if theta is None:
            why = f"'{prod.name}' ({prod.op})" if prod is not None else "the network input"
            raise refuse(
                node,
                f"its input is the output of {why}, not spikes of IF layers nor an average "
                "pool of them; the expectation-compensated max maps to IF comparators only on "
                "spike counts",
            )
        unit = theta / m  # (spikes in the cell) x theta / m, m = 1 or the average pool's area
        counts = channel_sigma(node, edges[0].sigma) / unit
        srcs = [e.src for e in edges]
        outs = [
            out
            for c in range(len(counts))
            for out in GradedMaxPool(b, node, srcs, counts, m, NEURON_METADATA, c).build_graded()
        ]
    sigma = np.broadcast_to(unit[:, None, None], b.shape(node.output)).copy()
    return [Edge(out, sigma) for out in outs]


def _composite_pool(b: NirBuilder, node: Node) -> Node | None:
    """A max pool of a max pool of spikes or counts (GoogLeNet's pooled branch after a strided
    pool) as one max pool of them over the union of the windows: the running
    sums of the inner pool's output are the max of its input's running sums over its window
    (expectation-compensated), so the outer pool's output, step by step, is the compensated
    max of those running sums over every window it reaches; a padded cell, a sum of 0,
    changes no max of counts >= 0. None where that is not one window of the layer's cells
    (a stride wider than the window, or cells a floor left out at the far edge)."""
    inner = b.graph.producer(node.inputs[0])
    if inner is None or inner.op != "maxpool2d":
        return None
    src = b.graph.producer(inner.inputs[0])  # what one max pool takes: see _maxpool
    if src is None or src.op not in ("if", "concat", "avgpool2d"):
        return None
    a1, a2 = inner.attrs, node.attrs
    size = b.shape(inner.inputs[0])[1:]
    kernel, strides, pads = [], [], [0, 0, 0, 0]
    for ax in (0, 1):
        k1, s1, k2, s2 = a1["kernel"][ax], a1["strides"][ax], a2["kernel"][ax], a2["strides"][ax]
        lo, hi = a1["pads"][ax], a1["pads"][ax + 2]
        if s1 > k1 or (size[ax] + lo + hi - k1) % s1:
            return None
        kernel.append(k1 + (k2 - 1) * s1)
        strides.append(s1 * s2)
        pads[ax], pads[ax + 2] = lo + a2["pads"][ax] * s1, hi + a2["pads"][ax + 2] * s1
    attrs = {**a2, "kernel": kernel, "strides": strides, "pads": pads}
    return Node(node.name, node.op, [inner.inputs[0]], node.output, attrs, dict(node.params))


def _spike_counts(b: NirBuilder, tensor: str) -> tuple[np.ndarray | None, int]:
    """(spike value per channel, most spikes per cell and step) of a concat of IF spikes or an
    average pool of IF spikes; (None, 0) for anything else."""
    prod = b.graph.producer(tensor)
    if prod is not None and prod.op == "avgpool2d":
        theta = _spike_thresholds(b, prod.inputs[0])
        return theta, int(np.prod(prod.attrs["kernel"]))
    return _spike_thresholds(b, tensor), 1


def _spike_thresholds(b: NirBuilder, tensor: str) -> np.ndarray | None:
    """(C,) spike value per channel of `tensor` when it is the spikes of IF layers (one, or a
    channel concat of several), else None."""
    prod = b.graph.producer(tensor)
    if prod is not None and prod.op == "if" and len(b.shape(tensor)) == 3:
        return channel_sigma(prod, b.theta(prod))
    if prod is not None and prod.op == "concat" and prod.attrs["axis"] % 3 == 0:
        parts = [_spike_thresholds(b, t) for t in prod.inputs]
        return None if any(p is None for p in parts) else np.concatenate(parts)
    return None


NIR_OPS: dict[str, Callable[[NirBuilder, Node], list[Edge]]] = {
    "maxpool2d": _maxpool,
    "dense": _dense,
    "conv2d": _conv,
    "avgpool2d": _avgpool,
    "reshape": _reshape,
    "add": _add,
    "concat": _concat,
    "if": _if,
}


def to_nir(graph: Graph) -> Any:
    """The nir.NIRGraph of `graph`'s float spiking network (refuses what NIR cannot hold)."""
    return NirBuilder(graph).build()
