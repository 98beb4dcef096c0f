"""quantize calibrates its ranges on what the spiking network can carry."""

from __future__ import annotations

import numpy as np
from conftest import EXAMPLES

from spikeport.convert import convert
from spikeport.data import load_data
from spikeport.ir.ops import spike_levels
from spikeport.quantize.quantize import _clipped_view
from spikeport.sim import Simulator


def _peaks(sim: Simulator, x: np.ndarray) -> dict[str, float]:
    peaks: dict[str, float] = {}

    def see(name: str, v: np.ndarray) -> None:
        peaks[name] = max(peaks.get(name, 0.0), float(np.abs(v).max(initial=0)))

    sim.run(x, 1, observe=see)
    return peaks


def test_quantize_ranges_come_from_the_view_with_each_neuron_clipped_to_its_code():
    """The ANN view quantize reads its ranges from clips every neuron to what its rate can
    code (+-theta times its levels, 0 up for ReLU's): a T-aware graph's refitted weights fit
    the spiking network's rates, and fed the ANN's unclipped activations instead their view
    drifted 10^5 times past the ANN on a real OCR model, and quantize's integers with it
    (docs/results.md: weight refit). Downstream, the clipped view is what the neurons feed."""
    model, calib = EXAMPLES / "digits_cnn.onnx", EXAMPLES / "digits_calib.npz"
    snn = convert(model, calib, timesteps=2, tune=False)
    neuron = next(n for n in snn.nodes if n.op == "if")
    neuron.params["threshold"] = neuron.params["threshold"] / 10  # so that the clip bites
    x = load_data(calib, snn.inputs).x[:64]
    clipped, ann = _peaks(_clipped_view(snn), x), _peaks(Simulator(snn, "ann"), x)
    top = float(neuron.params["threshold"].max()) * spike_levels(neuron)
    assert clipped[neuron.output] <= top * (1 + 1e-6) < ann[neuron.output]
    reader = snn.consumers(neuron.output)[0]
    assert clipped[reader.output] < ann[reader.output]
    others = [n.output for n in snn.nodes if n.op != "if" and n.output != reader.output]
    assert all(clipped[t] > 0 for t in others)
