"""The fast backend's runner: one node at a time over all T steps, then the next node.

The reference simulator runs every node once per step. But a node's output at step t depends
only on earlier nodes at steps <= t and on its own state, never on a later node: every graph
of the IR is feed-forward in time. So each node can run over all T steps before the next one
starts, and the result is the same, step for step. That turns T small calls into one large
one: a synaptic op sees a batch of T * N (spikeport.sim.fast), a stateless op without a fast
kernel gets T folded into its batch, and a stateful one loops over T inside itself.

Arrays are (T, N, ...) here; static tensors (equal at every step, ir.ops.static_tensors) stay
(N, ...) and are computed once, as in the reference. A batch whose widest tensor would hold
more than MAX_ELEMENTS values over T steps runs in slices of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from spikeport.batch import Batch, size, take
from spikeport.errors import SimulationOverflow
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import ELEMENT_MOVES, spike_levels
from spikeport.sim.fast import (
    ANY,
    CUM,
    FLOAT32_SAFE,
    STEP,
    FastKernel,
    Steps,
    memory_order,
    running_sum,
    running_sum_t,
    step_rows,
    step_values,
)
from spikeport.sim.fast_seq import compensated
from spikeport.sim.ops import IFNeuron, Kernel, Stateless
from spikeport.sim.seq_ops import ExpectationCompensated

if TYPE_CHECKING:
    from spikeport.sim.simulator import Observer, SimResult, Simulator

# Per tensor over T steps: bounds the memory used, and keeps a float32 tensor (16 MiB) under
# the 32 MiB up to which glibc reuses freed heap (spikeport.threads.keep_freed_memory): at
# 2^24 every large tensor was mapped afresh and page-faulted in, and the ResNet-18-shaped
# net (width 16, batch 256, T = 8) ran at 720-880 samples x steps per second, at 2^22
# 1,140-1,250 (2^21: 1,090, 2^20: 870, more calls); the digits networks and the ViT alike.
MAX_ELEMENTS = 1 << 22
STATIC = "static"
# Ops that only select, rearrange or scale elements (a "scale" in "int" mode only flips signs):
# they commute with running sums, so they move running sums as they are (no per-step copy in
# between).
DATA_MOVES = ELEMENT_MOVES | {"concat", "scale"}
REARRANGES = {"reshape", "transpose"}  # every element kept: as many nonzero values


@dataclass
class Val:
    """A tensor over T steps: STATIC (N, ...) equal at every step, STEP (T, N, ...) per-step
    values, or CUM (T, N, ...) running sums over steps (what "int" mode fast kernels take)."""

    x: np.ndarray
    form: str


def differences(cum: np.ndarray) -> torch.Tensor:
    """Per-step values of running sums (T, N, ...), in the sums' own type: exact, since each
    step's value is bounded by the running sums' bound."""
    return step_values(torch.from_numpy(cum))


def as_step(v: Val, T: int, integer: bool) -> np.ndarray:
    """Per-step values (T, N, ...): int64 in "int" mode, what the reference kernels take."""
    if v.form == STATIC:
        x = np.broadcast_to(v.x, (T,) + v.x.shape)
    elif v.form == CUM:
        x = differences(v.x).numpy()
    else:
        x = v.x
    return x.astype(np.int64, copy=False) if integer else x


def as_cum(v: Val, T: int, dtype: torch.dtype | None = None) -> np.ndarray:
    """Running sums over steps (T, N, ...): t times a static value, the cumulative sum of
    per-step values; in `dtype` if given (one that holds these sums exactly), else widened
    (input codes are int8)."""
    if v.form == CUM:
        return v.x
    if dtype is not None and v.form == STATIC:
        steps = torch.arange(1, T + 1, dtype=dtype).reshape((T,) + (1,) * v.x.ndim)
        return (torch.from_numpy(v.x).to(dtype)[None] * steps).numpy()
    if dtype is not None:  # per-step values: summed in that type, exact by its choice
        return running_sum_t(torch.from_numpy(v.x), dtype).numpy()
    x = v.x.astype(np.float64 if v.x.dtype.kind == "f" else np.int64, copy=False)
    if v.form == STEP:
        return running_sum(x)
    return x[None] * np.arange(1, T + 1, dtype=x.dtype).reshape((T,) + (1,) * x.ndim)


def _stepped(k: Kernel, ins: list[np.ndarray], T: int, integer: bool) -> Steps:
    """A stateful reference kernel, one call per step, with what the reference reads of it."""
    k.reset(ins[0].shape[1])
    ys, ks, state = [], [], np.zeros(T, np.int64)
    for t in range(T):
        ys.append(k(*[x[t] for x in ins]))
        if isinstance(k, IFNeuron):
            ks.append(k.k)
        if integer:
            v = int(np.abs(k.v).max(initial=0)) if isinstance(k, IFNeuron) else 0
            state[t] = max(v, getattr(k, "state_peak", 0))
    return Steps(np.stack(ys), state, np.stack(ks) if ks else None)


def _folded(k: Stateless, ins: list[np.ndarray]) -> Steps:
    """A stateless reference kernel on all steps at once: T folds into its batch."""
    T, n = ins[0].shape[:2]
    y = k(*[x.reshape((T * n,) + x.shape[2:]) for x in ins])
    return Steps(y.reshape((T, n) + y.shape[1:]))


def _form(fast: FastKernel | None, ref: Kernel, node: Node, ins: list[Val]) -> str:
    """The form a node runs in: its fast kernel's, or, where it takes either (and for data
    moves), running sums unless an input comes per step. Expectation-compensated reference
    kernels take running sums (their own state); the other reference kernels run per step."""
    forms = {v.form for v in ins}
    if fast is not None and fast.takes != ANY:
        return fast.takes
    if isinstance(ref, ExpectationCompensated):
        return CUM
    if fast is not None or (node.op in DATA_MOVES and CUM in forms):
        return STEP if STEP in forms else CUM
    return STEP


def _run_node(sim: Simulator, node: Node, ref: Kernel, ins: list[Val], T: int) -> tuple[Val, Steps]:
    """The node over all T steps: its fast kernel, else its reference kernel."""
    integer = sim.mode == "int"
    fast = sim.fast.get(node.name)
    if fast is not None and fast.static is not None and [v.form for v in ins] == [STATIC]:
        steps = fast.static(ins[0].x, T)
        return Val(steps.y, CUM), steps
    form = _form(fast, ref, node, ins)
    if form == CUM:
        xs = [as_cum(v, T, fast.dtype if fast else None) for v in ins]
    else:
        xs = [as_step(v, T, integer and fast is None) for v in ins]
    if fast is not None:
        steps = fast.run(*xs, cumulative=form == CUM)
    elif isinstance(ref, ExpectationCompensated):
        steps = compensated(ref, xs, integer)
    elif isinstance(ref, Stateless):
        steps = _folded(ref, xs)
    else:
        steps = _stepped(ref, xs, T, integer)
    return Val(steps.y, steps.form or form), steps


def _static(sim: Simulator, node: Node, ref: Kernel, ins: list[Val]) -> Val:
    """A node whose output is equal at every step, computed once: (N, ...). One step of a
    running sum is the value itself, so a cumulative fast kernel serves too."""
    fast = sim.fast.get(node.name)
    if fast is None:
        ref.reset(ins[0].x.shape[0])
        return Val(ref(*[v.x for v in ins]), STATIC)
    y = fast.run(*[v.x[None] for v in ins], cumulative=fast.takes != STEP).y[0]
    return Val(y.astype(np.int64) if sim.mode == "int" else y, STATIC)


class _Counts:
    """Per-step spikes, levels, event bits and synaptic operations, as SimResult holds them."""

    def __init__(self, T: int, integer: bool):
        self.T, self.integer = T, integer
        self.spikes, self.levels, self.bits, self.sops = (np.zeros(T, np.int64) for _ in range(4))
        # per-step nonzero counts of each neuron output counted so far: a dense layer reading
        # one has that many inputs that fire, each with the same fan-out (no second pass)
        self.nonzero: dict[str, np.ndarray] = {}
        # neuron outputs whose readers' synaptic operations the neuron counted as it ran
        self.paid: set[str] = set()

    def synapses(self, name: str, v: Val, fanout: np.ndarray | int, binary: bool) -> None:
        """Nonzero inputs times fan-out at each step; a static input counts at step 1 only (the
        reference computes a static node once). Unsigned binary spikes held as running sums:
        the fan-out weighted sum of the counts, differenced over steps (no per-step copy)."""
        if name in self.paid:
            return
        if isinstance(fanout, int) and name in self.nonzero and v.form != STATIC:
            self.sops += self.nonzero[name] * fanout
        elif v.form == STATIC:
            self.sops[0] += int(self._weighted(v.x[None] != 0, fanout, 1)[0])
        elif v.form == CUM and binary:
            self.sops += np.diff(self._weighted(v.x, fanout, self.T), prepend=0)
        elif v.form == STEP and binary:
            self.sops += self._weighted(v.x, fanout, 1)
        elif v.form == CUM and isinstance(fanout, int):
            self.sops += torch.count_nonzero(step_rows(differences(v.x)), dim=1).numpy() * fanout
        elif v.form == CUM:
            self.sops += self._weighted((differences(v.x) != 0).numpy(), fanout, 1)
        else:
            self.sops += self._weighted(as_step(v, self.T, self.integer) != 0, fanout, 1)

    @staticmethod
    def _weighted(x: np.ndarray, fanout: np.ndarray | int, peak: int) -> np.ndarray:
        """sum over batch and elements of x * fanout, per step: (T,) int64. x in [0, peak]:
        matrix-vector products per sample over runs of elements whose weighted sum stays
        below 2^23 (exact in float32: a large layer's whole row would need float64, and its
        conversion cost more than the product), the runs and steps then summed in float64."""
        xt = torch.from_numpy(x)
        T, n = x.shape[:2]
        if isinstance(fanout, int):
            return _sum(step_rows(xt), peak).astype(np.int64) * fanout
        order = memory_order(xt, 2)  # the fan-outs in the order x holds its elements: no copy
        f = np.broadcast_to(fanout, x.shape[2:]).transpose([d - 2 for d in order])
        f = f.reshape(-1).astype(np.float64)
        rows = xt.permute(0, 1, *order).reshape(T * n, -1)
        # the run each element falls in: a run's sum is below 2^23 + its first element's
        run = np.cumsum(f) * max(peak, 1) // FLOAT32_SAFE
        cuts = np.flatnonzero(np.diff(run)) + 1
        if float(f.max(initial=0)) * peak >= FLOAT32_SAFE or len(cuts) > 64:  # float64 then
            per = rows.to(torch.float64) @ torch.from_numpy(f)
        else:
            f32, per = torch.from_numpy(f).float(), torch.zeros(T * n, dtype=torch.float64)
            for a, b in zip([0, *cuts], [*cuts, len(f)], strict=True):
                per += (rows[:, a:b].float() @ f32[a:b]).double()
        return _sum(per.reshape(T, n), peak * float(f.sum())).astype(np.int64)

    def events(
        self,
        k: np.ndarray | torch.Tensor,
        bits: int,
        levels_k: int,
        binary: bool = False,
        unit: bool = False,
    ) -> np.ndarray:
        """Per-step counts k (|k| <= levels_k): events are the nonzero ones, levels the sum of
        |k| (the sum itself where the proof says every count is 0 or 1; equal to the events
        where every |k| is at most 1: `unit`). A sigma-delta neuron's graded messages pass
        levels_k, so its spike levels alone do not make it `unit`."""
        flat = step_rows(k if isinstance(k, torch.Tensor) else torch.from_numpy(k))
        levels = _sum(flat.abs() if not binary else flat, levels_k).astype(np.int64)
        events = levels if binary or unit else (flat != 0).sum(dim=1).numpy()
        return self.counted(events, levels, bits)

    def cum_events(self, cum: np.ndarray, bits: int, levels_k: int) -> np.ndarray:
        """events() of spikes held as running counts: the counts are their differences, taken
        in the counts' own (exact) type. Only IntIF's neurons come as running counts, and
        their counts stay within levels_k (so with one level, events are the levels)."""
        return self.events(differences(cum), bits, levels_k, unit=levels_k == 1)

    def binary_events(self, cum: np.ndarray, bits: int) -> np.ndarray:
        """Unsigned binary spikes held as running counts: events are count differences."""
        total = _sum(step_rows(torch.from_numpy(cum)), len(cum))
        events = np.diff(total, prepend=0).astype(np.int64)
        return self.counted(events, events, bits)

    def counted(self, events: np.ndarray, levels: np.ndarray, bits: int) -> np.ndarray:
        """Per-step events and levels counted elsewhere (T,): added, events returned."""
        self.spikes += events
        self.levels += levels
        self.bits += events * bits
        return events


def _sum(x: torch.Tensor, peak: float) -> np.ndarray:
    """Row sums of a (T, M) tensor of integers in [-peak, peak], exact, in float64: float32
    sums over chunks short enough to stay below 2^23 first (a float64 sum of a float32
    tensor converts every element, several times slower here)."""
    if x.dtype != torch.float32:
        return x.sum(dim=1, dtype=torch.float64).numpy()
    T, m = x.shape
    chunk = max(1, int(FLOAT32_SAFE // max(peak, 1.0)))
    if m <= chunk:
        return x.sum(dim=1).to(torch.float64).numpy()
    whole = m - m % chunk
    parts = x[:, :whole].reshape(T, -1, chunk).sum(dim=2).to(torch.float64).sum(dim=1)
    return (parts + x[:, whole:].to(torch.float64).sum(dim=1)).numpy()


def _check(sim: Simulator, node: Node, y: np.ndarray, state: np.ndarray | None) -> None:
    """The reference's run-time range check, over all steps at once (y is (T, N, ...))."""
    rest = tuple(range(1, y.ndim))  # reduced in place: a reshape would copy a channels-last y
    worst = np.maximum(y.max(axis=rest, initial=0), -y.min(axis=rest, initial=0))
    if state is not None:
        worst = np.maximum(worst, state)
    over = np.flatnonzero(worst > sim.limit)
    if len(over):
        t = int(over[0])
        raise SimulationOverflow(
            f"node '{node.name}' ({node.op}) reached {int(worst[t])} at step "
            f"{t + 1}, beyond the {sim.limit} its state bits allow"
        )


