"""The command line: the README's flow, the CI gate both ways, and bad input (exit 2, one line,
no output file left behind)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from spikeport.cli.main import main

EX = Path(__file__).resolve().parent.parent / "examples"
CNN, CALIB, TEST = EX / "digits_cnn.onnx", EX / "digits_calib.npz", EX / "digits_test.npz"


def cli(*args: object) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    assert cli("convert", CNN, "--calib", CALIB, "-o", d / "cnn.spk", "-q")[0] == 0
    assert (
        cli(
            "quantize",
            d / "cnn.spk",
            "--calib",
            CALIB,
            "--target",
            "sim",
            "-o",
            d / "cnn_q.spk",
            "-q",
        )[0]
        == 0
    )
    return d / "cnn_q.spk"


def test_eval_writes_documented_json_and_plot(quantized, tmp_path):
    code, out, _ = cli(
        "eval",
        quantized,
        "--data",
        TEST,
        "-T",
        "1,2,4,8",
        "--onnx",
        CNN,
        "--json",
        tmp_path / "r.json",
        "--plot",
        tmp_path / "r.png",
        "--require",
        "4:0.95",
        "--require",
        "8:0.97",
    )
    assert code == 0, out
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["schema"] == "spikeport.eval" and rep["schema_version"] == 2
    assert [r["T"] for r in rep["records"]] == [1, 2, 4, 8]
    assert set(rep["records"][0]) == {
        "T",
        "accuracy",
        "accuracy_interval",
        "paired_with_ann",
        "agreement_with_ann",
        "cosine_to_ann",
        "relative_error_to_ann",
        "spikes_per_inference",
        "spike_levels_per_inference",
        "bits_per_event",
        "synaptic_ops_per_inference",
    }
    first = rep["records"][0]  # binary neurons: one level and one bit an event
    assert first["spike_levels_per_inference"] == first["spikes_per_inference"]
    assert first["bits_per_event"] == 1.0 and "bits / event" not in out
    assert 0.9 < rep["records"][-1]["cosine_to_ann"] <= 1.0
    assert rep["ann"]["source"] == "onnxruntime" and rep["data"]["n"] == 540
    for r in [*rep["records"], rep["ann"]]:  # the 95 % interval holds the accuracy ...
        low, high = r["accuracy_interval"]
        assert low < r["accuracy"] < high or r["accuracy"] == high == 1.0
        assert 0.01 < high - low < 0.1  # ... and is as wide as 540 samples make it
    for r in rep["records"]:  # the paired counts are the accuracies' difference, sample by sample
        paired, n = r["paired_with_ann"], rep["data"]["n"]
        diff = (paired["snn_only"] - paired["ann_only"]) / n
        assert abs(r["accuracy"] - rep["ann"]["accuracy"] - diff) < 1e-12
        assert 0 < paired["p_value"] <= 1
    assert "ANN-only / SNN-only right (p)" in out
    assert all(r["met"] for r in rep["requirements"])
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 8 |" in out


def test_require_exits_1_when_a_bar_is_missed(quantized):
    code, _, err = cli(
        "eval",
        quantized,
        "--data",
        TEST,
        "-T",
        "1,4",
        "--require",
        "1:0.999",
        "--require",
        "4:0.5",
        "-q",
    )
    assert code == 1
    assert err.strip().splitlines() == [err.strip()]
    assert "T=1:" in err and "T=4" not in err


def test_inspect_prints_nodes(quantized):
    code, out, _ = cli("inspect", quantized)
    assert code == 0
    assert "node_Conv_19" in out and "threshold_q int32" in out and "stage: int" in out


def test_console_script_runs():
    exe = Path(sys.executable).with_name("spikeport")
    res = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "spikeport" in res.stdout


def _assert_refused(tmp_path: Path, args: list[object], expect: str) -> None:
    out = tmp_path / "out.spk"
    code, stdout, err = cli(*args, "-o", out)
    assert code == 2, (stdout, err)
    assert len(err.strip().splitlines()) == 1, err
    assert expect in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def _model_with(tmp_path: Path, op: str) -> Path:
    node = helper.make_node(op, ["x"], ["y"], name="the_odd_one")
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    np.savez(tmp_path / "calib4.npz", x=np.ones((4, 4), np.float32))
    return path


def test_convert_says_which_output_layer_kept_its_weights_and_why(tmp_path):
    """T-aware conversion refits an output layer where the calibration samples suffice; where
    they do not, convert says so (the record keeps it: conversion.t_aware.output_refit)."""
    np.savez(tmp_path / "c8.npz", x=np.load(CALIB)["x"][:8])
    out = tmp_path / "o.spk"
    args = ("convert", CNN, "--calib", tmp_path / "c8.npz", "-T", "2", "--search", "quick")
    code, stdout, err = cli(*args, "-o", out)
    assert code == 0, err
    assert "note: output layer" in stdout + err
    assert "kept its weights: 8 samples are too few to refit it (it needs " in stdout + err
    from spikeport.ir.artifact import load

    record = load(out).meta["conversion"]["t_aware"]["output_refit"]
    (outcome,) = record.values()
    assert outcome.startswith("kept its weights: 8 samples are too few to refit it")


def test_unsupported_op_names_node_and_type(tmp_path):
    model = _model_with(tmp_path, "Sin")
    _assert_refused(
        tmp_path,
        ["convert", model, "--calib", tmp_path / "calib4.npz"],
        "node 'the_odd_one' (Sin)",
    )


def test_truncated_onnx(tmp_path):
    data = CNN.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    _assert_refused(
        tmp_path, ["convert", tmp_path / "cut.onnx", "--calib", CALIB], "not a valid ONNX model"
    )


def test_missing_npz_key(tmp_path):
    np.savez(tmp_path / "c.npz", images=np.zeros((3, 1, 8, 8), np.float32))
    _assert_refused(
        tmp_path,
        ["convert", CNN, "--calib", tmp_path / "c.npz"],
        "key 'x' is missing (keys: images)",
    )


def test_npz_shape_does_not_fit_the_model(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 64), np.float32))
    _assert_refused(
        tmp_path,
        ["convert", CNN, "--calib", tmp_path / "c.npz"],
        "holds samples of shape (64,), the model input 'x' expects (1, 8, 8)",
    )


@pytest.mark.parametrize("which", ["model", "calib"])
def test_nonexistent_path(tmp_path, which):
    model = tmp_path / "nope.onnx" if which == "model" else CNN
    calib = tmp_path / "nope.npz" if which == "calib" else CALIB
    _assert_refused(tmp_path, ["convert", model, "--calib", calib], "does not exist")


def test_not_an_npz(tmp_path):
    (tmp_path / "c.npz").write_text("x,y\n1,2\n")
    _assert_refused(
        tmp_path, ["convert", CNN, "--calib", tmp_path / "c.npz"], "not a readable .npz"
    )


def test_nan_in_data(tmp_path):
    x = np.load(CALIB)["x"].copy()
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "c.npz", x=x)
    _assert_refused(tmp_path, ["convert", CNN, "--calib", tmp_path / "c.npz"], "NaN")


def test_quantize_of_a_corrupt_artifact(tmp_path, quantized):
    bad = tmp_path / "bad.spk"
    bad.write_bytes(quantized.read_bytes()[:500])
    _assert_refused(tmp_path, ["quantize", bad, "--calib", CALIB], "not a readable .spk")


def test_eval_says_when_its_ann_reference_is_not_the_source(quantized):
    """The digits CNN's T-aware conversion refits layers (convert/refit.py), so without
    --onnx the ANN reference is a view with other weights than the source: eval says so in
    one line and in the JSON's ann.note; with --onnx it does not."""
    from spikeport.ir.artifact import load

    assert load(quantized).meta["conversion"]["t_aware"]["refitted"]
    code, out, _ = cli("eval", quantized, "--data", TEST, "-T", "2")
    assert code == 0 and "note: the ANN reference is this graph's own ANN view" in out
    code, out, _ = cli("eval", quantized, "--data", TEST, "-T", "2", "--onnx", CNN)
    assert code == 0 and "own ANN view" not in out


