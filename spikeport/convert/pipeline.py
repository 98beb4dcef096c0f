"""`convert`: source model + calibration data -> float spiking graph (stage "snn")."""

from __future__ import annotations

import os
from pathlib import Path

from spikeport import __version__
from spikeport.convert.balance import (
    DEFAULT_INPUT_PERCENTILE,
    DEFAULT_PERCENTILE,
    balance_thresholds,
)
from spikeport.convert.calibrate import collect, ir_runner, onnx_runner
from spikeport.convert.onnx_import import import_onnx
from spikeport.data import load_data
from spikeport.errors import BadInput
from spikeport.ir.graph import Graph

DEFAULT_TIMESTEPS = 4


def import_model(path: str | os.PathLike[str]) -> Graph:
    """Read a source model by its extension into an "ann" graph."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return import_onnx(path)
    if suffix == ".tflite":
        from spikeport.convert.tflite_import import import_tflite  # needs ai-edge-litert

        return import_tflite(path)
    raise BadInput(f"{path}: unknown model format '{suffix}' (supported: .onnx, .tflite)")


def convert(
    model: str | os.PathLike[str],
    calib: str | os.PathLike[str],
    percentile: float = DEFAULT_PERCENTILE,
    per_channel: bool = True,
    signed: bool = False,
    timesteps: int = DEFAULT_TIMESTEPS,
    input_percentile: float = DEFAULT_INPUT_PERCENTILE,
) -> Graph:
    """Import, calibrate on `calib` (onnxruntime, or LiteRT for .tflite) and balance thresholds."""
    if timesteps < 1:
        raise BadInput(f"-T must be at least 1, got {timesteps}")
    ann = import_model(model)
    data = load_data(calib, ann.inputs)
    if ann.meta["source"]["format"] == "tflite":
        from spikeport.convert.litert import litert_runner

        stats = collect(ann, litert_runner(model, ann), data.x)
    elif ann.meta["source"].get("sequence_model"):
        # Sequence models read tensors that exist only in the IR (the inputs of fused linear
        # layers): their ANN view, tested equal to onnxruntime, is the calibration runner.
        stats = collect(ann, ir_runner(ann), data.x)
    else:
        stats = collect(ann, onnx_runner(model), data.x)
    snn = balance_thresholds(ann, stats, percentile, per_channel, signed, input_percentile)
    snn.meta["calibration"] = data.provenance
    snn.meta["default_timesteps"] = timesteps
    snn.meta["spikeport_version"] = __version__
    return snn