def _last_use(graph: Graph) -> dict[str, int]:
    """Index of the last node that reads each tensor (graph outputs: never freed)."""
    last = {}
    for i, n in enumerate(graph.nodes):
        for name in n.inputs:
            last[name] = i
    for o in graph.outputs:
        last[o] = len(graph.nodes)
    return last


def run_layers(
    sim: Simulator, x: Batch, T: int, record: bool, observe: Observer | None = None
) -> SimResult:
    """Simulator.run for the fast backend (same result), a slice of the batch at a time."""
    n = size(x)
    step = max(1, MAX_ELEMENTS // (T * sim.widest))
    parts = [
        _run_all(sim, take(x, slice(s, s + step)), T, record, observe) for s in range(0, n, step)
    ]
    return parts[0] if len(parts) == 1 else join(parts, record)


def _account(
    sim: Simulator,
    node: Node,
    ins: list[Val],
    out: Val,
    steps: Steps | None,
    counts: _Counts,
    T: int,
) -> None:
    """The reference's per-step range check, spike and synapse counts, for one node."""
    integer = sim.mode == "int"
    if integer and not sim.proven(node.output):
        state = steps.state() if steps and callable(steps.state) else steps and steps.state
        _check(sim, node, as_step(out, T, integer) if out.form != STATIC else out.x[None], state)
    if node.op in REARRANGES and node.inputs[0] in counts.nonzero:  # the same values
        counts.nonzero[node.output] = counts.nonzero[node.inputs[0]]
    if node.name in sim.fanout:
        counts.synapses(node.inputs[0], ins[0], sim.fanout[node.name], sim.binary(node.inputs[0]))
    if node.op == "if" and sim.mode != "ann" and steps is not None:
        binary, bits, K = sim.binary(node.output), sim.bits[node.name], spike_levels(node)
        if steps.k is not None:  # a neuron's own counts (a delayed kind's differ from y)
            counts.events(steps.k, bits, K, binary)
        elif steps.events is not None:  # counted as it ran (IntIF)
            counts.nonzero[node.output] = counts.counted(*steps.events, bits)
            if steps.sops is not None:  # and its readers' synaptic operations
                counts.sops += steps.sops
                counts.paid.add(node.output)
        elif out.form == CUM and binary:
            counts.nonzero[node.output] = counts.binary_events(out.x, bits)
        elif out.form == CUM:
            counts.nonzero[node.output] = counts.cum_events(out.x, bits, K)
        else:
            counts.nonzero[node.output] = counts.events(as_step(out, T, integer), bits, K, binary)


def _observe(observe: Observer | None, name: str, v: Val, T: int, integer: bool) -> None:
    """Simulator.run's observer: every tensor's values at every step, batch first."""
    if observe is not None:
        for x in as_step(v, T, integer):
            observe(name, x)


def _run_all(sim: Simulator, x: Batch, T: int, record: bool, observe: Observer | None) -> SimResult:
    from spikeport.sim.simulator import SimResult

    graph, integer = sim.graph, sim.mode == "int"
    values = {k: Val(v, STATIC) for k, v in sim.encode(x).items()}
    for k, v in values.items():
        _observe(observe, k, v, T, integer)
    counts, last = _Counts(T, integer), _last_use(graph)
    for i, (node, ref) in enumerate(sim.kernels):
        ins = [values[t] for t in node.inputs]
        if node.output in sim.static:
            out, steps = _static(sim, node, ref, ins), None
        else:
            out, steps = _run_node(sim, node, ref, ins, T)
        values[node.output] = out
        _account(sim, node, ins, out, steps, counts, T)
        _observe(observe, node.output, out, T, integer)
        for t in node.inputs if not record else ():
            if last.get(t) == i:
                values.pop(t, None)  # read by no later node: free it
    outputs = {}
    for o in graph.outputs:
        v = values[o]
        if sim.levels_out:  # t * output_t (spikeport.sim.kinds.holds_levels)
            y = as_step(v, T, integer)
            acc = y * np.arange(1, T + 1).reshape((T,) + (1,) * (y.ndim - 1))
        else:
            acc = as_cum(v, T) if v.form != STATIC or integer else running_sum(as_step(v, T, False))
        outputs[o] = acc.astype(np.int64) if integer else acc
    trace = {k: as_step(v, T, integer) for k, v in values.items()} if record else None
    return SimResult(outputs, counts.spikes, counts.sops, trace, counts.levels, counts.bits)


def join(parts: list[SimResult], record: bool = False) -> SimResult:
    """The results of slices of a batch as one: outputs (and traces) joined on the batch axis,
    counts summed."""
    from spikeport.sim.simulator import SimResult

    first = parts[0]
    trace = (
        {k: np.concatenate([p.trace[k] for p in parts], axis=1) for k in first.trace}  # type: ignore[index]
        if record and first.trace is not None
        else None
    )
    return SimResult(
        {o: np.concatenate([p.outputs[o] for p in parts], axis=1) for o in first.outputs},
        sum(p.spikes for p in parts),
        sum(p.sops for p in parts),
        trace,
        sum(p.levels for p in parts),
        sum(p.event_bits for p in parts),
    )
