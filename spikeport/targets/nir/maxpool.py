"""Expectation-compensated max pooling of spike trains as NIR IF + Conv2d nodes, zero latency.

The specification's max pooling of 0/1 trains emits out_t = max_i S_t(i) - max_i S_{t-1}(i)
(S the running counts of the window's cells): 1 exactly when a cell that was a leader fires.
As on SpiNNaker2 (targets/spinnaker2/maxpool.py) windows reduce as a binary tree of pairs
(A, B), D = S_A - S_B, each pair two comparators whose spikes are mutually exclusive and sum
to the pair's max-increment train. NIR has no per-edge delay a consumer runs (snnTorch 1.0
cannot import `Delay`), so each tree level is one IF node (threshold 1, v0 = 1/2 like every
IF here) whose neurons are, per pair and channel:

  R_A, R_B   relays: input e(t), fire iff e(t) = 1 (memoryless);
  X_a        q = alpha e_A(t) + beta D(t-1)               fires iff A fires, D(t-1) >= 0
  X_b        q = alpha e_B(t) - beta e_A(t) - beta D(t-1) fires iff B fires and D(t-1) < 0,
                                                           or D(t-1) = 0 and A does not fire

with v = 1/2 + q before the compare, alpha = (1 + beta) / 2, beta = 1 / (2 T_max + 1). The
e(t) terms come feed-forward in the same step (a Conv2d over the pool window, or a 1x1 Conv2d
from the previous level); everything else comes through one recurrent 1x1 Conv2d from the
node to itself, i.e. the previous step's spikes: -alpha e(t-1) and the D(t-1) increments from
the relays, and +1 from the comparator itself, which undoes its reset. So q is rebuilt every
step and never drifts. q - 1/2 is an odd multiple of beta/2 when A (or B) fires and below
1/2 - beta/2 otherwise: never 0, so a consumer firing at v > threshold (snnTorch) agrees
with spikeport's v >= threshold, with a margin of beta/2 against float rounding. Exact for
T <= T_max (the graph's proven --max-T). A consumer must delay the recurrent edge by one
step (nirtorch does, when the caller passes its `state` back each step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from spikeport.ir.graph import Node

ROLES = ("relay_a", "relay_b", "x_a", "x_b")
RA, RB, XA, XB = range(4)


@dataclass(frozen=True)
class Train:
    """A 0/1 train per channel and output position: window cell `cell` of the pooled spikes,
    or the (X_a + X_b) of pair `pair` in tree node `node`."""

    node: str
    cell: int = -1
    pair: int = -1


def coefficients(beta: float) -> dict[str, np.ndarray]:
    """Feed-forward weights into (R_A, R_B, X_a, X_b) from e_A(t) and e_B(t), and the
    recurrent weights rec[post role, pre role] from the pair's previous-step spikes."""
    alpha = (1 + beta) / 2
    rec = np.zeros((4, 4))
    rec[XA, RA], rec[XA, RB], rec[XA, XA] = beta - alpha, -beta, 1.0  # -a e_A + b dD, undo
    rec[XB, RB], rec[XB, XB] = beta - alpha, 1.0  # -a e_B - b dD + b e_A(t-1) (R_A: 0), undo
    return {
        "a": np.array([1.0, 0.0, alpha, -beta]),
        "b": np.array([0.0, 1.0, 0.0, alpha]),
        "rec": rec,
    }


