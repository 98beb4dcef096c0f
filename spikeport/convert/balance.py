"""Threshold balancing: ReLU/Clip nodes become integrate-and-fire neurons.

Each neuron's threshold theta (the value one spike carries) is a high percentile of its ANN
activation on calibration data (Rueckauer et al. 2017, "robust normalisation"), per layer or per
channel, capped by the Clip bound. With v0 = theta/2 the rate code rounds to the nearest of
the T+1 levels {0, theta/T, ..., theta} instead of flooring (Bu et al., QCFS, ICLR 2022).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np

from spikeport.errors import BadInput
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import OPS, keeps_channels

if TYPE_CHECKING:
    from spikeport.convert.calibrate import Tails

DEFAULT_PERCENTILE = 99.99
# Signed, heavy-tailed transformer activations (LayerNorm outputs, Q, K, V) trade clipping for
# resolution better at a lower percentile when T is small: on the digits ViT (float mode,
# T = 4) 99.99 gave 80.0 %, 99.9 gave 90.6 %, 99.0 gave 93.3 % (ANN 97.8 %).
DEFAULT_INPUT_PERCENTILE = 99.0
# Ops that move or rescale values without computing: spikes stay spikes through them.
DATA_MOVEMENT = frozenset(
    {"reshape", "transpose", "take", "gather", "slice", "scale", "concat", "pad", "channel_scale"}
)
# Ops that pass a synaptic layer's integer currents on at their size (moved, rescaled in the
# scale, or shifted by a constant: ResMLP's Affine between its patch embedding and its token
# mixing), so that a synapse reading their output sums those currents as they are.
CURRENT_PASSING = DATA_MOVEMENT | {"offset"}
# What bipolar neurons may drive: every synaptic op of the registry, and the product of two
# activations (matmul), whose operands are spike trains too.
SPIKE_READERS = frozenset({name for name, spec in OPS.items() if spec.synaptic} | {"matmul"})


def thresholds(tails: Tails, percentile: float, per_channel: bool) -> np.ndarray:
    """theta per channel (C,) or for the layer (1,) from an activation tensor's Tails."""
    if not 0 < percentile <= 100:
        raise BadInput(f"percentile {percentile} is not in (0, 100]")
    layer = float(tails.percentile(percentile, False)[0])
    if not per_channel:
        theta = np.array([layer])
    else:
        theta = tails.percentile(percentile, True)
        theta = np.where(theta > 0, theta, layer)  # silent channel: any theta works, keep it sane
    return np.where(theta > 0, theta, 1.0)  # a silent layer still needs theta > 0


