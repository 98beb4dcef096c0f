"""LiteRT (ai-edge-litert) as the float / int8 reference for .tflite models.

It plays the part onnxruntime plays for ONNX: calibration activations (`litert_runner`) and
the ANN's predictions in eval (`litert_logits`). Data stays (N, C, H, W) as DESIGN section 4
says; it is transposed to the model's NHWC here, quantised when the model's input is int8
(round half away from zero, as TFLite does), and every tensor read back is dequantised and
brought to the IR layout. The interpreter runs TFLite's builtin kernels without the default
XNNPACK delegate, so every intermediate tensor is real when all tensors are preserved.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from spikeport.convert.calibrate import Runner
from spikeport.convert.tflite_import import INSTALL_HINT
from spikeport.errors import BadInput
from spikeport.fileio import existing_file
from spikeport.ir.graph import Graph


def interpreter(
    path: str | os.PathLike[str], preserve_all: bool = False, xnnpack: bool = False
) -> Any:
    """A LiteRT interpreter for `path` (builtin reference kernels, one thread; `xnnpack`: with
    LiteRT's default XNNPACK delegate, which also runs MediaPipe's transposed convolution)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    p = existing_file(path, "TFLite model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors warns that it is for debugging
        try:
            return Interpreter(
                model_path=str(p),
                num_threads=1,
                experimental_preserve_all_tensors=preserve_all,
                experimental_op_resolver_type=OpResolverType.AUTO
                if xnnpack
                else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
        except (ValueError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"{p}: LiteRT cannot load it ({first})") from None


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dt = detail["dtype"]
    if not np.issubdtype(dt, np.integer):
        return x.astype(dt)
    scale, zp = detail["quantization"]
    v = x.astype(np.float64) / scale
    q = np.sign(v) * np.floor(np.abs(v) + 0.5) + zp
    info = np.iinfo(dt)
    return np.clip(q, info.min, info.max).astype(dt)


def _dequantize(v: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zp = detail["quantization"]
    if np.issubdtype(v.dtype, np.integer) and scale:
        return ((v.astype(np.float64) - zp) * scale).astype(np.float32)
    return v.astype(np.float32)


def _to_ir(v: np.ndarray, layout: list[Any]) -> np.ndarray:
    """A batch of a TFLite tensor in the IR layout (batch first)."""
    if layout[0] == "nhwc":
        return np.moveaxis(v, -1, 1)
    if layout[0] == "hwc":
        c, h, w = layout[1:]
        return np.moveaxis(v.reshape(len(v), h, w, c), -1, 1).reshape(len(v), -1)
    return v


def run(
    interp: Any, x: np.ndarray, fetch: list[int]
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Run (N, C, H, W) or (N, K) data; return the raw batches of tensors `fetch` and their
    details. A model whose input declares a dynamic batch (shape signature -1) runs in one
    batch; others run one sample at a time: a converter writes batch-1 constants into
    RESHAPE ops, and LiteRT then folds samples together without an error."""
    inp = interp.get_input_details()[0]
    feed = _quantize(np.moveaxis(x, 1, -1) if x.ndim == 4 else x, inp)
    sig = inp.get("shape_signature")
    try:
        if sig is None or len(sig) == 0 or int(sig[0]) != -1:
            raise ValueError("batch fixed at 1")
        vals, details = _invoke(interp, inp["index"], [feed], fetch)
        if any(v.shape[:1] != (len(x),) for v in vals):
            raise ValueError("a fetched tensor lost the batch axis")
        return vals, details
    except (ValueError, RuntimeError):
        try:
            return _invoke(interp, inp["index"], [feed[i : i + 1] for i in range(len(x))], fetch)
        except (ValueError, RuntimeError) as e:  # e.g. a custom op LiteRT has no kernel for
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"LiteRT cannot run the model ({first})") from None


def _invoke(
    interp: Any, index: int, feeds: list[np.ndarray], fetch: list[int]
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Invoke once per feed (all of one shape: tensors are allocated once) and concatenate."""
    interp.resize_tensor_input(index, list(feeds[0].shape))
    interp.allocate_tensors()
    got: list[list[np.ndarray]] = [[] for _ in fetch]
    for feed in feeds:
        interp.set_tensor(index, feed)
        interp.invoke()
        for k, i in enumerate(fetch):
            got[k].append(interp.get_tensor(i).copy())
    details = {d["index"]: d for d in interp.get_tensor_details()}
    return [np.concatenate(v) for v in got], [details[i] for i in fetch]


def _all_outputs(interp: Any, x: np.ndarray) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    return run(interp, x, [int(d["index"]) for d in interp.get_output_details()])


# What computed a reference, as eval reports it: the builtin kernels, or the XNNPACK delegate
# where they lack a custom op (MediaPipe's transposed convolution).
BUILTIN, DELEGATE = "LiteRT (ai-edge-litert)", "LiteRT (ai-edge-litert), XNNPACK delegate"


def litert_reference(path: str | os.PathLike[str], x: np.ndarray) -> tuple[list[np.ndarray], str]:
    """Every output of the source .tflite run by LiteRT, in the model's order, dequantised,
    batch first, in the IR layout (a 4-D (NHWC) output comes back (N, C, H, W), as the
    importer makes every rank-4 tensor an image), and which kernels ran it (BUILTIN or
    DELEGATE)."""
    kernels = BUILTIN
    try:
        vals, got = _all_outputs(interpreter(path), x)
    except BadInput as e:
        if "custom op" not in str(e):
            raise
        # The builtin kernels lack it; the XNNPACK delegate has MediaPipe's transposed
        # convolution (its outputs only: it keeps no intermediate tensors to calibrate on).
        vals, got = _all_outputs(interpreter(path, xnnpack=True), x)
        kernels = DELEGATE
    outs = [_dequantize(v, d) for v, d in zip(vals, got, strict=True)]
    return [np.moveaxis(v, -1, 1) if v.ndim == 4 else v for v in outs], kernels


def litert_outputs(path: str | os.PathLike[str], x: np.ndarray) -> list[np.ndarray]:
    """litert_reference's outputs alone."""
    return litert_reference(path, x)[0]


def litert_logits(path: str | os.PathLike[str], x: np.ndarray, output: int = 0) -> np.ndarray:
    """The reference: output `output` (by position) of the source .tflite run by LiteRT, as
    litert_reference gives it (a (N, K) classifier output stays (N, K))."""
    return nth_output(litert_outputs(path, x), output, path)


def nth_output(outs: list[np.ndarray], output: int, path: str | os.PathLike[str]) -> np.ndarray:
    if not 0 <= output < len(outs):
        raise BadInput(f"{path}: output {output} asked, the model has {len(outs)}")
    return outs[output]


def litert_runner(path: str | os.PathLike[str], graph: Graph) -> Runner:
    """Run the source .tflite exposing the TFLite twins of the named IR tensors, dequantised
    and in IR layout (mirrors onnx_runner). A tensor that exists only in the IR (the input of
    a layer that absorbed a constant, a layout transpose) comes from the graph's ANN view on
    the same data: equal to LiteRT for a float model (tested), the dequantised network for an
    int8 one."""
    twins = graph.meta.get("tflite", {}).get("tensors", {})
    sim: Any = None

    def runner(x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
        nonlocal sim
        known = [n for n in names if n in twins]
        out: dict[str, np.ndarray] = {}
        if known:
            interp = interpreter(path, preserve_all=True)
            vals, details = run(interp, x, [int(twins[n]["index"]) for n in known])
            for n, v, d in zip(known, vals, details, strict=True):
                out[n] = _to_ir(_dequantize(v, d), twins[n]["layout"])
        rest = [n for n in names if n not in twins]
        if rest:
            if sim is None:
                from spikeport.sim import Simulator

                sim = Simulator(graph, "ann")
            trace = sim.run(x, 1, record=True).trace
            out |= {n: trace[n][0] for n in rest}
        return out

    return runner


__all__ = [
    "interpreter",
    "litert_logits",
    "litert_outputs",
    "litert_reference",
    "litert_runner",
    "nth_output",
    "run",
]
