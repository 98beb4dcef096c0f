"""SpiNNaker2 target: a py-spinnaker2 network (JSON + runnable script), verified bit for bit
against the reference simulator on spikeport's model of the chip's `lif` neuron (chip.py).
That model is not the hardware; capabilities.py lists every assumption it makes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from spikeport.ir.graph import Graph
from spikeport.quantize.profiles import Profile
from spikeport.targets import Target, register_target
from spikeport.targets.compare import check_equal, check_in_batches, reference
from spikeport.targets.spinnaker2 import capabilities as cap
from spikeport.targets.spinnaker2.chip import ChipModel, aligned
from spikeport.targets.spinnaker2.netjson import MODEL_NOTE, to_json
from spikeport.targets.spinnaker2.plan import SPINNAKER2_OPS, Network
from spikeport.targets.spinnaker2.prepare import check_structure, cores_needed, prepare

TEMPLATES = Path(__file__).resolve().parent / "templates"
BATCH = 256


def _profile(name: str, model: str) -> Profile:
    """Weights as wide as `model` takes; 25-bit state and bias (exact in float32); an add is
    quantized jointly with its inputs so that its composed synapse weights fit that width."""
    bits = cap.NEURON_MODELS[model].weight_bits
    return Profile(
        name,
        weight_bits=bits,
        bias_bits=cap.STATE_BITS,
        state_bits=cap.STATE_BITS,
        input_bits=8,
        mult_bits=bits,
        fold_add=True,  # the chip has synapses only: an add becomes weights into its neurons
        signed_spikes=False,
        max_spike_bits=1,  # py-spinnaker2's populations exchange spike events, no payload
        spike_bits_why="a py-spinnaker2 spike is an event with no payload",
        max_fanin=None,  # checked on the chip's synapses only (the first layer runs on the host)
        ops=frozenset(SPINNAKER2_OPS),
        check=_check,
    )


def _check(graph: Graph) -> None:
    """The profile's own check (quantize and emit): the network must build and fit."""
    if graph.stage == "int":
        prepare(graph)
    else:
        check_structure(graph)


# 4-bit signed weights by default: they fit every neuron model (so any layer may take a delay)
# and keep the first layer's state below 2^24; on the digits examples they cost no accuracy.
PROFILE = _profile("spinnaker2", cap.DELAY_MODEL)
# 8-bit weights for `lif_no_delay`: for networks whose weighted layers need no delay and whose
# state fits float32 at that width (emit refuses, naming the layer, where one does not).
PROFILE_8BIT = _profile("spinnaker2-8bit", cap.DEFAULT_MODEL)


def _assumptions() -> str:
    return "\n".join(
        [
            f"- update per step: `v = alpha_decay * v + i_offset + sum(w * s)`, alpha_decay = "
            f"{cap.ALPHA_DECAY}; spike when `v {cap.COMPARE} threshold`; then `v -= threshold`",
            f"- a spike reaches its targets {cap.SYNAPSE_DELAY_STEPS} step + `delay` later",
            "- state and parameters are float32 (integers up to 2^24 exact)",
            "- two connections between the same two neurons with different delays both act "
            "(max pooling uses them)",
            "- `get_voltages()` gives the potential after each step's update; `get_spikes()` "
            "counts steps from 0",
            f"- at most {cap.MAX_FANIN} synapses per neuron (a placeholder: no source states it)",
        ]
    )


def _summary(net: Network) -> str:
    rows = [
        "| population | role | spikeport node | neurons | model | depth |",
        "|---|---|---|---:|---|---:|",
    ]
    for p in net.populations.values():
        rows.append(f"| {p.name} | {p.role} | {p.node} | {p.size} | {p.model} | {p.depth} |")
    syn = sum(len(p.conns) for p in net.projections)
    rows.append("")
    rows.append(
        f"{len(net.populations)} populations, {len(net.projections)} projections, {syn} "
        f"synapses; {cores_needed(net)} PEs at {cap.NEURONS_PER_CORE} neurons per core."
    )
    return "\n".join(rows)


MAXPOOL_NOTE = """- Max pooling (expectation-compensated) runs as comparator populations, neuron
  model `lif`, with self-connections and pairs of synapses one step apart: on spike trains
  `*/max*a|b` and an OR population (exact for T <= 15); on counts (an average pool of
  spikes) `*/gmax*`, `*/gunary` and a population sending each pooled unit as bits worth
  1, 2, 4, 8 (exact for any T). See docs/targets-spinnaker2.md in spikeport."""


def emit(graph: Graph, outdir: Path) -> dict[str, Any]:
    """network.json, run_spinnaker2.py and README.md (the checks ran in check_fits)."""
    net = prepare(graph)
    doc = to_json(net)
    (outdir / "network.json").write_text(json.dumps(doc) + "\n")
    shutil.copyfile(TEMPLATES / "run_spinnaker2.py", outdir / "run_spinnaker2.py")
    readme = Template((TEMPLATES / "README.md.tmpl").read_text()).substitute(
        assumptions=_assumptions(),
        summary=_summary(net),
        steps_ahead=net.steps_ahead,
        out_threshold=cap.FLOAT_EXACT,
        output_scale=doc["output"]["scale"],
        maxpool=MAXPOOL_NOTE if any(p.role == "maxpool" for p in net.populations.values()) else "",
    )
    (outdir / "README.md").write_text(readme)
    return {
        "populations": len(net.populations),
        "synapses": int(sum(len(p.conns) for p in net.projections)),
        "pes": cores_needed(net),
        "steps_ahead": net.steps_ahead,
        "notes": [MODEL_NOTE],
    }


def verify(
    graph: Graph,
    outdir: Path,
    x: np.ndarray,
    T: int = 8,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run network.json in the chip model; compare every step with the simulator."""
    net = json.loads((outdir / "network.json").read_text())
    model = ChipModel(net)
    n = check_in_batches(
        x, BATCH, lambda chunk, first: check_batch(graph, net, model, chunk, T, first), progress
    )
    runner = "spikeport's model of the SpiNNaker2 lif neuron, not the hardware"
    return {"samples": n, "timesteps": T, "runner": runner}


def check_batch(
    graph: Graph, net: dict[str, Any], model: ChipModel, x: np.ndarray, T: int, first: int = 0
) -> None:
    codes, ref_spikes, ref_acc = reference(graph, x, T)
    run = model.run(codes.reshape(len(x), -1), T + net["steps_ahead"])
    got_spikes, got_acc = aligned(net, run, T)
    check_equal("SpiNNaker2 model", ref_spikes, ref_acc, got_spikes, got_acc, first)


DESCRIPTION = "SpiNNaker2 via py-spinnaker2 (verified on spikeport's chip model, not hardware)"
TARGET = register_target(Target("spinnaker2", PROFILE, emit, verify, DESCRIPTION))
TARGET_8BIT = register_target(Target("spinnaker2-8bit", PROFILE_8BIT, emit, verify, DESCRIPTION))
