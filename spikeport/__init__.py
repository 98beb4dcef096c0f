"""spikeport: pretrained ANN (ONNX) -> calibrated, quantised spiking network -> edge targets."""

__version__ = "0.1.0"
