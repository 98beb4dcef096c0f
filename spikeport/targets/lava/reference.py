"""The simulator's view of a Lava run: each layer's own spikes at every step.

In the "lava" kind a neuron's output tensor is its spikes one step late (what the next Dense
delivers), while Lava records each LIF's s_out at the step it fires. The kernels keep that
step's spikes in `fired`; this reads them after every step, so the comparison with Lava needs
no shifting and covers step T too.
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Graph
from spikeport.sim import Simulator
from spikeport.sim.kinds import holds_levels


def reference(
    graph: Graph, x: np.ndarray, T: int
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(int8 input codes, spikes fired per layer (T, N, size), output accumulators (T, N, out)).

    The layers are the graph's neurons and max pools in graph order, as the Lava plan lays
    them out (kind "sdn": the neurons' graded messages; a max pool's rounds are not recorded
    here, the next layer's messages depend on them). The accumulators come from
    Simulator.run (range checks included), and the step loop here must reproduce them, or
    the simulator and this view disagree.
    """
    sim = Simulator(graph, "int")
    res = sim.run(x, T)  # raises on T beyond the proof, asserts every value's bits
    n = len(x)
    for _, k in sim.kernels:
        k.reset(n)
    values = sim.encode(x)
    fired: dict[str, list[np.ndarray]] = {
        node.name: [] for node, k in sim.kernels if hasattr(k, "fired")
    }
    out = graph.outputs[0]
    levels = holds_levels(graph)  # kind "sdn": the accumulator holds t * output_t
    acc: np.ndarray | int = 0
    for t in range(T):
        for node, k in sim.kernels:
            if t > 0 and node.output in sim.static:
                continue
            values[node.output] = k(*[values[i] for i in node.inputs])
            if node.name in fired:
                fired[node.name].append(np.asarray(k.fired).reshape(n, -1).astype(np.int64))
        acc = values[out] * (t + 1) if levels else acc + values[out]
    ref_acc = res.outputs[out].reshape(T, n, -1)
    if not np.array_equal(np.asarray(acc).reshape(n, -1), ref_acc[-1]):
        raise RuntimeError("the lava reference loop disagrees with Simulator.run")
    spikes = {name: np.stack(v) for name, v in fired.items()}
    return values[graph.input.name], spikes, ref_acc
