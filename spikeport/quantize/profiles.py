"""Target profiles: what integer network a target can run, checked before anything is written.

A target package registers its own profile (`register_profile`); "sim" is the reference
profile of the specification (int8 weights, int32 bias and state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spikeport.errors import BadInput, CapabilityExceeded
from spikeport.ir.check import MAX_SPIKE_BITS
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import OPS, attr
from spikeport.sim.kernels import conv_transpose_fanin
from spikeport.sim.kinds import KIND_OPS, kind_of, why_not


@dataclass(frozen=True)
class Profile:
    """Capabilities of a target: bit widths, neuron features, fan-in, and the ops it runs."""

    name: str
    weight_bits: int = 8
    bias_bits: int = 32
    state_bits: int = 32
    input_bits: int = 8
    # the widest integer multipliers that align the inputs of an add (products summed in int64;
    # quantize aims at 16 bits and widens only where an input would fall below resolution)
    mult_bits: int = 32
    signed_spikes: bool = True
    # Largest `spike_bits` of a neuron (graded spikes, spikeport.ir.ops "if"); 1: binary only.
    max_spike_bits: int = MAX_SPIKE_BITS
    spike_bits_why: str = ""  # why not more: said when a graded neuron is refused
    max_fanin: int | None = None
    # A target with no add (synapses only): an add's inputs become synapses into the neurons it
    # feeds, so quantize makes every input's effective integer weight (weight x multiplier) fit
    # weight_bits with shift 0 and leaves the add's scale to the next threshold (fold_add.py).
    fold_add: bool = False
    ops: frozenset[str] = field(
        default_factory=lambda: frozenset(op for op, spec in OPS.items() if "int" in spec.stages)
    )
    # The neuron kind the target runs (spikeport.sim.kinds); quantize gives it to the graph.
    neuron_kind: str = "subtract"
    # Record the calibration activity of each synaptic input (quantize/activity.py): the
    # target picks event-driven kernels by it.
    record_activity: bool = False
    # Largest |per-step input current| a neuron accepts (None: only state_bits limits it);
    # quantize coarsens a layer's weight scale until its proven bound fits.
    max_current: int | None = None
    # The width of a neuron's bias register where the target holds the bias of the synapses
    # in front there, as a mantissa the neuron shifts left by its state_exp (Lava's
    # SigmaDelta: 16 bits; a capped pair's second neuron also holds the cap): quantize
    # coarsens the weight scale in front until it fits.
    neuron_bias_bits: int | None = None
    # One integer threshold per neuron layer (a population shares its threshold register):
    # quantize picks per-channel weight scales that make every channel's threshold the same.
    layer_threshold: bool = False
    # A target's own check of a whole graph ("snn" at quantize, "int" at emit/verify), for
    # limits the fields above cannot say; raises CapabilityExceeded naming the node.
    check: Callable[[Graph], None] | None = field(default=None, compare=False)
    # The other neuron kinds the target runs, each a profile of its own limits (same name):
    # quantize makes the graph in every kind and keeps the one that agrees most with the ANN
    # on the calibration data (spikeport.quantize.choose), recording the choice.
    kind_profiles: tuple[Profile, ...] = field(default=(), compare=False)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every neuron kind the target runs, its default first."""
        return (self.neuron_kind, *(p.neuron_kind for p in self.kind_profiles))

    @property
    def requantizes_elements(self) -> bool:
        """Whether its ops requantize every element on their own: no add folded into
        synapses, no per-step current limit, no one threshold a population. A layer whose
        readers all requantize may then keep any scale per output channel."""
        return not self.fold_add and self.max_current is None and not self.layer_threshold

    def for_graph(self, graph: Graph) -> Profile:
        """The profile of the kind the graph's neurons run (the default where none is set)."""
        kinds = {kind_of(n) for n in graph.nodes if n.op in KIND_OPS}
        for p in self.kind_profiles:
            if kinds == {p.neuron_kind}:
                return p
        return self


PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile) -> Profile:
    PROFILES[profile.name] = profile
    return profile


register_profile(Profile("sim"))


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise BadInput(f"unknown target '{name}'; known: {', '.join(sorted(PROFILES))}") from None


def fanin(graph: Graph, node: Node) -> int:
    """Synapses into one output neuron of a dense/conv node."""
    w = node.params["weight"]
    if node.op == "conv_transpose2d":  # weight (C, O/g, kh, kw): a tap reaches few outputs
        a = node.attrs
        geo = (a["strides"], a["pads"], a["dilations"], a["output_padding"], a["group"])
        return conv_transpose_fanin(graph.shape(node.inputs[0]), w.shape, *geo)
    return int(np.prod(w.shape[1:]))


def graded_refusal(node: Node, profile: Profile) -> str:
    """The one line that refuses a neuron whose spikes have more bits than the target carries."""
    b, most = attr(node, "spike_bits"), profile.max_spike_bits
    carries = "only binary spikes" if most == 1 else f"spikes of at most {most} bits"
    why = f" ({profile.spike_bits_why})" if profile.spike_bits_why else ""
    return (
        f"node '{node.name}' (if): spike_bits {b}: target '{profile.name}' carries {carries}"
        f"{why}; convert with --spike-bits {min(most, b)}"
    )


def signed_fix(node: Node) -> str:
    """What to do about a neuron with negative spikes on a target without them: `--signed`
    or the T-aware search's signed candidate made it, or conversion did (a bipolar neuron in
    front of a layer that reads signed values: a residual stream, a LayerNorm, GELU, SiLU or
    hardswish output), which no option removes."""
    if node.attrs.get("bipolar"):
        return (
            "it is bipolar: conversion put it in front of a layer that reads signed values "
            "(a residual stream, LayerNorm, GELU, SiLU or hardswish), and no conversion "
            "option removes it; run the network on --target c or sim"
        )
    return "convert with --unsigned"


def check_capabilities(graph: Graph, profile: Profile) -> None:
    """Refuse, naming the node, anything the target cannot run."""
    profile = profile.for_graph(graph)
    for n in graph.nodes:
        if n.op not in profile.ops:
            raise CapabilityExceeded(
                f"node '{n.name}': op '{n.op}' is not supported by target '{profile.name}'"
            )
        if n.op == "if" and attr(n, "spike_bits") > profile.max_spike_bits:
            raise CapabilityExceeded(graded_refusal(n, profile))
        if n.op == "if" and n.attrs["signed"] and not profile.signed_spikes:
            raise CapabilityExceeded(
                f"node '{n.name}': target '{profile.name}' has no signed spikes; {signed_fix(n)}"
            )
        if n.op in KIND_OPS and kind_of(n) != profile.neuron_kind:
            runs = " or ".join(f"'{k}'" for k in profile.kinds)
            why = why_not(n, profile.neuron_kind)
            raise CapabilityExceeded(
                f"node '{n.name}': neuron kind '{kind_of(n)}' does not run on target "
                f"'{profile.name}', which runs {runs}" + (f"; it has {why}" if why else "")
            )
        if OPS[n.op].synaptic and profile.max_fanin and fanin(graph, n) > profile.max_fanin:
            raise CapabilityExceeded(
                f"node '{n.name}': fan-in {fanin(graph, n)} exceeds target "
                f"'{profile.name}' limit {profile.max_fanin}"
            )
    if profile.check is not None:
        profile.check(graph)
