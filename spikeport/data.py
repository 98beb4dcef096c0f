"""Data files (DESIGN.md section 4): .npz with `x` (float32, N x input shape) and `y` (int64, N).
Models with integer inputs (text models) read one key per input instead, named as the input
(`input_ids`, `attention_mask`: int64, N x sequence length).

Every error names the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikeport.batch import Batch, is_integer, named, size
from spikeport.errors import BadInput
from spikeport.fileio import existing_file, read_npz, sha256_file
from spikeport.ir.graph import Graph, TensorInfo
from spikeport.ir.ops import ELEMENT_MOVES


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


def _read(p: Path) -> dict[str, np.ndarray]:
    """Every array of the file; headers and sizes are checked before anything is allocated."""
    return read_npz(p, str(p))


def load_data(
    path: str | os.PathLike[str],
    inputs: Sequence[TensorInfo] | None = None,
    labels: bool = False,
    n_classes: int | None = None,
) -> Dataset:
    """Load and check a data file against the model's inputs and, if asked, its labels."""
    p = existing_file(path, "data file")
    arrays = _read(p)
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
    if np.iscomplexobj(x):
        raise BadInput(f"{p}: key '{key}' holds complex numbers ({x.dtype}); give real values")
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
        if x.dtype == np.uint64 and x.size and x.max() > np.iinfo(np.int64).max:
            raise BadInput(f"{p}: key '{key}' holds integers beyond int64")
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


def vocab_sizes(graph: Graph) -> dict[str, int]:
    """{graph input: rows of the embedding table its ids index}, for inputs that feed an
    `embed` node (directly or through reshapes and slices)."""
    inputs = {t.name for t in graph.inputs}
    out: dict[str, int] = {}
    for node in graph.nodes:
        if node.op != "embed" or "table" not in node.params:
            continue
        if node.attrs.get("position_pad") is not None:  # rows are positions, not the ids
            continue
        t = node.inputs[0]
        while t not in inputs:
            prod = graph.producer(t)
            if prod is None or prod.op not in ELEMENT_MOVES or len(prod.inputs) != 1:
                break
            t = prod.inputs[0]
        if t in inputs:
            rows = int(node.params["table"].shape[0])
            out[t] = min(rows, out.get(t, rows))
    return out


def _check_ids(vocab: Mapping[str, int], arrays: Mapping[str, np.ndarray], where: object) -> None:
    for name, rows in vocab.items():
        ids = arrays.get(name)
        if ids is None or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
            continue
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= rows:
            bad = lo if lo < 0 else hi
            raise BadInput(
                f"{where}: key '{name}' holds token id {bad}, outside the vocabulary 0..{rows - 1} "
                "of the model's embedding table"
            )


def check_token_ids(graph: Graph, batch: Batch, where: object = "data") -> None:
    """Refuse token ids outside the vocabulary of the embedding table they index (negative
    ids too), naming the file (`where`) and the key. Models without an embedding: no-op."""
    vocab = vocab_sizes(graph)
    if vocab:
        _check_ids(vocab, named(graph.inputs, batch), where)
