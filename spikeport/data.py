"""Data files (DESIGN.md section 4): .npz with `x` (float32, N x input shape) and `y` (int64, N).

Every error names the file and the key.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeport.errors import BadInput
from spikeport.fileio import existing_file, sha256_file


@dataclass
class Dataset:
    path: Path
    x: np.ndarray
    y: np.ndarray | None

    @property
    def provenance(self) -> dict[str, object]:
        return {"file": self.path.name, "sha256": sha256_file(self.path), "n": len(self.x)}


def _read(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise BadInput(f"{p}: is a single .npy array, expected an .npz with key 'x'")
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise BadInput(f"{p}: not a readable .npz file ({str(e).splitlines()[0]})") from None


def load_data(
    path: str | os.PathLike[str],
    input_shape: tuple[int, ...] | None = None,
    labels: bool = False,
    n_classes: int | None = None,
) -> Dataset:
    """Load and check a data file against the model input shape and, if asked, its labels."""
    p = existing_file(path, "data file")
    arrays = _read(p)
    if "x" not in arrays:
        raise BadInput(f"{p}: key 'x' is missing (keys: {', '.join(arrays) or 'none'})")
    x = arrays["x"]
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 1 or len(x) == 0:
        raise BadInput(f"{p}: key 'x' must be a non-empty numeric array, got {x.dtype}{x.shape}")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise BadInput(
            f"{p}: key 'x' holds samples of shape {tuple(x.shape[1:])}, the model "
            f"input expects {tuple(input_shape)}"
        )
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise BadInput(f"{p}: key 'x' contains NaN or infinite values")
    y = arrays.get("y")
    if labels and y is None:
        raise BadInput(f"{p}: key 'y' (labels) is missing (keys: {', '.join(arrays)})")
    if y is not None:
        y = _check_labels(p, y, len(x), n_classes)
    return Dataset(p, x, y)


def _check_labels(p: Path, y: np.ndarray, n: int, n_classes: int | None) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise BadInput(f"{p}: key 'y' must be {n} integer labels, got {y.dtype}{y.shape}")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise BadInput(
            f"{p}: key 'y' has labels outside 0..{n_classes - 1} (min {y.min()}, max {y.max()})"
        )
    return y.astype(np.int64)
