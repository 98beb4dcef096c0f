"""Integer arithmetic rules of the specification, written once.

Every target copies these rules; nothing else in spikeport rounds at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from spikeport.ir.graph import Graph

INPUT_BITS = 8


def input_bits(graph: Graph) -> int:
    """The width an integer graph's inputs are encoded at: meta quantization.input_bits, which
    the artifact's check leaves optional (not every profile records every width), else
    INPUT_BITS. Every reader asks here, so the simulator and the targets encode alike."""
    return int(graph.meta.get("quantization", {}).get("input_bits", INPUT_BITS))


def int_limit(bits: int) -> int:
    """Largest value of a signed integer of `bits` bits."""
    return (1 << (bits - 1)) - 1


def quantize_input(x: np.ndarray, scale: np.ndarray | float, bits: int = INPUT_BITS) -> np.ndarray:
    """Input encoding, applied once on the host: q = clamp(floor(x / scale + 1/2), +-(2^(b-1)-1)).

    Rounds half up; the result is int8 for the default 8 bits.
    """
    lim = int_limit(bits)
    q = np.floor(np.asarray(x, np.float64) / np.asarray(scale, np.float64) + 0.5)
    return np.clip(q, -lim, lim).astype(np.int8 if bits <= 8 else np.int32)


def initial_potential(theta: np.ndarray) -> np.ndarray:
    """v0 = floor(theta / 2): half the threshold zeroes the expected rate error for any T."""
    return np.asarray(theta, np.int64) // 2


def round_to_int(x: np.ndarray) -> np.ndarray:
    """Offline rounding of parameters (weights, biases, thresholds): nearest, half away from 0."""
    x = np.asarray(x, np.float64)
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def floor_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """floor(x / 2^shift) on integers (an arithmetic right shift: rounds toward -inf)."""
    return np.right_shift(np.asarray(x, np.int64), shift) if shift else x
