"""Neuron kinds: which integrate-and-fire variant a graph's neurons and max pools run.

A node's kind is its attribute `kind`; absent means "subtract", the specification of
DESIGN.md section 6, so graphs written before kinds existed run exactly as before.

  "subtract"  reset by subtraction, fire when v >= theta, v0 = floor(theta / 2), a spike reaches
              the next layer within the same step; max pooling is expectation-compensated.
  "lava"      what Lava's fixed-point LIF and Dense run (lava-nc 0.10.0, PyLifModelBitAcc with
              du = 4095, dv = 0, and PyDenseModelBitAcc): reset to zero, fire when v > theta
              (strict), v0 = floor(theta / 2), v saturates at +-LAVA_V_LIMIT, and a spike
              reaches the next layer one step later (every Dense buffers its output for a step).
              Max pooling is the per-step OR of the window's spikes (a Dense of ones into an LIF
              with threshold 0), which also costs a step. Unsigned spikes only.
"""

from __future__ import annotations

import copy

from spikeport.errors import BadInput
from spikeport.ir.graph import Graph, Node

SUBTRACT = "subtract"
LAVA = "lava"
NEURON_KINDS = (SUBTRACT, LAVA)
KIND_OPS = ("if", "maxpool2d")  # the ops whose run-time behaviour a kind changes
# Lava's v is 24-bit signed and MSB-aligned by 6 bits (synaptic input and threshold are shifted
# left by 6): in the specification's units it saturates at +-(2^23 - 1) / 64, i.e. 2^17 - 1.
LAVA_V_LIMIT = (1 << 17) - 1


def kind_of(node: Node) -> str:
    """The node's neuron kind ("subtract" when the attribute is absent)."""
    return node.attrs.get("kind", SUBTRACT)


def set_kind(graph: Graph, kind: str) -> Graph:
    """A copy of `graph` whose neurons and max pools of the default kind run `kind` instead.

    Nodes that already carry another kind, and signed, bipolar or graded neurons (the "lava"
    kind has unsigned binary spikes only), are left as they are: the target's profile check
    refuses them by name. The float params are unchanged: the thresholds balanced for the
    default kind are the starting point that fine-tuning for `kind` improves on.
    """
    if kind not in NEURON_KINDS:
        raise BadInput(f"neuron kind '{kind}' is not one of {NEURON_KINDS}")
    out = copy.deepcopy(graph)
    if kind == SUBTRACT:
        return out
    for n in out.nodes:
        if n.op not in KIND_OPS or kind_of(n) != SUBTRACT:
            continue
        if n.op == "if" and (
            n.attrs.get("signed") or n.attrs.get("bipolar") or n.attrs.get("spike_bits", 1) > 1
        ):
            continue
        n.attrs["kind"] = kind
    return out
