"""A model of SpiNNaker2's `lif` neuron running an emitted network.json. NOT THE HARDWARE.

It reads only the JSON (never the spikeport graph), so a wrong weight, delay, threshold, v_init
or i_offset in what emit wrote shows up as a mismatch against the reference simulator. Its
arithmetic follows capabilities.py: float32 state, per step (0-based n)

    v = alpha_decay * v + i_offset + sum(w * s)     (UPDATE_ORDER)
    spike if v COMPARE threshold; then v -= threshold (reset_by_subtraction)
    a spike at step n reaches its targets at step n + SYNAPSE_DELAY_STEPS + delay

Every one of these details is an assumption about py-spinnaker2 (see targets-facts.md); run
the emitted script on a board to learn whether the chip agrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from spikeport.targets.spinnaker2 import capabilities as cap

DENSE_LIMIT = 1 << 22  # pre x post entries up to which a projection may be a dense matrix
DENSE_FILL = 0.05  # ... and only when at least this share of its entries are synapses


@dataclass
class Synapses:
    """The connections of one projection with one delay value."""

    pre: str
    post: str
    delay: int
    pre_idx: np.ndarray
    post_idx: np.ndarray
    weight: np.ndarray
    dense: np.ndarray | None  # (pre size, post size) when small enough
    matrix: sparse.csc_matrix | None = None  # (post size, pre size) otherwise

    def current(self, spikes: np.ndarray, post_size: int) -> np.ndarray:
        """Synaptic input (N, post) from presynaptic spikes (N, pre): integer sums, exact in
        float64 (far below 2^53) whatever order BLAS or the sparse product adds in."""
        if self.dense is not None:
            return spikes.astype(np.float64) @ self.dense
        assert self.matrix is not None
        active = np.flatnonzero(spikes.any(axis=0))  # most comparators are silent at a step
        pre = np.ascontiguousarray(spikes[:, active].T, dtype=np.float64)
        return np.asarray(self.matrix[:, active] @ pre).T


def _synapses(proj: dict[str, Any], sizes: dict[str, int]) -> list[Synapses]:
    c = np.asarray(proj["connections"], np.int64).reshape(-1, 4)
    out = []
    for d in np.unique(c[:, 3]):
        sel = c[c[:, 3] == d]
        n_pre, n_post = sizes[proj["pre"]], sizes[proj["post"]]
        dense, matrix = None, None
        if n_pre * n_post <= min(DENSE_LIMIT, len(sel) / DENSE_FILL):
            dense = np.zeros((n_pre, n_post), np.float64)
            np.add.at(dense, (sel[:, 0], sel[:, 1]), sel[:, 2])
        else:  # duplicate (pre, post) entries are summed, as np.add.at does above
            shape = (n_post, n_pre)
            matrix = sparse.csc_matrix(
                (sel[:, 2].astype(np.float64), (sel[:, 1], sel[:, 0])), shape
            )
        out.append(
            Synapses(
                proj["pre"], proj["post"], int(d), sel[:, 0], sel[:, 1], sel[:, 2], dense, matrix
            )
        )
    return out


def _fire(v: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    return v > threshold if cap.COMPARE == ">" else v >= threshold


@dataclass
class Run:
    """spikes[pop]: (steps, N, size) 0/1; v[pop]: (steps, N, size) float32, recorded pops."""

    spikes: dict[str, np.ndarray]
    v: dict[str, np.ndarray]


class ChipModel:
    """Prepared once from network.json; `run(codes, steps)` simulates a batch of inputs."""

    def __init__(self, net: dict[str, Any]):
        self.net = net
        self.pops = {p["name"]: p for p in net["populations"]}
        self.sizes = {name: p["size"] for name, p in self.pops.items()}
        self.synapses = [s for proj in net["projections"] for s in _synapses(proj, self.sizes)]
        self.f32 = {
            name: {k: np.asarray(p["params"][k], np.float32) for k in ("threshold", "v_init")}
            for name, p in self.pops.items()
        }

    def i_offset(self, name: str, codes: np.ndarray) -> np.ndarray:
        """(N, size) float32: the constant current plus, per sample, the host-side first layer."""
        pop = self.pops[name]
        base = np.asarray(pop["params"]["i_offset"], np.int64)
        cur = np.broadcast_to(base, (len(codes), pop["size"]))
        if pop["input_current"]:
            c = np.asarray(pop["input_current"], np.int64)
            host = np.zeros((len(codes), pop["size"]), np.int64)
            np.add.at(host, (slice(None), c[:, 1]), codes[:, c[:, 0]].astype(np.int64) * c[:, 2])
            cur = cur + host
        return cur.astype(np.float32)

    def run(self, codes: np.ndarray, steps: int) -> Run:
        n = len(codes)
        alpha = np.float32(cap.ALPHA_DECAY)
        offs = {name: self.i_offset(name, codes) for name in self.pops}
        v = {
            name: np.broadcast_to(self.f32[name]["v_init"], (n, p["size"])).astype(np.float32)
            for name, p in self.pops.items()
        }
        arriving: dict[int, dict[str, np.ndarray]] = {}
        spikes = {name: np.zeros((steps, n, s), np.int8) for name, s in self.sizes.items()}
        rec_v = {
            name: np.zeros((steps, n, p["size"]), np.float32)
            for name, p in self.pops.items()
            if "v" in p["record"]
        }
        for step in range(steps):
            inbox = arriving.pop(step, {})
            for name, pop in self.pops.items():
                syn = inbox.get(name, np.zeros((n, pop["size"]))).astype(np.float32)
                v[name] = alpha * v[name] + offs[name] + syn
                th = self.f32[name]["threshold"]
                fired = _fire(v[name], th)
                v[name] = v[name] - fired.astype(np.float32) * th
                spikes[name][step] = fired
                if name in rec_v:
                    rec_v[name][step] = v[name]
            for s in self.synapses:
                pre = spikes[s.pre][step]
                if pre.any():
                    when = step + cap.SYNAPSE_DELAY_STEPS + s.delay
                    box = arriving.setdefault(when, {})
                    cur = s.current(pre, self.sizes[s.post])
                    box[s.post] = box[s.post] + cur if s.post in box else cur
        return Run(spikes, rec_v)


def aligned(net: dict[str, Any], run: Run, T: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The run at the specification's steps 1..T: spikes per neuron layer (T, N, size) and the
    output accumulators (T, N, out), each population read from its own depth on."""
    spikes = {
        p["node"]: run.spikes[p["population"]][p["depth"] : p["depth"] + T].astype(np.int64)
        for p in net["probes"]
    }
    out = net["output"]
    v = sum(run.v[name].astype(np.int64) for name in out.get("parts", [out["population"]]))
    return spikes, v[out["depth"] : out["depth"] + T]
