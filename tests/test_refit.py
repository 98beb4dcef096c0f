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
    y = _apply(_conv(w, b, 1), x) + rng.normal(size=(40, 6, 5, 5)).astype(np.float32)
    whole, chunked = _conv(w.copy(), b.copy(), 1), _conv(w.copy(), b.copy(), 1)
    refit.refit(whole, x, y)
    monkeypatch.setattr(refit, "CHUNK_BYTES", 1)  # one sample a chunk
    refit.refit(chunked, x, y)
    np.testing.assert_allclose(chunked.params["weight"], whole.params["weight"], rtol=1e-5)


def test_refit_leaves_a_layer_with_too_few_rows() -> None:
    """A dense layer with fewer samples than ROWS_PER_WEIGHT per weight is not refitted:
    its weights stay the same arrays' values."""
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=5).astype(np.float32)
    node = Node("d", "dense", ["x"], "y", {}, {"weight": w.copy(), "bias": b.copy()})
    x = rng.normal(size=(refit.ROWS_PER_WEIGHT * 17 - 1, 16)).astype(np.float32)
    assert not refit.refit(node, x, x @ w.T * 2)
    np.testing.assert_array_equal(node.params["weight"], w)
    assert refit.refit(node, np.concatenate([x, x[:1]]), np.concatenate([x, x[:1]]) @ w.T * 2)
    assert not np.array_equal(node.params["weight"], w)
