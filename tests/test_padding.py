"""Padding that no output reads (spikeport.convert.padding) stays out of T-aware conversion's
fit: it is found by measurement, and what the network computes there cannot change a
threshold, a bias or a refitted weight."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from family_models import FAMILIES, TextEncoder, _text_family

from spikeport.convert import convert, padding, tune
from spikeport.convert.balance import channel_axes
from spikeport.convert.pipeline import import_model
from spikeport.sim import simulate


class TokenStates(torch.nn.Module):
    """A token-level output: the encoder's last hidden state at every position, padding's
    included, as a feature extractor exports it."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = TextEncoder(16, types=False)

    def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
        return self.enc(input_ids, attention_mask)


def _family(name: str, out_dir: Path):  # noqa: ANN202
    fx = FAMILIES[name](out_dir)
    return import_model(fx.onnx, fx.input_shapes, None), fx


@pytest.mark.parametrize("name", ["bert_hf", "sentence_embedding"])
def test_pooled_outputs_let_padding_move(name: str, tmp_path: Path) -> None:
    """A [CLS] head and a masked mean pooling: every padded id moves, nothing else does, and
    the outputs stay as they were."""
    ann, fx = _family(name, tmp_path)
    moved = padding.moved(ann, fx.calib)
    assert moved is not None
    padded = fx.calib["attention_mask"] == 0
    assert padded.any()
    for key, ids in fx.calib.items():
        changed = moved[key] != ids
        assert not (changed & ~padded).any(), key
        if key == "input_ids":
            assert changed[padded].all()
    before = simulate(ann, fx.calib, 1, "ann").outputs[ann.outputs[0]]
    after = simulate(ann, moved, 1, "ann").outputs[ann.outputs[0]]
    np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)


def test_token_level_outputs_keep_every_position(tmp_path: Path) -> None:
    """An output that keeps padded positions reads them: nothing is left out."""
    fx = _text_family("token_states", TokenStates, 11, False, ["states"])(tmp_path)
    ann = import_model(fx.onnx, fx.input_shapes, None)
    assert padding.moved(ann, fx.calib) is None


def test_images_have_no_padding(tmp_path: Path) -> None:
    ann, fx = _family("resnet_block", tmp_path)
    assert padding.moved(ann, fx.calib) is None


def test_padding_cannot_change_the_t_aware_fit(tmp_path: Path) -> None:
    """Two calibration batches that differ only in the token ids at padded positions: the
    tuned graphs' thresholds, biases and (refitted) weights are the same to the bit. With
    every position in the fit (moved=None) they differ, so the check can fail."""
    ann, fx = _family("sentence_embedding", tmp_path)
    snn = convert(fx.onnx, fx.save_calib(tmp_path / "calib.npz"), timesteps=4, tune=False)
    other = dict(fx.calib)
    padded = fx.calib["attention_mask"] == 0
    other["input_ids"] = np.where(padded, 7, fx.calib["input_ids"])
    axes = channel_axes(ann)

    def params(x: dict[str, np.ndarray], left_out: bool) -> dict[str, np.ndarray]:
        moved = padding.moved(snn, x) if left_out else None
        g = tune.tune_thresholds(snn, x, 4, axes, correct=True, centre=True, moved=moved)
        return {f"{n.name}.{k}": v for n in g.nodes for k, v in n.params.items()}

    a, b = params(fx.calib, True), params(other, True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    a, b = params(fx.calib, False), params(other, False)
    assert any(not np.array_equal(a[k], b[k]) for k in a if k in b)


def test_an_output_layer_left_unrefitted_for_padding_is_named_in_the_record(
    tmp_path: Path,
) -> None:
    """Where padding is left out of the fit, an output layer the search's samples were too
    few to refit is not refitted afterwards either (the scored outputs read every position);
    the record says so under its name."""
    ann, fx = _family("bert_hf", tmp_path)
    snn = convert(fx.onnx, fx.save_calib(tmp_path / "calib.npz"), timesteps=2, tune=False)
    assert padding.moved(snn, fx.calib) is not None
    _, record = tune.t_aware(snn, fx.calib, 2, channel_axes(snn), samples=4, quiet=True,
                             search="quick")  # fmt: skip
    heads = [n.name for n in snn.nodes if n.output in snn.outputs and n.op == "dense"]
    assert heads and record["output_refit"] == dict.fromkeys(heads, tune.PADDED)
