"""Acceptance bars of the spine on the shipped digits models, held-out test split, no
fine-tuning. These are real measurements: a regression in conversion or quantization fails them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeport.data import load_data
from spikeport.eval import evaluate
from spikeport.sim import simulate


@pytest.fixture(scope="module")
def test_set():
    return load_data(EXAMPLES / "digits_test.npz", labels=True)


def _acc(report, t):
    return next(r["accuracy"] for r in report["records"] if r["T"] == t)


def test_digits_cnn_integer_mode_is_close_to_the_ann(cases, test_set):
    case = cases["digits_cnn"]
    rep = evaluate(case.int, test_set, [1, 2, 4, 8], "int", str(case.onnx))
    ann = rep["ann"]["accuracy"]
    assert ann > 0.97
    assert _acc(rep, 4) >= ann - 0.02
    assert _acc(rep, 8) >= ann - 0.01
    assert _acc(rep, 2) >= ann - 0.08  # the peer converter's T=2 result on a comparable CNN


@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_float_and_integer_modes_agree(cases, test_set, name):
    graph = cases[name].int
    preds = [
        simulate(graph, test_set.x, 8, m).outputs[graph.outputs[0]][-1].argmax(-1)
        for m in ("float", "int")
    ]
    assert np.mean(preds[0] == preds[1]) >= 0.99


def test_test_split_is_disjoint_from_calibration_and_training():
    def rows(name):
        x = np.load(EXAMPLES / f"digits_{name}.npz")["x"]
        return {r.tobytes() for r in x.reshape(len(x), -1)}

    test = rows("test")
    assert not test & rows("calib") and not test & rows("train")


def test_t_aware_conversion_is_deterministic_and_recorded():
    """`convert -T 2` (T-aware by default): thresholds searched for T on the SNN's own inputs,
    the same on every run, recorded in the artifact, and different from the percentile's."""
    from spikeport.convert import convert

    model, calib = EXAMPLES / "digits_mlp.onnx", EXAMPLES / "digits_calib.npz"

    def thresholds(graph) -> list[np.ndarray]:  # noqa: ANN001
        return [n.params["threshold"] for n in graph.nodes if n.op == "if"]

    base = convert(model, calib, timesteps=2, tune=False)
    assert "t_aware" not in base.meta["conversion"]
    a, b = (convert(model, calib, timesteps=2) for _ in range(2))
    record = a.meta["conversion"]["t_aware"]
    searches = {"percentile", "T=2", "T=4", "T=8"}
    (twin,) = set(record["candidates"]) - searches  # the signed twin of the chosen search
    assert record["T"] == 2 and twin.removesuffix(", signed") in searches - {"percentile"}
    assert record["kept"] != "percentile"
    assert all(np.array_equal(x, y) for x, y in zip(thresholds(a), thresholds(b), strict=True))
    assert any(not np.allclose(x, y) for x, y in zip(thresholds(a), thresholds(base), strict=True))


def test_quick_search_runs_the_search_for_t_alone(monkeypatch):
    """`convert --search quick`: one pass over the network, the search for T, beside the
    percentile conversion; that candidate is the full search's own "T=2", to the bit (the
    full search runs more candidates, it does not run this one otherwise)."""
    import spikeport.convert.tune as tune
    from spikeport.convert import convert

    model, calib = EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"
    passes = []
    search = tune.tune_thresholds
    monkeypatch.setattr(
        tune, "tune_thresholds", lambda *a, **k: passes.append(1) or search(*a, **k)
    )
    monkeypatch.setattr(tune, "_pick", lambda scores: "T=2")  # compare the same candidate
    quick = convert(model, calib, timesteps=2, search="quick")
    record = quick.meta["conversion"]["t_aware"]
    assert record["search"] == "quick" and set(record["candidates"]) == {"percentile", "T=2"}
    assert len(passes) == 1
    full = convert(model, calib, timesteps=2)
    assert len(full.meta["conversion"]["t_aware"]["candidates"]) > 2 and len(passes) > 2
    assert full.meta["conversion"]["t_aware"]["search"] == "full"
    for a, b in zip(quick.nodes, full.nodes, strict=True):
        assert a.params.keys() == b.params.keys()
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_tune_samples_sets_the_search_data_past_the_memory_budget(tmp_path, monkeypatch):
    """By default the search keeps as many calibration samples as its memory budget allows
    and convert says when it leaves some out; `--tune-samples N` runs it on the first N
    whatever memory they take, and the choice follows the data it ran on."""
    from click.testing import CliRunner

    import spikeport.convert.tune as tune
    from spikeport.cli.main import main
    from spikeport.ir.artifact import load

    model, calib = EXAMPLES / "digits_mlp.onnx", EXAMPLES / "digits_calib.npz"
    n_calib = len(np.load(calib)["x"])

    def convert_cli(name: str, *extra: str) -> tuple[str, dict, list[np.ndarray]]:
        out = tmp_path / f"{name}.spk"
        args = ["convert", str(model), "--calib", str(calib), "-T", "2", "-o", str(out), *extra]
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 0, res.output
        graph = load(out)
        thresholds = [n.params["threshold"] for n in graph.nodes if n.op == "if"]
        return res.output, graph.meta["conversion"]["t_aware"], thresholds

    monkeypatch.setattr(tune, "MEMORY_BUDGET", 1)  # fits none: the floor of 8 samples
    said, record, theta8 = convert_cli("budget")
    assert (record["samples"], record["calibration_samples"]) == (8, n_calib)
    assert f"searched on 8 of {n_calib} calibration samples" in said
    said, record, theta40 = convert_cli("given", "--tune-samples", "40")
    assert (record["samples"], record["calibration_samples"]) == (40, n_calib)
    assert f"searched on 40 of {n_calib}" in said
    assert any(not np.array_equal(a, b) for a, b in zip(theta8, theta40, strict=True))
    monkeypatch.undo()  # the real budget holds all of the digits' calibration images
    said, record, _ = convert_cli("default")
    assert record["samples"] == n_calib and "searched on" not in said


