"""Weight calibration of T-aware conversion: a synaptic layer's weights and bias refitted so
that, fed the spiking network's mean input over T steps, it gives the ANN's output.

At a few steps a neuron's rate is its activation rounded, clipped and delayed, and the layer
after it reads that distortion as signal: the error of one layer is the next one's input.
T-aware conversion (tune.py) already chooses thresholds and bias shifts on the spiking
network's own inputs; here the layer's weights follow them too. Li et al. 2021 ("A free lunch
from ANN: towards efficient, accurate spiking neural networks calibration") calibrate the
weights layer by layer with gradient steps; the same objective on the T-step mean rates is a
linear least-squares problem, solved here in closed form, per group of a grouped convolution:

    min_W' |X W'^T - Y|^2 + lambda |W' - W|^2

X the rows the layer is linear in (im2col patches of the mean rates, plus a 1 for the bias),
Y the ANN's output for the ANN's own input, W the current weights; lambda (relative to the
mean input power) keeps W' near W where the data says little.

How much to trust the calibration data is the data's to say, by two-fold cross-validation
over the samples (even ones against odd ones; a sample's rows, its tokens or pixels, stay
together, since they are not independent): each ridge of RIDGES is fitted on one half and
scored on the other, and the layer keeps W unless one of them scores better on both halves
together. Below ROWS_PER_WEIGHT rows per weight of an output the halves are too small for
that score to mean much, and the layer keeps W: refitted anyway, digits_mlp's hidden layers
(180 images for 129 and 65 inputs) passed the cross-validation and still lost 5 and 6 test
images at T = 1 and 2. The first version's fixed rule of 20 rows per weight left every dense
layer of all-MiniLM-L6-v2 (64 sentences x 32 tokens for 385 inputs) and the digits CNNs'
second convolutions alone; with the cross-validation and 4, bench_resnet rose from 82.4 to
90.7 % at T = 1 (integer mode, test split).
Deterministic: sums in float64, no sampling.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spikeport.ir.graph import Node
from spikeport.ir.ops import ROW_LAYERS
from spikeport.sim.kernels import symmetric_pads

RIDGES = (1e-3, 1e-2, 1e-1, 1.0)  # lambda / mean input power, the candidates cross-validated
MIN_SAMPLES = 4  # two per half
ROWS_PER_WEIGHT = 4  # rows per weight of an output, at least (see the module docstring)
CHUNK_BYTES = 1 << 25  # the design matrix is built this many bytes at a time


def _groups(node: Node) -> int:
    return int(node.attrs.get("group", 1)) if node.op == "conv2d" else 1


def _design(node: Node, x: np.ndarray) -> torch.Tensor:
    """The rows the layer's output is linear in, one block per group: (groups, rows, inputs
    per group). The bias's input, a 1 in every row, is left implicit (_normal_equations)."""
    t = torch.as_tensor(x, dtype=torch.float64)
    if node.op == "dense":
        return t.reshape(1, -1, t.shape[-1])
    a, (kh, kw) = node.attrs, node.params["weight"].shape[2:]
    pads = symmetric_pads(a["pads"])  # symmetric: unfold pads, no padded copy
    if pads is None:
        top, left, bottom, right = a["pads"]
        t = F.pad(t, (left, right, top, bottom))
    cols = F.unfold(t, (kh, kw), dilation=a["dilations"], padding=pads or 0, stride=a["strides"])
    g = _groups(node)
    cols = cols.reshape(t.shape[0], g, -1, cols.shape[-1]).permute(1, 0, 3, 2)
    return cols.reshape(g, -1, cols.shape[-1])


