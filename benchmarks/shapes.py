"""Shapes: a synthetic 3x32x32 image task for the held-out CNN family (benchmarks/cnn_family.py
--task shapes), drawn here so nothing is downloaded.

Every other CNN the project measures reads sklearn's 8x8 grey digits. A user's CNN more likely
reads colour images of CIFAR's size, through more pooling stages and wider layers; this task is
the project's stand-in for that. Ten classes of outline and filled shapes (disc, ring, square,
frame, triangles up and down, plus, cross, diamond, bars), each at a random place, size and
colour, on a random colour gradient, with noise: the class is the shape, never the colour.

    .venv/bin/python benchmarks/shapes.py    # writes benchmarks/work/shapes_{train,calib,test}.npz

The splits come from separate random streams (seeds below), so no image is in two of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WORK = HERE / "work"
SIDE = 32
SUPERSAMPLE = 4  # each pixel's coverage from 4x4 sub-pixel samples: anti-aliased edges
# split: (images, seed of its random stream)
SPLITS = {"train": (4000, 1), "calib": (256, 2), "test": (1000, 3)}

Mask = Callable[[np.ndarray, np.ndarray, float], np.ndarray]  # (dx, dy, radius) -> inside


def _ring(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    d = np.hypot(dx, dy)
    return (d <= r) & (d >= 0.55 * r)


def _frame(dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    m = np.maximum(abs(dx), abs(dy))
    return (m <= r) & (m >= 0.6 * r)


def _triangle(dx: np.ndarray, dy: np.ndarray, r: float, up: bool) -> np.ndarray:
    dy = dy if up else -dy  # image rows grow downwards: dy < 0 is up
    return (dy <= 0.7 * r) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)


# one mask per class, in class order
SHAPES: dict[str, Mask] = {
    "disc": lambda dx, dy, r: np.hypot(dx, dy) <= r,
    "ring": _ring,
    "square": lambda dx, dy, r: np.maximum(abs(dx), abs(dy)) <= 0.85 * r,
    "frame": _frame,
    "triangle_up": lambda dx, dy, r: _triangle(dx, dy, r, up=True),
    "triangle_down": lambda dx, dy, r: _triangle(dx, dy, r, up=False),
    "plus": lambda dx, dy, r: (
        (np.minimum(abs(dx), abs(dy)) <= 0.25 * r) & (np.maximum(abs(dx), abs(dy)) <= r)
    ),
    "cross": lambda dx, dy, r: (
        (abs(abs(dx) - abs(dy)) <= 0.35 * r) & (np.maximum(abs(dx), abs(dy)) <= 0.8 * r)
    ),
    "diamond": lambda dx, dy, r: abs(dx) + abs(dy) <= r,
    "bars": lambda dx, dy, r: (abs(dx) <= r) & (abs(dy) <= r) & ((dy / r * 2.5 + 2.5) % 2 < 1),
}


def _coverage(shape: Mask, cx: float, cy: float, r: float) -> np.ndarray:
    """The share of each pixel the shape covers, from SUPERSAMPLE^2 samples a pixel."""
    n = SIDE * SUPERSAMPLE
    grid = (np.arange(n) + 0.5) / SUPERSAMPLE
    dx, dy = np.meshgrid(grid - cx, grid - cy)
    inside = shape(dx, dy, r).astype(np.float32)
    return inside.reshape(SIDE, SUPERSAMPLE, SIDE, SUPERSAMPLE).mean((1, 3))


def _image(rng: np.random.Generator, label: int) -> np.ndarray:
    """One 3x32x32 image of class `label` in [0, 1]."""
    r = rng.uniform(5.0, 11.0)
    cx, cy = rng.uniform(r + 1, SIDE - r - 1, size=2)
    cover = _coverage(list(SHAPES.values())[label], cx, cy, r)
    # background: a linear gradient between two colours, in a random direction
    c0, c1 = rng.uniform(0, 1, (2, 3, 1, 1))
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * np.arange(SIDE)[None, :] + np.sin(angle) * np.arange(SIDE)[:, None]
    ramp = (ramp - ramp.min()) / np.ptp(ramp)
    background = c0 + (c1 - c0) * ramp
    # foreground: a colour at least 0.35 away (mean over channels) from the background's mean
    while True:
        fg = rng.uniform(0, 1, (3, 1, 1))
        if abs(fg - background.mean((1, 2), keepdims=True)).mean() >= 0.35:
            break
    img = background * (1 - cover) + fg * cover + rng.normal(0, 0.08, (3, SIDE, SIDE))
    return np.clip(img, 0, 1).astype(np.float32)


def make_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`n` images with balanced labels (x: n x 3 x 32 x 32 float32, y: int64), from `seed`."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % len(SHAPES)).astype(np.int64)
    return np.stack([_image(rng, int(label)) for label in y]), y


def paths() -> dict[str, Path]:
    """The three splits' files, drawn on first use (deterministic: the same files each time)."""
    out = {name: WORK / f"shapes_{name}.npz" for name in SPLITS}
    for name, (n, seed) in SPLITS.items():
        if not out[name].exists():
            WORK.mkdir(parents=True, exist_ok=True)
            x, y = make_split(n, seed)
            tmp = out[name].with_suffix(f".{os.getpid()}.npz")
            np.savez(tmp, x=x, y=y)
            tmp.replace(out[name])  # whole or absent: parallel jobs may draw it at once
    return out


if __name__ == "__main__":
    for name, path in paths().items():
        print(name, path)
