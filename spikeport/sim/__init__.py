"""Reference simulator: "ann", "float" and the bit-exact "int" mode (the specification)."""

from spikeport.sim.simulator import SimResult, Simulator, mean_output, simulate

__all__ = ["SimResult", "Simulator", "mean_output", "simulate"]
