"""The state of one ONNX import, and the per-op importer registry.

Shapes: the canonical model is batch-1 (spikeport.convert.onnx_load). Every IR tensor keeps
that shape with its batch axis removed: its per-sample shape. Exporters do not always keep the
batch axis first (nn.MultiheadAttention works on (L, N, E); a Reshape may merge it with heads),
so the import tracks, per tensor, where the batch axis is (`bpos`), or None once it has been
merged into another axis (then the per-sample shape is the whole batch-1 shape: samples never
interact, and a batch-1 tensor is exactly one sample). Importers map ONNX axes to per-sample
axes through `axis()`, and every node's per-sample shape is checked against onnx shape
inference, so an axis remapped wrongly is an error naming the node, never a wrong network.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx

from spikeport.errors import UnsupportedOp
from spikeport.ir.graph import Node, TensorInfo
from spikeport.ir.ops import infer_shape
from spikeport.registry import registrar

Shape = tuple[int, ...]
# Layers a following per-channel scale or shift folds into (weights and bias).
FOLD_TARGETS = frozenset({"dense", "conv2d", "conv_transpose2d"})


def attrs(n: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def refuse(n: onnx.NodeProto, why: str) -> UnsupportedOp:
    return UnsupportedOp(f"node '{n.name}' ({n.op_type}): {why}")


def drop_axis(shape: Shape, axis: int | None) -> Shape:
    return tuple(shape) if axis is None else tuple(shape[:axis]) + tuple(shape[axis + 1 :])


def batch_axis_of(full: Shape, per_sample: Shape, hint: int | None) -> int | None:
    """Where the size-1 batch axis sits in `full` so that removing it gives `per_sample`
    (`hint` first); None when `full` is the per-sample shape itself. Raises ValueError when
    neither holds. Several size-1 axes in a row are interchangeable: they carry no data."""
    full, per_sample = tuple(full), tuple(per_sample)
    candidates = ([hint] if hint is not None else []) + list(range(len(full)))
    for b in candidates:
        if 0 <= b < len(full) and full[b] == 1 and drop_axis(full, b) == per_sample:
            return b
    if full == per_sample:
        return None
    raise ValueError


@dataclass
class Ctx:
    """Import state: constants, aliases of removed nodes, batch-axis positions, the IR."""

    consts: dict[str, np.ndarray]
    tensors: dict[str, TensorInfo]
    onnx_shapes: dict[str, Shape]
    bpos: dict[str, int | None]
    nodes: list[Node] = field(default_factory=list)
    alias: dict[str, str] = field(default_factory=dict)
    uses: dict[str, int] = field(default_factory=dict)
    producers: dict[str, Node] = field(default_factory=dict)
    # Add outputs that are scores + an additive attention mask -> (scores, mask input).
    masks: dict[str, tuple[str, str]] = field(default_factory=dict)
    graph_outputs: set[str] = field(default_factory=set)
    # The canonical model, its integer inputs, and what is computed from them alone.
    model: onnx.ModelProto | None = None
    input_info: dict[str, onnx.ValueInfoProto] = field(default_factory=dict)
    derived: dict[str, set[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what import changed, for meta/inspect
    dropped_softmax: list[str] = field(default_factory=list)

    # -- tensors -------------------------------------------------------------------------
    def name(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def shape(self, t: str) -> Shape:
        """Per-sample shape of an IR tensor."""
        return self.tensors[self.name(t)].shape

    def onnx_full(self, t: str) -> Shape:
        """The batch-1 ONNX shape of an IR tensor (its batch axis put back)."""
        t = self.name(t)
        shape, b = self.tensors[t].shape, self.bpos[t]
        return shape if b is None else shape[:b] + (1,) + shape[b:]

    def batch(self, t: str) -> int | None:
        return self.bpos[self.name(t)]

    def rank(self, t: str) -> int:
        """Rank of the ONNX (batch-1) tensor."""
        t = self.name(t)
        return len(self.shape(t)) + (self.bpos[t] is not None)

    def is_const(self, t: str) -> bool:
        return t in self.consts

    def axis(self, n: onnx.NodeProto, t: str, a: int) -> int:
        """The per-sample axis of ONNX axis `a` of tensor `t`; refuses the batch axis."""
        rank, b = self.rank(t), self.batch(t)
        if not -rank <= a < rank:
            raise refuse(n, f"axis {a} is outside rank {rank}")
        a %= rank
        if a == b:
            raise refuse(n, "it works across the batch axis (samples must stay independent)")
        return a - 1 if b is not None and a > b else a

    def sample_const(self, c: np.ndarray, t: str) -> np.ndarray:
        """A constant that broadcasts against ONNX tensor `t`, as the per-sample array that
        broadcasts against its per-sample shape (its batch axis, of size 1, removed)."""
        rank, b = self.rank(t), self.batch(t)
        c = np.asarray(c)
        if c.ndim > rank:
            raise UnsupportedOp(f"a constant of shape {c.shape} broadcasts beyond rank {rank}")
        c = c.reshape((1,) * (rank - c.ndim) + c.shape)
        if b is not None:
            c = np.take(c, 0, axis=b)
        while c.ndim > 0 and c.shape[0] == 1:
            c = c[0]  # leading 1s broadcast anyway; keep constants compact
        return c

    def const(self, n: onnx.NodeProto, i: int, what: str) -> np.ndarray:
        t = n.input[i] if i < len(n.input) else ""
        if t not in self.consts:
            raise refuse(
                n, f"{what} must be a constant (an initializer), '{t}' is computed at run time"
            )
        return self.consts[t]

    def optional_const(self, n: onnx.NodeProto, i: int, what: str) -> np.ndarray | None:
        return self.const(n, i, what) if i < len(n.input) and n.input[i] else None

    # -- nodes ---------------------------------------------------------------------------
    def emit(self, n: onnx.NodeProto, node: Node, hint: int | None = None) -> None:
        """Add `node` to the IR; find its output's batch axis from the ONNX shape (or `hint`
        when the ONNX tensor has no inferred shape, e.g. an IR-only tensor)."""
        node.inputs = [self.name(t) for t in node.inputs]
        shape = infer_shape(node, [self.tensors[t].shape for t in node.inputs])
        full = self.onnx_shapes.get(node.output)
        if hint is None and node.inputs:
            hint = self.bpos.get(node.inputs[0])
        if full is None:
            b = hint
        else:
            try:
                b = batch_axis_of(full, shape, hint)
            except ValueError:
                msg = f"imported as shape {shape}, ONNX shape inference says {full} (batch 1)"
                raise refuse(n, msg) from None
        # Integer inputs (ids, masks) stay integers through data movement only.
        moves = node.op in ("reshape", "transpose", "slice", "take", "gather")
        dtype = self.tensors[node.inputs[0]].dtype if moves else "float32"
        self.tensors[node.output] = TensorInfo(node.output, shape, dtype)
        self.bpos[node.output] = b
        self.nodes.append(node)
        self.producers[node.output] = node

    def producer(self, t: str) -> Node | None:
        return self.producers.get(self.name(t))

    def single_use(self, t: str) -> bool:
        t = self.name(t)
        return self.uses.get(t, 0) == 1 and t not in self.graph_outputs

    def fold_target(self, t: str) -> Node | None:
        """The Conv/Gemm that alone feeds `t`, if folding a per-channel affine into it is safe:
        directly, or through a reshape that keeps every per-sample axis, or a dense layer's
        feature axis (LeViT's Linear + BatchNorm1d exports a Flatten of the tokens between)."""
        p = self.producer(t)
        if p is not None and p.op == "reshape" and self.single_use(p.output):
            q = self.producer(p.inputs[0])
            before, after = self.shape(p.inputs[0]), self.shape(p.output)
            keeps = before == after or (
                q is not None and q.op == "dense" and after[-1:] == before[-1:]
            )
            p = q if keeps else None
        ok = p is not None and p.op in FOLD_TARGETS and self.single_use(p.output)
        return p if ok else None

    def rename_output(self, node: Node, new: str) -> None:
        old = node.output
        self.tensors[new] = TensorInfo(new, self.tensors.pop(old).shape)
        self.bpos[new] = self.bpos.pop(old)
        self.producers[new] = self.producers.pop(old)
        node.output = new


Importer = Callable[[Ctx, onnx.NodeProto], None]
IMPORTERS: dict[str, Importer] = {}
importer = registrar(IMPORTERS)