def test_reference_note_names_every_way_the_weights_left_the_source(quantized):
    """A fine-tuned graph's own ANN view has trained weights: the note says so; a graph whose
    weights are the source's gets no note, nor does a run given the source model."""
    from spikeport.eval.evaluate import OWN_VIEW, reference_note
    from spikeport.ir.artifact import load

    graph = load(quantized)
    assert "refitted the weights" in reference_note(graph, OWN_VIEW)
    graph.meta["finetune"] = {"T": 2}
    note = reference_note(graph, OWN_VIEW)
    assert "refitted the weights" in note and "finetune trained" in note
    graph.meta["conversion"]["t_aware"]["refitted"] = []
    assert "refitted" not in reference_note(graph, OWN_VIEW)
    assert reference_note(graph, str(CNN)) is None
    del graph.meta["finetune"]
    assert reference_note(graph, OWN_VIEW) is None


def test_eval_refuses_labels_out_of_range(tmp_path, quantized):
    d = np.load(TEST)
    np.savez(tmp_path / "t.npz", x=d["x"], y=d["y"] + 5)
    code, _, err = cli(
        "eval", quantized, "--data", tmp_path / "t.npz", "--json", tmp_path / "r.json"
    )
    assert code == 2 and "labels outside 0..9" in err
    assert not (tmp_path / "r.json").exists()


def test_eval_refuses_a_different_onnx(tmp_path, quantized):
    other = tmp_path / "other.onnx"
    shutil.copy(EX / "digits_mlp.onnx", other)
    code, _, err = cli("eval", quantized, "--data", TEST, "--onnx", other)
    assert code == 2 and "sha256 differs" in err


