"""Bit-exact comparison of a target's run with the reference simulator, shared by targets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikeport.batch import Batch, is_integer, size, take
from spikeport.errors import CheckFailed
from spikeport.ir.graph import Graph
from spikeport.sim import Simulator
from spikeport.sim.arith import input_bits, int_limit


def check_in_batches(
    x: Batch,
    chunk_size: int,
    check: Callable[[Batch, int], None],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Call `check(chunk, index of its first sample)` on x in chunks of `size` (a target's
    verify: each check raises at the first difference), reporting progress; return len(x)."""
    for start in range(0, size(x), chunk_size):
        chunk = take(x, slice(start, start + chunk_size))
        check(chunk, start)
        if progress:
            progress(size(chunk))
    return size(x)


def random_inputs(graph: Graph, n: int, seed: int = 0) -> Batch:
    """Inputs that reach every input the range proof covers, so targets are checked beyond the
    shipped test data: float inputs that encode exactly to uniformly random int8 codes; token
    ids uniform over the rows of the embedding that reads them; other integer inputs (masks)
    random 0/1 flags. One array for a single-input graph, else {input name: array}."""
    rng = np.random.default_rng(seed)
    lim = int_limit(input_bits(graph))
    out: dict[str, np.ndarray] = {}
    for t in graph.inputs:
        if is_integer(t):
            rows = [
                c.params["table_q"].shape[0] for c in graph.consumers(t.name) if c.op == "embed"
            ]
            out[t.name] = rng.integers(0, min(rows) if rows else 2, (n,) + t.shape)
        else:
            codes = rng.integers(-lim, lim + 1, (n,) + t.shape)
            out[t.name] = (codes * graph.scales[t.name]).astype(np.float64)
    return out if len(out) > 1 else out[graph.inputs[0].name]


def reference(
    graph: Graph, x: Batch, T: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(int8 codes of the first input, spikes per neuron node (T, N, size), the output
    accumulators of every graph output side by side (T, N, total size))."""
    sim = Simulator(graph, "int")
    res = sim.run(x, T, record=True)
    assert res.trace is not None
    n = size(x)
    spikes = {
        n_.name: res.trace[n_.output].reshape(T, n, -1) for n_ in graph.nodes if n_.op == "if"
    }
    acc = np.concatenate([res.outputs[o].reshape(T, n, -1) for o in graph.outputs], axis=-1)
    return sim.encode(x)[graph.inputs[0].name], spikes, acc


def check_equal(
    target: str,
    ref_spikes: dict[str, np.ndarray],
    ref_acc: np.ndarray,
    got_spikes: dict[str, np.ndarray],
    got_acc: np.ndarray,
    first_sample: int = 0,
) -> None:
    """Raise CheckFailed naming the first (step, layer, neuron, sample) that differs."""
    T = ref_acc.shape[0]
    for t in range(T):
        for name, ref in ref_spikes.items():
            diff = np.argwhere(ref[t] != got_spikes[name][t])
            if len(diff):
                k, i = diff[0]
                raise CheckFailed(
                    f"{target} differs from the simulator at step {t + 1}, layer '{name}', "
                    f"neuron {i}, sample {first_sample + k}: spike {got_spikes[name][t, k, i]} "
                    f"vs {ref[t, k, i]}"
                )
        diff = np.argwhere(ref_acc[t] != got_acc[t])
        if len(diff):
            k, i = diff[0]
            raise CheckFailed(
                f"{target} differs from the simulator at step {t + 1}, output {i}, sample "
                f"{first_sample + k}: accumulator {got_acc[t, k, i]} vs {ref_acc[t, k, i]}"
            )
