"""Expectation-compensated max pooling of graded counts on the chip (an average pool of spikes:
each window cell receives 0..m spikes a step), exactly and for any T.

Same algebra as the NIR target's graded pool (targets/nir/maxpool_graded.py): for a pair of
cells (A, B) with counts a, b and D = S_A - S_B, the pair's max-increment is

  inc = b + relu(C + a - b) - relu(C),   C = clip(D(t-1), -m, m)

and every term is a sum of threshold neurons. On the chip each in-step layer is one
population a step deeper (plan.py's depths and delays):

  L1   [a >= k], [b >= k], [D(t-1) >= j], [-D(t-1) >= j]      (k, j = 1..m)
  L2   [C + a - b >= k]                                          (k = 1..2m)
  out  [inc >= k] (k = 1..m) of the root pair, then inc in binary, bit i = [sum_k (bit_i(k)
       - bit_i(k - 1)) [inc >= k] >= 1]: the pooled unit leaves as ceil(log2(m + 1)) neurons
       worth 1, 2, 4, 8 (Population.code), so the next layer reads 4 synapses, not 9.

A neuron testing q >= k has threshold 1 and v0 = 1 - k; q is rebuilt every step: each input
term comes once as itself and once, one step later, negated, and a self-synapse of weight 1
undoes the neuron's own reset. So v = v0 + q(t) at every step and nothing accumulates. All
synapse weights are +-1 (`lif` takes them with any delay); D itself is only ever summed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spikeport.ir.graph import Node
from spikeport.targets.spinnaker2.plan import Builder, Population, Projection


@dataclass(frozen=True)
class Term:
    """weight x the spikes of neurons `index` (one per pooled unit, -1: none) of `pop`."""

    pop: str
    index: np.ndarray
    weight: int
    depth: int


Train = list[Term]  # a count per pooled unit: the weighted sum of its terms' spikes


class GradedPool:
    """Builds the L1/L2 tree, the unary and the binary readout of one maxpool2d node."""

    def __init__(self, b: Builder, node: Node, m: int, units: int):
        self.b, self.node, self.m, self.units = b, node, m, units
        self.rows: dict[tuple[str, str], list[np.ndarray]] = {}

    def population(
        self, name: str, v0: np.ndarray, depth: int, role: str = "comparator"
    ) -> Population:
        """A population of threshold-1 neurons (v0 sets what each tests) with self-synapses
        of weight 1 that undo their resets a step later."""
        size = len(v0)
        pop = Population(
            name,
            size,
            role,
            self.node.name,
            self.node.name,
            np.ones(size, np.int64),
            v0.astype(np.int64),
            np.zeros(size, np.int64),
            depth=depth,
        )
        self.b.net.add(pop)
        eye = np.arange(size)
        self.add_rows(pop.name, pop.name, np.stack([eye, eye, 0 * eye + 1, 0 * eye], 1))
        return pop

    def add_rows(self, pre: str, post: str, rows: np.ndarray) -> None:
        self.rows.setdefault((pre, post), []).append(rows)

    def feed(self, train: Train, post: Population, idx: np.ndarray, w: int, later: int) -> None:
        """w x train into neurons idx of post, `later` steps after the train's own step."""
        for t in train:
            ok = t.index >= 0
            delay = post.depth - t.depth - 1 + later
            rows = np.stack(
                [t.index[ok], idx[ok], np.full(ok.sum(), w * t.weight), np.full(ok.sum(), delay)],
                axis=1,
            )
            self.add_rows(t.pop, post.name, rows)

    def now(self, train: Train, post: Population, idx: np.ndarray, w: int = 1) -> None:
        """q += w x train(t): it comes now, and a step later negated."""
        self.feed(train, post, idx, w, 0)
        self.feed(train, post, idx, -w, 1)

    def level(self, lv: int, trains: list[Train]) -> list[Train]:
        m, u = self.m, self.units
        pairs = [(trains[i], trains[i + 1]) for i in range(0, len(trains) - 1, 2)]
        depth = max(t.depth for tr in trains for t in tr) + 1
        k1 = np.tile(np.repeat(np.arange(m), u), 4 * len(pairs))
        k2 = np.tile(np.repeat(np.arange(2 * m), u), len(pairs))
        l1 = self.population(f"{self.node.name}/gmax{lv}", -k1, depth)
        l2 = self.population(f"{self.node.name}/gmax{lv}s", -k2, depth + 1)
        ar = np.arange(u)
        out = []
        for p, (a, bt) in enumerate(pairs):
            blk = {
                n: [((p * 4 + i) * m + k) * u + ar for k in range(m)] for i, n in enumerate("abpn")
            }
            for k in range(m):
                self.now(a, l1, blk["a"][k])
                self.now(bt, l1, blk["b"][k])
                for train, sign in ((a, 1), (bt, -1)):  # D(t-1) - D(t-2) = a(t-1) - b(t-1)
                    self.feed(train, l1, blk["p"][k], sign, 1)
                    self.feed(train, l1, blk["n"][k], -sign, 1)
            unary = {n: [Term(l1.name, ix, 1, depth) for ix in blk[n]] for n in "abpn"}
            q = [
                Term(t.pop, t.index, sign, t.depth)
                for n, sign in (("p", 1), ("n", -1), ("a", 1), ("b", -1))
                for t in unary[n]
            ]
            g = [(p * 2 * m + k) * u + ar for k in range(2 * m)]
            for k in range(2 * m):
                self.now(q, l2, g[k])
            inc = unary["b"] + [Term(l2.name, ix, 1, depth + 1) for ix in g]
            out.append(inc + [Term(t.pop, t.index, -1, t.depth) for t in unary["p"]])
        return out + ([trains[-1]] if len(trains) % 2 else [])

    def readout(self, train: Train) -> Population:
        """[inc >= k], then inc in binary: the population that carries the pooled tensor."""
        m, u = self.m, self.units
        depth = max(t.depth for t in train) + 1
        y = self.population(f"{self.node.name}/gunary", -np.repeat(np.arange(m), u), depth)
        ar = np.arange(u)
        for k in range(m):
            self.now(train, y, k * u + ar)
        nbits = m.bit_length()
        code = tuple(1 << i for i in range(nbits))
        bits = self.population(self.node.name, np.zeros(u * nbits), depth + 1, role="maxpool")
        bits.code = code
        for i in range(nbits):
            coef = [((k >> i) & 1) - (((k - 1) >> i) & 1) for k in range(1, m + 1)]
            terms = [Term(y.name, (k - 1) * u + ar, c, depth) for k, c in enumerate(coef, 1) if c]
            self.now(terms, bits, ar * nbits + i)
        return bits

    def flush(self) -> None:
        """One synapse per (pre, post, delay): overlapping windows bring +1 and -1 together."""
        for (pre, post), rows in self.rows.items():
            c = np.concatenate(rows).astype(np.int64)
            key, inv = np.unique(c[:, [0, 1, 3]], axis=0, return_inverse=True)
            w = np.zeros(len(key), np.int64)
            np.add.at(w, inv.ravel(), c[:, 2])
            keep = w != 0
            conns = np.stack([key[keep, 0], key[keep, 1], w[keep], key[keep, 2]], axis=1)
            self.b.net.projections.append(Projection(pre, post, conns, self.node.name))


def build_graded(b: Builder, node: Node, cells: list[Train], m: int, units: int) -> Population:
    """The comparator tree over window-cell trains of counts 0..m; returns the bits population."""
    pool = GradedPool(b, node, m, units)
    trains, level = cells, 0
    while len(trains) > 1:
        level += 1
        trains = pool.level(level, trains)
    bits = pool.readout(trains[0])
    pool.flush()
    return bits
