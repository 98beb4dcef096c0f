"""The emitted network.json: everything the py-spinnaker2 script and our chip model need.

Populations carry py-spinnaker2 `lif` params (threshold, alpha_decay, i_offset, v_init, v_reset,
reset) as integers (exact in float32); `input_current` lists [input index, neuron, weight] for
the host-side first layer (i_offset += sum weight * q[input index], per sample); projections
are [pre, post, weight, delay] lists. `probes` tell which population carries which spikeport
neuron layer and at which depth (its step t is hardware step depth + t - 1, 0-based).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from spikeport.sim.arith import input_bits, int_limit
from spikeport.targets.spinnaker2 import capabilities as cap
from spikeport.targets.spinnaker2.plan import Network, Population
from spikeport.targets.spinnaker2.prepare import hardware_v_init

FORMAT = "spikeport-spinnaker2-network"
VERSION = 1
MODEL_NOTE = (
    "spikeport verifies this network against its own model of SpiNNaker2's `lif` neuron "
    "(spikeport.targets.spinnaker2.chip), not against the hardware; the assumptions the model "
    "makes are listed under 'assumptions'."
)


def _ints(a: np.ndarray) -> list[Any]:
    return np.asarray(a).astype(np.int64).tolist()


def _population(pop: Population) -> dict[str, Any]:
    record = ["v"] if pop.role == "output" else ["spikes"]
    return {
        "name": pop.name,
        "role": pop.role,
        "node": pop.node,
        "layer": pop.layer,
        "size": pop.size,
        "neuron_model": pop.model,
        "depth": pop.depth,
        "params": {
            "threshold": _ints(pop.threshold),
            "alpha_decay": cap.ALPHA_DECAY,
            "i_offset": _ints(pop.i_offset),
            "v_init": _ints(hardware_v_init(pop)),
            "v_reset": 0,
            "reset": cap.RESET,
        },
        "input_current": None if pop.input_conns is None else _ints(pop.input_conns),
        "record": record,
    }


def to_json(net: Network) -> dict[str, Any]:
    g = net.graph
    out = net.populations[net.output]
    bits = input_bits(g)
    lim = int_limit(bits)
    return {
        "format": FORMAT,
        "version": VERSION,
        "note": MODEL_NOTE,
        "assumptions": {
            "compare": cap.COMPARE,
            "update_order": list(cap.UPDATE_ORDER),
            "synapse_delay_steps": cap.SYNAPSE_DELAY_STEPS,
            "float_exact": cap.FLOAT_EXACT,
            "record_v_after_update": cap.RECORD_V_AFTER_UPDATE,
            "max_fanin": cap.MAX_FANIN,
        },
        "neurons_per_core": cap.NEURONS_PER_CORE,
        "max_timesteps": g.meta["quantization"]["max_timesteps"],
        "steps_ahead": net.steps_ahead,
        "input": {
            "shape": list(g.input.shape),
            "size": int(np.prod(g.input.shape)),
            "scale": float(np.asarray(g.scales[g.input.name]).reshape(-1)[0]),
            "bits": bits,
            "encoding": f"q = clamp(floor(x / scale + 1/2), -{lim}, {lim})",
        },
        "populations": [_population(p) for p in net.populations.values()],
        "projections": [
            {"pre": p.pre, "post": p.post, "layer": p.layer, "connections": _ints(p.conns)}
            for p in net.projections
        ],
        "probes": [
            {"node": p.node, "population": p.name, "depth": p.depth, "size": p.size}
            for p in net.populations.values()
            if p.role == "neuron"
        ],
        "output": {
            "population": out.name,
            # the host adds these populations' potentials up (prepare.split_output)
            "parts": list(net.output_parts),
            "tensor": out.node,
            "depth": out.depth,
            "size": out.size,
            "scale": float(np.asarray(g.scales[out.node]).reshape(-1)[0]),
        },
    }
