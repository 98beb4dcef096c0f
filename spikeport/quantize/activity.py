"""Calibration activity: how often the inputs of each synaptic layer are nonzero.

A target whose kernels can follow the spikes (the C target's event-driven synapses) chooses
them by this rate, measured once here in integer mode on calibration data, where the network
sees what it will see in use, and recorded in the artifact (meta.quantization.activity).
"""

from __future__ import annotations

import numpy as np

from spikeport.batch import Batch, take
from spikeport.ir.graph import Graph
from spikeport.ir.ops import OPS

ACTIVITY_SAMPLES = 16
ACTIVITY_STEPS = 8


def calibration_activity(graph: Graph, calib_x: Batch, max_timesteps: int) -> dict[str, float]:
    """{synaptic input tensor: fraction of its values that are nonzero}, over the steps of
    T = min(ACTIVITY_STEPS, max_timesteps) on the first ACTIVITY_SAMPLES calibration inputs."""
    inputs = {n.inputs[0] for n in graph.nodes if OPS[n.op].synaptic}
    nonzero = dict.fromkeys(inputs, 0)
    count = dict.fromkeys(inputs, 0)

    def observe(tensor: str, values: np.ndarray) -> None:
        if tensor in nonzero:
            nonzero[tensor] += int(np.count_nonzero(values))
            count[tensor] += values.size

    if inputs:
        from spikeport.sim import Simulator  # here: the simulator's backend imports quantize

        x = take(calib_x, slice(0, ACTIVITY_SAMPLES))
        Simulator(graph, "int").run(x, min(ACTIVITY_STEPS, max_timesteps), observe=observe)
    return {t: round(nonzero[t] / max(count[t], 1), 4) for t in sorted(inputs)}
