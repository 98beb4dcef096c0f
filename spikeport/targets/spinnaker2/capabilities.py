"""What SpiNNaker2 (py-spinnaker2) offers, as one record: neuron models, weight and delay ranges,
the arithmetic of the `lif` neuron, and per-chip limits.

Sources: /work/shared/targets-facts.md (py-spinnaker2 scripts and NIR's s2_nir.py). py-spinnaker2
itself is not installable here and its neuron code is not public to us, so every detail the
facts mark "unconfirmed" is a named constant below with the assumption spelled out; the model in
`chip.py` and the emitter both read these constants, so changing one keeps them consistent.
"""

from __future__ import annotations

from dataclasses import dataclass

from spikeport.sim.arith import int_limit


@dataclass(frozen=True)
class NeuronModel:
    """A py-spinnaker2 neuron model as a population of ours uses it.

    weight_bits: signed width of the synapse weights it accepts (int_limit gives the range).
    max_delay:   largest programmable delay of a connection (the hardware adds one step).
    """

    name: str
    weight_bits: int
    max_delay: int
    doc: str = ""

    @property
    def weight_limit(self) -> int:
        return int_limit(self.weight_bits)


# One registry: every population is one of these; the emitter picks the narrowest that fits.
NEURON_MODELS: dict[str, NeuronModel] = {
    m.name: m
    for m in (
        NeuronModel(
            "lif_no_delay",
            weight_bits=8,
            max_delay=0,
            doc="8-bit weights [-127, 127], no programmable delay (s2_nir scales to 127)",
        ),
        NeuronModel(
            "lif",
            weight_bits=5,
            max_delay=7,
            doc="4-bit signed weights [-15, 15], delay 0..7 (hardware delay = delay + 1)",
        ),
    )
}
DEFAULT_MODEL = "lif_no_delay"  # used unless a population needs a delay
DELAY_MODEL = "lif"  # populations with a delayed input (branch alignment, max pooling)

# --- the `lif` neuron as we model it (alpha_decay = 1: a non-leaky integrate-and-fire) ---
ALPHA_DECAY = 1.0
RESET = "reset_by_subtraction"
# Update per step, in this order (facts: "implied, unconfirmed"):
#   v = alpha_decay * v + i_offset + sum(w * s);  spike if v COMPARE threshold;  v -= threshold
UPDATE_ORDER = ("decay", "i_offset", "synapses", "compare", "reset")
# Spike compare: unconfirmed. s2_nir maps NIR's `v > v_threshold` onto `threshold` unchanged, so
# we assume ">". The specification fires at v >= theta; over integers v >= theta <=> v + 1 >
# theta, so under ">" every population starts one above the specification's potential (v_init
# + 1) and that offset is carried for ever by reset-by-subtraction. Set it to ">=" and the
# emitter drops the offset.
COMPARE = ">"
# A spike emitted at step n reaches its targets at step n + SYNAPSE_DELAY_STEPS + delay.
SYNAPSE_DELAY_STEPS = 1
# Neuron state and parameters are float32 on the chip (py-spinnaker2 takes float params;
# unconfirmed): every integer of magnitude <= 2^24 is exact in float32, so the profile keeps
# all state within 25 signed bits and emit checks every parameter against this bound.
FLOAT_EXACT = 1 << 24
STATE_BITS = 25  # int_limit(25) = 2^24 - 1
# Per-neuron synapse limit: no source we have states one; a conservative placeholder, checked
# on the synapses that run on the chip (the first layer runs on the host, see plan.py).
MAX_FANIN = 1024
# py-spinnaker2 examples use 10-256 neurons per core (set_max_atoms_per_core); 250 is the budget
# one of them divides by. The emitted script takes --neurons-per-core to change it.
NEURONS_PER_CORE = 250
# A SpiNNaker2 chip has 152 processing elements (PEs, one ARM Cortex-M4F each).
CORES_PER_CHIP = 152
# Recording: get_voltages() gives one value per step, taken after that step's update (assumed).
RECORD_V_AFTER_UPDATE = True


def compare_offset() -> int:
    """What the hardware potential carries above the specification's (see COMPARE)."""
    if COMPARE == ">":
        return 1
    if COMPARE == ">=":
        return 0
    raise ValueError(f"COMPARE must be '>' or '>=', not {COMPARE!r}")