def threshold_shape(theta: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """theta (one, or one per channel along `axis`) shaped to broadcast over a tensor of
    `rank` per-sample axes."""
    if theta.size == 1:
        return theta.reshape((1,) * rank)
    if axis % rank == rank - 1:
        return theta.reshape(-1)  # features: broadcasts from the right
    return theta.reshape([-1 if a == axis % rank else 1 for a in range(rank)])


def to_neuron(
    node: Node, theta: np.ndarray, shape: tuple[int, ...], axis: int, signed: bool
) -> Node:
    """The IF neuron of a ReLU/Clip node: theta per channel along `axis`, or one for all."""
    cap = node.attrs.get("cap")
    if cap is not None:
        theta = np.minimum(theta, cap)
    theta = threshold_shape(theta, len(shape), axis)
    return Node(
        node.name,
        "if",
        list(node.inputs),
        node.output,
        {"signed": signed, "cap": cap},
        {"threshold": theta.astype(np.float32)},
    )


# Ops whose output channels lie along the first per-sample axis (C, H, W); dense and the
# transformer ops work on the last axis (features).
IMAGE_OPS = frozenset({"conv2d", "conv_transpose2d", "avgpool2d", "maxpool2d", "resize", "pad"})


def channel_axes(graph: Graph) -> dict[str, int]:
    """Per tensor, the axis its channels lie on: 0 for image tensors (from a conv or a pool,
    kept through elementwise ops), -1 (the features) otherwise."""
    axes: dict[str, int] = {t.name: 0 if len(t.shape) == 3 else -1 for t in graph.inputs}
    for n in graph.nodes:
        if n.op in IMAGE_OPS:
            axes[n.output] = 0
        elif n.op in ("dense", "reshape", "transpose", "matmul", "embed"):
            axes[n.output] = -1
        else:  # elementwise: the channels of its first input
            axes[n.output] = axes.get(n.inputs[0], -1) if n.inputs else -1
        if len(graph.shape(n.output)) < 2:
            axes[n.output] = 0
    return axes


def tensor_kinds(graph: Graph) -> dict[str, str]:
    """Per tensor: "static" (never changes: the direct input through stateless ops), "spikes"
    (a neuron's output, possibly moved or rescaled) or "analog". One pass in graph order."""
    kinds = {t.name: "static" for t in graph.inputs}
    for node in graph.nodes:
        kinds[node.output] = _output_kind(node, {kinds[i] for i in node.inputs})
    return kinds


def _output_kind(node: Node, ins: set[str]) -> str:
    """The kind of `node`'s output, given its inputs' kinds."""
    if node.op in ("if", "relu"):  # a ReLU becomes a neuron: the same answer before and after
        return "spikes"
    if ins <= {"static"} and not OPS[node.op].stateful:
        return "static"
    if node.op in DATA_MOVEMENT and ins == {"spikes"}:
        return "spikes"
    return "analog"


def has_ec_ops(graph: Graph) -> bool:
    """Whether the graph has operators with no spiking twin (softmax, layernorm, gelu, the
    product of two activations, sigmoid-family gates...): expectation-compensated in time."""
    return any(OPS[n.op].stateful and n.op not in ("if", "maxpool2d", "relu") for n in graph.nodes)


# What a product of two activations (attention's Q K^T and P V) reads: "analog", the running
# sums of its operands as they come (a linear layer's currents, softmax's probabilities), as
# LayerNorm, softmax and GELU read theirs; or "spikes", a bipolar IF neuron in front of each
# operand, whose rate code at T steps is one more rounding per operand.
PRODUCT_OPERANDS = ("analog", "spikes")


def spike_readers(product_operands: str) -> frozenset[str]:
    """The ops whose analog inputs get a bipolar IF neuron: products only with "spikes"."""
    return SPIKE_READERS if product_operands == "spikes" else SPIKE_READERS - {"matmul"}


def spike_inputs(graph: Graph, product_operands: str = "analog") -> list[str]:
    """The analog tensors that synaptic layers (dense, matmul, conv) read and that get a
    bipolar IF neuron in front, so those synaptic ops are driven by spikes:
    - in a graph with expectation-compensated operators, every analog input;
    - in any graph, the raw output of another synaptic layer (two convs with no activation
      between them, as MobileNetV4's and HGNet's blocks have), also a static one computed
      once from the input, and also past ops that pass its currents on (CURRENT_PASSING): a
      synapse summing another's integer currents compounds their ranges, 2^7 a layer, past
      any state width.
    A ReLU CNN/MLP otherwise has none (its synapses read spikes, pools or adds of spikes).
    A product of two activations (matmul) is a reader only with `product_operands` "spikes"."""
    direct = _synapse_outputs(graph)
    everywhere = has_ec_ops(graph)
    readers = spike_readers(product_operands)
    found: list[str] = []
    # kinds as they will be with the neurons in: a neuron ends a static chain (ResMLP's first
    # block, static up to its first GELU, is analog past the neuron in front of its token
    # mixing), so the tensors after it are analog for the rule "every analog input"
    kinds = {t.name: "static" for t in graph.inputs}
    for n in graph.nodes:
        ins = [kinds[t] for t in n.inputs]
        pool = spiking_pool(graph, n, readers)
        if n.op in readers or pool:
            for i, t in enumerate(n.inputs):
                if (t in direct and not pool) or (kinds[t] == "analog" and everywhere):
                    if t not in found:
                        found.append(t)
                    ins[i] = "spikes"
        kinds[n.output] = _output_kind(n, set(ins))
        if _pools_spikes(n, ins):
            kinds[n.output] = "pooled spikes"
    return found


def _pools_spikes(node: Node, ins: list[str]) -> bool:
    """Whether `node` averages spikes (or moves such averages): a synapse reads those counts
    as a ReLU CNN's dense layer reads its global pooling, with no neuron in front (one would
    round a squeeze-excitation gate's input, the mean of 64 positions' spikes, back to one
    bit a step)."""
    if node.op == "avgpool2d":
        return ins == ["spikes"]
    return node.op in DATA_MOVEMENT and set(ins) == {"pooled spikes"}


def spiking_pool(graph: Graph, node: Node, readers: frozenset[str]) -> bool:
    """Whether `node` is an average pooling that only synapses read (through moves): its
    analog input gets the neuron instead of its output, so that they read the mean of the
    window's spikes, finer than one neuron after the pooling would send (MobileNetV3's and
    EfficientNet's heads: activation, global pooling, dense)."""
    return node.op == "avgpool2d" and _only_synapses_read(graph, node.output, readers)


def _only_synapses_read(graph: Graph, tensor: str, readers: frozenset[str]) -> bool:
    users = graph.consumers(tensor)
    return (
        bool(users)
        and tensor not in graph.outputs
        and all(
            u.op in readers
            or (u.op in DATA_MOVEMENT and _only_synapses_read(graph, u.output, readers))
            for u in users
        )
    )


def _synapse_outputs(graph: Graph) -> set[str]:
    """Tensors that are a synaptic layer's output, possibly moved (reshaped, transposed...),
    rescaled or offset (CURRENT_PASSING)."""
    out: set[str] = set()
    for n in graph.nodes:
        if n.op in SPIKE_READERS or (n.op in CURRENT_PASSING and all(i in out for i in n.inputs)):
            out.add(n.output)
    return out


def _insert_input_neurons(
    graph: Graph, stats: dict[str, Tails], percentile: float, product_operands: str
) -> None:
    """A bipolar IF neuron (threshold: percentile of |activation|) before each such input."""
    points = set(spike_inputs(graph, product_operands))
    readers = spike_readers(product_operands)
    nodes: list[Node] = []
    made: set[str] = set()
    for n in graph.nodes:
        for t in n.inputs:
            if t in points and t not in made:
                theta = stats[t].percentile(percentile, False, absolute=True)
                theta = np.where(theta > 0, theta, 1.0)  # a silent tensor still needs theta > 0
                rank = len(graph.shape(t))
                nodes.append(
                    Node(
                        f"{t}:neuron",
                        "if",
                        [t],
                        f"{t}:spikes",
                        {"signed": True, "bipolar": True, "cap": None},
                        {"threshold": theta.reshape((1,) * rank).astype(np.float32)},
                    )
                )
                made.add(t)
        if n.op in readers or spiking_pool(graph, n, readers):
            n.inputs = [f"{t}:spikes" if t in points else t for t in n.inputs]
        nodes.append(n)
    graph.nodes = nodes


def balance_thresholds(
    graph: Graph,
    stats: dict[str, Tails],
    percentile: float = DEFAULT_PERCENTILE,
    per_channel: bool = False,
    signed: bool = False,
    input_percentile: float = DEFAULT_INPUT_PERCENTILE,
    product_operands: str = "analog",
) -> Graph:
    """Return the float spiking graph (stage "snn") of an "ann" graph. `input_percentile` sets
    the bipolar neurons that sequence models get in front of their linear layers (and, with
    `product_operands` "spikes", in front of the products of two activations)."""
    out = copy.deepcopy(graph)
    nodes = []
    axes = channel_axes(graph)
    for n in out.nodes:
        if n.op == "relu":
            # A graph output is read in real units: one threshold gives it one scale; so does
            # a tensor whose channels are moved into other axes (a pixel shuffle), since the
            # layer after it needs one scale per channel of its own.
            channels = per_channel and n.output not in graph.outputs
            channels = channels and keeps_channels(graph, n.output)
            theta = thresholds(stats[n.output], percentile, channels)
            n = to_neuron(n, theta, graph.shape(n.output), axes[n.output], signed)
        nodes.append(n)
    out.nodes, out.stage = nodes, "snn"
    _insert_input_neurons(out, stats, input_percentile, product_operands)
    products = any(n.op == "matmul" for n in graph.nodes)
    out.meta["conversion"] = {
        "percentile": percentile,
        "per_channel": per_channel,
        "signed_spikes": signed,
        "input_percentile": input_percentile if spike_inputs(graph, product_operands) else None,
        **({"product_operands": product_operands} if products else {}),
        "neuron": "if, reset by subtraction, v0 = theta/2",
        "encoding": "direct (constant input current)",
    }
    return check_graph(out)


def sign_neurons(graph: Graph) -> Graph:
    """Make every IF neuron that is not bipolar the signed variant (`convert --signed`), in
    place, and say so in the conversion record."""
    for n in graph.nodes:
        if n.op == "if" and not n.attrs.get("bipolar"):
            n.attrs = {**n.attrs, "signed": True}
    graph.meta["conversion"]["signed_spikes"] = True
    return graph


def grade_neurons(graph: Graph, spike_bits: int, layers: dict[str, int] | None = None) -> Graph:
    """Give every neuron `spike_bits` b (`layers`: per-node overrides by name), in place.

    A balanced threshold theta is the value of a full-rate neuron (one spike a step); a
    neuron of b bits emits up to K = 2^b - 1 levels a step, so its threshold becomes theta / K
    (K levels of theta / K carry the same maximum, at K times the resolution; v0 = floor of
    half the new threshold still rounds to nearest). b = 1 leaves the graph as it is."""
    from spikeport.ir.check import MAX_SPIKE_BITS

    layers = dict(layers or {})
    neurons = {n.name for n in graph.nodes if n.op == "if"}
    unknown = sorted(set(layers) - neurons)
    if unknown:
        raise BadInput(f"--spike-bits-layer: no neuron named {unknown[0]!r} in this graph")
    for n in graph.nodes:
        if n.op != "if":
            continue
        b = layers.get(n.name, spike_bits)
        if not 1 <= b <= MAX_SPIKE_BITS:
            raise BadInput(f"node '{n.name}': spike bits {b} are not in 1..{MAX_SPIKE_BITS}")
        if b == 1:
            continue
        n.attrs["spike_bits"] = b
        n.params["threshold"] = (n.params["threshold"] / ((1 << b) - 1)).astype(np.float32)
    if spike_bits != 1 or layers:
        graph.meta.setdefault("conversion", {})["spike_bits"] = {"default": spike_bits, **layers}
    return graph
