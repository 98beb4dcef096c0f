"""Op vocabulary for the activations, gates, normalisations and data movement of imported
CNNs (SiLU / HardSwish / squeeze-excite gating, PReLU, ConvNeXt layer scale, padding,
resizing), ViTs and sentence-embedding heads (masked mean pooling, L2 normalisation).
Same registry as ops.py; attrs a node leaves out take the defaults registered here
(`spikeport.ir.ops.attr`).

Nonlinear ops are expectation-compensated (EC, see seq_ops): each keeps S_t, the running sum
of its inputs, and emits G(t) - G(t-1) with G(t) = t * f(S_t / t), so its outputs summed over
t steps are exactly t * f(mean input). The rest are linear and stateless.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Node
from spikeport.ir.ops import Shape, ShapeMismatch, attr, register
from spikeport.ir.seq_ops import _reduce_mean


def _fail(node: Node, why: str) -> ShapeMismatch:
    return ShapeMismatch(f"node '{node.name}' ({node.op}): {why}")


def _broadcasts(node: Node, name: str, shape: Shape) -> None:
    """A param must broadcast to the input without growing it."""
    p = node.params[name]
    try:
        if np.broadcast_shapes(p.shape, shape) != tuple(shape):
            raise ValueError
    except ValueError:
        raise _fail(node, f"{name} {p.shape} does not broadcast to {shape}") from None


@register("sigmoid", stateful=True)
def _sigmoid(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = 1 / (1 + exp(-x)); EC in time."""
    return ins[0]


