"""A BatchNorm that no layer alone produces (DenseNet's pre-activation blocks) stays a
channel_scale + offset after conversion; targets with no per-channel multiply (SpiNNaker2,
NIR, Lava) get it folded into copies of the convolutions in front (convert/fold.py), exactly,
and run the network bit for bit."""

from __future__ import annotations

import copy

import numpy as np
import onnx
import pytest
from fixture_models import preact_dense

from spikeport.convert import convert
from spikeport.convert.fold import fold_channel_scales
from spikeport.quantize import get_profile, quantize
from spikeport.quantize.uniform_inputs import is_uniform_input
from spikeport.sim import Simulator
from spikeport.targets import emit, verify
from spikeport.targets.compare import random_inputs


@pytest.fixture(scope="module")
def preact(tmp_path_factory):
    root = tmp_path_factory.mktemp("preact")
    model, x = preact_dense()
    onnx.save(model, root / "m.onnx")
    np.savez(root / "c.npz", x=x)
    return convert(root / "m.onnx", root / "c.npz", timesteps=8, quiet=True, signed=False), x


def test_conversion_keeps_the_unfoldable_batchnorms_as_channel_scales(preact):
    snn, _ = preact
    assert sum(n.op == "channel_scale" for n in snn.nodes) == 3


def test_the_fold_copies_the_layers_in_front_and_computes_the_same(preact):
    snn, x = preact
    folded = fold_channel_scales(copy.deepcopy(snn))
    ops = [n.op for n in folded.nodes]
    assert "channel_scale" not in ops and "offset" not in ops
    # the convolution the concat and a BatchNorm share: a copy for each; the others moved;
    # the spikes in the concat: a depthwise 1x1 convolution
    convs = [n for n in folded.nodes if n.op == "conv2d"]
    assert len(convs) == 6 and sum(n.attrs["group"] == 4 for n in convs) == 1
    out = snn.outputs[0]
    want = Simulator(snn, "float").run(x, 8).outputs[out]
    got = Simulator(folded, "float").run(x, 8).outputs[out]
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("target", ["spinnaker2", "nir"])
def test_targets_without_a_channel_multiply_run_it_bit_for_bit(preact, target, tmp_path):
    snn, x = preact
    g = quantize(snn, x, get_profile(target), max_timesteps=8)
    assert "channel_scale" not in {n.op for n in g.nodes}
    emit(g, target, tmp_path / target)
    verify(g, tmp_path / target, random_inputs(g, 20, seed=3), 8)


def test_lavas_sigma_delta_kind_runs_it_bit_for_bit(preact, lava_env, tmp_path):
    """Lava's sigma-delta layers hold the biases as multiples of 2^state_exp: those of the
    copies behind the concat are rounded too."""
    snn, x = preact
    g = quantize(snn, x, get_profile("lava"), max_timesteps=8)
    assert g.meta["quantization"]["neuron_kind"] == "sdn"
    emit(g, "lava", tmp_path / "lava")
    verify(g, tmp_path / "lava", random_inputs(g, 10, seed=3), 8)


def test_the_c_target_keeps_its_channel_scales(preact):
    snn, x = preact
    g = quantize(snn, x, get_profile("c"), max_timesteps=8)
    kept = [n for n in g.nodes if n.op == "channel_scale" and not is_uniform_input(n)]
    assert len(kept) == 3  # beside them, the one quantize puts in front of the classifier
