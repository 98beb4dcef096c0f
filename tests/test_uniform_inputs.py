"""quantize brings a graph output's weight layer's input to one scale
(spikeport.quantize.uniform_inputs)."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

from spikeport.ir.ops import value_source
from spikeport.quantize import get_profile, quantize
from spikeport.quantize import uniform_inputs as uniform
from spikeport.quantize.quantize import quantize_kind
from spikeport.sim import simulate
from spikeport.targets import get_target

T = 8


@pytest.fixture(scope="module")
def gap(cases):
    """The residual fixture: its output layer reads a global average pool of neurons whose
    thresholds differ by more than SPREAD."""
    return cases["residual"]


def _calib(case) -> np.ndarray:
    return np.load(case.calib)["x"]


def _plain(snn, calib):
    """The same graph quantized with the output layer reading its input as it is."""
    return quantize_kind(snn, calib, get_profile("sim"), uniform_inputs=False)


def test_the_output_layer_reads_one_scale(gap):
    q = gap.int
    (name,) = q.meta["quantization"]["uniform_inputs"]
    scale = q.node(f"{name}{uniform.SUFFIX}")
    assert scale.op == "channel_scale" and q.node(name).inputs == [scale.output]
    assert q.scales[scale.output].size == 1  # one scale, where its input had one per neuron
    assert np.ptp(q.scales[scale.inputs[0]]) > 0
    # the finest input channel keeps PRECISION_BITS of its step, or the proof said no room
    ratio = scale.params["factor_q"] / 2 ** scale.attrs["shift"]
    assert ratio.min() >= 2**3


def _real_weights(q, name: str) -> np.ndarray:
    """The real weights layer `name` applies to its input's real values (the multipliers in
    front included): integer weights x multipliers x output scale / the input's scale."""
    node, scale = q.node(name), q.node(f"{name}{uniform.SUFFIX}")
    gain = scale.params["factor_q"].reshape(1, -1) / 2 ** scale.attrs["shift"]
    s_in = q.scales[scale.inputs[0]].reshape(1, -1)
    s_out = q.scales[node.output]
    return node.params["weight_q"] * gain * s_out / s_in


@pytest.fixture(scope="module")
def spread(gap):
    """The fixture with the thresholds of the neurons its output layer reads spread over 40x
    (0.05 to 2 times their own), as T-aware conversion gave a depthwise net's last layer."""
    snn = copy.deepcopy(gap.snn)
    (name,) = gap.int.meta["quantization"]["uniform_inputs"]
    pool = value_source(snn, snn.node(name).inputs[0])
    neuron = value_source(snn, pool.inputs[0])
    theta = neuron.params["threshold"]
    factor = np.geomspace(0.05, 2, theta.size).reshape(theta.shape)
    neuron.params["threshold"] = (theta * factor[::-1].copy()).astype(np.float32)
    return snn, name


def test_its_real_weights_are_finer(spread, gap):
    """Each column's real weights lie closer to the float ones: one weight scale no longer
    spans every neuron's threshold, which left the low-threshold columns a few levels."""
    snn, name = spread
    calib = _calib(gap)
    q = quantize(snn, calib, get_profile("sim"))
    plain = _plain(snn, calib)
    w = snn.node(name).params["weight"].astype(np.float64)
    s_x = plain.scales[plain.node(name).inputs[0]].reshape(1, -1)
    p = plain.node(name)
    plain_w = p.params["weight_q"] * plain.scales[p.output] / s_x

    def error(real: np.ndarray) -> float:  # the mean over columns of their relative error
        return float(np.mean(np.linalg.norm(real - w, axis=0) / np.linalg.norm(w, axis=0)))

    assert error(_real_weights(q, name)) < 0.5 * error(plain_w)


def test_the_same_function_in_float(gap):
    """The node multiplies by 1: in float mode the graph computes what it did."""
    x = gap.test_x[:32]
    out = gap.snn.outputs[0]
    a = simulate(gap.int, x, T, "float").outputs[out]
    b = simulate(_plain(gap.snn, _calib(gap)), x, T, "float").outputs[out]
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6 * np.abs(a).max())


def test_quantized_again_it_is_the_same_graph(gap):
    again = quantize(gap.int, _calib(gap), get_profile("sim"))
    assert [n.name for n in again.nodes] == [n.name for n in gap.int.nodes]
    for a, b in zip(again.nodes, gap.int.nodes, strict=True):
        assert a.inputs == b.inputs
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])


def test_a_layer_that_reads_spikes_keeps_them(cases):
    """digits_mlp's output layer reads its hidden neurons' spikes: no multipliers in front."""
    q = cases["digits_mlp"].int
    assert "uniform_inputs" not in q.meta["quantization"]
    assert not any(uniform.is_uniform_input(n) for n in q.nodes)


def test_targets_without_channel_scale_keep_the_layer_as_it_was(gap):
    for name in ("spinnaker2", "nir"):
        profile = get_target(name).profile
        q = quantize(gap.snn, _calib(gap), profile)
        assert "uniform_inputs" not in q.meta["quantization"]
        assert not any(uniform.is_uniform_input(n) for n in q.nodes)
    q = quantize(gap.snn, _calib(gap), get_target("c").profile)
    assert q.meta["quantization"]["uniform_inputs"]


def test_no_room_in_the_proof_keeps_the_input_as_it_was(gap, monkeypatch):
    """Where the larger integers would overflow the steps quantize proves, it quantizes again
    without them: the same graph as without the rewrite, proven for as many steps, with a
    note that says why."""
    ext = sys.modules["spikeport.quantize.ext"]
    monkeypatch.setattr(ext, "_uniform_room", lambda *a: 40)  # as if the proof had room
    monkeypatch.setattr(ext, "PRECISION_BITS", 40)  # and 15 fraction bits were asked
    q = quantize(gap.snn, _calib(gap), get_profile("sim"))
    plain = _plain(gap.snn, _calib(gap))
    assert "uniform_inputs" not in q.meta["quantization"]
    assert q.meta["quantization"]["max_timesteps"] == plain.meta["quantization"]["max_timesteps"]
    assert [n.name for n in q.nodes] == [n.name for n in plain.nodes]
    # and says so: the artifact's notes, which `quantize` prints
    (note,) = q.meta["quantization"]["notes"]
    assert "would overflow within 64 steps" in note and "notes" not in plain.meta["quantization"]