@register("hardsigmoid", attrs={"alpha": 0.2, "beta": 0.5}, stateful=True)
def _hardsigmoid(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = clip(alpha * x + beta, 0, 1); EC in time (quantize needs alpha > 0)."""
    return ins[0]


@register("hardswish", stateful=True)
def _hardswish(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = x * clip(x / 6 + 1/2, 0, 1); EC in time."""
    return ins[0]


@register("silu", stateful=True)
def _silu(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = x * sigmoid(x) (swish); EC in time."""
    return ins[0]


@register("prelu", params=("slope",), stateful=True)
def _prelu(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = x if x >= 0 else slope * x; slope broadcasts to x (per channel, or a scalar for
    LeakyRelu). EC in time; f is positively homogeneous, so G(t) = f(S_t) exactly."""
    _broadcasts(node, "slope", ins[0])
    return ins[0]


@register("mul", n_inputs=2, stateful=True)
def _mul(node: Node, ins: list[Shape]) -> Shape:
    """y = a * b of two activations, numpy broadcasting of the per-sample shapes (SE gating
    (C, H, W) * (C, 1, 1)). EC in time like matmul: G(t) = S_A(t) * S_B(t) / t."""
    try:
        return tuple(np.broadcast_shapes(ins[0], ins[1]))
    except ValueError:
        raise _fail(node, f"shapes {ins[0]} and {ins[1]} do not broadcast") from None


@register("div", n_inputs=2, attrs={"eps": 1e-12}, stateful=True)
def _div(node: Node, ins: list[Shape]) -> Shape:
    """y = a / max(b, eps) for a positive divisor b, broadcasting (a token count, a norm). EC in
    time: G(t) = t * S_A / max(S_B, t * eps); in "int" mode a divisor's running mean below one
    integer step (or below eps) is read as that floor, so early steps with no input yet stay
    bounded instead of dividing by 0."""
    return _mul(node, ins)


@register("l2norm", attrs={"axis": -1, "eps": 1e-12}, stateful=True)
def _l2norm(node: Node, ins: list[Shape]) -> Shape:
    """f(x) = x / max(||x||_2, eps) over the last axis; EC in time."""
    if attr(node, "axis") not in (-1, len(ins[0]) - 1):
        raise _fail(node, f"normalises the last axis only, not axis {attr(node, 'axis')}")
    return ins[0]


@register("channel_scale", params=("factor",))
def _channel_scale(node: Node, ins: list[Shape]) -> Shape:
    """y = factor * x, a nonzero constant that broadcasts to x (ConvNeXt layer scale, a folded
    per-channel Mul). Linear; in "int" mode only sign(factor) touches the integers."""
    _broadcasts(node, "factor", ins[0])
    if not np.all(node.params["factor"] != 0):
        raise _fail(node, "factor has zeros; a zero channel is a constant, not a scale")
    return ins[0]


@register("pad", attrs={"pads": []})
def _pad(node: Node, ins: list[Shape]) -> Shape:
    """Zero padding: `pads` holds the begins of every per-sample axis, then the ends (ONNX
    order), all >= 0. Data movement."""
    pads, rank = list(node.attrs["pads"]), len(ins[0])
    if len(pads) != 2 * rank or min(pads, default=0) < 0:
        raise _fail(node, f"pads {pads} are not {2 * rank} values >= 0")
    return tuple(d + pads[i] + pads[i + rank] for i, d in enumerate(ins[0]))


def pad_width(node: Node) -> list[tuple[int, int]]:
    """numpy's pad_width of a pad node (per-sample axes)."""
    pads = list(node.attrs["pads"])
    rank = len(pads) // 2
    return [(pads[i], pads[i + rank]) for i in range(rank)]


@register("reduce_sum", attrs={"axes": [], "keepdims": 0})
def _reduce_sum(node: Node, ins: list[Shape]) -> Shape:
    """Sum over the listed `axes` (an empty list sums nothing); linear, stateless."""
    return _reduce_mean(node, ins)


RESIZE_MODES = ("nearest", "linear")
TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


@register(
    "resize",
    attrs={
        "mode": "nearest",
        "out_shape": [],
        "coordinate_transformation_mode": "half_pixel",
        "nearest_mode": "round_prefer_floor",
    },
)
def _resize(node: Node, ins: list[Shape]) -> Shape:
    """ONNX Resize of the two spatial axes of a (C, H, W) input to `out_shape` (C, H', W'):
    "nearest" picks one source cell per output cell, "linear" mixes two per axis (bilinear);
    both are one constant (out, in) matrix per axis (`resize_matrices`). Linear, stateless."""
    out = tuple(node.attrs["out_shape"])
    if len(ins[0]) != 3 or len(out) != 3 or out[0] != ins[0][0] or min(out) <= 0:
        raise _fail(node, f"resizes (C, H, W) to (C, H', W'), got {ins[0]} -> {out}")
    for key, allowed in (
        ("mode", RESIZE_MODES),
        ("coordinate_transformation_mode", TRANSFORMS),
        ("nearest_mode", NEAREST_MODES),
    ):
        if attr(node, key) not in allowed:
            raise _fail(node, f"{key} '{attr(node, key)}' is not one of {allowed}")
    return out


def _source(node: Node, n_in: int, n_out: int) -> np.ndarray:
    """The source coordinate of every output cell along one axis (ONNX's transformation)."""
    x, scale = np.arange(n_out, dtype=np.float64), n_out / n_in
    how = attr(node, "coordinate_transformation_mode")
    if how == "asymmetric":
        return x / scale
    if how == "align_corners":
        return x * (n_in - 1) / (n_out - 1) if n_out > 1 else 0 * x
    if how == "pytorch_half_pixel" and n_out == 1:
        return 0 * x
    return (x + 0.5) / scale - 0.5


def resize_matrices(node: Node, in_shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """The (H', H) and (W', W) matrices of a resize node: y[c] = Mh @ x[c] @ Mw.T. Nearest rows
    hold a single 1; linear rows two weights summing to 1 (the border cell repeats)."""
    mats = []
    for n_in, n_out in zip(in_shape[1:], node.attrs["out_shape"][1:], strict=True):
        src = _source(node, n_in, n_out)
        m = np.zeros((n_out, n_in))
        rows = np.arange(n_out)
        if attr(node, "mode") == "nearest":
            pick = {
                "round_prefer_floor": np.ceil(src - 0.5),
                "round_prefer_ceil": np.floor(src + 0.5),
                "floor": np.floor(src),
                "ceil": np.ceil(src),
            }[attr(node, "nearest_mode")]
            m[rows, np.clip(pick, 0, n_in - 1).astype(int)] = 1.0
        else:
            src = np.clip(src, 0, n_in - 1)
            lo = np.floor(src).astype(int)
            hi = np.minimum(lo + 1, n_in - 1)
            np.add.at(m, (rows, lo), 1 - (src - lo))
            np.add.at(m, (rows, hi), src - lo)
        mats.append(m)
    return mats[0], mats[1]


@register("masked_mean", n_inputs=2, attrs={"axis": 0, "keepdims": 0}, stateful=True)
def _masked_mean(node: Node, ins: list[Shape]) -> Shape:
    """The mean of x over the tokens along `axis` whose 0/1 mask (the second input, one flag
    per token) is set: the masked mean pooling of sentence encoders. Linear in x for a given
    mask; in "int" mode EC, G(t) = floor(masked sum of S_t / kept count), so the outputs sum
    to the floor of the exact mean of the summed input."""
    x, mask = ins
    ax = attr(node, "axis")
    if not -len(x) <= ax < len(x):
        raise _fail(node, f"axis {ax} is outside rank {len(x)}")
    ax %= len(x)
    if int(np.prod(mask)) != x[ax]:
        raise _fail(node, f"mask {mask} does not give one flag per token of axis {ax} of {x}")
    if attr(node, "keepdims"):
        return tuple(1 if i == ax else d for i, d in enumerate(x))
    return tuple(d for i, d in enumerate(x) if i != ax)