@pytest.mark.parametrize("bipolar", [False, True])
@pytest.mark.parametrize("levels", [1, 3])
@pytest.mark.parametrize("signed", [False, True])
def test_the_searched_rate_code_is_what_the_float_simulator_computes(bipolar, levels, signed):
    """tune.rate_code scores thresholds; it must be the float IF neuron's own rate code, to
    the bit (its binary path is written apart, in place), the signed variant's too."""
    from spikeport.convert.tune import rate_code
    from spikeport.sim.ops import IFNeuron

    rng = np.random.default_rng(0)
    currents = rng.normal(0.3, 1.0, (5, 4, 50))
    theta = rng.uniform(0.5, 2.0, (4, 1))
    neuron = IFNeuron(theta, signed, False, (4, 50), bipolar=bipolar, levels=levels)
    neuron.reset(1)
    spiked = sum(neuron(c[None])[0] for c in currents)
    rates = rate_code(currents, theta, bipolar, levels, signed=signed)
    np.testing.assert_array_equal(rates, spiked / len(currents))


@pytest.mark.parametrize("bipolar", [False, True])
@pytest.mark.parametrize("split", [False, True])
def test_the_rate_code_fused_in_c_is_the_numpy_loop_to_the_bit(bipolar, split):
    """tune.rate_code's binary loop runs in C where native kernels build (the search's hot
    loop); it must give the numpy loop's values bit for bit, whatever the threads' split,
    with currents that land exactly on the threshold and float32 currents."""
    from unittest import mock

    from spikeport.convert.tune import rate_code
    from spikeport.sim import native

    if not native.available():
        pytest.skip(f"no native kernels here: {native.status()}")
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.5, 2.0, (7, 1))
    currents = rng.normal(0.2, 1.0, (6, 7, 3001))
    currents[:, :, :500] = np.round(currents[:, :, :500] * 4) / 4 * theta  # exact ties
    threads = 2 if split else 1
    for c in (currents, currents.astype(np.float32), currents[:, :, ::2]):
        with mock.patch.object(native, "ENABLED", False):
            expected = rate_code(c, theta, bipolar)
        with (
            mock.patch.object(native, "MIN_SPLIT", 64 if split else native.MIN_SPLIT),
            mock.patch.object(native.torch, "get_num_threads", lambda: threads),
            mock.patch.object(native, "rate_code", wraps=native.rate_code) as fused,
        ):
            got = rate_code(c, theta, bipolar)
        assert fused.called
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == expected.dtype == np.float64


def test_the_t_aware_search_reports_its_progress_to_the_end(monkeypatch):
    """convert's progress bar counts each neuron layer of each candidate's search, and ends
    full: the total it announces is the work it does (the digits CNN at T = 2: searches for
    T = 2, 4 and 8, with and without the pooled scoring, over its neuron layers)."""
    import contextlib

    import spikeport.convert.tune as tune
    from spikeport.convert import convert

    bars: list[dict] = []

    @contextlib.contextmanager
    def recording(total: int, desc: str, quiet: bool = False, unit: str = "sample"):
        bar = {"total": total, "done": 0, "desc": desc, "quiet": quiet, "unit": unit}
        bars.append(bar)
        yield lambda n: bar.__setitem__("done", bar["done"] + n)

    monkeypatch.setattr(tune, "progress", recording)
    snn = convert(EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz", timesteps=2)
    (bar,) = bars
    searches = len(snn.meta["conversion"]["t_aware"]["candidates"]) - 1  # (the percentile one)
    layers = sum(n.op == "if" for n in snn.nodes)
    assert bar["total"] == bar["done"] == searches * layers > 0
    assert bar["unit"] == "layer" and not bar["quiet"] and f"{searches} candidates" in bar["desc"]


@pytest.mark.parametrize("signed", [False, True])
def test_t_aware_conversion_beats_the_percentile_at_two_steps(test_set, signed):
    """The reason it is the default: at T = 2 the held-out accuracy of the digits CNN rises
    (measured 95.2 % -> 97.6 %, integer mode). With `--signed` too, whose neurons the search
    once left at their percentile thresholds (measured 94.3 % -> 98.5 %)."""
    from spikeport.convert import convert
    from spikeport.quantize import get_profile, quantize

    model, calib = EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"
    x_calib = load_data(calib).x
    acc, theta = {}, {}
    for tune in (False, True):
        snn = convert(model, calib, timesteps=2, tune=tune, signed=signed)
        theta[tune] = [n.params["threshold"] for n in snn.nodes if n.op == "if"]
        graph = quantize(snn, x_calib, get_profile("sim"))
        acc[tune] = _acc(evaluate(graph, test_set, [2], "int", str(model)), 2)
    assert acc[True] >= acc[False] + 0.01
    assert all(not np.array_equal(a, b) for a, b in zip(*theta.values(), strict=True))


def test_signed_conversion_for_one_step_is_the_unsigned_one_with_signed_neurons(test_set):
    """At T = 1 a signed neuron never takes a spike back, so `convert -T 1 --signed` is the
    unsigned conversion, parameter for parameter, with every (non-bipolar) neuron signed; and
    the default tries no signed twin there (its candidates are the same)."""
    from spikeport.convert import convert

    model, calib = EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"
    plain, signed = (convert(model, calib, timesteps=1, signed=s) for s in (None, True))
    assert [n.name for n in plain.nodes] == [n.name for n in signed.nodes]
    for a, b in zip(plain.nodes, signed.nodes, strict=True):
        assert a.params.keys() == b.params.keys()
        assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)
        if a.op == "if":
            assert not a.attrs["signed"] and b.attrs["signed"]
    assert signed.meta["conversion"]["signed_spikes"] is True
    records = (g.meta["conversion"]["t_aware"]["candidates"] for g in (plain, signed))
    assert next(records) == next(records)  # the 2- and 4-step candidates too
    x = test_set.x[:64]
    np.testing.assert_array_equal(
        simulate(plain, x, 1, "float").outputs[plain.outputs[0]],
        simulate(signed, x, 1, "float").outputs[signed.outputs[0]],
    )


