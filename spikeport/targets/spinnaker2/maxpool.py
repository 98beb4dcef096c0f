"""Expectation-compensated max pooling of spike trains, exactly, with `lif` populations.

The specification's max pooling emits out_t = max_i S_t(i) - max_i S_{t-1}(i), S the running
spike counts of the window's inputs. On spike trains (0/1 per step) out_t is 0 or 1: 1 exactly
when an input that was a leader (S_{t-1}(i) = max) fires. Windows are reduced as a binary tree of
pairs (A, B), D = S_A - S_B. Each pair is two comparator neurons whose spikes are mutually
exclusive and sum to the pair's own max-increment train:

  X_a fires iff A fires and D_{t-1} >= 0          u = K e_A(t) + D_{t-1}
  X_b fires iff B fires and (D_{t-1} < 0, or D_{t-1} = 0 and A does not fire)
                                                  u = K e_B(t) - e_A(t) - D_{t-1}

both with threshold K and v0 = 0, so u >= K is the test. u is built from synapses only:
K e(t) - (K - 1) e(t - 1) uses two connections one step apart, D_{t-1} weights +-1 one step
late, and a self-connection of weight K undoes each reset by subtraction a step later, so u
never forgets. This is exact while |D| < K, i.e. for T <= K = 15 with 4-bit `lif` weights.
Padded window cells are missing inputs (a train that never fires), which the pairs handle.
A final OR population (threshold 1, inputs 1 from the root pair) carries the pooled spikes.
Latency: one step per tree level, one for the OR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Node
from spikeport.sim import kernels as K
from spikeport.targets.spinnaker2 import capabilities as cap
from spikeport.targets.spinnaker2.plan import Builder, Population, Projection, decompose, refuse

COMPARATOR_WEIGHT = cap.NEURON_MODELS[cap.DELAY_MODEL].weight_limit  # K
MAX_TIMESTEPS = COMPARATOR_WEIGHT  # exact while a count difference stays below K


@dataclass
class Part:
    """Neurons `index` (one per output unit; -1: none) of population `pop`, at `depth`."""

    pop: str
    index: np.ndarray
    depth: int


Train = list[Part]  # mutually exclusive parts whose spikes sum to one train


def _windows(b: Builder, node: Node) -> np.ndarray:
    """(units, cells): flat input index of every window cell, -1 for padding."""
    shape = b.graph.shape(node.inputs[0])
    idx = np.arange(int(np.prod(shape))).reshape((1,) + shape)
    a = node.attrs
    win = K.windows(idx, a["kernel"], a["strides"], a["pads"], pad_value=-1)
    return win.reshape(-1, a["kernel"][0] * a["kernel"][1])


def _check_timesteps(b: Builder, node: Node) -> None:
    max_t = b.graph.meta.get("quantization", {}).get("max_timesteps")
    if b.mode == "int" and max_t is not None and max_t > MAX_TIMESTEPS:
        raise refuse(
            node.name,
            node.op,
            f"the max-pooling comparators are exact for T <= {MAX_TIMESTEPS} only (4-bit "
            f"`lif` weights), this graph is proven for T <= {max_t}: quantize with "
            f"--max-T {MAX_TIMESTEPS}",
        )


def _not_spikes(b: Builder, node: Node, why: str) -> CapabilityExceeded:
    return refuse(
        node.name,
        node.op,
        f"its input is not spikes of neuron layers nor sums of them ({why}); the "
        "expectation-compensated max maps to the chip only on spike counts",
    )


def _spike_sources(b: Builder, node: Node) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The spike neurons each input unit sums, one slot each: (population number, index),
    both (units, slots), -1 in unused slots; and the populations.

    A concat or reshape of neuron spikes is one spike a unit (one slot); an average pool of
    them sums up to its window (a count per step, many slots); anything that weights spikes
    (a conv) or reads the network input is refused."""
    src = node.inputs[0]
    if src in b.net.sources:
        n = int(np.prod(b.graph.shape(src)))
        return np.zeros((n, 1), np.int64), np.arange(n)[:, None], [b.net.sources[src]]
    aff = decompose(b.graph, src, b.leaves, b.mode)
    n, pops, entries = len(aff.const), [], []
    for leaf, conns in aff.parts.items():
        if leaf not in b.net.sources:
            raise _not_spikes(b, node, "it is computed from the network input")
        w = conns[:, 2]
        one = w == 1 if b.mode == "int" else np.isclose(w, w[0]) & (w > 0)
        if not np.all(one):
            raise _not_spikes(b, node, f"it weights spikes: {_culprit(b, src)}")
        entries.append((len(pops), conns[:, 1].astype(np.int64), conns[:, 0].astype(np.int64)))
        pops.append(b.net.sources[leaf])
    if np.any(aff.const != 0):
        raise _not_spikes(b, node, f"it adds a constant: {_culprit(b, src)}")
    hits = np.zeros(n, np.int64)
    for _, sink, _ in entries:
        np.add.at(hits, sink, 1)
    pop_of = np.full((n, max(int(hits.max(initial=1)), 1)), -1)
    idx_of = np.full(pop_of.shape, -1)
    slot = np.zeros(n, np.int64)
    for k, sink, index in entries:
        for s_i, i in zip(sink, index, strict=True):  # small: a pool window's cells
            pop_of[s_i, slot[s_i]], idx_of[s_i, slot[s_i]] = k, i
            slot[s_i] += 1
    return pop_of, idx_of, pops


def _culprit(b: Builder, tensor: str) -> str:
    """The first op on the way back from `tensor` that is not pure data movement."""
    node = b.graph.producer(tensor)
    while node is not None and node.op in ("reshape", "concat") and len(node.inputs) == 1:
        node = b.graph.producer(node.inputs[0])
    if node is None or node.op in ("reshape", "concat"):
        return "a concat or reshape with a bias or overlap"
    return f"'{node.name}' ({node.op}) adds several spikes or weights them"


