"""Expectation-compensated max pooling of graded counts (e.g. an average pool of spikes) as NIR
IF + Conv2d nodes, zero latency, exact for every T.

Each window cell carries an integer count per step, 0..m (an average pool of spikes over a
k-cell window: m = k). As in maxpool.py windows reduce as a binary tree of pairs (A, B) with
D = S_A - S_B, but a pair's max-increment is now graded too:

  inc(t) = max(S_A + a, S_B + b) - max(S_A, S_B)        (S at t-1, a, b the counts at t)
         = b + relu(C + a - b) - relu(C),    C = clip(D(t-1), -m, m)

(inc depends on D only through its clip: beyond +-m one side leads whatever comes). Every
term is a sum of memoryless threshold neurons, so each tree level is two IF nodes:

  L1   [a >= k], [b >= k]  (k = 1..m: unary codes, so a(t-1) is their spikes a step later)
       [D(t-1) >= j], [-D(t-1) >= j]  (j = 1..m: relu(C) and relu(-C))
  L2   relays of every L1 neuron, and [C + a - b >= k] (k = 1..2m), read from L1 in the step

and inc = sum [b >= k] + sum [C + a - b >= k] - sum [D(t-1) >= j], a weighted sum of spikes
that the next level (or the pooled output) reads in the same step. A neuron testing q >= k
has v = 1/2 + q / (2k - 1) before the compare (threshold 1, v0 = 1/2 like every IF here):
its input is q's increment over the last step, taken from its own node's previous spikes
through one recurrent 1x1 Conv2d, plus +1 from itself to undo its reset. q - (k - 1/2) is
never 0 (q is an integer), so v > threshold and v >= threshold agree, with a margin of
1 / (4m - 2) against float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spikeport.ir.graph import Node
from spikeport.targets.nir.maxpool import MaxPoolBuilder

L1 = ("a", "b", "dp", "dn")  # unary blocks of m neurons each: [a>=k], [b>=k], [D>=j], [-D>=j]


@dataclass(frozen=True)
class Term:
    """coef[c] x channel ch[c] of node `src` (window cell `cell` of the pooled input, else 1x1)."""

    src: str
    ch: np.ndarray
    coef: np.ndarray
    cell: int = -1


Train = list[Term]


class GradedMaxPool(MaxPoolBuilder):
    """The L1/L2 tree of one channel of a maxpool2d whose input is counts 0..m times a unit.
    Channels never meet in a max pool, so each gets its own nodes: the recurrent 1x1 Conv2d
    stays (pairs x roles)^2 instead of (channels x pairs x roles)^2."""

    def __init__(
        self, b: Any, node: Node, srcs: list[str], counts: np.ndarray, m: int, meta: dict, c: int
    ):
        super().__init__(b, node, srcs[0], 0, meta)
        # the pooled input is the sum of these nodes' outputs (a concat's embeddings are zero
        # outside their own channels), so a window cell is read from each of them
        self.window_srcs = set(srcs)
        channel = c
        self.metadata["role"] = f"max-pooling comparators (counts 0..{m}), exact for any T"
        self.m, self.counts, self.in_c, self.channels = m, counts, channel, self.c
        self.c = 1  # this builder's nodes hold one channel
        self.sizes: dict[str, int] = {}

    def build_graded(self) -> list[str]:
        """The nodes whose outputs, summed, are this channel of the pooled counts (C, H', W')."""
        kh, kw = self.node.attrs["kernel"]
        one = np.array([self.in_c])
        trains = [
            [Term(src, one, self.counts[one], cell=j) for src in sorted(self.window_srcs)]
            for j in range(kh * kw)
        ]
        level = 0
        while len(trains) > 1:
            level += 1
            trains = self.graded_level(level, trains)
        inputs: dict[str, np.ndarray] = {}
        self.feed_terms(inputs, trains[0], one, self.channels, 1.0)
        return [
            self.add(f"{self.b.name(self.node)}.c{self.in_c}.out_{src}", self.conv(src, w), src)
            for src, w in inputs.items()
        ]

    def unit(self, node_roles: int, pair: int, block: int, k: int) -> np.ndarray:
        """Channels of neuron k (0-based) of a block, for every c, in a node of that layout."""
        return ((pair * node_roles + block * self.m + k) * self.c) + np.arange(self.c)

    def graded_level(self, level: int, trains: list[Train]) -> list[Train]:
        m = self.m
        pairs = [(trains[i], trains[i + 1]) for i in range(0, len(trains) - 1, 2)]
        r1, r2 = 4 * m, 6 * m  # L2: relays of the 4m L1 neurons, then 2m [C + a - b >= k]
        n1, n2 = len(pairs) * r1 * self.c, len(pairs) * r2 * self.c
        l1 = f"{self.b.name(self.node)}.c{self.in_c}.max{level}"
        l2 = f"{l1}.sum"
        ff1: dict[str, np.ndarray] = {}
        rec1, ff2, rec2 = np.zeros((n1, n1)), np.zeros((n2, n1)), np.zeros((n2, n2))
        out: list[Train] = []
        scale = [1.0 / (2 * k + 1) for k in range(2 * m)]  # neuron k tests q >= k + 1
        for p, (a, bt) in enumerate(pairs):
            u1 = {blk: [self.unit(r1, p, i, k) for k in range(m)] for i, blk in enumerate(L1)}
            rel = {blk: [self.unit(r2, p, i, k) for k in range(m)] for i, blk in enumerate(L1)}
            g = [self.unit(r2, p, 4, k) for k in range(2 * m)]  # 2m neurons after the relays
            for k in range(m):
                s = scale[k]
                self.feed_terms(ff1, a, u1["a"][k], n1, s)
                self.feed_terms(ff1, bt, u1["b"][k], n1, s)
                for j in range(m):  # q(t-1) of each L1 neuron, from the unary codes
                    rec1[u1["a"][k], u1["a"][j]] -= s
                    rec1[u1["b"][k], u1["b"][j]] -= s
                    rec1[u1["dp"][k], u1["a"][j]] += s  # D(t-1) - D(t-2) = a(t-1) - b(t-1)
                    rec1[u1["dp"][k], u1["b"][j]] -= s
                    rec1[u1["dn"][k], u1["a"][j]] -= s
                    rec1[u1["dn"][k], u1["b"][j]] += s
                for blk in L1:
                    rec1[u1[blk][k], u1[blk][k]] += 1.0  # undo this neuron's own reset
                    ff2[rel[blk][k], u1[blk][k]] = 1.0  # a relay of a 0/1 train is memoryless
            signs = {"dp": 1.0, "dn": -1.0, "a": 1.0, "b": -1.0}  # C + a - b
            for k in range(2 * m):
                for blk, sign in signs.items():
                    for j in range(m):
                        ff2[g[k], u1[blk][j]] += sign * scale[k]
                        rec2[g[k], rel[blk][j]] -= sign * scale[k]
                rec2[g[k], g[k]] += 1.0
            ones = np.ones(self.c)
            inc = [Term(l1, u1["b"][k], ones) for k in range(m)]
            inc += [Term(l2, g[k], ones) for k in range(2 * m)]
            inc += [Term(l1, u1["dp"][k], -ones) for k in range(m)]
            out.append(inc)
        self.graded_node(l1, n1, ff1, rec1)
        self.graded_node(l2, n2, {l1: ff2[:, :, None, None]}, rec2)
        return out + ([trains[-1]] if len(trains) % 2 else [])

    def graded_node(self, name: str, size: int, ff: dict[str, np.ndarray], rec: np.ndarray) -> None:
        ones = np.ones((size, *self.out_hw))
        neuron = self.b.nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones, metadata=self.metadata)
        self.b.nodes[name] = neuron
        self.sizes[name] = size
        for src, weight in ff.items():
            self.b.edges.append((self.add(f"{name}.from_{src}", self.conv(src, weight), src), name))
        conv = self.conv(name, rec[:, :, None, None])
        self.b.edges.append((self.add(f"{name}.rec", conv, name), name))

    def feed_terms(
        self, inputs: dict[str, np.ndarray], train: Train, post: np.ndarray, n_out: int, w: float
    ) -> None:
        """Add w x `train` (channel c) into output channels `post` (one per c)."""
        for t in train:
            if t.cell >= 0:  # a cell of the window, read from the pooled input
                kh, kw = self.node.attrs["kernel"]
                weight = inputs.setdefault(t.src, np.zeros((n_out, self.channels, kh, kw)))
                weight[post, t.ch, t.cell // kw, t.cell % kw] += w * t.coef
            else:
                weight = inputs.setdefault(t.src, np.zeros((n_out, self.sizes[t.src], 1, 1)))
                weight[post, t.ch, 0, 0] += w * t.coef
