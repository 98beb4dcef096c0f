"""Weight calibration (spikeport.convert.refit): the least-squares refit of a layer to the
spiking network's mean input rates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spikeport.convert import refit
from spikeport.ir.graph import Node


def _conv(w: np.ndarray, b: np.ndarray, group: int) -> Node:
    attrs = {"pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1], "group": group}
    return Node("c", "conv2d", ["x"], "y", attrs, {"weight": w, "bias": b})


def _apply(node: Node, x: np.ndarray) -> np.ndarray:
    p = node.params
    y = F.conv2d(F.pad(torch.as_tensor(x), (1, 1, 1, 1)), torch.as_tensor(p["weight"]),
                 torch.as_tensor(p["bias"]), groups=node.attrs["group"])  # fmt: skip
    return y.numpy()


@pytest.mark.parametrize("group", [1, 4])
def test_refit_undoes_a_distortion_of_its_inputs(group: int) -> None:
    """Rates that are the ANN input scaled per channel (a clipped rate code shrinks a
    channel so, to first order): the refitted layer, fed the rates, gives the ANN's output,
    which the original weights miss by far."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4 // group, 3, 3)).astype(np.float32)
    node = _conv(w, rng.normal(size=8).astype(np.float32), group)
    ann_in = rng.normal(size=(64, 4, 6, 6)).astype(np.float32)
    target = _apply(node, ann_in)
    rates = (ann_in * rng.uniform(0.5, 0.9, (1, 4, 1, 1))).astype(np.float32)
    before = np.abs(_apply(node, rates) - target).mean()
    assert refit.refit(node, rates, target)
    after = np.abs(_apply(node, rates) - target).mean()
    assert after < 0.1 * before, (before, after)


def test_refit_chunks_sum_to_the_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    """The normal equations summed chunk by chunk give the weights of one pass."""
    rng = np.random.default_rng(1)
    w, b = rng.normal(size=(6, 3, 3, 3)).astype(np.float32), np.zeros(6, np.float32)
    x = rng.normal(size=(40, 3, 5, 5)).astype(np.float32)
    y = _apply(_conv(2 * w, b, 1), x) + rng.normal(size=(40, 6, 5, 5)).astype(np.float32)
    whole, chunked = _conv(w.copy(), b.copy(), 1), _conv(w.copy(), b.copy(), 1)
    assert refit.refit(whole, x, y)
    monkeypatch.setattr(refit, "CHUNK_BYTES", 1)  # one sample a chunk
    assert refit.refit(chunked, x, y)
    np.testing.assert_allclose(chunked.params["weight"], whole.params["weight"], rtol=1e-5)


