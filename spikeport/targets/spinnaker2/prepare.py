"""Prepare, then run: build the network and refuse, naming the layer, whatever the chip cannot
hold, before anything is written. After this, emit and the chip model run without checks.

Checks: weight and delay range of each population's neuron model, synapses per neuron
(MAX_FANIN; an output with more is spread over partial accumulators the host adds up),
float32-exact parameters, PEs on one chip. Neurons whose negative bias would
make them fire while they wait for their first spikes get that bias from a clock instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Graph
from spikeport.targets.spinnaker2 import capabilities as cap
from spikeport.targets.spinnaker2.plan import (
    Network,
    Population,
    Projection,
    build_network,
    refuse,
)


def merge_projections(net: Network) -> None:
    """One projection per (pre, post) pair, as py-spinnaker2 scripts build them."""
    groups: dict[tuple[str, str], list[Projection]] = defaultdict(list)
    for p in net.projections:
        groups[(p.pre, p.post)].append(p)
    net.projections = [
        Projection(pre, post, np.concatenate([p.conns for p in ps]).astype(np.int64), ps[0].layer)
        for (pre, post), ps in groups.items()
    ]


def split_output(net: Network) -> None:
    """Spread the output over partial accumulators of at most MAX_FANIN synapses a neuron,
    which the host adds up (a global average pool folded into the output dense reads every
    cell of every channel: 3,072 synapses a neuron on a 48-channel 8x8 map). Exact: the
    output never fires, so its potential is the sum over steps of its synapses' currents,
    and partial sums of them add up to it. The first part keeps the bias and host input."""
    out = net.populations[net.output]
    into = net.incoming(out.name)
    if not into:
        return
    conns = np.concatenate([p.conns for p in into])
    source = np.repeat(np.arange(len(into)), [len(p.conns) for p in into])
    post = conns[:, 1].astype(np.int64)
    order = np.argsort(post, kind="stable")
    first = np.searchsorted(post[order], post[order])  # where each neuron's synapses start
    part = np.empty(len(post), np.int64)
    part[order] = (np.arange(len(post)) - first) // cap.MAX_FANIN
    if part.max(initial=0) == 0:
        return
    net.projections = [p for p in net.projections if p.post != out.name]
    net.output_parts = [out.name]
    for k in range(int(part.max()) + 1):
        name = out.name if k == 0 else f"{out.name}.part{k}"
        if k:
            zero = np.zeros(out.size, np.int64)
            net.add(replace(out, name=name, v0=zero, i_offset=zero, input_conns=None))
            net.output_parts.append(name)
        for j, proj in enumerate(into):
            mine = conns[(part == k) & (source == j)]
            if len(mine):
                net.projections.append(Projection(proj.pre, name, mine, proj.layer))


def hardware_v_init(pop: Population) -> np.ndarray:
    """The chip's starting potential: the specification's v0, plus the compare offset (neurons
    that fire), minus the current integrated while no spike can have arrived yet (precharge)."""
    offset = 0 if pop.role == "output" else cap.compare_offset()
    return np.asarray(pop.v0, np.int64) + offset - pop.depth * np.asarray(pop.i_offset, np.int64)


def input_current_bound(pop: Population, input_bits: int = 8) -> np.ndarray:
    """Largest |host current| a neuron can get from the int8 input (zero without one)."""
    bound = np.zeros(pop.size)
    if pop.input_conns is not None:
        lim = (1 << (input_bits - 1)) - 1
        c = pop.input_conns
        np.add.at(bound, c[:, 1].astype(np.int64), np.abs(c[:, 2]) * lim)
    return bound


def _check_fanin(net: Network, pop: Population) -> None:
    fanin = np.zeros(pop.size, np.int64)
    for p in net.incoming(pop.name):
        np.add.at(fanin, p.conns[:, 1].astype(np.int64), 1)
    if fanin.max(initial=0) > cap.MAX_FANIN:
        raise refuse(
            pop.layer,
            "synapses",
            f"fan-in {int(fanin.max())} synapses per neuron into '{pop.name}' exceeds the "
            f"SpiNNaker2 limit {cap.MAX_FANIN}",
        )


DELAY_WHY = (
    " (it needs delays: its inputs arrive at different depths); quantize with --target "
    "spinnaker2 (4-bit weights)"
)


def _check_synapses(net: Network, pop: Population) -> None:
    model = cap.NEURON_MODELS[pop.model]
    for p in net.incoming(pop.name):
        w, d = np.abs(p.conns[:, 2]).max(initial=0), p.conns[:, 3].max(initial=0)
        if w > model.weight_limit:
            why = DELAY_WHY if model.name == cap.DELAY_MODEL else ""
            lim = model.weight_limit
            raise refuse(
                p.layer,
                "synapses",
                f"synapse weights into '{pop.name}' reach {int(w)}, beyond the [-{lim}, {lim}] "
                f"of neuron model '{model.name}'{why}",
            )
        if d > model.max_delay:
            raise refuse(
                p.layer, "synapses", f"needs a delay of {int(d)}, beyond {model.max_delay}"
            )


def _needs_clock(pop: Population) -> np.ndarray:
    """Neurons that cannot precharge: while waiting for their first spikes, v climbs down from
    v_init = v0 + (depth) * |bias|; it must not reach theta on the way (spec: v >= theta)."""
    if pop.role != "neuron" or pop.depth < 2:
        return np.zeros(pop.size, bool)
    neg = np.maximum(-np.asarray(pop.i_offset, np.int64), 0)
    return np.asarray(pop.v0) + (pop.depth - 1) * neg >= np.asarray(pop.threshold)


def _clock(net: Network, start: int, size: int) -> Population:
    """Neurons that fire at every step from `start` on: i_offset 1, threshold 1, v0 = -start."""
    name = f"clock{start}"
    old = net.populations.get(name)
    if old is None or old.size < size:
        one = np.ones(size, np.int64)
        net.add(Population(name, size, "clock", name, name, one, -start * one, one))
    return net.populations[name]


def add_clocks(net: Network) -> None:
    """Deliver the bias of neurons that cannot precharge as synapses from a clock population
    that starts firing when their first input spikes arrive; their i_offset becomes 0."""
    for pop in list(net.populations.values()):
        moved = _needs_clock(pop)
        if not moved.any():
            continue
        w_max = cap.NEURON_MODELS[pop.model].weight_limit
        bias = np.where(moved, np.asarray(pop.i_offset, np.int64), 0)
        pieces = -(-np.abs(bias) // w_max)
        clock = _clock(net, pop.depth - 1, int(pieces.max()))
        rows = []
        for j in np.flatnonzero(moved):
            w = np.full(pieces[j], w_max * np.sign(bias[j]))
            w[-1] = bias[j] - w[:-1].sum()
            rows.append(np.stack([np.arange(pieces[j]), np.full(pieces[j], j), w, 0 * w], 1))
        net.projections.append(Projection(clock.name, pop.name, np.concatenate(rows), pop.layer))
        pop.i_offset = np.where(moved, 0, pop.i_offset)


def _check_float(pop: Population) -> None:
    peak = max(
        float(np.abs(pop.threshold).max(initial=0)),
        float((np.abs(pop.i_offset) + input_current_bound(pop)).max(initial=0)),
        float(np.abs(hardware_v_init(pop)).max(initial=0)),
    )
    if peak > cap.FLOAT_EXACT:
        raise refuse(
            pop.layer,
            "params",
            f"a parameter of '{pop.name}' reaches {peak:.0f}, beyond the {cap.FLOAT_EXACT} "
            "that float32 holds exactly",
        )


def cores_needed(net: Network, neurons_per_core: int = cap.NEURONS_PER_CORE) -> int:
    return sum(-(-p.size // neurons_per_core) for p in net.populations.values())


def _check_partial_sums(net: Network, max_t: int) -> None:
    """Each partial accumulator holds a running sum of its own, which can pass the whole
    output's proven bound where the parts cancel: it must stay float32-exact for max-T steps."""
    for name in net.output_parts:
        pop = net.populations[name]
        step = np.abs(np.asarray(pop.i_offset, np.float64)) + input_current_bound(pop)
        for p in net.incoming(name):
            np.add.at(step, p.conns[:, 1].astype(np.int64), np.abs(p.conns[:, 2]))
        peak = float((step * max_t + np.abs(np.asarray(pop.v0))).max(initial=0))
        if peak > cap.FLOAT_EXACT:
            raise refuse(
                pop.layer,
                "synapses",
                f"the partial output '{name}' can reach {peak:.0f} within {max_t} steps, beyond "
                f"the {cap.FLOAT_EXACT} that float32 holds exactly; quantize with a lower --max-T",
            )


def prepare(graph: Graph) -> Network:
    """The checked network of an integer graph (raises CapabilityExceeded naming the layer)."""
    net = build_network(graph, "int")
    add_clocks(net)
    merge_projections(net)
    split_output(net)
    if len(net.output_parts) > 1:
        _check_partial_sums(net, int(graph.meta["quantization"]["max_timesteps"]))
    for pop in net.populations.values():
        _check_synapses(net, pop)
        _check_fanin(net, pop)
        _check_float(pop)
    cores = cores_needed(net)
    if cores > cap.CORES_PER_CHIP:
        raise CapabilityExceeded(
            f"the network needs {cores} PEs at {cap.NEURONS_PER_CORE} neurons per core; one "
            f"SpiNNaker2 chip has {cap.CORES_PER_CHIP} (target 'spinnaker2')"
        )
    return net


def check_structure(graph: Graph) -> None:
    """Quantize-time check of a float graph (no integers yet): ops, max pooling inputs, the
    input/spike mix, and synapses per neuron on the chip."""
    net = build_network(graph, "float")
    merge_projections(net)
    split_output(net)
    for pop in net.populations.values():
        _check_fanin(net, pop)
