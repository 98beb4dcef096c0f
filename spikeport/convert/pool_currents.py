"""Max pooling of currents: a neuron read only by a max pool moves behind it.

A ReLU and a max pool commute (max over a window of relu(x) is relu of the max: the ReLU is
monotone), so `conv -> IF -> maxpool` has the ANN view of `conv -> maxpool -> IF`. Spiking,
they can differ. In front, each of the window's neurons fires on its own, and the pool passes
on the largest running count: where the inputs vary over the steps, a neuron of a smaller
mean input that fired early can win it. Behind, the pool takes the expectation-compensated
max of the window's running sums of current (sim's maxpool2d: its outputs sum to the max of
the summed inputs), exact in the mean, and one neuron integrates it: a quarter of the neurons
and events of a 2x2 pool. SpikingJelly's channel-wise and local-threshold-balancing recipes
pool currents so too (their `pre_spike_maxpool`: their pool of spikes is a per-step OR).

A target that pools spikes only (Lava, SpiNNaker2, NIR: comparator trees of spikes) cannot
run a pool of currents and refuses it, naming the pool. So it is an option (`convert
--pool-currents`), not a default: measured (docs/conversion.md, "Max pools of currents")
it moves the max-pooling digits CNNs by a few images, mostly up at T = 1 and 2 and down at T = 4.

Where the neuron's input is the same every step (a first layer reading a static image), the
two orders count the same at equal thresholds: rounding a rate and taking the max commute.
"""

from __future__ import annotations

from spikeport.ir.graph import Graph, Node, TensorInfo

SUFFIX = "_currents"  # of the pooled-currents tensor a moved neuron now reads


def movable(graph: Graph) -> list[Node]:
    """The neurons a max pool alone reads, whose threshold is one per channel (or one in all):
    after the move there is one neuron per pooled position, and each still reads its channel."""
    out = []
    for n in graph.nodes:
        if n.op != "if" or n.attrs.get("bipolar") or "kind" in n.attrs:
            continue
        readers = graph.consumers(n.output)
        if len(readers) != 1 or readers[0].op != "maxpool2d" or n.output in graph.outputs:
            continue
        th = n.params["threshold"]
        if th.size == 1 or th.ndim == 3 and th.shape[1:] == (1, 1):  # not one per position
            out.append(n)
    return out


def pool_currents(graph: Graph) -> list[str]:
    """Move every movable neuron behind the max pool that reads it, in place, and name the
    neurons moved (the conversion record): the pool reads the neuron's input currents and
    writes a new tensor, which the neuron reads; the neuron writes the tensor the pool wrote,
    so the layers after it are unchanged."""
    moved = movable(graph)
    for neuron in moved:
        pool = graph.consumers(neuron.output)[0]
        spikes, pooled = neuron.output, pool.output
        currents = f"{pooled}{SUFFIX}"
        graph.tensors[currents] = TensorInfo(currents, graph.shape(pooled))
        pool.inputs, pool.output = [neuron.inputs[0]], currents
        neuron.inputs, neuron.output = [currents], pooled
        del graph.tensors[spikes]
        graph.nodes.remove(pool)
        graph.nodes.insert(graph.nodes.index(neuron), pool)
    return [n.name for n in moved]
