"""Array kernels shared by every simulator mode (numpy, vectorised over the batch).

The integer mode calls the same float64 kernels on integer arrays: quantize proves every
partial sum stays below 2^31 < 2^53, so float64 accumulation of integers is exact whatever
order BLAS sums in.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pad(x: np.ndarray, pads: list[int], value: float = 0.0) -> np.ndarray:
    t, left, b, r = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=value)


def windows(
    x: np.ndarray,
    kernel: list[int],
    strides: list[int],
    pads: list[int],
    dilations: list[int] = (1, 1),
    pad_value: float = 0.0,
) -> np.ndarray:
    """View of x (N, C, H, W) as (N, C, Ho, Wo, kh, kw) sliding windows (no copy)."""
    kh, kw = kernel
    dh, dw = dilations
    xp = _pad(x, pads, pad_value)
    span = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
    v = sliding_window_view(xp, span, axis=(2, 3))
    return v[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
) -> np.ndarray:
    """ONNX Conv (cross-correlation) in float64: x (N, C, H, W), w (O, C/g, kh, kw)."""
    win = windows(x.astype(np.float64, copy=False), list(w.shape[2:]), strides, pads, dilations)
    w = w.astype(np.float64, copy=False)
    cg, og = w.shape[1], w.shape[0] // group
    outs = []
    for g in range(group):
        wg = w[g * og : (g + 1) * og]
        y = np.tensordot(win[:, g * cg : (g + 1) * cg], wg, axes=([1, 4, 5], [1, 2, 3]))
        outs.append(y.transpose(0, 3, 1, 2))
    y = outs[0] if group == 1 else np.concatenate(outs, axis=1)
    if b is not None:
        y = y + b.astype(np.float64).reshape(1, -1, 1, 1)
    return y


def dense(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """y = x W^T + b over the last axis, in float64."""
    y = x.astype(np.float64, copy=False) @ w.astype(np.float64, copy=False).T
    return y if b is None else y + b.astype(np.float64)


def window_sum(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """Sum over each pooling window, zero padding (exact for integer arrays)."""
    return windows(x, kernel, strides, pads).sum(axis=(-2, -1))


def window_max(x: np.ndarray, kernel: list[int], strides: list[int], pads: list[int]) -> np.ndarray:
    """Max over each pooling window; padding never wins."""
    low = np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.integer) else -np.inf
    return windows(x, kernel, strides, pads, pad_value=low).max(axis=(-2, -1))


def conv_fanout(
    in_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
) -> np.ndarray:
    """How many outputs of a conv read each input element: (C, H, W) integer map."""
    c, h, wd = in_shape
    ones = np.ones((1, 1, h, wd), np.int64)
    idx = np.arange(ones.size).reshape(ones.shape)
    pads_ = list(pads)
    win = windows(idx, list(w_shape[2:]), strides, pads_, dilations, pad_value=-1)
    hits = np.bincount(win[win >= 0].ravel(), minlength=h * wd).reshape(h, wd)
    return np.broadcast_to(hits * (w_shape[0] // group), (c, h, wd))