def test_the_pick_between_candidates_trusts_agreement_only_beyond_its_noise():
    """T-aware conversion keeps the candidate of least error unless another agrees with the
    ANN's top class on significantly more of the same samples (a paired count)."""
    from spikeport.convert.tune import _pick

    def agree(n: int, hits: int) -> np.ndarray:
        return np.arange(n) < hits

    # 15 of 16 against 13 of 16 (the zoo's DeiT): noise, the lower error wins
    assert _pick({"a": (agree(16, 15), -0.38), "b": (agree(16, 13), -0.28)}) == "b"
    # 95 of 100 against 80 of 100 on the same samples: real, agreement wins
    assert _pick({"a": (agree(100, 95), -0.38), "b": (agree(100, 80), -0.28)}) == "a"
    # not class scores (nothing agrees): the error alone
    none = np.zeros(8, bool)
    assert _pick({"a": (none, -0.5), "b": (none, -0.2), "c": (none, -0.3)}) == "b"


def test_bias_correction_zeroes_the_mean_error_of_the_layers_no_neuron_tunes():
    """tune_thresholds(correct=True): each layer with a bias that no neuron's search moves and
    that is not an output (text_bert: Q, K, V projections, residual branches, LayerNorms) ends
    with a T-step output whose per-channel mean over the samples equals the ANN's; an MLP,
    whose every bias feeds a neuron or the output, has none (its conversion is unchanged)."""
    from spikeport.batch import take
    from spikeport.convert import convert
    from spikeport.convert.balance import channel_axes
    from spikeport.convert.tune import (
        _channels_first,
        _corrected,
        _mean,
        _Run,
        ann_twins,
        tune_thresholds,
    )

    mlp = convert(EXAMPLES / "digits_mlp.onnx", EXAMPLES / "digits_calib.npz", tune=False)
    assert _corrected(mlp) == set()
    calib = EXAMPLES / "text_calib.npz"
    snn = convert(EXAMPLES / "text_bert.onnx", calib, tune=False)
    layers = _corrected(snn)
    ops = {n.op for n in snn.nodes if n.name in layers}
    assert ops == {"dense", "layernorm"}
    assert not {n.output for n in snn.nodes if n.name in layers} & set(snn.outputs)
    x, axes, T = take(load_data(calib, snn.inputs).x, slice(32)), channel_axes(snn), 2
    tuned = tune_thresholds(snn, x, T, axes, correct=True)
    run = _Run(tuned, x, T)
    for node, original in ann_twins(tuned, snn):
        run.step(node, original)  # the ANN side keeps the original biases
        if node.name in layers and node.output not in run.static:
            mean = _mean(run.spiking[node.output])
            err = _channels_first(mean - run.ann[node.output], axes.get(node.output, -1))
            scale = np.abs(run.ann[node.output]).mean()
            assert np.abs(err.mean(axis=1)).max() < 1e-4 * scale + 1e-5, node.name


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    channels=st.integers(1, 6),
    batches=st.lists(st.integers(1, 300), min_size=1, max_size=5),
    q=st.sampled_from([50.0, 90.0, 99.0, 99.9, 99.99, 100.0]),
)
def test_streamed_tails_give_numpys_percentiles(seed, channels, batches, q):
    """calibrate.Tails keeps only the largest and smallest values of each batch, yet gives
    np.percentile of all of them: per channel, over the tensor, of the values and of |values|,
    for every percentile from the lowest it was kept for."""
    from spikeport.convert.calibrate import Tails

    rng = np.random.default_rng(seed)
    parts = [rng.standard_t(2, (channels, m)).astype(np.float32) for m in batches]
    if seed % 3 == 0:  # ties, as ReLU outputs have (many zeros)
        parts = [np.maximum(np.round(p), 0) for p in parts]
    tails = Tails(channels, sum(batches), lowest=min(q, 90.0))
    for p in parts:
        tails.add(p)
    full = np.concatenate(parts, axis=1).astype(np.float64)
    for absolute in (False, True):
        vals = np.abs(full) if absolute else full
        np.testing.assert_allclose(
            tails.percentile(q, True, absolute), np.percentile(vals, q, axis=1), rtol=1e-12
        )
        np.testing.assert_allclose(
            tails.percentile(q, False, absolute), [np.percentile(vals, q)], rtol=1e-12
        )
    assert tails.top.shape[1] <= tails.k and len(tails.top_all) <= tails.big


