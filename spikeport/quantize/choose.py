"""Pick the neuron kind of a target that runs several (Lava: LIF "lava" or sigma-delta "sdn")
by measurement: quantize the graph in every kind (and, for "sdn", every delta threshold of
SDN_VTH_DIVISORS), run each on the calibration data for max_timesteps steps in the integer
simulator, and keep the one whose predictions agree most with the ANN's (the calibration
labels are not needed, and the ANN is what conversion approximates); ties go to fewer events.
The scores of every candidate, and why any was refused, go into meta["quantization"]
["kind_choice"]. Where even the best answers one class for every sample (and the ANN does
not), quantize refuses the graph, naming the first neuron that stays silent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from spikeport.batch import Batch, size, take
from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph
from spikeport.ir.ops import class_scores
from spikeport.quantize.profiles import Profile
from spikeport.sim.kinds import SDN, SDN_VTH_DIVISORS

CHOICE_SAMPLES = 256  # calibration inputs the choice is measured on (the first ones)
SILENT_SAMPLES = 8  # of which a refusal records every layer on, to name the silent one


def _candidates(profile: Profile) -> list[tuple[Profile, int]]:
    """(profile of one kind, delta threshold divisor); the default kind's profile without its
    alternatives, so that its checks hold the graph to that kind alone."""
    out = []
    for p in (dataclasses.replace(profile, kind_profiles=()), *profile.kind_profiles):
        divisors = SDN_VTH_DIVISORS if p.neuron_kind == SDN else SDN_VTH_DIVISORS[1:2]
        out += [(p, d) for d in divisors]
    return out


def _score(graph: Graph, x: Batch, ann: np.ndarray, T: int) -> dict[str, Any]:
    from spikeport.sim import simulate

    res = simulate(graph, x, T, "int")
    pred = res.outputs[graph.outputs[0]][-1].reshape(size(x), -1).argmax(-1)
    return {
        "agreement": float((pred == ann).mean()),
        "events": float(res.spikes.sum() / size(x)),
        "classes_answered": int(len(np.unique(pred))),
    }


def _rank(entry: dict[str, Any]) -> tuple[float, float]:
    """More agreement first, then fewer events."""
    return entry["agreement"], -entry["events"]


def _refuse_if_constant(
    graph: Graph, q: Graph, x: Batch, ann: np.ndarray, best: dict[str, Any], target: str, T: int
) -> None:
    """Refuse where the best kind answers one class for every calibration sample while the
    ANN answers several: such a graph is proven free of overflow and computes nothing. Seen
    on residual and depthwise CNNs in kind "sdn" before its neurons were capped (kinds.py):
    the proven range of a neuron's input set its delta resolution, after an add a thousand
    times coarser than its calibrated activations, and the neuron never sent. A graph
    fine-tuned for "sdn" with delta thresholds beyond its inputs still does it. (Where the
    ANN itself answers one class, as random-weight test networks may, nothing can be told.)"""
    ann_classes = len(np.unique(ann))
    if best["classes_answered"] > 1 or ann_classes == 1:
        return
    silent = _first_silent_neuron(graph, q, take(x, slice(SILENT_SAMPLES)), T)
    where = f"; the first neuron layer silent at every step where the ANN's is not: '{silent}'"
    raise CapabilityExceeded(
        f"no neuron kind of target '{target}' carries this network: the best answers one class "
        f"for all {len(ann)} calibration samples at T = {T} (agreeing with the ANN on "
        f"{100 * best['agreement']:.1f} %), where the ANN answers {ann_classes}"
        + (where if silent else "")
    )


def _first_silent_neuron(graph: Graph, q: Graph, x: Batch, T: int) -> str | None:
    """The first neuron of `q` (in node order) whose output is zero at every step on `x` where
    the same node of the float `graph` has a nonzero ANN activation, or None."""
    from spikeport.sim.simulator import Simulator

    spikes = Simulator(q, "int").run(x, T, record=True).trace
    ann = Simulator(graph, "ann").run(x, 1, record=True).trace
    for node in q.nodes:
        if node.op == "if" and not spikes[node.output].any() and ann[node.output].any():
            return node.name
    return None


def choose_kind(
    graph: Graph, calib_x: Batch, profile: Profile, max_timesteps: int, weight_rounding: str
) -> Graph:
    """The quantized graph of the best-agreeing kind (see the module docstring);
    `weight_rounding` as quantize's."""
    from spikeport.quantize.quantize import quantize_kind
    from spikeport.sim import simulate

    x = take(calib_x, slice(0, min(size(calib_x), CHOICE_SAMPLES)))
    ann = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][-1]
    ann = ann.reshape(size(x), -1).argmax(-1)
    tried: list[dict[str, Any]] = []
    best: tuple[Graph, dict[str, Any]] | None = None
    candidates = _candidates(profile)
    caps = None  # the sigma-delta caps, the same for every delta threshold: measured once
    if any(p.neuron_kind == SDN for p, _ in candidates):
        from spikeport.convert.calibrate import activation_peaks

        caps = activation_peaks(graph, calib_x)
    for p, divisor in candidates:
        entry: dict[str, Any] = {"kind": p.neuron_kind}
        if p.neuron_kind == SDN:
            entry["vth_divisor"] = divisor
        try:
            q = quantize_kind(
                graph, calib_x, p, max_timesteps, divisor, caps, weight_rounding=weight_rounding
            )
            if p.check is not None:  # the target's own limits (Lava: each step's a_in), now,
                p.check(q)  # so that a kind that cannot hold the integer graph is not picked
        except CapabilityExceeded as e:  # this kind cannot hold the graph: try the others
            tried.append({**entry, "refused": str(e)})
            continue
        entry.update(_score(q, x, ann, max_timesteps))
        tried.append(entry)
        if best is None or _rank(entry) > _rank(best[1]):
            best = (q, entry)
    if best is None:  # every kind refused: say why each one did, on one line
        if len({c["refused"] for c in tried}) == 1:
            raise CapabilityExceeded(tried[0]["refused"])  # the same for every kind
        whys = {f"{c['kind']}: {c['refused']}" for c in tried}
        raise CapabilityExceeded(
            f"no neuron kind of target '{profile.name}' runs this graph; " + "; ".join(sorted(whys))
        )
    out = best[0]
    if class_scores(graph, graph.outputs[0]):
        _refuse_if_constant(graph, out, x, ann, best[1], profile.name, max_timesteps)
    out.meta["quantization"]["kind_choice"] = {
        "measured": "agreement with the ANN's argmax on the calibration data, int mode",
        "T": max_timesteps,
        "samples": size(x),
        "candidates": tried,
    }
    return out
