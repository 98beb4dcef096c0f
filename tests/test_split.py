"""Outlier neurons get copies in T-aware conversion (spikeport/convert/split.py): the copies
code their feature on finer levels, the function the graph computes stays, and every stage
after runs them."""

from __future__ import annotations

import copy

import numpy as np
import onnx
from fixture_models import bipolar_mlp
from test_cli import cli
from test_target_c import needs_cc

from spikeport.convert import split, tune
from spikeport.convert.split import insert_copies, neuron_copies, split_neurons
from spikeport.convert.tune import tune_thresholds
from spikeport.ir import load
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.quantize import get_profile, quantize
from spikeport.sim import simulate
from spikeport.sim.simulator import mean_output
from spikeport.targets import emit, verify

RNG = np.random.default_rng(7)
TOKENS, FEATURES, OUT, T = 5, 64, 6, 8
OUTLIER = 3  # the feature whose threshold is 40x the others'


def _graph() -> Graph:
    """x (tokens, features) -> bipolar IF, one threshold per feature -> dense: the shape of
    a transformer's linear layer and the neurons in front of it."""
    theta = np.full(FEATURES, 1.0, np.float32)
    theta[OUTLIER] = 40.0
    w = np.random.default_rng(0).normal(0, 0.3, (OUT, FEATURES)).astype(np.float32)
    nodes = [
        Node("n", "if", ["x"], "s", {"signed": True, "bipolar": True}, {"threshold": theta}),
        Node("fc", "dense", ["s"], "y", {}, {"weight": w, "bias": np.zeros(OUT, np.float32)}),
    ]
    ins = [TensorInfo("x", (TOKENS, FEATURES))]
    return check_graph(Graph(ins, nodes, ["y"], stage="snn"))


def _inputs(n: int) -> np.ndarray:
    x = RNG.uniform(-0.9, 0.9, (n, TOKENS, FEATURES))
    x[..., OUTLIER] *= 40.0
    return x.astype(np.float32)


def test_no_outlier_no_copies_and_the_budget_holds():
    assert neuron_copies(np.ones(100)).max() == 1
    noise = np.ones(100)
    noise[[4, 9]] = 1e6
    copies = neuron_copies(noise)
    assert copies[4] > 1 and copies[9] > 1 and copies.sum() - 100 <= split.EXTRA_NEURONS * 100
    assert (np.delete(copies, [4, 9]) == 1).all()
    one = np.ones(100)
    one[0] = 50.0  # 50x the median: two copies bring it to 12.5x, under 1 / EXTRA_NEURONS (16)
    assert neuron_copies(one)[0] == 2
    assert neuron_copies(noise, 0.0).max() == 1  # no budget, no copies


def test_a_bigger_budget_also_splits_less_extreme_features():
    noise = np.ones(100)
    noise[:10] = 4.0  # 4x the median: under the default's 16x, over a share of 1's 1x
    noise[[4, 9]] = 1e6
    default, wide = neuron_copies(noise), neuron_copies(noise, 1.0)
    assert (default[[0, 1, 2]] == 1).all() and (wide[:10] > 1).all()
    assert default.sum() - 100 <= 6 and wide.sum() - 100 <= 100
    assert wide.sum() > default.sum()


def test_copies_keep_the_function_the_graph_computes():
    g, x = _graph(), _inputs(16)
    wide = copy.deepcopy(g)
    copies = np.ones(FEATURES, np.int64)
    copies[[OUTLIER, 9]] = [5, 2]
    insert_copies(wide, wide.node("n"), copies, T)
    assert split_neurons(check_graph(wide)) == {"n": 5}
    ann = simulate(g, x, 1, "ann").outputs["y"][0]
    np.testing.assert_allclose(simulate(wide, x, 1, "ann").outputs["y"][0], ann, atol=1e-4)


def _tuned(x: np.ndarray, extra_neurons: float = split.EXTRA_NEURONS) -> Graph:
    """T-aware conversion (tune.tune_thresholds) of _graph() for T steps."""
    return tune_thresholds(_graph(), x, T, {}, extra_neurons=extra_neurons)


def test_conversion_copies_the_outlier_keeps_the_function_and_codes_it_finer():
    x = _inputs(64)
    one, wide = _tuned(x, 0.0), _tuned(x)
    assert split_neurons(one) == {} and split_neurons(wide) == {"n": 4}  # the budget: 64 / 16
    assert len(wide.node("fc").params["weight"][0]) == FEATURES + 4
    ann = simulate(_graph(), x, 1, "ann").outputs["y"][0]
    run = tune._Run(wide, x, T)  # the ANN side of a rerun passes the copies by (ann_twins)
    for node, twin in tune.ann_twins(wide, _graph()):
        run.step(node, twin)
    np.testing.assert_allclose(run.ann["y"], ann, rtol=1e-5, atol=1e-5)
    err = {
        name: np.abs(mean_output(g, simulate(g, x, T, "float"), "float")[-1] - ann).mean()
        for name, g in (("one", one), ("wide", wide))
    }
    assert err["wide"] < 0.7 * err["one"]
    # quantized, the copies' offsets and gather run in integers and still beat one neuron
    for name, g in (("one", one), ("wide", wide)):
        q = quantize(g, x, get_profile("sim"), max_timesteps=T)
        err[name] = np.abs(mean_output(q, simulate(q, x, T, "int"), "int")[-1] - ann).mean()
    assert err["wide"] < 0.7 * err["one"]


@needs_cc
def test_copied_neurons_run_bit_exact_in_c(tmp_path):
    wide = _tuned(_inputs(64))
    q = quantize(wide, _inputs(32), get_profile("c"), max_timesteps=T)
    assert {"gather", "offset"} <= {n.op for n in q.nodes}
    emit(q, "c", tmp_path / "c")
    verify(q, tmp_path / "c", _inputs(20), T=T)


def test_convert_extra_neurons_sets_the_budget(tmp_path):
    """`convert --extra-neurons` reaches the split: 0 makes no copies, a bigger share makes
    some, within its budget (copies keep the function: the tests above)."""
    model, x = bipolar_mlp()  # a bipolar neuron layer of 20 features in front of a Gemm
    onnx.save(model, tmp_path / "m.onnx")
    np.savez(tmp_path / "c.npz", x=x)
    made = {}
    for share in ("0", "2"):
        out = tmp_path / f"{share}.spk"
        code, stdout, _ = cli("convert", tmp_path / "m.onnx", "--calib", tmp_path / "c.npz",
                              "-T", "4", "--extra-neurons", share, "-o", out)  # fmt: skip
        assert code == 0, stdout
        g = load(out)
        assert g.meta["conversion"]["t_aware"]["extra_neurons"] == float(share)
        made[share] = sum(split_neurons(g).values())
    assert made["0"] == 0 and 0 < made["2"] <= 2 * 20
