"""Buffer planning for the C target: tensors that live only within a step share memory.

A tensor lives from the layer that writes it to the last layer that reads it, in the order a
step runs them (a reshape's readers count for the tensor it aliases). Tensors of one C type go
into one static arena of that type (no type punning), at offsets chosen greedily, largest
first, lowest offset that no tensor alive at the same time occupies (the greedy planner of
TFLite Micro does the same). The arena's size is then about the peak of live tensors, not the
sum of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Lifetime:
    """A buffer of `size` elements, alive from layer `first` to layer `last` (inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other: Lifetime) -> bool:
        return self.first <= other.last and other.first <= self.last


def plan_offsets(buffers: list[Lifetime]) -> tuple[dict[str, int], int]:
    """Offsets (in elements) of every buffer in one arena, and the arena's size."""
    placed: list[tuple[Lifetime, int]] = []
    offsets: dict[str, int] = {}
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        busy = sorted((off, off + other.size) for other, off in placed if other.overlaps(buf))
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, end)
        placed.append((buf, offset))
        offsets[buf.name] = offset
    return offsets, max((off + b.size for b, off in placed), default=0)
