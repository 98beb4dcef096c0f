"""Integer weights rounded with error feedback, not each to its nearest step.

Rounding every weight to its nearest step makes each weight's error as small as it can be
alone, but what the neurons after a layer feel is the error of its output, (W_q - W) x,
summed over the layer's inputs. Rounding one input column at a time and spreading that
column's error over the columns not yet rounded, weighted by the inputs' second moments
G = E[x x^T], leaves a smaller output error for the same grid: GPTQ (Frantar et al., ICLR
2023), the one-shot form of Optimal Brain Quantization (Frantar and Alistarh, 2022). The
scales, and so the grid, thresholds and range proof, are those of rounding to nearest;
only which neighbouring step each weight takes changes.

G is the layer's input in the clipped ANN view that quantize reads its peaks from (the same
pass over the same samples), in real units, per group of a grouped convolution;
`integer_gram` turns it into the layer's integer input units. A weight already on the grid
(finetune --qat) leaves no error to pass on, so it keeps its integer.

It is an option (`quantize --weight-rounding feedback`), not the default: against rounding
to nearest on the same conversions (integer mode, test split, 2026-12-07) it takes back most
of what int8 weights cost where they cost much, the shapes task's maxpool:50 and maxpool:52
at T = 8 (89.6 -> 90.2 and 87.7 -> 88.5 %; float mode 90.6 and 88.4, 12-bit weights 90.5
and 88.3), but elsewhere it moves a net by a few test images either way
(docs/transformers.md, "Weights rounded with error feedback"): bench_resnet lost 2 / 5 / 4
/ 1 images at T = 1 / 2 / 4 / 8.
Weighing by the float spiking network's own T-step inputs instead of the ANN's did no better
there (0 / 5 / 3 / 1 images lost) and took quantize of all-MiniLM-L6-v2 at T = 16 from 14 s
to 4 min.
"""

from __future__ import annotations

import numpy as np
import torch

from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import ROW_LAYERS

FEEDBACK, NEAREST = "feedback", "nearest"
ROUNDINGS = (FEEDBACK, NEAREST)  # quantize's weight_rounding (`quantize --weight-rounding`)
DAMPING = 0.01  # added to G's diagonal, times its mean: GPTQ's default, for a G of rank < cols
GRAM_BYTES = 1 << 28  # the Gram matrices one quantize keeps, at most (float64, in graph order)


def gram_key(node: Node) -> tuple:
    """A layer's input tensor and what fixes its input rows: layers that share both share
    one Gram matrix (a transformer's Q, K and V projections)."""
    if node.op != "conv2d":
        return (node.inputs[0], node.op)
    a = node.attrs
    shape = tuple(node.params["weight"].shape[1:])
    return (node.inputs[0], node.op, shape, a.get("group", 1), tuple(a["strides"]),
            tuple(a["pads"]), tuple(a["dilations"]))  # fmt: skip


def weighed_layers(graph: Graph) -> tuple[dict[tuple, Node], list[str]]:
    """({Gram key: a layer that reads it}, why the other weight layers round to nearest): the
    dense and conv2d layers in graph order while their Gram matrices fit GRAM_BYTES."""
    chosen: dict[tuple, Node] = {}
    room, over, other = GRAM_BYTES, 0, []
    for n in graph.nodes:
        if "weight" not in n.params or gram_key(n) in chosen:
            continue
        if n.op not in ROW_LAYERS:
            other.append(n.name)  # a transposed convolution's rows are not laid out here
        elif gram_bytes(n) > room:
            over += 1
        else:
            chosen[gram_key(n)] = n
            room -= gram_bytes(n)
    why = []
    if over:
        why.append(f"{over} weight layers rounded to nearest: the second moments of their "
                   f"inputs would take more than the {GRAM_BYTES >> 20} MiB that weighted "
                   "rounding keeps")  # fmt: skip
    if other:
        why.append(f"weights rounded to nearest in {', '.join(other)}: weighted rounding "
                   f"takes {' and '.join(sorted(ROW_LAYERS))} layers only")  # fmt: skip
    return chosen, why


def gram_bytes(node: Node) -> int:
    """The size of `node`'s Gram matrix, (groups, cols, cols) in float64."""
    w = node.params["weight"]
    groups = int(node.attrs.get("group", 1)) if node.op == "conv2d" else 1
    cols = int(np.prod(w.shape[1:]))
    return 8 * groups * cols * cols


def integer_gram(gram: np.ndarray, col_scale: np.ndarray) -> np.ndarray:
    """G of real inputs -> G of integer inputs x / s (s: each column's input scale)."""
    s = col_scale.reshape(gram.shape[0], -1)
    return gram / (s[:, :, None] * s[:, None, :])


def round_with_feedback(steps: np.ndarray, gram: np.ndarray, lim: int) -> np.ndarray:
    """`steps` (O, cols): weights in units of their row's step; `gram` (groups, cols / groups,
    cols / groups): the layer's integer inputs' second moments, rows grouped as a grouped
    convolution's outputs. Integers in [-lim, lim], rounded half up as round_to_int, column
    by column, each column's error passed on to the columns after it."""
    groups, cols = gram.shape[0], gram.shape[1]
    w = torch.as_tensor(steps, dtype=torch.float64).reshape(groups, -1, cols).clone()
    g = torch.as_tensor(gram, dtype=torch.float64).clone()
    diag = torch.diagonal(g, dim1=1, dim2=2)
    dead = diag == 0  # an input never active: nothing to weigh its error by
    diag[dead] = 1.0
    diag += DAMPING * diag.mean(-1, keepdim=True)
    # The upper Cholesky factor of G^-1: row i holds how column i's error moves the rest.
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(g))
    u = torch.linalg.cholesky(inverse, upper=True)
    q = torch.empty_like(w)
    for i in range(cols):
        q[:, :, i] = torch.clamp(torch.floor(w[:, :, i] + 0.5), -lim, lim)
        err = (w[:, :, i] - q[:, :, i]) / u[:, i, i, None]
        w[:, :, i + 1 :] -= err[:, :, None] * u[:, None, i, i + 1 :]
    return q.reshape(steps.shape).numpy()