@pytest.mark.parametrize(
    ("group", "pads", "masked"),
    [(1, [1, 1, 1, 1], False), (2, [0, 1, 2, 1], False), (1, None, True)],
)
def test_normal_equations_are_those_of_the_design_with_a_ones_column(
    group: int, pads: list[int] | None, masked: bool
) -> None:
    """The bias's row and column of X^T X and its row of X^T Y, built from sums, equal those
    of X with a column of ones appended (what the least squares solve for), for symmetric and
    asymmetric padding, a grouped convolution, and a dense layer with left-out rows."""
    rng = np.random.default_rng(2)
    if pads is None:  # a dense layer over tokens
        node = Node("d", "dense", ["x"], "y", {}, {"weight": rng.normal(size=(5, 7)),
                                                     "bias": np.zeros(5)})  # fmt: skip
        x, y = rng.normal(size=(6, 4, 7)), rng.normal(size=(6, 4, 5))
        design = torch.as_tensor(x.reshape(1, -1, 7))
    else:
        node = _conv(rng.normal(size=(4, 4 // group, 3, 3)), np.zeros(4), group)
        node.attrs["pads"] = pads
        x = rng.normal(size=(3, 4, 5, 5))
        top, left, bottom, right = pads
        padded = torch.as_tensor(x)
        padded = F.pad(padded, (left, right, top, bottom))
        cols = F.unfold(padded, (3, 3))  # (N, C*9, L), channels of a group together
        cols = cols.reshape(3, group, -1, cols.shape[-1]).permute(1, 0, 3, 2)
        design = cols.reshape(group, -1, cols.shape[-1])
        y = rng.normal(size=(3, 4) + tuple(padded.shape[2:] - np.array([2, 2])))
    rows = rng.random(x.shape[:-1]) < 0.6 if masked else None
    gram, cross = refit._normal_equations(node, x, y, rows)
    ones = torch.cat([design, torch.ones(*design.shape[:2], 1, dtype=design.dtype)], -1)
    target = refit._outputs(node, y)
    if masked:
        keep = torch.as_tensor(rows.reshape(1, -1, 1), dtype=ones.dtype)
        ones, target = ones * keep, target * keep
    torch.testing.assert_close(gram, ones.transpose(1, 2) @ ones)
    torch.testing.assert_close(cross, ones.transpose(1, 2) @ target)


def test_refit_keeps_weights_that_predict_held_out_samples_best() -> None:
    """Targets that are the layer's own output plus noise, from few samples: a fit on half
    of them predicts the other half worse than the current weights do, so the weights stay
    (a fixed rows rule is not what decides: the same layer refits where the distortion is
    real)."""
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    node = Node("d", "dense", ["x"], "y", {}, {"weight": w.copy(), "bias": b.copy()})
    n = refit.ROWS_PER_WEIGHT * 17 + 4
    x = rng.normal(size=(n, 16)).astype(np.float32)
    noisy = x @ w.T + b + rng.normal(scale=3.0, size=(n, 5)).astype(np.float32)
    assert not refit.refit(node, x, noisy)
    np.testing.assert_array_equal(node.params["weight"], w)
    assert refit.refit(node, x, x @ w.T * 2 + b)
    assert not np.array_equal(node.params["weight"], w)


@pytest.mark.parametrize(
    "samples, tokens, inputs", [(refit.ROWS_PER_WEIGHT * 17 - 1, 1, 16), (3, 8, 1)]
)
def test_refit_leaves_a_layer_with_too_few_rows(samples: int, tokens: int, inputs: int) -> None:
    """Fewer than ROWS_PER_WEIGHT rows per weight (a dense layer over one position), or
    fewer than two samples per half (over 8 tokens, rows enough): the weights stay, however
    distorted the rates; one sample more refits."""
    rng = np.random.default_rng(3)
    w, b = rng.normal(size=(5, inputs)).astype(np.float32), np.zeros(5, np.float32)
    node = Node("d", "dense", ["x"], "y", {}, {"weight": w.copy(), "bias": b.copy()})
    x = rng.normal(size=(samples, tokens, inputs)).astype(np.float32)
    assert not refit.refit(node, x, x @ w.T * 2)
    np.testing.assert_array_equal(node.params["weight"], w)
    x = np.concatenate([x, x[:1] + 1])
    assert refit.refit(node, x, x @ w.T * 2)


def _held_out(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    return float(np.sum((x @ w - y) ** 2))


def test_cross_validation_picks_the_fit_that_predicts_the_other_half_best() -> None:
    """_ridge against the definition, on explicit rows: for each ridge, fit on one half
    (towards the current weights), score the squared error on the other, both ways round;
    the current weights are the last candidate. Noise levels from none to far above the
    signal make different candidates win, and _ridge must name the same one every time."""
    rng = np.random.default_rng(4)
    picks = set()
    for noise in (0.0, 0.3, 1.0, 3.0, 10.0, 30.0):
        x = [np.c_[rng.normal(size=(30, 6)), np.ones(30)] for _ in range(2)]
        old = rng.normal(size=(7, 3))
        y = [a @ (old + 0.2) + rng.normal(scale=noise, size=(30, 3)) for a in x]
        pairs = list(zip(x, y, strict=True))  # the two halves' rows and targets
        errors = np.zeros(len(refit.RIDGES) + 1)
        for (xa, ya), (xb, yb) in (pairs, pairs[::-1]):
            gram = xa.T @ xa
            lam = np.trace(gram) / len(gram)
            for i, r in enumerate(refit.RIDGES):
                fit = np.linalg.solve(gram + r * lam * np.eye(7), xa.T @ ya + r * lam * old)
                errors[i] += _held_out(xb, yb, fit)
            errors[-1] += _held_out(xb, yb, old)
        best = int(np.argmin(errors))
        want = None if best == len(refit.RIDGES) else refit.RIDGES[best]
        halves = [
            (torch.as_tensor(a.T @ a)[None], torch.as_tensor(a.T @ b)[None]) for a, b in pairs
        ]
        assert refit._ridge(torch.as_tensor(old)[None], halves) == want, noise
        picks.add(want)
    assert len(picks) >= 2, picks  # the cases tell the candidates apart
