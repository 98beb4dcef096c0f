"""Padding that no output reads: the positions T-aware conversion leaves out of its fit.

Sentences are padded to one length, and a masked model's attention leaves the padded keys
out, so what the network computes at a padded token never reaches a pooled output or a
[CLS] head: a third of all-MiniLM-L6-v2's calibration tokens are padding. T-aware conversion
(tune.py) fits thresholds, bias shifts and weights to the activations at the positions it is
given, and padding's would take a share of that fit for nothing.

Which values those are is measured, not assumed: the calibration batch is run again with
every token id at a masked position changed (`moved`). Where no output of the graph moves,
no output reads those positions, and a tensor's value that moved with them is padding's
(tune._Run.kept). Where an output moves (token-level outputs, position ids counted from the
padding), every position is kept, as before.
"""

from __future__ import annotations

import numpy as np

from spikeport.batch import Batch, is_integer, named
from spikeport.ir.graph import Graph

CHECK_SAMPLES = 32  # calibration samples the outputs are compared on


def _masks(graph: Graph) -> set[str]:
    """The integer graph inputs that masked softmaxes mask by."""
    integer = {t.name for t in graph.inputs if is_integer(t)}
    return {n.inputs[1] for n in graph.nodes if n.op == "masked_softmax"} & integer


def _vocabulary(graph: Graph, ids: str) -> int:
    """The number of rows of the smallest embedding table that reads `ids` (0: none does)."""
    rows = [len(n.params["table"]) for n in graph.consumers(ids) if n.op == "embed"]
    return min(rows, default=0)


def moved(graph: Graph, x: Batch) -> Batch | None:
    """`x` with every token id at a masked position moved to the next id, where that moves no
    output of the graph's ANN view on the first CHECK_SAMPLES samples; None where the graph
    has no attention mask, or some output reads the padding."""
    from spikeport.sim import simulate

    masks = _masks(graph)
    if len(masks) != 1 or not isinstance(x, dict):
        return None
    given = named(graph.inputs, x)
    padded = np.asarray(given[next(iter(masks))]) == 0
    out = dict(given)
    for t in graph.inputs:
        vocabulary = _vocabulary(graph, t.name)
        if vocabulary and given[t.name].shape == padded.shape:
            out[t.name] = np.where(padded, (given[t.name] + 1) % vocabulary, given[t.name])
    if not padded.any() or all(out[k] is given[k] for k in out):
        return None
    check = slice(CHECK_SAMPLES)
    before = simulate(graph, {k: v[check] for k, v in given.items()}, 1, "ann").outputs
    after = simulate(graph, {k: v[check] for k, v in out.items()}, 1, "ann").outputs
    for name in graph.outputs:
        a, b = before[name][0], after[name][0]
        if not np.allclose(a, b, rtol=1e-6, atol=1e-6 * float(np.abs(a).max(initial=1e-30))):
            return None
    return out
