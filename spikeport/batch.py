"""A batch of model inputs: one array for single-input models (CNNs, MLPs, ViTs), or a dict
{input name: array} for models with several inputs (text models: input_ids, attention_mask).

Every stage that moves data (calibration, quantize, simulator, eval, fine-tuning) slices and
counts batches through these helpers, so both forms travel the same code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spikeport.ir.graph import TensorInfo

Batch = np.ndarray | dict[str, np.ndarray]


def size(x: Batch) -> int:
    """Number of samples."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def take(x: Batch, index: slice | np.ndarray) -> Batch:
    """The samples at `index` (a slice or an index array), in the same form."""
    if isinstance(x, dict):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def named(inputs: Sequence[TensorInfo], x: Batch) -> dict[str, np.ndarray]:
    """{graph input name: array}: a bare array is the single input's."""
    if isinstance(x, dict):
        return {t.name: x[t.name] for t in inputs}
    if len(inputs) != 1:
        raise ValueError(f"the model takes {len(inputs)} inputs; pass a dict of arrays")
    return {inputs[0].name: x}


def onnx_feeds(input_names: Sequence[str], x: Batch) -> dict[str, np.ndarray]:
    """onnxruntime's feeds: a dict goes as it is (integer ids keep their type), a bare array
    is the first input's, as float32."""
    return x if isinstance(x, dict) else {input_names[0]: x.astype(np.float32)}


def is_integer(t: TensorInfo) -> bool:
    """Integer inputs (token ids, masks) are indices and flags, never quantized values."""
    return np.issubdtype(np.dtype(t.dtype), np.integer)
