"""The op vocabulary: one registry, keyed by op name.

Each entry says which params and attrs a node of that op carries, how many inputs it takes,
whether it keeps state across timesteps, whether it is a synapse (weights), and its shape rule.
Import, the simulator, quantize, the targets and the tests all read this registry; nothing
else lists the ops.

Shapes are per sample (no batch axis). Image tensors are (C, H, W).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spikeport.errors import BadInput
from spikeport.ir.graph import Graph, Node

Shape = tuple[int, ...]
ShapeRule = Callable[[Node, list[Shape]], Shape]


class ShapeMismatch(BadInput):
    """A node's inputs or params do not fit its shape rule."""


@dataclass(frozen=True)
class OpSpec:
    name: str
    rule: ShapeRule
    params: tuple[str, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    n_inputs: int | None = 1  # None: two or more
    stateful: bool = False
    synaptic: bool = False
    stages: tuple[str, ...] = ("ann", "snn", "int")
    doc: str = ""


OPS: dict[str, OpSpec] = {}


def register(name: str, **kw: Any) -> Callable[[ShapeRule], ShapeRule]:
    def deco(rule: ShapeRule) -> ShapeRule:
        OPS[name] = OpSpec(name=name, rule=rule, doc=(rule.__doc__ or "").strip(), **kw)
        return rule

    return deco


def _fail(node: Node, why: str) -> ShapeMismatch:
    return ShapeMismatch(f"node '{node.name}' ({node.op}): {why}")


def infer_shape(node: Node, in_shapes: list[Shape]) -> Shape:
    """Check a node against its op's rule and return its output shape (raises ShapeMismatch)."""
    spec = OPS.get(node.op)
    if spec is None:
        raise ShapeMismatch(f"node '{node.name}': unknown op '{node.op}'")
    n = len(in_shapes)
    if (spec.n_inputs is None and n < 2) or (spec.n_inputs is not None and n != spec.n_inputs):
        raise _fail(node, f"takes {spec.n_inputs or '2 or more'} inputs, got {n}")
    for p in spec.params:
        if p not in node.params:
            raise _fail(node, f"missing param '{p}'")
    return tuple(spec.rule(node, in_shapes))


# One-input ops that only pick or rearrange elements, never change them: an index array (or a
# token id, or a per-element scale) passes through them as the values do.
ELEMENT_MOVES = frozenset({"reshape", "transpose", "slice", "take", "gather"})


# Ops whose one-axis output is a feature vector, not class scores: sentence encoders end in a
# masked mean over tokens and an L2 normalisation, BERT's pooler in tanh, a bare encoder in a
# LayerNorm. Their largest element names no class.
FEATURE_OUTPUTS = frozenset({"l2norm", "masked_mean", "layernorm", "tanh"})


# Weight layers whose output is a matrix product of rows laid out from their input (a dense
# layer's features, a convolution's im2col patches: convert/refit.py's design matrix): what
# T-aware conversion refits and what quantize's error-feedback rounding weighs.
ROW_LAYERS = frozenset({"dense", "conv2d"})


def value_source(graph: Graph, tensor: str) -> Node | None:
    """The node whose values `tensor` holds: its producer, looked through one-input element
    moves; None for a graph input."""
    node = graph.producer(tensor)
    while node is not None and node.op in ELEMENT_MOVES and len(node.inputs) == 1:
        node = graph.producer(node.inputs[0])
    return node


def class_scores(graph: Graph, tensor: str) -> bool:
    """Whether a graph output holds class scores: one axis of more than one element per
    sample (a single logit has no top class: its argmax is always 0), made (through element
    moves) by anything but a FEATURE_OUTPUTS op. eval reports accuracy and agreement for
    those only, and T-aware conversion scores its candidates by top-class agreement there."""
    shape = graph.shape(tensor)
    if len(shape) != 1 or shape[0] < 2:
        return False
    node = value_source(graph, tensor)
    return node is None or node.op not in FEATURE_OUTPUTS


def static_tensors(graph: Graph) -> set[str]:
    """Tensors equal at every step: the graph inputs (direct encoding) through stateless ops.
    The simulator, the torch module and the C target compute them once, not every step."""
    static = {t.name for t in graph.inputs}
    for n in graph.nodes:
        if not OPS[n.op].stateful and all(i in static for i in n.inputs):
            static.add(n.output)
    return static


def attr(node: Node, key: str) -> Any:
    """A node's attribute, or its op's registered default when the node leaves it out."""
    return node.attrs[key] if key in node.attrs else OPS[node.op].attrs[key]


def spike_levels(node: Node) -> int:
    """K = 2^b - 1, the largest count a neuron of `spike_bits` b emits in one step (1: binary)."""
    return (1 << attr(node, "spike_bits")) - 1


def keeps_channels(graph: Graph, tensor: str) -> bool:
    """Whether every reader of `tensor` keeps its channels apart: anything but a reshape or
    transpose, except a flatten (a dense layer takes one scale per input feature). Where
    channels move into other axes (a pixel shuffle), per-channel scales would end up varying
    inside the channels of the next layer, which needs one scale per channel."""
    for user in graph.consumers(tensor):
        if user.op == "transpose":
            return False
        if user.op == "reshape" and len(graph.shape(user.output)) != 1:
            return False
    return True


def window_out(size: int, k: int, s: int, p0: int, p1: int, d: int = 1) -> int:
    """Output length of a sliding window (ONNX floor rule)."""
    return (size + p0 + p1 - d * (k - 1) - 1) // s + 1


def _spatial(node: Node, x: Shape, kernel: list[int]) -> tuple[int, int]:
    if len(x) != 3:
        raise _fail(node, f"expects a (C, H, W) input, got {x}")
    st, pads = node.attrs["strides"], node.attrs["pads"]
    dil = node.attrs.get("dilations", [1, 1])
    h = window_out(x[1], kernel[0], st[0], pads[0], pads[2], dil[0])
    w = window_out(x[2], kernel[1], st[1], pads[1], pads[3], dil[1])
    if h <= 0 or w <= 0:
        raise _fail(node, f"window {kernel} does not fit input {x}")
    return h, w


@register("dense", params=("weight", "bias"), synaptic=True)
def _dense(node: Node, ins: list[Shape]) -> Shape:
    """y = W x + b over the last axis; weight (out, in), bias (out,) or broadcastable to the
    output (..., out), e.g. a folded position embedding. Input (..., in)."""
    w, b = node.params["weight"], node.params["bias"]
    if w.ndim != 2 or b.shape[-1:] != (w.shape[0],) or b.ndim > len(ins[0]):
        raise _fail(node, f"weight {w.shape} / bias {b.shape} are not (out, in) / (out,)")
    if ins[0][-1:] != (w.shape[1],):
        raise _fail(node, f"input {ins[0]} does not end in {w.shape[1]} features")
    return ins[0][:-1] + (w.shape[0],)


@register(
    "conv2d",
    params=("weight", "bias"),
    attrs={"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1},
    synaptic=True,
)
def _conv2d(node: Node, ins: list[Shape]) -> Shape:
    """y = conv(x, W) + b (cross-correlation, ONNX semantics); weight (O, C/group, kh, kw)."""
    w, b, g = node.params["weight"], node.params["bias"], node.attrs["group"]
    if w.ndim != 4 or b.shape != (w.shape[0],) or w.shape[0] % g:
        raise _fail(node, f"weight {w.shape} / bias {b.shape} / group {g} do not agree")
    if ins[0] and ins[0][0] != w.shape[1] * g:
        raise _fail(node, f"input has {ins[0][0]} channels, weight expects {w.shape[1] * g}")
    return (w.shape[0],) + _spatial(node, ins[0], list(w.shape[2:]))


@register(
    "conv_transpose2d",
    params=("weight", "bias"),
    attrs={
        "strides": [1, 1],
        "pads": [0, 0, 0, 0],
        "dilations": [1, 1],
        "group": 1,
        "output_padding": [0, 0],
    },
    synaptic=True,
)
def _conv_transpose2d(node: Node, ins: list[Shape]) -> Shape:
    """ONNX ConvTranspose (the gradient of conv2d): each input element adds x * W[c] to the
    outputs it reaches, then pads are cropped off; weight (C, O/group, kh, kw) as ONNX stores
    it. Output size (s - 1) * stride + (k - 1) * dilation + 1 + output_padding - pads, per
    axis (auto_pad / output_shape are resolved to explicit pads at import)."""
    w, b, g = node.params["weight"], node.params["bias"], node.attrs["group"]
    if w.ndim != 4 or b.shape != (w.shape[1] * g,) or w.shape[0] % g:
        raise _fail(node, f"weight {w.shape} / bias {b.shape} / group {g} do not agree")
    x = ins[0]
    if len(x) != 3 or x[0] != w.shape[0]:
        raise _fail(node, f"expects a ({w.shape[0]}, H, W) input, got {x}")
    a = node.attrs
    st, pads, dil, opad = a["strides"], a["pads"], a["dilations"], a["output_padding"]
    if min(pads) < 0 or min(opad) < 0 or min(st) < 1 or min(dil) < 1:
        raise _fail(node, f"strides {st} / dilations {dil} / pads {pads} / output_padding {opad}")
    hw = [
        (x[1 + i] - 1) * st[i] + (w.shape[2 + i] - 1) * dil[i] + 1 + opad[i] - pads[i] - pads[i + 2]
        for i in range(2)
    ]
    if min(hw) <= 0:
        raise _fail(node, f"pads {pads} crop away the whole output of input {x}")
    return (w.shape[1] * g, hw[0], hw[1])


@register("avgpool2d", attrs={"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]})
def _avgpool(node: Node, ins: list[Shape]) -> Shape:
    """Mean over each window; padded cells count as zeros (constant divisor kh*kw)."""
    return (ins[0][0],) + _spatial(node, ins[0], node.attrs["kernel"])


@register(
    "maxpool2d", attrs={"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}, stateful=True
)
def _maxpool(node: Node, ins: list[Shape]) -> Shape:
    """Max over each window. In time it is expectation-compensated: with S_t the running sum of
    its input, it emits max(S_t) - max(S_{t-1}), so its outputs sum to max over the window of
    the summed input: exactly t * max(mean input). Integer-only (no division).
    Attribute `kind` "lava" (spikeport.sim.kinds): the per-step max of spikes instead (their
    OR), delivered one step late."""
    return (ins[0][0],) + _spatial(node, ins[0], node.attrs["kernel"])


@register("add", n_inputs=None)
def _add(node: Node, ins: list[Shape]) -> Shape:
    """y = sum of inputs (all the same shape). In "int" a per-channel integer multiplier
    `mult_q` (n_inputs, *channel shape) brings every input to the output scale."""
    if any(s != ins[0] for s in ins):
        raise _fail(node, f"inputs differ in shape: {ins}")
    return ins[0]


@register("concat", n_inputs=None, attrs={"axis": 0})
def _concat(node: Node, ins: list[Shape]) -> Shape:
    """Join inputs along per-sample `axis`; all other axes equal."""
    ax = node.attrs["axis"]
    rank = len(ins[0])
    if not -rank <= ax < rank:
        raise _fail(node, f"axis {ax} is outside rank {rank}")
    ax %= rank
    rest = [s[:ax] + s[ax + 1 :] for s in ins]
    if any(r != rest[0] for r in rest):
        raise _fail(node, f"inputs differ off axis {ax}: {ins}")
    return ins[0][:ax] + (sum(s[ax] for s in ins),) + ins[0][ax + 1 :]


@register("reshape", attrs={"shape": []})
def _reshape(node: Node, ins: list[Shape]) -> Shape:
    """Same values, new per-sample shape (C-order), e.g. Flatten."""
    shape = tuple(node.attrs["shape"])
    n_in, n_out = 1, 1
    for d in ins[0]:
        n_in *= d
    for d in shape:
        n_out *= d
    if n_in != n_out:
        raise _fail(node, f"cannot reshape {ins[0]} to {shape}")
    return shape


@register("relu", attrs={"cap": None}, stages=("ann",))
def _relu(node: Node, ins: list[Shape]) -> Shape:
    """y = min(max(x, 0), cap) (cap None: no upper bound). Replaced by `if` in conversion."""
    return ins[0]


@register(
    "if",
    params=("threshold",),
    attrs={"signed": False, "bipolar": False, "cap": None, "spike_bits": 1},
    stateful=True,
    stages=("snn", "int"),
)
def _if(node: Node, ins: list[Shape]) -> Shape:
    """Integrate-and-fire, reset by subtraction, threshold theta > 0 (per channel):
    v0 = theta/2 (floor(theta/2) in "int"); each step v += I; if v >= theta: s = +1, v -= theta;
    signed variant: else if v < 0 and the running spike count > 0: s = -1, v += theta.
    bipolar variant (signed values, e.g. the inputs of a transformer's linear layers): else if
    v < 0: s = -1, v += theta, with no floor on the count (its ANN view is the identity).
    A spike carries the value theta (in real units). `cap` keeps the source Clip bound for the
    ANN view. Attribute `kind` (absent: "subtract", all of the above) "lava" runs Lava's LIF
    instead: reset to zero, v > theta, v saturating, spikes one step late (spikeport.sim.kinds).

    Graded spikes: attribute `spike_bits` b (absent: 1, the binary neuron above). With
    K = 2^b - 1 each step emits the integer count s = clamp(floor(v / theta), lo, K) and
    v -= s * theta, where lo = 0 (unsigned), -min(K, running count) (signed: the count never
    goes below 0) or -K (bipolar); floor rounds toward -inf. For b = 1 this is exactly the rule
    above (floor(v / theta) >= 1 iff v >= theta, <= -1 iff v < 0). A spike s carries s * theta.
    Kind "lava" has binary spikes only (Lava's LIF).
    """
    th = node.params["threshold"]
    pairs = zip(th.shape[::-1], ins[0][::-1], strict=False)  # numpy broadcasting, from the right
    if th.ndim > len(ins[0]) or any(a not in (1, b) for a, b in pairs):
        raise _fail(node, f"threshold {th.shape} does not broadcast to {ins[0]}")
    return ins[0]


# Sequence-model ops and the activations, gates and data movement of imported CNN/ViT/embedding
# models register into the same OPS table.
from spikeport.ir import ext_ops as _ext_ops  # noqa: E402,F401
from spikeport.ir import seq_ops as _seq_ops  # noqa: E402,F401
