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
  "sdn"       what Lava's fixed-point SigmaDelta (lava-nc 0.10.0, PySigmaDeltaModelFixed with
              act_mode RELU, spike_exp = state_exp = 0, cum_error off) and a graded Dense
              (num_message_bits > 0) run: a neuron sends the change of its ReLU activation as
              a graded message once that change reaches theta (its delta threshold), and keeps
              the rest (the residue) for later. Its output tensor is the *level* the next layer
              has received, one step late (the Dense delay): the sum of its messages so far,
              not spikes, so the synapses behind it compute W * level + b, exactly what Lava's
              sigma + bias holds. Max pooling (of levels) becomes SDN_POOL stages of sigma-delta
              neurons with theta 0 (max(a, b) = a + relu(b - a)), each costing a step.
              Each neuron is capped (param `sdn_cap`) at its calibrated peak, as quantize
              and finetune measure it (a ReLU6 at 6 where lower): min(relu(I), c) =
              relu(I) - relu(I - c), two SigmaDelta neurons whose messages the next Dense
              subtracts. The cap is
              what keeps the overflow proof from compounding: without it a layer's proven
              level is the proof of every layer before it, a thousand times the calibrated
              one after a few convolutions, and the proof's resolution leaves the neurons
              silent; with it each layer's level is proven within its own cap.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from spikeport.errors import BadInput
from spikeport.ir.graph import Graph, Node

SUBTRACT = "subtract"
LAVA = "lava"
SDN = "sdn"
NEURON_KINDS = (SUBTRACT, LAVA, SDN)
KIND_OPS = ("if", "maxpool2d")  # the ops whose run-time behaviour a kind changes
# Lava's v is 24-bit signed and MSB-aligned by 6 bits (synaptic input and threshold are shifted
# left by 6): in the specification's units it saturates at +-(2^23 - 1) / 64, i.e. 2^17 - 1.
LAVA_V_LIMIT = (1 << 17) - 1
# SigmaDelta's sigma, act, residue and messages are declared 24-bit (LavaPyType precision 24).
SDN_STATE_BITS = 24
# The delta threshold of kind "sdn", as a fraction of the layer's balanced threshold (its
# calibrated peak activation): a change below 1/SDN_VTH_DIVISOR of the layer's range waits in
# the residue. quantize --target lava tries each divisor and keeps the most accurate.
SDN_VTH_DIVISORS = (256, 64, 16)
# Messages are the state right-shifted by the layer's state_exp (Lava's SigmaDelta sends
# s_out >> state_exp), chosen by quantize so that the layer's cap (its calibrated peak; a
# graph fine-tuned before caps: its proven peak input) spans at most 2^SDN_LEVEL_BITS message
# units (quantize._sdn_if); the readers' int8 weights are coarsened where these levels would
# take a step's input past the 24-bit a_in. 8 and 9 bits gave relu_dw:7 and relu6:7 of the
# held-out family no better accuracy on Lava (96.85 / 97.22 % and 97.22 / 97.04 % against
# 10 bits' 97.22 / 96.85 %, T = 8, convert --no-t-aware).
SDN_LEVEL_BITS = 10
# Lava declares SigmaDelta's state_exp 3 bits (lava/proc/sdn/models.py: precision 3): a
# layer whose cap needs more spans it in more message units (finer levels) instead, and
# the readers' weights are coarsened where that takes a step's input past the 24-bit a_in
# (before this limit state_exp reached 11 on the digits MLP; at 7 the digits examples and
# the held-out family's ReLU nets on Lava score the same, relu_dw:7 one image more).
SDN_MAX_STATE_EXP = 7


def pair_level(x: Any) -> Any:
    """A sigma-delta neuron's value from its stacked pair (x[0], x[1]): x[0] alone for one
    neuron, x[0] - x[1] for a capped one (relu(I) - relu(I - c) = min(relu(I), c)); numpy
    arrays or torch tensors."""
    return x[0] if len(x) == 1 else x[0] - x[1]


def sdn_pool_rounds(k: int) -> list[list[tuple[int, ...]]]:
    """The tournament of a max pool of k cells in kind "sdn", round by round: each round lists
    its pairs (u, v) -> relu(u) + relu(v - u) (= max(u, v) for u >= 0) and, when the count is
    odd, a last single (u,) -> relu(u); indices are into the previous round's results (the
    window's cells, row-major, for the first). Each round is one layer of sigma-delta neurons
    on Lava (a pair two neurons, relu(u) and relu(v - u), summed by the next Dense)."""
    rounds, n = [], k
    for _ in range(max(1, (k - 1).bit_length())):
        rnd = [(i, i + 1) for i in range(0, n - 1, 2)] + ([(n - 1,)] if n % 2 else [])
        rounds.append(rnd)
        n = len(rnd)
    return rounds


def holds_levels(graph: Graph) -> bool:
    """A graph of kind "sdn" neurons carries levels, not spikes: its output at step t is the
    network's value then (it only gets better with t), so the output accumulator holds
    t * output_t (mean over t = the latest value) instead of the sum of all steps, whose early
    steps (before the input has come through every layer's delay) would weigh as much."""
    return any(n.op in KIND_OPS and kind_of(n) == SDN for n in graph.nodes)


def kind_of(node: Node) -> str:
    """The node's neuron kind ("subtract" when the attribute is absent)."""
    return node.attrs.get("kind", SUBTRACT)


def why_not(node: Node, kind: str) -> str:
    """Why set_kind leaves a neuron of the default kind out of `kind` ("" where it does not)."""
    a = node.attrs
    if node.op != "if" or kind == SUBTRACT:
        return ""
    if a.get("signed") or a.get("bipolar"):
        return "signed spikes"
    if a.get("spike_bits", 1) > 1:
        return f"graded spikes (spike_bits {a['spike_bits']})"
    return ""


def check_kind(kind: str) -> None:
    if kind not in NEURON_KINDS:
        raise BadInput(f"neuron kind '{kind}' is not one of {NEURON_KINDS}")


def set_kind(
    graph: Graph,
    kind: str,
    vth_divisor: int = SDN_VTH_DIVISORS[1],
    caps: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """A copy of `graph` whose neurons and max pools of the default kind run `kind` instead.

    Nodes that already carry another kind, and signed, bipolar or graded neurons (the "lava"
    and "sdn" kinds run unsigned neurons of one threshold only), are left as they are: the
    target's profile check refuses them by name. For "lava" the float params are unchanged:
    the thresholds balanced for the default kind are the starting point that fine-tuning
    improves on. For "sdn" a neuron's threshold becomes its delta threshold, the balanced one
    / `vth_divisor`, and its cap `sdn_cap` is `caps[name]` (quantize: the calibrated peak of
    its activation) or else the balanced threshold, lowered to a ReLU6's cap.
    """
    check_kind(kind)
    out = copy.deepcopy(graph)
    if kind == SUBTRACT:
        return out
    for n in out.nodes:
        if n.op not in KIND_OPS or kind_of(n) != SUBTRACT:
            continue
        if why_not(n, kind):
            continue
        n.attrs["kind"] = kind
        if kind == SDN and n.op == "if":
            theta = n.params["threshold"]
            top = (caps or {}).get(n.name, theta)
            clip = n.attrs.get("cap")
            n.params["sdn_cap"] = (top if clip is None else np.minimum(top, clip)).astype(
                np.float32
            )
            n.params["threshold"] = theta / vth_divisor
    return out
