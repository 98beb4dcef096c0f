"""A graph output's weight layer reads its input at one scale.

A dense layer or convolution whose output is the graph's has one weight scale for all its
outputs (class scores are compared as integers: one scale; quantize.py), and its real
weights are w_oc * s_c once its input's scale s_c is folded in. Spikes carry their neuron's
threshold, and T-aware thresholds differ per channel: on a depthwise net's last neuron layer
(benchmarks/cnn_family.py --task shapes, relu_dw:50, T = 8) from 2.8 to 35, so int8 weights
gave the low-threshold channels' columns a few levels each. That rounding alone cost 6 points
of its test accuracy in integer mode against float (73.6 -> 67.5 %; the same counts through
the float weights: 73.5).

So quantize puts a `channel_scale` (factor 1, the same function) in front of such a layer
where it reads a sum of spikes (an average pool's: the global average pool in front of a
classifier, the common head), and its handler (quantize/ext.py) requantizes: integer
multipliers bring every element to one scale and the weights are then quantized on w alone
(LLM.int8()'s and SmoothQuant's point about outlier columns, met here by moving the scale
into the activations, where integer multipliers hold it exactly). The scale is as fine as
the range proof leaves room for, up to PRECISION_BITS of the finest channel's step; a sum
of many spikes keeps its resolution at a coarse one (relu_dw:50: 72.1 % at T = 8 with the
3 bits its proof for T <= 64 allowed, 72.3 with 8). A layer whose input scales lie within
SPREAD of each other keeps its input as it was, and so does one whose larger integers would
still overflow (quantize_kind quantizes again without the nodes): no graph proves for fewer
steps than before. A layer that reads spikes keeps them (_reads_spikes).

Only targets that run `channel_scale` get the nodes (C and the simulator); the others fold
every scale into synapses (convert/fold.py) and keep the weights as they were.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import value_source
from spikeport.quantize.profiles import Profile

SUFFIX = ":uniform_input"
WEIGHT_OPS = frozenset({"dense", "conv2d"})
# Input scales within this factor of each other stay as they are: one bit of a column's
# weight precision is not worth a multiply per input element.
SPREAD = 2.0
# Bits of its own step the finest input channel keeps after the multipliers (a spike of the
# lowest-threshold channel becomes at least 2^7 integer steps).
PRECISION_BITS = 7
# and the tensor's calibrated peak at least 2^8 steps (int8's), where the proof leaves room
# for that: coarser, the floor of a small count could lose more than the weights' rounding.
PEAK_STEPS = 8


def insert_uniform_inputs(graph: Graph, profile: Profile) -> list[str]:
    """Put a requantizing `channel_scale` in front of every dense layer and convolution whose
    output is a graph output, in place; return those layers' names."""
    if "channel_scale" not in profile.ops:
        return []
    done = []
    for node in list(graph.nodes):
        if node.op not in WEIGHT_OPS or node.output not in graph.outputs:
            continue
        if _reads_spikes(graph, node.inputs[0]):
            continue
        x = node.inputs[0]
        name = f"{node.name}{SUFFIX}"
        scale = Node(name, "channel_scale", [x], name, {}, {"factor": np.ones(1, np.float32)})
        graph.tensors[name] = TensorInfo(name, graph.shape(x))
        graph.nodes.insert(graph.nodes.index(node), scale)
        node.inputs = [name, *node.inputs[1:]]
        done.append(node.name)
    return done


def _reads_spikes(graph: Graph, tensor: str) -> bool:
    """Whether `tensor` holds a neuron's spikes (through element moves and max pools): a spike
    multiplied to 2^7 or more steps would turn the layer's event-driven synapses (the C
    target's) into multiplies, and on the digits MLP the finer weights gained one test image
    of 540 (at T = 8; none at T = 1, 2, 4)."""
    node = value_source(graph, tensor)
    while node is not None and node.op == "maxpool2d":
        node = value_source(graph, node.inputs[0])
    return node is not None and node.op == "if"


def is_uniform_input(node: Node) -> bool:
    """Whether `node` is one insert_uniform_inputs made."""
    return node.op == "channel_scale" and node.name.endswith(SUFFIX)


def drop_identity(graph: Graph, names: list[str]) -> list[str]:
    """Remove, in place, the nodes made in front of `names` that quantize left as identities
    (their input already at about one scale); return the layers that keep theirs."""
    kept = []
    for name in names:
        scale = graph.node(f"{name}{SUFFIX}")
        if "factor_q" in scale.params:
            kept.append(name)
        else:
            _remove(graph, scale)
    return kept


def remove_uniform_inputs(graph: Graph) -> None:
    """Remove, in place, the nodes of a graph quantized before (its meta lists their layers):
    quantizing again starts from the layers as converted."""
    for name in graph.meta.get("quantization", {}).get("uniform_inputs", []):
        _remove(graph, graph.node(f"{name}{SUFFIX}"))


def _remove(graph: Graph, scale: Node) -> None:
    for reader in graph.consumers(scale.output):
        reader.inputs = [scale.inputs[0] if t == scale.output else t for t in reader.inputs]
    graph.tensors.pop(scale.output, None)
    graph.nodes.remove(scale)
