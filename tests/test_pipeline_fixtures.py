"""Every model case goes through import, convert and quantize; its three simulator modes agree
with each other and with onnxruntime, in output values (not only argmax)."""

from __future__ import annotations

import numpy as np
import pytest

from spikeport.convert import convert, import_onnx
from spikeport.eval.evaluate import onnx_logits
from spikeport.ir.graph import Graph
from spikeport.ir.ops import ROW_LAYERS
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator, mean_output, simulate


def rel_error(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(a - ref) / np.linalg.norm(ref))


def test_ann_view_matches_onnxruntime(case):
    graph = import_onnx(case.onnx)
    ours = simulate(graph, case.test_x, 1, "ann").outputs[graph.outputs[0]][0]
    ref = onnx_logits(case.onnx, case.test_x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


@pytest.fixture
def percentile_int(case) -> Graph:  # noqa: ANN001
    """The case converted with percentile thresholds only (--no-t-aware), quantized: no bias
    moved and no threshold chosen for a T, so its rate code converges to the ANN."""
    snn = convert(case.onnx, case.calib, tune=False)
    return quantize(snn, np.load(case.calib)["x"], get_profile("sim"))


def test_converted_graph_keeps_ann_view(case):
    """Neurons read as ReLU in "ann" mode: the percentile conversion changed no weight, and
    the T-aware one (the case's) only thresholds, biases and the weights of the dense layers
    and convolutions it refits (convert/refit.py), in their shapes and types."""
    snn = convert(case.onnx, case.calib, tune=False)
    ours = simulate(snn, case.test_x, 1, "ann").outputs[snn.outputs[0]][0]
    ref = onnx_logits(case.onnx, case.test_x)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
    refitted = set(case.snn.meta["conversion"]["t_aware"]["refitted"])
    for tuned, plain in zip(case.snn.nodes, snn.nodes, strict=True):
        same = np.array_equal(tuned.params.get("weight"), plain.params.get("weight"))
        assert same != (tuned.name in refitted), tuned.name  # the record names those refitted
        for key in set(plain.params) - {"threshold", "bias", "beta"}:
            if key == "weight" and plain.op in ROW_LAYERS:
                assert tuned.params[key].shape == plain.params[key].shape
                assert tuned.params[key].dtype == plain.params[key].dtype
                assert np.all(np.isfinite(tuned.params[key]))
            else:
                np.testing.assert_array_equal(tuned.params[key], plain.params[key])


def test_spiking_output_converges_to_ann(case, percentile_int):
    """Rate coding converges: the mean output over T steps approaches the ANN's logits, in both
    float and integer mode, and the error shrinks with T (percentile conversion: the T-aware
    one is chosen for its T, and may trade the limit for it)."""
    ref = onnx_logits(case.onnx, case.test_x)
    for mode in ("float", "int"):
        out = mean_output(percentile_int, simulate(percentile_int, case.test_x, 64, mode), mode)
        errors = [rel_error(out[t - 1], ref) for t in (2, 8, 64)]
        assert errors[2] < 0.05, (mode, errors)
        assert errors[0] > errors[1] > errors[2], (mode, errors)


def test_int_mode_tracks_float_mode(case):
    """Quantization error is small next to conversion error: int vs float outputs at T=8."""
    f = mean_output(case.int, simulate(case.int, case.test_x, 8, "float"), "float")[-1]
    i = mean_output(case.int, simulate(case.int, case.test_x, 8, "int"), "int")[-1]
    assert rel_error(i, f) < 0.1


def test_int_mode_is_integer_and_deterministic(case):
    sim = Simulator(case.int, "int")
    a = sim.run(case.test_x[:8], 5, record=True)
    b = sim.run(case.test_x[:8], 5, record=True)
    for name, arr in a.trace.items():
        assert np.issubdtype(arr.dtype, np.integer), name
        np.testing.assert_array_equal(arr, b.trace[name])


def test_batching_does_not_change_results(case):
    whole = Simulator(case.int, "int").run(case.test_x[:20], 4).outputs[case.int.outputs[0]]
    parts = simulate(case.int, case.test_x[:20], 4, "int", batch_size=7).outputs[
        case.int.outputs[0]
    ]
    np.testing.assert_array_equal(whole, parts)
