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
from spikeport.sim import Simulator

ACTIVITY_SAMPLES = 16
ACTIVITY_STEPS = 8


def calibration_activity(graph: Graph, calib_x: Batch, max_timesteps: int) -> dict[str, float]:
    """{synaptic input tensor: fraction of its values that are nonzero}, over the steps of
    T = min(ACTIVITY_STEPS, max_timesteps) on the first ACTIVITY_SAMPLES calibration inputs."""
    inputs = {n.inputs[0] for n in graph.nodes if OPS[n.op].synaptic}
    if not inputs:
        return {}
    x = take(calib_x, slice(0, ACTIVITY_SAMPLES))
    res = Simulator(graph, "int").run(x, min(ACTIVITY_STEPS, max_timesteps), record=inputs)
    assert res.trace is not None
    return {t: round(float(np.count_nonzero(res.trace[t]) / res.trace[t].size), 4) for t in inputs}