def _skewed_mlp(tmp_path):
    """Gemm, then a LayerNorm whose 20 features sit far from 0 (its beta 2 to 6), read by a
    Gemm and by a residual Add (so its beta cannot move for the Gemm alone), whose sum feeds
    another Gemm: convert puts a bipolar neuron, one threshold per feature, in front of both
    Gemms."""
    from fixture_models import _Builder

    b = _Builder(5)
    flat = b.op("Flatten", ["x"], axis=1)
    scale, beta = np.ones(20, np.float32), np.linspace(2, 6, 20).astype(np.float32)
    mid = b.op("LayerNormalization", [b.gemm(flat, 48, 20), b.const(scale), b.const(beta)],
               axis=-1)  # fmt: skip
    res = b.op("Add", [mid, b.gemm(flat, 48, 20)])
    out = b.op("Add", [b.gemm(mid, 20, 4), b.gemm(res, 20, 4)])
    model = tmp_path / "skewed.onnx"
    model.write_bytes(b.model((3, 4, 4), out, 4).SerializeToString())
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=b.rng.uniform(0, 1, (96, 3, 4, 4)).astype(np.float32))
    return model, calib


def test_t_aware_conversion_centres_features_far_from_zero(tmp_path):
    """A bipolar neuron whose features sit far from 0 codes x - c (c each feature's middle,
    through an offset node), its reader's bias takes W c: at T = 4 the float spiking network's
    output is nearer the ANN than with the neuron coding x itself; `convert -T` scores both as
    candidates; the integer network runs the offset (quantize, simulate) and agrees with the
    float one, on both backends."""
    from spikeport.convert import convert
    from spikeport.convert.balance import channel_axes
    from spikeport.convert.tune import tune_thresholds
    from spikeport.quantize import get_profile, quantize

    model, calib = _skewed_mlp(tmp_path)
    x = load_data(calib).x

    def error(graph) -> float:  # noqa: ANN001
        ann = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][-1]
        snn = simulate(graph, x, 4, "float").outputs[graph.outputs[0]][-1] / 4
        return float(np.linalg.norm(snn - ann) / np.linalg.norm(ann))

    snn = convert(model, calib, tune=False)
    centred, plain = (
        tune_thresholds(snn, x, 4, channel_axes(snn), centre=c) for c in (True, False)
    )
    offsets = [n for n in centred.nodes if n.op == "offset"]
    assert offsets and all(n.name.endswith("/centre") for n in offsets)
    assert all(centred.consumers(n.output)[0].attrs["bipolar"] for n in offsets)
    assert 2.5 < -float(offsets[0].params["value"].mean()) < 5.5  # the features' middles
    assert not any(n.op == "offset" for n in plain.nodes)
    assert error(centred) < 0.7 * error(plain)
    record = convert(model, calib, timesteps=4).meta["conversion"]["t_aware"]
    assert {"T=4, centred", "T=4"} <= set(record["candidates"])
    q = quantize(centred, x, get_profile("sim"))
    ints = simulate(q, x, 4, "int").outputs[q.outputs[0]][-1] * q.scales[q.outputs[0]] / 4
    floats = simulate(centred, x, 4, "float").outputs[centred.outputs[0]][-1] / 4
    assert np.corrcoef(ints.ravel(), floats.ravel())[0, 1] > 0.99
    from spikeport.sim import Simulator
    from spikeport.sim.simulator import BACKENDS

    runs = [Simulator(q, "int", b).run(x, 6) for b in BACKENDS]  # the offset's fast kernel
    for a, b in zip(runs[0].outputs.values(), runs[1].outputs.values(), strict=True):
        np.testing.assert_array_equal(a, b)


def _hardswish_cnn(tmp_path):
    """Conv, hardswish of features far from 0 (the conv's outputs + 2), read by a padded 3x3
    conv and, after a second hardswish, by an unpadded 1x1 conv; global pooling, Gemm."""
    from fixture_models import _Builder

    b = _Builder(6)
    two = b.const(np.float32(2.0))
    h = b.op("HardSwish", [b.op("Add", [b.conv("x", 3, 8, 3, 1), two])])
    h = b.op("HardSwish", [b.op("Add", [b.conv(h, 8, 8, 3, 1), two])])
    h = b.op("Relu", [b.conv(h, 8, 8, 1, 0)])
    out = b.gemm(b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1), 8, 4)
    model = tmp_path / "hswish.onnx"
    model.write_bytes(b.model((3, 6, 6), out, 4).SerializeToString())
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=b.rng.uniform(-1, 1, (64, 3, 6, 6)).astype(np.float32))
    return model, calib


