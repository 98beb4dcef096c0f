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


# onnxruntime's input types, as numpy's
ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}  # fmt: skip


def onnx_feeds(session_inputs: Sequence, x: Batch) -> dict[str, np.ndarray]:
    """onnxruntime's feeds for a session's inputs (its get_inputs()): a dict by name, a bare
    array the first input's, each cast to the type the model declares (ids kept as int64 in
    spikeport's data files are int32 in some models)."""
    feeds = x if isinstance(x, dict) else {session_inputs[0].name: x}
    types = {i.name: ORT_TYPES.get(i.type) for i in session_inputs}
    return {
        k: v if types.get(k) is None else v.astype(types[k], copy=False) for k, v in feeds.items()
    }


def is_integer(t: TensorInfo) -> bool:
    """Integer inputs (token ids, masks) are indices and flags, never quantized values."""
    return np.issubdtype(np.dtype(t.dtype), np.integer)