class MaxPoolBuilder:
    """Adds the comparator tree of one maxpool2d node to a NirBuilder's nodes and edges."""

    def __init__(self, b: Any, node: Node, src: str, t_max: int, metadata: dict[str, str]):
        self.b, self.node, self.src, self.t_max = b, node, src, t_max
        self.window_srcs = {src}  # nodes read through the pool's window geometry
        self.c = b.shape(node.inputs[0])[0]
        self.out_hw = tuple(b.shape(node.output)[1:])
        self.coef = coefficients(1.0 / (2 * t_max + 1))
        self.metadata = dict(metadata, role=f"max-pooling comparators, exact for T <= {t_max}")
        self.pairs: dict[str, int] = {}  # tree node -> its number of pairs

    def channel(self, pair: int, role: int, c: np.ndarray) -> np.ndarray:
        return (pair * len(ROLES) + role) * self.c + c

    def build(self) -> str:
        """The name of the node that outputs the pooled spike train, (C, H', W') of 0/1."""
        kh, kw = self.node.attrs["kernel"]
        trains = [Train(self.src, cell=j) for j in range(kh * kw)]
        level = 0
        while len(trains) > 1:
            level += 1
            trains = self.level(level, trains)
        inputs: dict[str, np.ndarray] = {}
        cs = np.arange(self.c)
        self.feed(inputs, trains[0], cs, self.c, 1.0)
        ((src, weight),) = inputs.items()
        return self.add(f"{self.b.name(self.node)}.out", self.conv(src, weight), src)

    def level(self, level: int, trains: list[Train]) -> list[Train]:
        """One IF node for the pairs of this tree level; an odd train passes on unchanged."""
        name = f"{self.b.name(self.node)}.max{level}"
        pairs = [(trains[i], trains[i + 1]) for i in range(0, len(trains) - 1, 2)]
        size = len(pairs) * len(ROLES) * self.c
        ones = np.ones((size, *self.out_hw))
        neuron = self.b.nir.IF(r=ones, v_threshold=ones, v_reset=0 * ones, metadata=self.metadata)
        self.b.nodes[name] = neuron
        inputs: dict[str, np.ndarray] = {}
        rec = np.zeros((size, size, 1, 1))
        cs = np.arange(self.c)
        for p, (a, bt) in enumerate(pairs):
            for role in range(len(ROLES)):
                post = self.channel(p, role, cs)
                self.feed(inputs, a, post, size, self.coef["a"][role])
                self.feed(inputs, bt, post, size, self.coef["b"][role])
                for pre in range(len(ROLES)):
                    rec[post, self.channel(p, pre, cs), 0, 0] += self.coef["rec"][role, pre]
        self.pairs[name] = len(pairs)
        for src, weight in inputs.items():
            self.b.edges.append((self.add(f"{name}.from_{src}", self.conv(src, weight), src), name))
        self.b.edges.append((self.add(f"{name}.rec", self.conv(name, rec), name), name))
        return [Train(name, pair=p) for p in range(len(pairs))] + (
            [trains[-1]] if len(trains) % 2 else []
        )

    def feed(
        self, inputs: dict[str, np.ndarray], train: Train, post: np.ndarray, n_out: int, w: float
    ) -> None:
        """Add w x `train` (channel c) into output channels `post` (one per c)."""
        if w == 0:
            return
        cs = np.arange(self.c)
        if train.cell >= 0:  # a cell of the window, read from the pooled spikes
            kh, kw = self.node.attrs["kernel"]
            weight = inputs.setdefault(train.node, np.zeros((n_out, self.c, kh, kw)))
            weight[post, cs, train.cell // kw, train.cell % kw] += w
            return
        n_pre = self.pairs[train.node] * len(ROLES) * self.c
        weight = inputs.setdefault(train.node, np.zeros((n_out, n_pre, 1, 1)))
        for role in (XA, XB):  # a pair's train is the sum of its two comparators
            weight[post, self.channel(train.pair, role, cs), 0, 0] += w

    def add(self, name: str, nir_node: Any, src: str) -> str:
        self.b.nodes[name] = nir_node
        self.b.edges.append((src, name))
        return name

    def conv(self, src: str, weight: np.ndarray) -> Any:
        """A Conv2d from `src`: the pool's window geometry from the spikes, else 1x1."""
        a = self.node.attrs
        if src in self.window_srcs:
            in_hw, stride, pad = self.b.shape(self.node.inputs[0])[1:], a["strides"], a["pads"][:2]
        else:
            in_hw, stride, pad = self.out_hw, (1, 1), (0, 0)
        return self.b.nir.Conv2d(
            input_shape=tuple(in_hw),
            weight=weight,
            stride=tuple(stride),
            padding=tuple(pad),
            dilation=(1, 1),
            groups=1,
            bias=np.zeros(weight.shape[0]),
        )
