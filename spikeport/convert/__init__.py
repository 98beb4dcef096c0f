"""ONNX import, calibration, threshold balancing and neuron insertion."""

from spikeport.convert.balance import DEFAULT_PERCENTILE, balance_thresholds
from spikeport.convert.onnx_import import import_onnx
from spikeport.convert.pipeline import DEFAULT_TIMESTEPS, convert, import_model

__all__ = [
    "DEFAULT_PERCENTILE",
    "DEFAULT_TIMESTEPS",
    "balance_thresholds",
    "convert",
    "import_model",
    "import_onnx",
]
