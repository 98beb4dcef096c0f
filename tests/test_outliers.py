"""quantize gives outlier input features synapses of their own (spikeport.quantize.outliers)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from spikeport.ir import load, save
from spikeport.quantize import get_profile, quantize
from spikeport.quantize import outliers as outlier_split
from spikeport.sim import simulate
from spikeport.targets import get_target

T = 8


@pytest.fixture(scope="module")
def outlier_case(cases):
    return cases["outlier_mlp"]


def test_outlier_columns_get_their_own_dense_layer(outlier_case):
    q = outlier_case.int
    split = q.meta["quantization"]["outlier_inputs_split"]
    assert split, "the boosted hidden units should be split off"
    for name in split:
        gather = q.node(f"{name}:outlier_inputs")
        main, side = q.node(name), q.node(f"{name}:outliers")
        assert gather.op == "gather" and side.inputs == [gather.output]
        # the kept layer reads every input, with the split columns zeroed
        assert not main.params["weight"][:, gather.attrs["indices"]].any()
        assert q.node(f"{name}:join").inputs == [main.output, side.output]


def test_the_split_is_the_same_function_in_float(outlier_case):
    """The rewrite itself changes nothing: the float simulation of the rewritten graph (before
    quantization) equals the original's."""
    snn = outlier_case.snn
    split = load_split(snn)
    x = outlier_case.test_x[:32]
    a = simulate(snn, x, T, "float").outputs[snn.outputs[0]]
    b = simulate(split, x, T, "float").outputs[snn.outputs[0]]
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())


def load_split(snn):
    import copy

    g = copy.deepcopy(snn)
    assert outlier_split.split_outlier_inputs(g, get_profile("sim"))
    return g


def _real_weights(q, name: str) -> np.ndarray:
    """The real weights the integer dense layer `name` applies (its split-off columns put
    back): integer weights x output scale / input scale."""
    node = q.node(name)
    x = node.inputs[0]
    w = node.params["weight_q"] * q.scales[node.output].reshape(-1, 1) / q.scales[x].reshape(1, -1)
    side = f"{name}:outliers"
    if side in {n.name for n in q.nodes}:
        s = q.node(side)
        cols = q.node(f"{name}:outlier_inputs").attrs["indices"]
        w[:, cols] = s.params["weight_q"] * q.scales[s.output].reshape(-1, 1)
        w[:, cols] /= q.scales[x].reshape(1, -1)[:, cols]
    return w


def test_the_split_gives_the_other_columns_finer_weights(outlier_case, monkeypatch):
    """The real weights of the split layer's ordinary columns (scaled by their inputs' spike
    values) are closer to the float ones than with one layer: each row's scale is set by the
    kept columns. (The end-to-end effect is measured on all-MiniLM-L6-v2, see
    docs/transformers.md; on a network this small, float and integer spike timing differ more
    than the weights do.)"""
    snn, q = outlier_case.snn, outlier_case.int
    monkeypatch.setattr(outlier_split, "OUTLIER_FACTOR", float("inf"))
    plain = quantize(snn, np.load(outlier_case.calib)["x"], get_profile("sim"))
    assert "outlier_inputs_split" not in plain.meta["quantization"]
    (name,) = q.meta["quantization"]["outlier_inputs_split"]
    cols = q.node(f"{name}:outlier_inputs").attrs["indices"]
    w = snn.node(name).params["weight"].astype(np.float64)
    s_x = q.scales[snn.node(name).inputs[0]].reshape(-1)
    keep = np.setdiff1d(np.arange(w.shape[1]), cols)

    def error(g) -> float:
        d = (_real_weights(g, name) - w)[:, keep] * s_x[keep]
        return float(np.linalg.norm(d) / np.linalg.norm(w[:, keep] * s_x[keep]))

    assert error(q) < 0.7 * error(plain)
    w_q = q.node(name).params["weight_q"]
    assert np.abs(w_q).max(axis=1).min() >= 126  # every row spans its 8 bits without them


def test_targets_without_gather_or_requantizing_adds_keep_one_layer(outlier_case):
    x_cal = np.load(outlier_case.calib)["x"]
    for name in ("spinnaker2", "nir"):
        profile = get_target(name).profile
        assert not outlier_split.splits_outliers(profile)
    assert outlier_split.splits_outliers(get_target("c").profile)
    q = quantize(outlier_case.snn, x_cal, get_target("c").profile)
    assert any(n.op == "gather" for n in q.nodes)


def test_the_split_survives_save_and_load(outlier_case, tmp_path):
    save(outlier_case.int, tmp_path / "q.spk")
    back = load(tmp_path / "q.spk")
    assert [n.op for n in back.nodes] == [n.op for n in outlier_case.int.nodes]
    x = outlier_case.test_x[:16]
    out = back.outputs[0]
    np.testing.assert_array_equal(
        simulate(back, x, T, "int").outputs[out],
        simulate(outlier_case.int, x, T, "int").outputs[out],
    )


def test_examples_without_outliers_are_not_split(cases):
    for name in ("digits_cnn", "digits_mlp"):
        assert "outlier_inputs_split" not in cases[name].int.meta["quantization"]


def test_a_quantized_graph_quantized_again_starts_from_the_unsplit_layers(outlier_case):
    """Re-quantizing the sim graph: for sim the same split again, for a target without one
    (no `gather`) the layers as converted, equal to quantizing the converted graph."""
    x_cal = np.load(outlier_case.calib)["x"]
    again = quantize(outlier_case.int, x_cal, get_profile("sim"))
    assert [n.name for n in again.nodes] == [n.name for n in outlier_case.int.nodes]
    for a, b in zip(again.nodes, outlier_case.int.nodes, strict=True):
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
    sim = get_profile("sim")
    plain = dataclasses.replace(sim, name="no_gather", ops=sim.ops - {"gather"})
    direct = quantize(outlier_case.snn, x_cal, plain)
    via = quantize(outlier_case.int, x_cal, plain)
    assert "gather" not in {n.op for n in via.nodes}
    assert [n.name for n in via.nodes] == [n.name for n in direct.nodes]
    for a, b in zip(via.nodes, direct.nodes, strict=True):
        assert a.output == b.output
        for k in a.params:
            np.testing.assert_array_equal(a.params[k], b.params[k])
