"""Max pools of currents (spikeport/convert/pool_currents.py): a neuron read only by a max pool
moves behind it. The ANN view stays the same; the simulator, the C target and fine-tuning run
the moved graph alike; the targets that pool spikes only refuse it, naming the pool."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import EXAMPLES, cli_emit_verify

from spikeport.cli.main import main
from spikeport.convert.pool_currents import SUFFIX, movable, pool_currents
from spikeport.errors import BadInput, CapabilityExceeded
from spikeport.finetune import SpikingNet
from spikeport.ir import load
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator


@pytest.fixture(scope="module")
def moved(cases):
    """digits_cnn's float SNN with its first neuron moved behind the max pool that reads it."""
    graph = copy.deepcopy(cases["digits_cnn"].snn)
    assert pool_currents(graph) == ["node_relu"]
    return graph


def test_the_neuron_moves_behind_the_pool_and_the_layers_after_read_the_same_tensor(cases, moved):
    before = cases["digits_cnn"].snn
    assert [n.name for n in movable(before)] == ["node_relu"]  # node_relu_1: an average pool's
    pool, neuron = moved.node("node_max_pool2d"), moved.node("node_relu")
    assert pool.inputs == before.node("node_relu").inputs  # the convolution's currents
    assert neuron.inputs == [pool.output] and pool.output.endswith(SUFFIX)
    assert neuron.output == before.node("node_max_pool2d").output  # what the next conv reads
    order = [n.name for n in moved.nodes]
    assert order.index("node_max_pool2d") < order.index("node_relu")
    assert not movable(moved)


def test_the_ann_view_is_unchanged(cases, moved):
    """relu and max commute: the moved graph's ANN view computes the same function."""
    x = cases["digits_cnn"].test_x[:64]
    out = cases["digits_cnn"].snn.outputs[0]
    want = Simulator(cases["digits_cnn"].snn, "ann").run(x, 1).outputs[out]
    got = Simulator(moved, "ann").run(x, 1).outputs[out]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_the_pool_of_currents_sums_to_the_max_of_the_summed_currents(cases, moved):
    """Expectation-compensated: over t steps the pool's outputs add up to the window's max of
    the convolution's summed output, which the neuron then integrates."""
    x, T = cases["digits_cnn"].test_x[:16], 5
    run = Simulator(moved, "float").run(x, T, record=True)
    pool = moved.node("node_max_pool2d")
    currents = run.trace[pool.inputs[0]].sum(axis=0)  # (batch, 16, 8, 8), summed over steps
    windows = currents.reshape(16, 16, 4, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_allclose(run.trace[pool.output].sum(axis=0), windows, atol=1e-9)


def test_a_constant_input_gives_the_same_integers_in_either_order(cases, moved):
    """digits_cnn's first layer reads the static image: its currents are the same every step,
    and rounding a rate commutes with the max, so at equal thresholds the moved graph counts
    what the unmoved one does. quantize gives the convolution in front of the pool the same
    per-channel scales (the pool passes them: the max of scaled values is the scaled max), so
    the integer networks and their outputs are the same at every step. (Per layer, as it had
    been, 3 test images of 540 differed at T = 2.)"""
    calib_x = np.load(EXAMPLES / "digits_calib.npz")["x"]
    before = quantize(cases["digits_cnn"].snn, calib_x, get_profile("sim"))
    after = quantize(moved, calib_x, get_profile("sim"))
    conv = "node_Conv_19"
    assert np.array_equal(before.node(conv).params["weight_q"], after.node(conv).params["weight_q"])
    x, out = cases["digits_cnn"].test_x[:100], before.outputs[0]
    for T in (2, 5):
        want = Simulator(before, "int").run(x, T, record=True).trace[out]
        got = Simulator(after, "int").run(x, T, record=True).trace[out]
        assert np.array_equal(want, got), f"T = {T}"


def test_fine_tuning_steps_the_moved_graph_like_the_float_simulator(cases, moved):
    x, T = cases["digits_cnn"].test_x[:32], 4
    ref = Simulator(moved, "float").run(x, T, record=True)
    with torch.no_grad():
        run = SpikingNet(moved).double().run(torch.from_numpy(x).double(), T, record=True)
    for n in (n for n in moved.nodes if n.op == "if"):
        want, got = np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].numpy())
        assert np.array_equal(want, got), f"spikes of '{n.name}' differ"


def test_the_c_target_runs_the_moved_graph_bit_for_bit(cases, moved, tmp_path):
    calib_x = np.load(EXAMPLES / "digits_calib.npz")["x"]
    q = quantize(moved, calib_x, get_profile("c"))
    _, said = cli_emit_verify(q, "c", tmp_path, EXAMPLES / "digits_test.npz", 100, 4)
    assert "bit-exact" in said


@pytest.mark.parametrize("target", ["spinnaker2", "nir"])
def test_targets_that_pool_spikes_only_refuse_a_pool_of_currents(moved, target):
    calib_x = np.load(EXAMPLES / "digits_calib.npz")["x"]
    with pytest.raises((BadInput, CapabilityExceeded), match="node_max_pool2d"):
        quantize(moved, calib_x, get_profile(target))


def _convert(model: str, out: Path, *options: str) -> Result:
    """`spikeport convert examples/MODEL.onnx --calib examples/digits_calib.npz OPTIONS -o OUT`."""
    calib = str(EXAMPLES / "digits_calib.npz")
    args = ["convert", str(EXAMPLES / f"{model}.onnx"), "--calib", calib, *options, "-o", str(out)]
    return CliRunner().invoke(main, args)


QUICK_POOLED = ("-T", "2", "--pool-currents", "--search", "quick")


def test_convert_pool_currents_moves_the_neuron_and_says_so(tmp_path):
    """`convert --pool-currents` moves the neuron before the T-aware search sets its
    threshold, and records which; without the search there is nothing to set it: refused."""
    done = _convert("digits_cnn", tmp_path / "cnn.spk", *QUICK_POOLED)
    assert done.exit_code == 0, done.output
    assert "1 neuron layer behind max pools" in done.output
    graph = load(tmp_path / "cnn.spk")
    assert graph.meta["conversion"]["pooled_currents"] == ["node_relu"]
    assert graph.node("node_relu").inputs[0].endswith(SUFFIX)
    refused = _convert("digits_cnn", tmp_path / "x.spk", "--no-t-aware", "--pool-currents")
    assert refused.exit_code == 2
    assert refused.output.startswith("error: --pool-currents sets the T-aware search")
    assert not (tmp_path / "x.spk").exists()


def test_pool_currents_says_so_where_no_neuron_moves(tmp_path):
    """An MLP has no max pool: the option changes nothing, and convert says so, not silently."""
    done = _convert("digits_mlp", tmp_path / "mlp.spk", *QUICK_POOLED)
    assert done.exit_code == 0, done.output
    assert "note: --pool-currents: no neuron layer is read by a max pool alone" in done.output
    assert load(tmp_path / "mlp.spk").meta["conversion"]["pooled_currents"] == []
