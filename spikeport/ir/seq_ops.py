"""Op vocabulary for sequence models (ViT/BERT-like encoders), same registry as ops.py.

Data movement (transpose, take, gather, reshape) and scaling by a constant are linear; an embedding
lookup is a constant current. Ops with no linear spiking twin (layernorm, softmax and its
masked form, gelu, tanh, matmul of two activations) run as
expectation-compensated operators: each keeps S_t, the running sum of its inputs, and at step
t emits G(t) - G(t-1) with G(t) = t * f(S_t / t), so the outputs summed over t steps are exactly
t * f(mean input). In "int" mode f is the integer function of spikeport.sim.intfunc.

Sequence graphs keep the batch axis of a batch-1 export as a per-sample axis of size 1, so
ONNX axis attributes are used unchanged.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Node
from spikeport.ir.ops import Shape, ShapeMismatch, register

EC = "expectation-compensated"


def _fail(node: Node, why: str) -> ShapeMismatch:
    return ShapeMismatch(f"node '{node.name}' ({node.op}): {why}")


def _axis(node: Node, shape: Shape, ax: int) -> int:
    if not -len(shape) <= ax < len(shape):
        raise _fail(node, f"axis {ax} is outside rank {len(shape)}")
    return ax % len(shape)


@register("transpose", attrs={"perm": []})
def _transpose(node: Node, ins: list[Shape]) -> Shape:
    """y = x with per-sample axes permuted by `perm`."""
    perm = node.attrs["perm"]
    if sorted(perm) != list(range(len(ins[0]))):
        raise _fail(node, f"perm {perm} does not fit rank {len(ins[0])}")
    return tuple(ins[0][p] for p in perm)


@register("take", attrs={"axis": 0, "index": 0})
def _take(node: Node, ins: list[Shape]) -> Shape:
    """y = x[..., index, ...] along `axis` (the axis disappears), e.g. q/k/v from a stack."""
    ax = _axis(node, ins[0], node.attrs["axis"])
    if not 0 <= node.attrs["index"] < ins[0][ax]:
        raise _fail(node, f"index {node.attrs['index']} outside axis of size {ins[0][ax]}")
    return ins[0][:ax] + ins[0][ax + 1 :]


def picked(node: Node) -> int | list[int]:
    """What a `take` (one index: the axis goes) or a `gather` (a list: the axis stays) picks."""
    return node.attrs["index"] if node.op == "take" else node.attrs["indices"]


@register("gather", attrs={"axis": 0, "indices": []})
def _gather(node: Node, ins: list[Shape]) -> Shape:
    """y = x[..., indices, ...] along `axis` (the axis keeps len(indices) entries): an ONNX
    Gather by a constant index list, or the outlier inputs quantize gives their own synapses."""
    ax, idx = _axis(node, ins[0], node.attrs["axis"]), node.attrs["indices"]
    if not idx or not all(0 <= i < ins[0][ax] for i in idx):
        raise _fail(node, f"indices {idx!r:.60} do not fit an axis of size {ins[0][ax]}")
    return ins[0][:ax] + (len(idx),) + ins[0][ax + 1 :]


@register("scale", attrs={"factor": 1.0})
def _scale(node: Node, ins: list[Shape]) -> Shape:
    """y = factor * x. In "int" mode the integers pass unchanged: only the scale moves."""
    return ins[0]


@register("offset", params=("value",))
def _offset(node: Node, ins: list[Shape]) -> Shape:
    """y = x + value (a constant that broadcasts to x, e.g. a position embedding). In "int"
    mode `value_q` is the constant at x's scale (int32)."""
    v = node.params["value"]
    try:
        if np.broadcast_shapes(v.shape, ins[0]) != tuple(ins[0]):
            raise ValueError
    except ValueError:
        raise _fail(node, f"value {v.shape} does not broadcast to {ins[0]}") from None
    return ins[0]


@register("reduce_mean", attrs={"axes": [], "keepdims": 0})
def _reduce_mean(node: Node, ins: list[Shape]) -> Shape:
    """Mean over `axes` (a sum in "int" mode; 1/count lives in the output scale)."""
    axes = sorted(_axis(node, ins[0], a) for a in node.attrs["axes"])
    if node.attrs["keepdims"]:
        return tuple(1 if i in axes else d for i, d in enumerate(ins[0]))
    return tuple(d for i, d in enumerate(ins[0]) if i not in axes)