def _outputs(node: Node, y: np.ndarray) -> torch.Tensor:
    """The layer's output in _design's row order: (groups, rows, outputs per group)."""
    t = torch.as_tensor(y, dtype=torch.float64)
    if node.op == "dense":
        return t.reshape(1, -1, t.shape[-1])
    g, (n, o) = _groups(node), t.shape[:2]
    t = t.reshape(n, g, o // g, -1).permute(1, 0, 3, 2)
    return t.reshape(g, -1, o // g)


def refittable(node: Node, samples: int, output_shape: tuple[int, ...]) -> bool:
    """Whether `refit` may refit `node` from `samples` samples of `output_shape` (one
    sample's): a dense layer or convolution with one bias per output, enough samples for two
    halves and ROWS_PER_WEIGHT rows per weight of an output."""
    needed = samples_needed(node, output_shape)
    return needed is not None and samples >= needed


def samples_needed(node: Node, output_shape: tuple[int, ...]) -> int | None:
    """The fewest samples `refit` refits `node` from (refittable), None if it never does."""
    w, bias = node.params.get("weight"), node.params.get("bias")
    if node.op not in ROW_LAYERS or w is None or bias is None or bias.shape != (w.shape[0],):
        return None
    positions = int(np.prod(output_shape)) // w.shape[0]  # tokens, pixels
    rows = ROWS_PER_WEIGHT * (int(np.prod(w.shape[1:])) + 1)
    return max(MIN_SAMPLES, -(-rows // positions))


def input_gram(node: Node, x: np.ndarray) -> torch.Tensor:
    """X^T X per group, (groups, inputs per group, inputs per group), X the rows the layer is
    linear in for its input `x` (samples first; no bias column), summed CHUNK_BYTES of rows at
    a time. quantize weighs its rounding by it (quantize/rounding.py)."""
    w = node.params["weight"]
    g, cols = _groups(node), int(np.prod(w.shape[1:]))
    gram = torch.zeros(g, cols, cols, dtype=torch.float64)
    per_sample = max(1, int(np.prod(x.shape[1:])) * int(np.prod(w.shape[2:])))  # im2col size
    chunk = max(1, CHUNK_BYTES // (8 * per_sample))
    for start in range(0, len(x), chunk):
        rows = _design(node, np.array(x[start : start + chunk], np.float64))  # (a writable copy)
        gram += rows.transpose(1, 2) @ rows
    return gram


def _normal_equations(
    node: Node, rates: np.ndarray, target: np.ndarray, rows: np.ndarray | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(X^T X, X^T Y) per group, X with a trailing 1 a row for the bias (its row and
    column of X^T X are X's column sums and the row count, its row of X^T Y is Y's column
    sums: a copy of X with a column of ones was a tenth of a large CNN's conversion), summed
    CHUNK_BYTES of design matrix at a time, over the rows `rows` (samples, positions) keeps
    (all where None)."""
    w = node.params["weight"]
    g, inputs = _groups(node), int(np.prod(w.shape[1:])) + 1
    per_sample = int(np.prod(target.shape[1:])) // w.shape[0]  # positions (tokens, pixels)
    gram = torch.zeros(g, inputs, inputs, dtype=torch.float64)
    cross = torch.zeros(g, inputs, w.shape[0] // g, dtype=torch.float64)
    chunk = max(1, CHUNK_BYTES // (8 * per_sample * inputs * g))
    for start in range(0, len(rates), chunk):
        x = _design(node, rates[start : start + chunk])
        y = _outputs(node, target[start : start + chunk])
        count = x.shape[1]  # rows, each with its implicit 1
        if rows is not None:  # a left-out row adds nothing to either sum
            keep = torch.as_tensor(rows[start : start + chunk].reshape(1, -1, 1), dtype=x.dtype)
            x, y, count = x * keep, y * keep, float(keep.sum())
        xt = x.transpose(1, 2)
        gram[:, :-1, :-1] += xt @ x
        gram[:, -1, :-1] += x.sum(1)
        gram[:, -1, -1] += count
        cross[:, :-1] += xt @ y
        cross[:, -1] += y.sum(1)
    gram[:, :-1, -1] = gram[:, -1, :-1]  # symmetric
    return gram, cross


def _scale(gram: torch.Tensor) -> torch.Tensor:
    """The mean input power per group, that RIDGES are relative to."""
    return torch.diagonal(gram, dim1=1, dim2=2).mean(-1)[:, None, None]


def _held_out_error(w: torch.Tensor, gram: torch.Tensor, cross: torch.Tensor) -> float:
    """|X W - Y|^2 - |Y|^2 on the rows whose normal equations are (gram, cross)."""
    return float((w * (gram @ w)).sum() - 2 * (w * cross).sum())


def _fit(
    gram: torch.Tensor, cross: torch.Tensor, old: torch.Tensor, lam: torch.Tensor
) -> torch.Tensor:
    """The weights of least |X W - Y|^2 + lam |W - old|^2, from the normal equations."""
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype)
    return torch.linalg.solve(gram + lam * eye, cross + lam * old)


def _ridge(old: torch.Tensor, halves: list[tuple[torch.Tensor, torch.Tensor]]) -> float | None:
    """The ridge of RIDGES whose fit on one half predicts the other best, summed over both
    ways round; None where the current weights predict better than every fit. One solve per
    ridge, not one eigendecomposition shared by all: the same choices in less time (a 3x3
    convolution of 192 channels refitted on 16 images of 26x26, one core: 6.2 -> 4.5 s;
    the eigendecompositions were about half of the T-aware conversion of the zoo's
    416x416 detector and 256x256 pose model)."""
    errors = np.zeros(len(RIDGES) + 1)  # the last: the current weights
    for (gram, cross), (other_gram, other_cross) in (halves, halves[::-1]):
        lam = _scale(gram)
        for i, r in enumerate(RIDGES):
            errors[i] += _held_out_error(_fit(gram, cross, old, r * lam), other_gram, other_cross)
        errors[-1] += _held_out_error(old, other_gram, other_cross)
    best = int(np.argmin(errors))
    return None if best == len(RIDGES) else RIDGES[best]


def refit(
    node: Node, rates: np.ndarray, target: np.ndarray, rows: np.ndarray | None = None
) -> bool:
    """Refit `node`'s weight and bias in place so that `rates` (its input, the spiking
    network's mean over T steps, samples first) give `target` (the ANN's output for the same
    samples). `rows`: for a dense layer, which of its rows (positions, samples first) to fit
    on, a flag each (padding no output reads is left out: padding.py); all where None. False
    where the layer is left alone: not refittable, or no ridge predicts the held-out half
    better than its current weights."""
    if not refittable(node, len(rates), target.shape[1:]):
        return False
    w, bias = node.params["weight"], node.params["bias"]
    g = _groups(node)
    # float64 copies: the search's parameters are read-only views (tune._search_copy)
    w64, b64 = (torch.from_numpy(np.array(p, np.float64)) for p in (w, bias))
    old = torch.cat([w64.reshape(g, w.shape[0] // g, -1), b64.reshape(g, -1, 1)], -1)
    old = old.transpose(1, 2)
    per_sample = None if rows is None else rows.reshape(len(rates), -1)
    halves = [
        _normal_equations(
            node, rates[k::2], target[k::2], None if per_sample is None else per_sample[k::2]
        )
        for k in (0, 1)
    ]
    ridge = _ridge(old, halves)
    if ridge is None:
        return False
    gram, cross = halves[0][0] + halves[1][0], halves[0][1] + halves[1][1]
    new = _fit(gram, cross, old, ridge * _scale(gram)).transpose(1, 2)
    node.params["weight"] = new[..., :-1].reshape(w.shape).numpy().astype(np.float32)
    node.params["bias"] = new[..., -1].reshape(bias.shape).numpy().astype(np.float32)
    return True