def _cell_train(
    b: Builder, cells: np.ndarray, pop_of: np.ndarray, idx_of: np.ndarray, pops: list[str]
) -> Train:
    """One window cell's train over all units: a part per population it reads (a concat
    puts channel blocks of several populations in one window cell; at most one fires per
    unit, so the parts stay mutually exclusive). -1 marks padding and other populations."""
    safe = np.maximum(cells, 0)
    train = []
    for k, pop in enumerate(pops):
        mine = (cells >= 0) & (pop_of[safe] == k)
        if mine.any():
            index = np.where(mine, idx_of[safe], -1)
            train.append(Part(pop, index, b.net.populations[pop].depth))
    if not train:  # a cell that is padding for every unit: a train that never fires
        train.append(Part(pops[0], np.full(len(cells), -1), b.net.populations[pops[0]].depth))
    return train


def _connect(b: Builder, train: Train, post: Population, post_idx: np.ndarray, wd: list) -> None:
    """Connect every part of `train` to `post`: (weight, extra delay) pairs, aligned to depth."""
    for part in train:
        ok = part.index >= 0
        for weight, extra in wd:
            delay = post.depth - part.depth - 1 + extra
            conns = np.stack(
                [
                    part.index[ok],
                    post_idx[ok],
                    np.full(ok.sum(), weight),
                    np.full(ok.sum(), delay),
                ],
                axis=1,
            )
            b.net.projections.append(Projection(part.pop, post.name, conns, post.layer))


def _comparators(b: Builder, node: Node, level: int, size: int, depth: int) -> list[Population]:
    kw = COMPARATOR_WEIGHT
    pops = []
    for side in "ab":
        pop = Population(
            f"{node.name}/max{level}{side}",
            size,
            "comparator",
            node.name,
            node.name,
            np.full(size, kw),
            np.zeros(size, np.int64),
            np.zeros(size, np.int64),
            depth=depth,
        )
        b.net.add(pop)
        eye = np.arange(size)
        self_conns = np.stack([eye, eye, np.full(size, kw), np.zeros(size, np.int64)], axis=1)
        b.net.projections.append(Projection(pop.name, pop.name, self_conns, node.name))
        pops.append(pop)
    return pops


def _level(b: Builder, node: Node, trains: list[Train], level: int, units: int) -> list[Train]:
    """Pair up the trains of every window; an odd one out passes through unchanged."""
    pairs = [(trains[i], trains[i + 1]) for i in range(0, len(trains) - 1, 2)]
    depth = max(p.depth for pair in pairs for t in pair for p in t) + 1
    xa, xb = _comparators(b, node, level, units * len(pairs), depth)
    kw = COMPARATOR_WEIGHT
    out: list[Train] = []
    for k, (a, bt) in enumerate(pairs):
        idx = np.arange(units) * len(pairs) + k
        _connect(b, a, xa, idx, [(kw, 0), (-(kw - 1), 1)])
        _connect(b, bt, xa, idx, [(-1, 1)])
        _connect(b, bt, xb, idx, [(kw, 0), (-(kw - 1), 1)])
        _connect(b, a, xb, idx, [(-1, 0)])
        out.append([Part(xa.name, idx, depth), Part(xb.name, idx, depth)])
    return out + ([trains[-1]] if len(trains) % 2 else [])


def build_maxpool(b: Builder, node: Node) -> None:
    """Add the comparator tree and its output population; its spikes are the pooled output.
    One spike per unit: the 0/1 comparators (T <= 15); counts: the graded tree (any T)."""
    pop_of, idx_of, pops = _spike_sources(b, node)
    win = _windows(b, node)
    units = len(win)
    if pop_of.shape[1] > 1:
        from spikeport.targets.spinnaker2.maxpool_graded import build_graded

        cells = [_graded_cell(b, win[:, j], pop_of, idx_of, pops) for j in range(win.shape[1])]
        out = build_graded(b, node, cells, pop_of.shape[1], units)
        b.net.sources[node.output] = out.name
        b.leaves.add(node.output)
        return
    _check_timesteps(b, node)
    trains = [
        _cell_train(b, win[:, j], pop_of[:, 0], idx_of[:, 0], pops) for j in range(win.shape[1])
    ]
    level = 0
    while len(trains) > 1:
        level += 1
        trains = _level(b, node, trains, level, units)
    depth = max(p.depth for p in trains[0]) + 1
    out = Population(
        node.name,
        units,
        "maxpool",
        node.name,
        node.name,
        np.ones(units, np.int64),
        np.zeros(units, np.int64),
        np.zeros(units, np.int64),
        depth=depth,
    )
    b.net.add(out)
    _connect(b, trains[0], out, np.arange(units), [(1, 0)])
    b.net.sources[node.output] = out.name
    b.leaves.add(node.output)


def _graded_cell(
    b: Builder, cells: np.ndarray, pop_of: np.ndarray, idx_of: np.ndarray, pops: list[str]
) -> list:
    """One window cell's count: a term per (slot, population), weight 1, -1 where none."""
    from spikeport.targets.spinnaker2.maxpool_graded import Term

    safe = np.maximum(cells, 0)
    terms = []
    for s in range(pop_of.shape[1]):
        for k, pop in enumerate(pops):
            mine = (cells >= 0) & (pop_of[safe, s] == k)
            if mine.any():
                index = np.where(mine, idx_of[safe, s], -1)
                terms.append(Term(pop, index, 1, b.net.populations[pop].depth))
    return terms