def test_bad_require_syntax(quantized):
    code, _, err = cli("eval", quantized, "--data", TEST, "--require", "four")
    assert code == 2 and "is not T:ACC" in err


def test_an_internal_error_is_one_line_exit_3_and_the_traceback_on_request(monkeypatch, quantized):
    import spikeport.cli.commands as commands

    def broken(path):
        raise ValueError("a bug")

    monkeypatch.setattr(commands, "load", broken)
    code, _, err = cli("inspect", quantized)
    assert code == 3 and err.count("\n") == 1 and err.startswith("error: internal error")
    assert "ValueError: a bug" in err and "SPIKEPORT_TRACEBACK=1" in err
    assert "Traceback" not in err
    monkeypatch.setenv("SPIKEPORT_TRACEBACK", "1")
    code, _, err = cli("inspect", quantized)
    assert code == 3 and "Traceback" in err and err.strip().splitlines()[-1].startswith("error:")
    monkeypatch.delenv("SPIKEPORT_TRACEBACK")
    code, _, err = cli("--debug", "inspect", quantized)
    assert code == 3 and "Traceback" in err


@pytest.mark.parametrize(
    "args",
    [
        ["eval", "m.spk", "--data", "d.npz", "-T", "abc"],
        ["convert", "m.onnx", "--calib", "c.npz", "--bogus", "-o", "o.spk"],
        ["emit", "m.spk", "--target", "bogus", "-o", "o"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line_exit_2_in_a_real_process(tmp_path, args):
    """The console script, not CliRunner: what a shell sees."""
    exe = Path(sys.executable).with_name("spikeport")
    env = {**__import__("os").environ, "PYTHONPATH": str(EX.parent)}
    res = subprocess.run([exe, *args], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_quantize_without_max_T_proves_fewer_steps_and_says_so(monkeypatch, tmp_path):
    """Where 64 steps overflow the state width, quantize without --max-T proves the longest
    power of two that fits (here 16 in 22-bit state), prints a note and writes the file; with
    --max-T 64 it refuses in one line and writes nothing."""
    import dataclasses

    import spikeport.cli.commands as commands

    narrow = dataclasses.replace(commands.get_profile("sim"), state_bits=22)
    monkeypatch.setattr(commands, "get_profile", lambda name: narrow)
    assert cli("convert", CNN, "--calib", CALIB, "-o", tmp_path / "a.spk", "-q")[0] == 0
    code, out, _ = cli("quantize", tmp_path / "a.spk", "--calib", CALIB, "-o", tmp_path / "q.spk")
    assert code == 0 and (tmp_path / "q.spk").exists()
    assert "note: proven free of overflow for T <= 16, not the default 64" in out
    assert out.strip().endswith("for T <= 16")
    code, _, err = cli("quantize", tmp_path / "a.spk", "--calib", CALIB, "--max-T", 64,
                       "-o", tmp_path / "q64.spk")  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "(--max-T 16 fits)" in err
    assert not (tmp_path / "q64.spk").exists()


def test_accuracy_interval_is_wilsons():
    """Values of Wilson's formula, (p + z^2/2n +- z sqrt(p(1 - p)/n + z^2/4n^2)) / (1 + z^2/n):
    it narrows with the samples, stays inside [0, 1] and does not collapse at 0 or 1."""
    from spikeport.eval.evaluate import accuracy_interval

    low, high = accuracy_interval(529, 540)
    assert abs(low - 0.96390) < 1e-4 and abs(high - 0.98859) < 1e-4
    assert accuracy_interval(0, 10)[0] == 0.0 and 0.27 < accuracy_interval(0, 10)[1] < 0.28
    assert accuracy_interval(10, 10)[1] == 1.0 and 0.72 < accuracy_interval(10, 10)[0] < 0.73
    small, big = accuracy_interval(45, 50), accuracy_interval(4500, 5000)
    assert big[1] - big[0] < small[1] - small[0]
    assert accuracy_interval(0, 0) == [0.0, 1.0]


def test_paired_with_ann_is_the_exact_mcnemar_test():
    """Only the samples the two networks disagree on count: 5 the ANN alone gets right
    against 0 is p = 2 / 2^5; the samples both get right or both wrong change nothing."""
    import numpy as np

    from spikeport.eval.evaluate import paired_with_ann

    ann = np.array([True] * 95 + [False] * 5)
    snn = ann.copy()
    snn[:5] = False
    assert paired_with_ann(snn, ann) == {"ann_only": 5, "snn_only": 0, "p_value": 0.0625}
    snn[95:97] = True  # two the ANN misses: 5 against 2
    res = paired_with_ann(snn, ann)
    assert (res["ann_only"], res["snn_only"]) == (5, 2) and abs(res["p_value"] - 0.453125) < 1e-9
    assert paired_with_ann(ann, ann)["p_value"] == 1.0  # no disagreement: nothing to tell
