"""Reference simulator: "ann", "float" and the bit-exact "int" mode (the specification)."""

from spikeport.sim.simulator import SimResult, Simulator, simulate

__all__ = ["SimResult", "Simulator", "simulate"]
