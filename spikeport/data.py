"""Data files (DESIGN.md section 4): .npz with `x` (float32, N x input shape) and `y` (int64, N).
Models with integer inputs (text models) read one key per input instead, named as the input
(`input_ids`, `attention_mask`: int64, N x sequence length).

Every error names the file and the key.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeport.batch import Batch, is_integer, size
from spikeport.errors import BadInput
from spikeport.fileio import existing_file, sha256_file
from spikeport.ir.graph import TensorInfo


@dataclass
class Dataset:
    path: Path
    x: Batch  # one array, or {input name: array} for models with integer / several inputs
    y: np.ndarray | None

    def __len__(self) -> int:
        return size(self.x)

    @property
    def provenance(self) -> dict[str, object]:
        return {"file": self.path.name, "sha256": sha256_file(self.path), "n": len(self)}


def read_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise BadInput(f"{p}: is a single .npy array, expected an .npz with key 'x'")
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise BadInput(f"{p}: not a readable .npz file ({str(e).splitlines()[0]})") from None


def load_data(
    path: str | os.PathLike[str],
    inputs: Sequence[TensorInfo] | None = None,
    labels: bool = False,
    n_classes: int | None = None,
) -> Dataset:
    """Load and check a data file against the model's inputs and, if asked, its labels."""
    p = existing_file(path, "data file")
    arrays = read_npz(p)
    if inputs and (len(inputs) > 1 or is_integer(inputs[0])):
        x: Batch = {t.name: _input(p, arrays, t.name, t) for t in inputs}
        lengths = {k: len(v) for k, v in x.items()}
        if len(set(lengths.values())) > 1:
            raise BadInput(f"{p}: keys hold different numbers of samples {lengths}")
    else:
        x = _input(p, arrays, "x", inputs[0] if inputs else None)
    y = arrays.get("y")
    if labels and y is None:
        raise BadInput(f"{p}: key 'y' (labels) is missing (keys: {', '.join(arrays)})")
    if y is not None:
        y = _check_labels(p, y, size(x), n_classes)
    return Dataset(p, x, y)


def _input(p: Path, arrays: dict[str, np.ndarray], key: str, t: TensorInfo | None) -> np.ndarray:
    """One input array, checked against its tensor: shape, number type, finite values."""
    if key not in arrays:
        raise BadInput(f"{p}: key '{key}' is missing (keys: {', '.join(arrays) or 'none'})")
    x = arrays[key]
    if not np.issubdtype(x.dtype, np.number) or x.ndim < 1 or len(x) == 0:
        raise BadInput(
            f"{p}: key '{key}' must be a non-empty numeric array, got {x.dtype}{x.shape}"
        )
    if t is not None and tuple(x.shape[1:]) != tuple(t.shape):
        raise BadInput(
            f"{p}: key '{key}' holds samples of shape {tuple(x.shape[1:])}, the model "
            f"input '{t.name}' expects {tuple(t.shape)}"
        )
    if t is not None and is_integer(t):
        if not np.issubdtype(x.dtype, np.integer):
            raise BadInput(f"{p}: key '{key}' must hold integers (token ids / mask), got {x.dtype}")
        return x.astype(np.int64)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise BadInput(f"{p}: key '{key}' contains NaN or infinite values")
    return x


def _check_labels(p: Path, y: np.ndarray, n: int, n_classes: int | None) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (n,):
        raise BadInput(f"{p}: key 'y' must be {n} integer labels, got {y.dtype}{y.shape}")
    if n_classes is not None and (y.min() < 0 or y.max() >= n_classes):
        raise BadInput(
            f"{p}: key 'y' has labels outside 0..{n_classes - 1} (min {y.min()}, max {y.max()})"
        )
    return y.astype(np.int64)
