"""The reference simulator's semantics (DESIGN.md section 6), checked case by case and by
property over random inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikeport.errors import BadInput, CapabilityExceeded, SimulationOverflow
from spikeport.ir import Node
from spikeport.quantize import Profile, quantize
from spikeport.sim import Simulator
from spikeport.sim.arith import quantize_input
from spikeport.sim.ops import KERNELS, IFNeuron
from spikeport.sim.simulator import encode_inputs


def run_neuron(theta, inputs, signed=False, integer=True):
    n = IFNeuron(np.array([theta]), signed, integer, (1,))
    n.reset(1)
    dtype = np.int64 if integer else np.float64
    return [int(np.sign(n(np.array([[i]], dtype)))[0, 0]) for i in inputs]


def test_neuron_starts_at_half_threshold_and_resets_by_subtraction():
    # v0 = 2; 5 -> spike (1); 4 -> spike (0); 3 -> no; 6 -> spike (2)
    assert run_neuron(4, [3, 3, 3, 3]) == [1, 1, 0, 1]


def test_neuron_fires_at_most_once_per_step():
    assert run_neuron(4, [100, 0, 0]) == [1, 1, 1]  # the residue drains one spike per step


def test_signed_neuron_takes_back_spikes_but_never_below_zero_count():
    # v0=2: +5 -> 7 spike, v=3; -6 -> -3 < 0 with count 1: -1, v=1; -6 -> -5, count 0: silent
    assert run_neuron(4, [5, -6, -6], signed=True) == [1, -1, 0]
    assert run_neuron(4, [5, -6, -6], signed=False) == [1, 0, 0]


@settings(max_examples=200, deadline=None)
@given(theta=st.integers(1, 10_000), frac=st.floats(0, 1), T=st.integers(1, 64))
def test_constant_input_rate_rounds_to_nearest(theta, frac, T):
    """With v0 = floor(theta/2), a constant current I in [0, theta] gives
    floor((floor(theta/2) + T*I) / theta) spikes: the nearest level, not the floor."""
    current = int(frac * theta)
    count = sum(run_neuron(theta, [current] * T))
    assert count == (theta // 2 + T * current) // theta


@settings(max_examples=100, deadline=None)
@given(arrays(np.int64, (12,), elements=st.integers(-50, 50)), st.integers(1, 40))
def test_signed_spike_count_never_negative(inputs, theta):
    spikes = run_neuron(theta, list(inputs), signed=True)
    assert min(np.cumsum(spikes)) >= 0


@settings(max_examples=100, deadline=None)
@given(arrays(np.int64, (6, 2, 1, 4, 4), elements=st.integers(-3, 3)))
def test_maxpool_outputs_sum_to_max_of_summed_input(xs):
    """Expectation compensation: sum_t out_t == windowed max of sum_t x_t, exactly."""
    node = Node(
        "mp", "maxpool2d", ["a"], "b", {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}
    )
    k = KERNELS["maxpool2d"](node, "int", (1, 2, 2))
    k.reset(2)
    total = sum(k(x) for x in xs)
    ann = KERNELS["maxpool2d"](node, "ann", (1, 2, 2))
    np.testing.assert_array_equal(total, ann(xs.sum(axis=0)))


def test_input_encoding_rounds_half_up_and_clamps():
    q = quantize_input(np.array([0.5, 1.5, -0.5, -1.49, 300.0, -300.0]), 1.0)
    assert q.dtype == np.int8
    assert q.tolist() == [1, 2, 0, -1, 127, -127]


def test_runs_longer_than_the_proof_are_refused(cases):
    case = cases["digits_mlp"]
    with pytest.raises(BadInput, match="T=65 exceeds the 64 timesteps"):
        Simulator(case.int, "int").run(case.test_x[:2], 65)


def test_simulator_asserts_overflow_at_run_time(cases):
    """Even when a graph skipped the proof (edited by hand), overflow is never silent."""
    case = cases["digits_mlp"]
    graph = quantize(case.snn, np.load(case.calib)["x"], Profile("sim"))
    graph.meta["quantization"]["state_bits"] = 12  # narrower than what quantize proved
    with pytest.raises(SimulationOverflow, match="node '.*' \\(.*\\) reached"):
        Simulator(graph, "int").run(case.test_x[:4], 8)


def test_range_proof_refuses_narrow_state(cases):
    case = cases["digits_cnn"]
    with pytest.raises(CapabilityExceeded, match="node .node_.*can reach .* beyond the 2097151"):
        quantize(case.snn, np.load(case.calib)["x"], Profile("narrow", state_bits=22), 64)


def test_modes_need_the_right_stage(cases):
    with pytest.raises(BadInput, match="run `spikeport quantize` first"):
        Simulator(cases["digits_cnn"].snn, "int")


def test_the_simulator_encodes_inputs_at_the_profiles_width(cases):
    """quantize calibrates the input scale for the profile's input_bits; the simulator encodes
    at that width too (it had encoded at 8 bits whatever the profile: a 16-bit profile's codes
    clamped at 127, and a family net scored 10 % in integer mode)."""
    import dataclasses

    from conftest import EXAMPLES

    from spikeport.data import load_data
    from spikeport.eval import evaluate
    from spikeport.quantize import get_profile

    case = cases["digits_mlp"]
    wide = dataclasses.replace(get_profile("sim"), input_bits=12)
    q = quantize(case.snn, np.load(case.calib)["x"], wide, max_timesteps=8)
    x = case.test_x[:4]
    codes = encode_inputs(q, x)[q.inputs[0].name]
    np.testing.assert_array_equal(codes, quantize_input(x, q.scales[q.inputs[0].name], 12))
    assert np.abs(codes).max() > 127  # the wider codes are used
    test = load_data(EXAMPLES / "digits_test.npz", labels=True)
    wide_acc = evaluate(q, test, [4], "int", str(case.onnx))["records"][0]["accuracy"]
    narrow_acc = evaluate(case.int, test, [4], "int", str(case.onnx))["records"][0]["accuracy"]
    assert wide_acc >= narrow_acc - 0.02