def _last_axis_params(node: Node, shape: Shape, names: tuple[str, ...]) -> None:
    for p in names:
        if node.params[p].shape != (shape[-1],):
            raise _fail(node, f"{p} {node.params[p].shape} is not ({shape[-1]},)")


@register("layernorm", params=("gamma", "beta"), attrs={"epsilon": 1e-5}, stateful=True)
def _layernorm(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis; EC in time."""
    _last_axis_params(node, ins[0], ("gamma", "beta"))
    return ins[0]


@register("softmax", stateful=True)
def _softmax(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = exp(x) / sum(exp(x)) over the last axis; EC in time."""
    return ins[0]


@register("gelu", attrs={"approximate": "none"}, stateful=True)
def _gelu(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = x * Phi(x) (exact, erf form), or with `approximate` "tanh" the tanh form
    0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (BERT's gelu_new); EC in time. The
    integer function is the same for both (they differ by < 5e-4, far below its bound)."""
    if node.attrs.get("approximate", "none") not in ("none", "tanh"):
        raise _fail(node, f"approximate={node.attrs['approximate']!r} is not 'none' or 'tanh'")
    return ins[0]


@register("matmul", n_inputs=2, stateful=True)
def _matmul(node: Node, ins: list[Shape]) -> Shape:
    """y = A @ B of two activations (numpy matmul broadcasting over leading axes). EC in time:
    G(t) = S_A(t) @ S_B(t) / t, so the outputs sum to t * mean(A) @ mean(B)."""
    a, b = ins
    if len(a) < 2 or len(b) < 2 or a[-1] != b[-2]:
        raise _fail(node, f"cannot multiply {a} by {b}")
    try:
        lead = np.broadcast_shapes(a[:-2], b[:-2])
    except ValueError:
        raise _fail(node, f"leading axes of {a} and {b} do not broadcast") from None
    return tuple(lead) + (a[-2], b[-1])


@register("embed", params=("table",), attrs={"position_pad": None})
def _embed(node: Node, ins: list[Shape]) -> Shape:
    """y = table[ids]: token embeddings (ONNX Gather of a constant table by an integer input).
    The ids are the same at every step, so y is a constant current, like a direct input; in
    "int" mode `table_q` holds the table as int8 codes of the output scale. With
    `position_pad` p set, the rows are position ids computed from the token ids as RoBERTa-style
    models do: cumsum(ids != p) * (ids != p) + p (spikeport.sim.intfunc.position_ids)."""
    return tuple(ins[0]) + (node.params["table"].shape[1],)


@register("masked_softmax", n_inputs=2, stateful=True)
def _masked_softmax(node: Node, ins: list[Shape]) -> Shape:
    """softmax over the last axis of x, keys whose mask is 0 excluded (probability exactly 0):
    the fused additive attention mask (attention_mask -> 0 / -inf -> Add -> Softmax). The mask
    (0/1, one value per key) broadcasts along the last axis; EC in time."""
    x, mask = ins
    if int(np.prod(mask)) != x[-1]:
        raise _fail(node, f"mask {mask} does not give one flag per key of {x}")
    return x


@register("tanh", stateful=True)
def _tanh(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = tanh(x) (e.g. a BERT pooler); EC in time."""
    return ins[0]


@register("slice", attrs={"axes": [], "starts": [], "ends": [], "steps": []})
def _slice(node: Node, ins: list[Shape]) -> Shape:
    """y = x[start:end:step] along each of `axes` (ONNX Slice / one output of Split), with
    in-range starts and ends fixed at import."""
    a = node.attrs
    out = list(ins[0])
    for ax, s, e, st in zip(a["axes"], a["starts"], a["ends"], a["steps"], strict=True):
        ax = _axis(node, ins[0], ax)
        out[ax] = len(range(s, e, st))
        if out[ax] == 0:
            raise _fail(node, f"slice {s}:{e}:{st} of axis {ax} is empty")
    return tuple(out)


def slicer(node: Node, batch: bool) -> tuple[slice, ...]:
    """The numpy index of a slice node (with a leading batch axis when `batch`)."""
    a = node.attrs
    rank = 1 + max(a["axes"], default=0)  # import stores non-negative axes
    index: dict[int, slice] = {}
    for ax, s, e, st in zip(a["axes"], a["starts"], a["ends"], a["steps"], strict=True):
        index[ax] = slice(s, e if e >= 0 or st > 0 else None, st)
    full = [index.get(i, slice(None)) for i in range(rank)]
    return tuple(([slice(None)] if batch else []) + full)