def test_t_aware_conversion_centres_channels_that_convolutions_read(tmp_path):
    """A bipolar neuron in front of convolutions codes x - c too, c per channel: the
    convolutions' biases take W c, and a padded one an offset after it for its border
    (fold.padded_conv_shift); at T = 4 the network is nearer the ANN than uncentred;
    quantize and both backends run it."""
    from spikeport.convert import convert, tune
    from spikeport.convert.balance import channel_axes
    from spikeport.convert.tune import tune_thresholds
    from spikeport.quantize import get_profile, quantize
    from spikeport.sim import Simulator
    from spikeport.sim.simulator import BACKENDS

    model, calib = _hardswish_cnn(tmp_path)
    x = load_data(calib).x
    snn = convert(model, calib, tune=False)
    centred, plain = (
        tune_thresholds(snn, x, 4, channel_axes(snn), centre=c) for c in (True, False)
    )
    names = [n.name for n in centred.nodes if n.op == "offset"]
    assert sum(n.endswith("/centre") for n in names) == 2
    assert sum(n.endswith("/border") for n in names) == 1  # the 1x1 conv takes all in its bias

    def out(graph, mode: str, T: int):  # noqa: ANN001, ANN202
        return simulate(graph, x, T, mode).outputs[graph.outputs[0]][-1] / T

    def error(tuned) -> float:  # noqa: ANN001
        """Of the pointwise conv's T-step mean output against the ANN's (ann_twins)."""
        run = tune._Run(tuned, x, 4)
        for node, original in tune.ann_twins(tuned, snn):
            run.step(node, original)
            if node.op == "conv2d" and node.params["weight"].shape[2:] == (1, 1):
                mean, ann = tune._mean(run.spiking[node.output]), run.ann[node.output]
                return float(np.linalg.norm(mean - ann) / np.linalg.norm(ann))
        raise AssertionError("no pointwise conv")

    assert error(centred) < 0.7 * error(plain)
    q = quantize(centred, x, get_profile("sim"))
    ints = out(q, "int", 4) * q.scales[q.outputs[0]]
    assert np.corrcoef(ints.ravel(), out(centred, "float", 4).ravel())[0, 1] > 0.99
    runs = [Simulator(q, "int", b).run(x, 6) for b in BACKENDS]
    for a, b in zip(runs[0].outputs.values(), runs[1].outputs.values(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("pads,group", [([1, 1, 1, 1], 1), ([0, 2, 1, 0], 2), ([1, 0, 0, 1], 4)])
def test_a_padded_convolution_of_x_minus_c_takes_c_back_in_its_bias_and_border(pads, group):
    """conv(x - c) + b + W c + border = conv(x) + b, padding zeros in both, for any pads and
    groups (fold.padded_conv_shift)."""
    from spikeport.convert.fold import padded_conv_shift
    from spikeport.ir.graph import Node
    from spikeport.sim.kernels import conv2d

    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(8, 4 // group, 3, 3)), rng.normal(size=8)
    attrs = {"strides": [2, 1], "pads": pads, "dilations": [1, 1], "group": group}
    conv = Node("c", "conv2d", ["x"], "y", attrs, {"weight": w, "bias": b})
    x, c = rng.normal(size=(5, 4, 7, 6)), rng.normal(size=(4, 1, 1))
    inner, border = padded_conv_shift(conv, c, (4, 7, 6))
    geo = (attrs["strides"], pads, attrs["dilations"], group)
    centred = conv2d(x - c, w, b + inner, *geo) + border
    np.testing.assert_allclose(centred, conv2d(x, w, b, *geo), atol=1e-9)
    assert np.any(border) and not np.any(border[:, 2:-2, 2:-2])  # only the border moves


def test_the_search_scores_a_pooled_neuron_after_its_pooling():
    """A neuron that only an average pooling reads is scored on the pooled rates: at T = 1,
    activations spread evenly over [0, 1) in each window, a theta near 1 (about half the
    positions fire theta) gets the pooled mean right, while the per-position error prefers a
    lower theta (0.66) whose pooled mean is 0.06 too low."""
    from spikeport.convert.tune import rate_code, search

    act = np.tile(np.linspace(0, 1, 64, endpoint=False), (3, 20))  # 3 channels, 20 windows
    currents = act[None]  # T = 1: the current is the activation
    start = np.ones(3)

    def pool(rows: np.ndarray) -> np.ndarray:
        return rows.reshape(len(rows), -1, 64).mean(axis=2)

    pooled = search(currents, act, start, False, False, pool=pool)
    per_position = search(currents, act, start, False, False)
    np.testing.assert_allclose(pooled[0], 1.0, atol=0.05)
    assert np.all(per_position[0] < 0.8)
    for theta, most in ((pooled[0], 0.002), (per_position[0], None)):
        err = np.abs(pool(rate_code(currents, theta[:, None], False)) - pool(act)).mean()
        assert err < most if most else err > 0.04


# (ONNX pooling, its attributes, what _pooled_by finds, features after it, too few samples)
POOLINGS = {
    "global average": ("GlobalAveragePool", {}, ("avgpool2d", 6, 6), 12, 16),
    "2x2 max": (
        "MaxPool",
        {"kernel_shape": [2, 2], "strides": [2, 2]},
        ("maxpool2d", 2, 2),
        108,
        8,
    ),
}


@pytest.mark.parametrize("pooling", sorted(POOLINGS))
def test_t_aware_conversion_scores_neurons_before_a_pooling_after_it(
    tmp_path, monkeypatch, pooling
):
    """conv -> ReLU -> pooling -> Gemm: the neuron before a global average or a 2x2 max pooling
    is searched on its pooled rates (tune._pooled_by finds the window), so at T = 1 the pooled
    tensor the dense layer reads is closer to the ANN's than when each position is scored
    alone; `convert -T` scores both as candidates. (The weight refit is off for the
    comparison: it narrows both errors, 0.032 -> 0.027 for the unpooled search before global
    pooling, and is tested on its own.)"""
    from fixture_models import _Builder

    import spikeport.convert.tune as tune
    from spikeport.convert import convert, refit
    from spikeport.convert.balance import channel_axes

    for module in (refit, tune):  # no layer is one the refit lays out rows for
        monkeypatch.setattr(module, "ROW_LAYERS", frozenset())
    op, attrs, found, features, few = POOLINGS[pooling]
    b = _Builder(5)
    h = b.op("Relu", [b.conv("x", 2, 8, 3, 1)])
    g = b.op(op, [b.op("Relu", [b.conv(h, 8, 12, 1, 0)])], **attrs)
    out = b.gemm(b.op("Flatten", [g], axis=1), features, 4)
    model, calib = tmp_path / "pooled.onnx", tmp_path / "calib.npz"
    model.write_bytes(b.model((2, 6, 6), out, 4).SerializeToString())
    x = b.rng.uniform(0, 1, (160, 2, 6, 6)).astype(np.float32)
    np.savez(calib, x=x)
    snn = convert(model, calib, tune=False)
    pools = [n for n in snn.nodes if n.op == found[0]]
    neuron = snn.producer(pools[0].inputs[0])
    axes = channel_axes(snn)
    assert tune._pooled_by(snn, neuron, axes[neuron.inputs[0]], len(x)) == found
    assert tune._pooled_by(snn, neuron, axes[neuron.inputs[0]], few) is None  # too few windows

    def pooled_error(pooled: bool) -> float:
        tuned = tune.tune_thresholds(snn, x, 1, axes, pooled=pooled)
        run = tune._Run(tuned, x, 1)
        for node, original in tune.ann_twins(tuned, snn):
            run.step(node, original)
            if node.op == found[0]:
                return float(np.abs(run.spiking[node.output][0] - run.ann[node.output]).mean())
        raise AssertionError("no pooling")

    # measured: 0.024 against 0.032 (global average), 0.114 against 0.168 (2x2 max)
    assert pooled_error(True) < 0.8 * pooled_error(False)
    record = convert(model, calib, timesteps=1).meta["conversion"]["t_aware"]
    assert {"T=1", "T=1, pooled"} <= set(record["candidates"])


def test_the_search_subsample_reads_every_column_of_an_image():
    """The search's even subsample of an image's positions (tune._positions) takes a stride
    prime to the image width: a stride of 64 over 32x32 images read column 0 alone."""
    from spikeport.convert.tune import _innermost, _positions

    assert _innermost((24, 32, 32), 0) == 32 and _innermost((12, 64), -1) == 12
    assert _innermost((64,), -1) == 1
    m = 256 * 32 * 32
    pick = np.arange(m)[_positions(m, 24, 8, False, width=32)]
    assert len(np.unique(pick % 32)) == 32
    assert len(np.unique(np.arange(m)[_positions(m, 24, 8, False)] % 32)) == 1  # the old way


def _untuned(example: str, samples: int):
    """`example` converted without the T-aware search, the first `samples` of its calibration
    data and its channel axes: what tune_thresholds reads."""
    from spikeport.batch import take
    from spikeport.convert import convert
    from spikeport.convert.balance import channel_axes

    calib = EXAMPLES / ("text_calib.npz" if example == "text_bert" else "digits_calib.npz")
    snn = convert(EXAMPLES / f"{example}.onnx", calib, tune=False)
    return snn, take(load_data(calib, snn.inputs).x, slice(samples)), channel_axes(snn)


def _params(graph) -> dict:
    """Every parameter array of `graph`, by (node, name)."""
    return {(n.name, k): v for n in graph.nodes for k, v in n.params.items()}


@pytest.mark.parametrize("example", ["digits_cnn", "text_bert"])
def test_the_search_records_float32_and_chooses_as_float64_would(monkeypatch, example):
    """The search keeps its recorded steps in float32 (tune.STORED), half float64's memory, so
    the budget holds twice the samples; the thresholds and biases it chooses are float64's to
    float32's rounding (a spike is a float32 threshold; a current's rounding is far below the
    grid's spacing)."""
    from spikeport.convert import tune

    snn, x, axes = _untuned(example, 48)
    run = tune._Run(snn, x, 2)
    node = next(n for n in snn.nodes if n.inputs and n.inputs[0] in run.spiking)
    run.step(node, node)
    assert all(s.dtype == np.float32 for s in run.spiking[node.output])
    largest = max(int(np.prod(snn.shape(n.output))) for n in snn.nodes)
    monkeypatch.setattr(tune, "MEMORY_BUDGET", largest * 4 * 3 * 20)  # 20 samples at T = 2
    assert tune.size(tune._samples(snn, x, 2)) == 20
    monkeypatch.undo()
    chosen = {}
    for stored in (np.float32, np.float64):
        monkeypatch.setattr(tune, "STORED", stored)
        tuned = tune.tune_thresholds(snn, x, 2, axes, correct=True)
        chosen[stored] = _params(tuned)
    assert chosen[np.float32].keys() == chosen[np.float64].keys()
    for key, value in chosen[np.float64].items():
        np.testing.assert_allclose(chosen[np.float32][key], value, rtol=1e-4, err_msg=str(key))


@pytest.mark.parametrize("example", ["digits_cnn", "text_bert"])
def test_a_search_shares_the_weights_it_leaves_and_never_writes_into_them(example):
    """tune_thresholds works on a copy whose parameter arrays are read-only views of the
    graph's (a write into one would raise): the graph it was given is unchanged, and a weight
    the search left is the same memory; the candidate t_aware keeps holds no read-only array
    (later stages may write their own)."""
    from spikeport.convert import tune

    snn, x, axes = _untuned(example, 48)
    before = {key: v.copy() for key, v in _params(snn).items()}
    tuned = tune.tune_thresholds(snn, x, 2, axes, correct=True, centre=True)
    for key, v in _params(snn).items():
        np.testing.assert_array_equal(v, before[key], err_msg=str(key))
    base = {n.name: n for n in snn.nodes}
    shared = [
        k
        for n in tuned.nodes
        for k, v in n.params.items()
        if n.name in base and np.shares_memory(v, base[n.name].params.get(k, np.empty(0)))
    ]
    assert "weight" in shared  # the search moved thresholds and biases, not every weight
    kept, _ = tune.t_aware(snn, x, 2, axes, quiet=True, search="quick")
    assert all(v.flags.writeable for n in kept.nodes for v in n.params.values())


def test_a_recorded_tensor_is_mapped_one_step_at_a_time():
    """_mapped: where the result replaces the tensor, or its caller is the tensor's last
    reader, each step is dropped once used (the tensor is never held twice); with a reader
    left, it stays; a static tensor's one shared array is mapped once."""
    from types import SimpleNamespace

    from spikeport.convert import tune

    steps = [np.full(3, t, np.float64) for t in range(4)]
    run = SimpleNamespace(
        spiking={"a": list(steps), "s": [steps[0]] * 4},
        left={"a": 2, "s": 1},
        graph=SimpleNamespace(outputs=[]),
    )
    kept = tune._mapped(run, "a", lambda c: c + 1)
    assert [float(c[0]) for c in kept] == [1, 2, 3, 4] and kept[0].dtype == tune.STORED
    assert all(c is not None for c in run.spiking["a"])  # another reader still needs it
    tune._mapped(run, "a", lambda c: c + 1, replaces=True)
    assert run.spiking["a"] == [None] * 4
    run.left["a"], run.spiking["a"] = 1, list(steps)
    tune._mapped(run, "a", lambda c: c * 2)
    assert run.spiking["a"] == [None] * 4  # its last reader: dropped as mapped
    static = tune._mapped(run, "s", lambda c: c - 1)
    assert all(c is static[0] for c in static) and float(static[0][0]) == -1


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda n: st.lists(
            st.tuples(
                st.lists(st.booleans(), min_size=n, max_size=n),
                st.sampled_from([-0.1, -0.2, -0.3, -0.25]),
            ),
            min_size=1,
            max_size=8,
        )
    )
)
def test_dropping_dominated_candidates_never_changes_the_pick(found):
    """t_aware drops, after each search, the candidates that another agrees with the ANN
    beyond and with a smaller error (_undominated): the candidate _pick chooses from all
    scores is always among those held (class scores: agreements of a few samples, errors
    from a few values so that ties happen; an embedding: no agreement at all)."""
    from spikeport.convert import tune

    for embedding in (False, True):
        held: dict[str, object] = {}
        scores = {}
        for i, (agree, err) in enumerate(found):
            name = f"c{i}"
            scores[name] = (np.array(agree) & (not embedding), err)
            held[name] = object()
            held = tune._undominated(held, scores)
        assert tune._pick(scores) in held
        if embedding:
            assert len(held) == 1


@pytest.mark.parametrize("example", ["digits_cnn", "text_bert"])
def test_kernels_run_on_parts_of_the_samples_to_the_same_values(monkeypatch, example):
    """The search runs each kernel other than the dense layers' and convolutions' on parts of
    the samples (tune.STEP_PART_BYTES: their temporaries were most of a large encoder's
    peak); they are elementwise or per sample, so every value it chooses is the same bit for
    bit, whatever the parts."""
    from spikeport.convert import tune

    snn, x, axes = _untuned(example, 40)
    chosen = []
    for part_bytes in (tune.STEP_PART_BYTES, 3000):  # one part; parts of a few samples
        monkeypatch.setattr(tune, "STEP_PART_BYTES", part_bytes)
        tuned = tune.tune_thresholds(snn, x, 2, axes, correct=True, centre=True)
        chosen.append(_params(tuned))
    assert chosen[0].keys() == chosen[1].keys()
    for key, value in chosen[0].items():
        np.testing.assert_array_equal(chosen[1][key], value, err_msg=str(key))


def test_an_output_layer_the_search_had_too_few_samples_for_is_refitted_on_the_scored_ones(
    monkeypatch,
):
    """The search holds T steps of every tensor, so its memory budget sets its samples; an
    output layer needs only its input's mean rates, so where the search's samples were too few
    to refit it (refit.refittable), it is refitted after the search on the samples the
    candidates are scored on: closer to the ANN there, every other parameter as it was. Where
    the search could refit it, it is left to the search, and where the budget holds too few of
    its inputs' steps, or TUNE_SAMPLES are too few, it is left alone."""
    import copy

    from spikeport.convert import tune

    snn, x, axes = _untuned("digits_vit", 180)
    reference = tune._float_outputs(snn, x, 1, "ann")
    head = next(n for n in snn.nodes if n.output in snn.outputs)
    graph = copy.deepcopy(snn)
    assert tune._refit_outputs(graph, x, 2, reference, searched=len(x)) == ({}, None)
    needed = tune.refit.samples_needed(head, snn.shape(head.output))
    too_few = {
        head.name: f"kept its weights: 100 samples are too few to refit it (it needs {needed})"
    }
    with monkeypatch.context() as m:  # 2 steps of 32 float64 inputs for 100 samples
        m.setattr(tune, "MEMORY_BUDGET", 100 * 2 * 32 * 8)
        assert tune._refit_outputs(graph, x, 2, reference, searched=8) == (too_few, None)
    with monkeypatch.context() as m:  # the samples the search would have had: no more
        m.setattr(tune, "TUNE_SAMPLES", 100)
        assert tune._refit_outputs(graph, x, 2, reference, searched=8) == (too_few, None)
    assert all(np.array_equal(v, _params(snn)[k]) for k, v in _params(graph).items())
    with monkeypatch.context() as m:
        m.setattr(tune.refit, "refit", lambda *args: False)
        kept = {head.name: "kept its weights: the cross-validation preferred them"}
        assert tune._refit_outputs(graph, x, 2, reference, searched=8)[0] == kept
    before = tune._score(graph, x, 2, reference)[1]
    done = {head.name: f"refitted on {len(x)} samples"}
    outcomes, outputs = tune._refit_outputs(graph, x, 2, reference, searched=8)
    assert outcomes == done
    # the outputs it returns are the refitted graph's, as a whole simulation gives them
    np.testing.assert_allclose(outputs[0], tune._float_outputs(graph, x, 2, "float")[0],
                               rtol=1e-12, atol=1e-12)  # fmt: skip
    assert tune._score(graph, x, 2, reference)[1] > before  # (minus the relative error)
    moved = [k for k, v in _params(graph).items() if not np.array_equal(v, _params(snn)[k])]
    assert {name for name, _ in moved} == {head.name}
    _, record = tune.t_aware(snn, x, 2, axes, samples=8, quiet=True, search="quick")
    assert record["output_refit"] == done  # what became of it, in the record
    assert record["samples"] == 8 and head.name in record["refitted"]


def test_the_default_conversion_tries_the_signed_twin_of_its_chosen_search():
    """At T > 1, binary, without --signed or --unsigned, the T-aware search runs its chosen search
    once more on signed neurons and keeps whichever the calibration data prefers: the
    unsigned conversion's candidates plus that one; at T = 1 (nothing to take back) and with
    --unsigned, no twin."""
    from spikeport.convert import convert

    model, calib = EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"
    plain, auto = (convert(model, calib, timesteps=2, signed=s) for s in (False, None))
    unsigned, chosen = (g.meta["conversion"]["t_aware"] for g in (plain, auto))
    twin = unsigned["kept"] + ", signed"
    assert not any(k.endswith(", signed") for k in unsigned["candidates"])
    assert set(chosen["candidates"]) == set(unsigned["candidates"]) | {twin}
    for name, score in unsigned["candidates"].items():  # deterministic: the same scores
        assert chosen["candidates"][name] == score
    is_signed = chosen["kept"] == twin
    assert chosen["kept"] in (twin, unsigned["kept"])
    neurons = [n for n in auto.nodes if n.op == "if"]
    assert all(n.attrs["signed"] == is_signed for n in neurons)
    assert auto.meta["conversion"]["signed_spikes"] is is_signed
    # nor for graded neurons: signed, they would send a sign bit beyond --spike-bits (T = 1:
    # test_signed_conversion_for_one_step_is_the_unsigned_one_with_signed_neurons)
    graded = convert(model, calib, timesteps=2, spike_bits=2)
    candidates = graded.meta["conversion"]["t_aware"]["candidates"]
    assert not any(k.endswith(", signed") for k in candidates)
    assert not any(n.attrs["signed"] for n in graded.nodes if n.op == "if")
