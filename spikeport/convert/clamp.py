"""min(max(x, lo), hi) as IR ops, the same for every importer: one ReLU (a neuron after
conversion) between two shifts, relu(x - lo, cap hi - lo) + lo; with no lower bound,
hi - relu(hi - x). The shift after the neuron folds into the layers after it at import
(fold.fold_offsets)."""

from __future__ import annotations

import numpy as np

Step = tuple[str, dict, dict]  # (op, attrs, params) of one IR node, each reading the one before


def clamp_steps(lo: float | None, hi: float | None) -> list[Step]:
    """The IR ops of min(max(x, lo), hi), either bound None for none (both None: no op).
    ValueError where hi <= lo (the importer names the node)."""
    if lo is None and hi is None:
        return []
    if lo is not None and hi is not None and hi <= lo:
        raise ValueError(f"the upper bound {hi} is not above the lower bound {lo}")
    flip = lo is None  # the neuron sees hi - x: its floor is the upper bound
    base = float(hi if flip else lo)  # type: ignore[arg-type]
    cap = None if flip or hi is None else hi - base
    negate: list[Step] = [("scale", {"factor": -1.0}, {})] if flip else []
    before = [("offset", {}, {"value": np.asarray(base if flip else -base, np.float32)})]
    after = [("offset", {}, {"value": np.asarray(base, np.float32)})]
    return (
        negate + (before if base else []) + [("relu", {"cap": cap}, {})] + negate
        + (after if base else [])
    )  # fmt: skip
