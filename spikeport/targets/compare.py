"""Bit-exact comparison of a target's run with the reference simulator, shared by targets."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from spikeport.errors import CheckFailed
from spikeport.ir.graph import Graph
from spikeport.sim import Simulator
from spikeport.sim.arith import int_limit


def check_in_batches(
    x: np.ndarray,
    size: int,
    check: Callable[[np.ndarray, int], None],
    progress: Callable[[int], None] | None = None,
) -> int:
    """Call `check(chunk, index of its first sample)` on x in chunks of `size` (a target's
    verify: each check raises at the first difference), reporting progress; return len(x)."""
    for start in range(0, len(x), size):
        chunk = x[start : start + size]
        check(chunk, start)
        if progress:
            progress(len(chunk))
    return len(x)


def random_inputs(graph: Graph, n: int, seed: int = 0) -> np.ndarray:
    """Float inputs that encode exactly to uniformly random int8 codes: they reach every input
    the range proof covers, so targets are checked beyond the shipped test data."""
    lim = int_limit(graph.meta["quantization"]["input_bits"])
    codes = np.random.default_rng(seed).integers(-lim, lim + 1, (n,) + graph.input.shape)
    return (codes * graph.scales[graph.input.name]).astype(np.float64)


def reference(
    graph: Graph, x: np.ndarray, T: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(int8 input codes, spikes per neuron node (T, N, size), output accumulators (T, N, out))
    of a single-input graph (the targets take one input)."""
    sim = Simulator(graph, "int")
    res = sim.run(x, T, record=True)
    assert res.trace is not None
    spikes = {
        n.name: res.trace[n.output].reshape(T, len(x), -1) for n in graph.nodes if n.op == "if"
    }
    acc = res.outputs[graph.outputs[0]].reshape(T, len(x), -1)
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
