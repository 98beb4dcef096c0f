"""Array kernels shared by every simulator mode (numpy, vectorised over the batch).

The integer mode calls the same float64 kernels on integer arrays: quantize proves every
partial sum stays below 2^31 < 2^53, so float64 accumulation of integers is exact whatever
order BLAS sums in.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def symmetric_pads(pads: list[int]) -> list[int] | None:
    """ONNX pads (top, left, bottom, right) as the (rows, columns) a convolution library
    pads by itself, or None where they are asymmetric (the input is padded first)."""
    t, left, b, r = pads
    return [t, left] if t == b and left == r else None


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


def conv_transpose_size(size: int, k: int, s: int, d: int, out_pad: int) -> int:
    """Length of ConvTranspose's full output along one axis, before `pads` crop it."""
    return (size - 1) * s + (k - 1) * d + 1 + out_pad


def conv_transpose2d(
    x: np.ndarray,
    w: np.ndarray,
    b: np.ndarray | None,
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    group: int,
    output_padding: list[int],
) -> np.ndarray:
    """ONNX ConvTranspose: x (N, C, H, W), w (C, O/g, kh, kw). Input (h, w) adds
    x * w[:, :, i, j] at full-output position (h*s + i*d, w*s + j*d); `output_padding` cells at
    the end get bias only; then pads (top, left, bottom, right) are cropped off.
    Integer x and w accumulate in int64 (exact, the "int" mode), anything else in float64:
    the same sums in the same order either way."""
    integer = np.issubdtype(x.dtype, np.integer) and np.issubdtype(w.dtype, np.integer)
    dt = np.int64 if integer else np.float64
    x, w = x.astype(dt, copy=False), w.astype(dt, copy=False)
    n, c, h, wd = x.shape
    cg, og, kh, kw = c // group, w.shape[1], w.shape[2], w.shape[3]
    (sh, sw), (dh, dw) = strides, dilations
    fh = conv_transpose_size(h, kh, sh, dh, output_padding[0])
    fw = conv_transpose_size(wd, kw, sw, dw, output_padding[1])
    y = np.zeros((n, og * group, fh, fw), dt)
    for g in range(group):
        xg, wg = x[:, g * cg : (g + 1) * cg], w[g * cg : (g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                tap = np.tensordot(xg, wg[:, :, i, j], axes=([1], [0]))  # (N, H, W, O/g)
                rows = slice(i * dh, i * dh + (h - 1) * sh + 1, sh)
                cols = slice(j * dw, j * dw + (wd - 1) * sw + 1, sw)
                y[:, g * og : (g + 1) * og, rows, cols] += tap.transpose(0, 3, 1, 2)
    top, left, bottom, right = pads
    y = y[:, :, top : fh - bottom, left : fw - right]
    if b is not None:
        y = y + b.astype(dt).reshape(1, -1, 1, 1)
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


def _tap_positions(size: int, k: int, s: int, d: int, p0: int, out: int) -> np.ndarray:
    """Along one axis of a ConvTranspose: the output position each (input, tap) pair writes,
    (size, k), or -1 where pads crop it off the output of length `out`."""
    pos = np.arange(size)[:, None] * s + np.arange(k)[None, :] * d - p0
    return np.where((pos >= 0) & (pos < out), pos, -1)


def _transpose_axes(
    in_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    output_padding: list[int],
) -> list[np.ndarray]:
    """_tap_positions of the rows and of the columns of a ConvTranspose."""
    out = []
    for i in range(2):
        size, k = in_shape[1 + i], w_shape[2 + i]
        full = conv_transpose_size(size, k, strides[i], dilations[i], output_padding[i])
        o = full - pads[i] - pads[i + 2]
        out.append(_tap_positions(size, k, strides[i], dilations[i], pads[i], o))
    return out


def conv_transpose_fanout(
    in_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    output_padding: list[int],
) -> np.ndarray:
    """How many outputs of a ConvTranspose each input element writes: (C, H, W) integer map.
    Separable: the taps that land inside the output, per row times per column, times the
    group's O/g output channels."""
    rows, cols = _transpose_axes(in_shape, w_shape, strides, pads, dilations, output_padding)
    hits = np.outer((rows >= 0).sum(axis=1), (cols >= 0).sum(axis=1))
    return np.broadcast_to(hits * w_shape[1], tuple(in_shape))


def conv_transpose_fanin(
    in_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    strides: list[int],
    pads: list[int],
    dilations: list[int],
    output_padding: list[int],
    group: int,
) -> int:
    """Synapses into the most-connected output of a ConvTranspose: (input, tap) pairs that
    reach one output cell, most per row times most per column, times the group's C/g."""
    rows, cols = _transpose_axes(in_shape, w_shape, strides, pads, dilations, output_padding)
    most = [int(np.bincount(p[p >= 0], minlength=1).max()) for p in (rows, cols)]
    return most[0] * most[1] * (in_shape[0] // group)
