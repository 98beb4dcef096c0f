"""TFLite ops of real vision models (issue #15) on tiny generated models, each against LiteRT:
PAD, PRELU, LEAKY_RELU, LOGISTIC, HARD_SWISH, TANH, MUL/ADD/SUB/DIV by constants (folded or
`scale` / `channel_scale` / `offset`) and of two streams (`add`, `mul`, SiLU), MEAN anywhere,
RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR in every coordinate mode, RESHAPE to detection-head
shapes, CONCATENATION of them, STRIDED_SLICE, SOFTMAX at an output (dropped, recorded), several
outputs in order; refusals name the operator index and op in one line."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from spikeport.cli.main import main  # noqa: E402
from spikeport.convert import convert  # noqa: E402
from spikeport.convert.litert import (  # noqa: E402
    litert_logits,
    litert_outputs,
    litert_reference,
    litert_runner,
)
from spikeport.convert.tflite_import import import_tflite  # noqa: E402
from spikeport.errors import UnsupportedOp  # noqa: E402
from spikeport.quantize import get_profile, quantize  # noqa: E402
from spikeport.sim.simulator import Simulator  # noqa: E402

EX = Path(__file__).resolve().parent.parent / "examples"
_spec = importlib.util.spec_from_file_location("make_digits_tflite", EX / "make_digits_tflite.py")
assert _spec is not None and _spec.loader is not None
mk = sys.modules.setdefault("make_digits_tflite", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mk)
fb, OP, ACT = mk.fb, mk.fb.BuiltinOperator, mk.fb.ActivationFunctionType
Model = tuple[bytes, tuple[int, ...]]


def _w(seed: int, *shape: int, gain: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (gain * rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def _c(wr, name: str, values) -> int:
    """A float32 constant tensor."""
    v = np.asarray(values, np.float32)
    return wr.tensor(name, list(v.shape), data=v)


def _i(wr, name: str, values) -> int:
    """An int32 constant tensor (axes, shapes, paddings, sizes)."""
    v = np.asarray(values, np.int32)
    return wr.tensor(name, list(v.shape), np.int32, v)


def _conv(wr, x: int, name: str, w: np.ndarray, out: list[int], act=0, pad=None, stride=1):
    y = wr.tensor(name, out)
    b = _c(wr, f"{name}/b", np.linspace(-0.1, 0.1, w.shape[0]))
    opts = mk.options(
        fb.Conv2DOptionsT,
        padding=fb.Padding.SAME if pad is None else pad,
        strideH=stride,
        strideW=stride,
        fusedActivationFunction=act,
    )
    wr.op(OP.CONV_2D, [x, _c(wr, f"{name}/w", w), b], [y], opts)
    return y


def _depthwise(wr, x: int, w: np.ndarray, out: list[int]) -> int:
    """A 3x3 depthwise conv 'dw' (SAME, stride 1, multiplier 1), zero bias."""
    y = wr.tensor("dw", out)
    opts = mk.options(
        fb.DepthwiseConv2DOptionsT, padding=fb.Padding.SAME, strideH=1, strideW=1, depthMultiplier=1
    )
    wr.op(
        OP.DEPTHWISE_CONV_2D,
        [x, _c(wr, "dw/w", w), _c(wr, "dw/b", np.zeros(w.shape[-1]))],
        [y],
        opts,
    )
    return y


def _unary(wr, code: int, x: int, name: str, shape: list[int], opts=None) -> int:
    y = wr.tensor(name, shape)
    wr.op(code, [x], [y], opts)
    return y


def _binary(wr, code: int, a: int, b: int, name: str, shape: list[int], opts_cls) -> int:
    y = wr.tensor(name, shape)
    wr.op(code, [a, b], [y], mk.options(opts_cls))
    return y


def gates() -> Model:
    """PAD (H, W and channels) -> CONV_2D -> MUL, ADD by per-channel constants (folded) ->
    PRELU -> DEPTHWISE_CONV_2D -> HARD_SWISH -> squeeze-excite (MEAN keepDims, CONV_2D RELU,
    LOGISTIC, MUL of two streams) -> SUB of a constant (offset), MUL by a scalar (scale) and
    by a per-channel constant (channel_scale), DIV by a constant -> LEAKY_RELU, TANH, SUB and
    ADD of two streams, x * LOGISTIC(x) (SiLU) -> three outputs."""
    wr = mk.TFLiteWriter()
    s8 = [1, 6, 6, 8]
    x = wr.tensor("x", [1, 6, 6, 3])
    p = wr.tensor("pad", [1, 8, 8, 4])
    wr.op(OP.PAD, [x, _i(wr, "pad/p", [[0, 0], [1, 1], [1, 1], [0, 1]])], [p])
    c1 = _conv(wr, p, "c1", _w(1, 8, 3, 3, 4), s8, pad=fb.Padding.VALID)
    m1 = _binary(wr, OP.MUL, c1, _c(wr, "m1/c", _w(2, 1, 1, 1, 8)), "m1", s8, fb.MulOptionsT)
    a1 = _binary(wr, OP.ADD, _c(wr, "a1/c", np.linspace(-1, 1, 8)), m1, "a1", s8, fb.AddOptionsT)
    alpha = _c(wr, "prelu/alpha", np.linspace(0.05, 0.4, 8).reshape(1, 1, 8))
    pr = wr.tensor("prelu", s8)
    wr.op(OP.PRELU, [a1, alpha], [pr])
    dw = _depthwise(wr, pr, _w(3, 1, 3, 3, 8, gain=3), s8)
    hs = _unary(wr, OP.HARD_SWISH, dw, "hswish", s8)
    se = wr.tensor("se/mean", [1, 1, 1, 8])
    wr.op(
        OP.MEAN,
        [hs, _i(wr, "se/axes", [1, 2])],
        [se],
        mk.options(fb.ReducerOptionsT, keepDims=True),
    )
    se2 = _conv(wr, se, "se/conv", _w(4, 8, 1, 1, 8), [1, 1, 1, 8], act=ACT.RELU)
    gate = _unary(wr, OP.LOGISTIC, se2, "se/gate", [1, 1, 1, 8])
    g = _binary(wr, OP.MUL, hs, gate, "se/mul", s8, fb.MulOptionsT)
    sub = _binary(wr, OP.SUB, g, _c(wr, "sub/c", _w(5, 1, 1, 1, 8)), "sub", s8, fb.SubOptionsT)
    half = _binary(wr, OP.MUL, sub, _c(wr, "half/c", [0.5]), "half", s8, fb.MulOptionsT)
    cs = _c(wr, "cs/c", np.linspace(0.5, 2.0, 8))
    sc = _binary(wr, OP.MUL, half, cs, "chscale", s8, fb.MulOptionsT)
    dv = _binary(wr, OP.DIV, sc, _c(wr, "div/c", [4.0]), "div", s8, fb.DivOptionsT)
    lr = _unary(wr, OP.LEAKY_RELU, dv, "leaky", s8, mk.options(fb.LeakyReluOptionsT, alpha=0.1))
    th = _unary(wr, OP.TANH, lr, "tanh", s8)
    d2 = _binary(wr, OP.SUB, th, g, "diff", s8, fb.SubOptionsT)
    sg = _unary(wr, OP.LOGISTIC, d2, "sig", s8)
    silu = _binary(wr, OP.MUL, d2, sg, "silu", s8, fb.MulOptionsT)
    rev = _binary(wr, OP.SUB, _c(wr, "rev/c", [1.0]), silu, "rev", s8, fb.SubOptionsT)
    out = _binary(wr, OP.ADD, rev, th, "sum", s8, fb.AddOptionsT)
    return wr.finish([x], [out, se2, pr]), (3, 6, 6)


def head() -> Model:
    """A detection head: CONV_2D stride 2 -> per-anchor RESHAPE to (1, anchors, 4) at two
    scales (one after MAX_POOL_2D), CONCATENATION on the anchor axis, STRIDED_SLICE (a range
    and a shrunk axis), MEAN over the last axis, FULLY_CONNECTED, SOFTMAX at the output."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 8, 8, 3])
    f = _conv(wr, x, "f", _w(6, 6, 3, 3, 3), [1, 4, 4, 6], act=ACT.RELU, stride=2)
    reg = _conv(wr, f, "reg", _w(7, 8, 1, 1, 6), [1, 4, 4, 8])
    r1 = wr.tensor("reg/r", [1, 32, 4])
    wr.op(
        OP.RESHAPE,
        [reg, _i(wr, "reg/shape", [1, 32, 4])],
        [r1],
        mk.options(fb.ReshapeOptionsT, newShape=[1, 32, 4]),
    )
    mp = wr.tensor("pool", [1, 2, 2, 6])
    wr.op(
        OP.MAX_POOL_2D,
        [f],
        [mp],
        mk.options(
            fb.Pool2DOptionsT,
            padding=fb.Padding.VALID,
            filterHeight=2,
            filterWidth=2,
            strideH=2,
            strideW=2,
        ),
    )
    reg2 = _conv(wr, mp, "reg2", _w(8, 8, 1, 1, 6), [1, 2, 2, 8])
    r2 = wr.tensor("reg2/r", [1, 8, 4])
    wr.op(
        OP.RESHAPE,
        [reg2, _i(wr, "reg2/shape", [1, 8, 4])],
        [r2],
        mk.options(fb.ReshapeOptionsT, newShape=[1, 8, 4]),
    )
    cat = wr.tensor("boxes", [1, 40, 4])
    wr.op(OP.CONCATENATION, [r1, r2], [cat], mk.options(fb.ConcatenationOptionsT, axis=1))
    sl = wr.tensor("boxes/xy", [1, 40, 2])
    ss = fb.StridedSliceOptionsT
    wr.op(
        OP.STRIDED_SLICE,
        [cat, _i(wr, "sl/b", [0, 0, 1]), _i(wr, "sl/e", [1, 40, 3]), _i(wr, "sl/s", [1, 1, 1])],
        [sl],
        mk.options(ss),
    )
    first = wr.tensor("boxes/first", [1, 40])
    wr.op(
        OP.STRIDED_SLICE,
        [cat, _i(wr, "sh/b", [0, 0, 0]), _i(wr, "sh/e", [1, 40, 1]), _i(wr, "sh/s", [1, 1, 1])],
        [first],
        mk.options(ss, shrinkAxisMask=4),
    )
    m = wr.tensor("boxes/mean", [1, 40])
    wr.op(OP.MEAN, [cat, _i(wr, "m/axes", [2])], [m], mk.options(fb.ReducerOptionsT))
    s = _binary(wr, OP.ADD, m, first, "score", [1, 40], fb.AddOptionsT)
    logits = wr.tensor("logits", [1, 3])
    wr.op(
        OP.FULLY_CONNECTED,
        [s, _c(wr, "fc/w", _w(9, 3, 40)), -1],
        [logits],
        mk.options(fb.FullyConnectedOptionsT),
    )
    prob = wr.tensor("prob", [1, 3])
    wr.op(OP.SOFTMAX, [logits], [prob], mk.options(fb.SoftmaxOptionsT, beta=1.0))
    return wr.finish([x], [cat, sl, prob]), (3, 8, 8)


def blaze() -> Model:
    """A BlazeFace-style block: CONV_2D stride 2 + PRELU, DEPTHWISE_CONV_2D + CONV_2D to more
    channels, the shortcut PADded on channels and ADDed, PRELU, MAX_POOL_2D, RESIZE_NEAREST_NEIGHBOR
    back up, RELU; two outputs: a LOGISTIC map and MEAN -> FULLY_CONNECTED."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 8, 8, 3])
    c0 = _conv(wr, x, "c0", _w(20, 8, 3, 3, 3), [1, 4, 4, 8], stride=2)
    a = wr.tensor("a", [1, 4, 4, 8])
    wr.op(OP.PRELU, [c0, _c(wr, "a/alpha", np.full((1, 1, 8), 0.25))], [a])
    dw = _depthwise(wr, a, _w(21, 1, 3, 3, 8, gain=3), [1, 4, 4, 8])
    b = _conv(wr, dw, "pw", _w(22, 12, 1, 1, 8), [1, 4, 4, 12])
    short = wr.tensor("short", [1, 4, 4, 12])
    wr.op(OP.PAD, [a, _i(wr, "short/p", [[0, 0], [0, 0], [0, 0], [0, 4]])], [short])
    s = _binary(wr, OP.ADD, b, short, "res", [1, 4, 4, 12], fb.AddOptionsT)
    c = wr.tensor("c", [1, 4, 4, 12])
    wr.op(OP.PRELU, [s, _c(wr, "c/alpha", np.linspace(0.1, 0.3, 12))], [c])
    mp = wr.tensor("pool", [1, 2, 2, 12])
    wr.op(
        OP.MAX_POOL_2D,
        [c],
        [mp],
        mk.options(
            fb.Pool2DOptionsT,
            padding=fb.Padding.VALID,
            filterHeight=2,
            filterWidth=2,
            strideH=2,
            strideW=2,
        ),
    )
    up = wr.tensor("up", [1, 4, 4, 12])
    wr.op(
        OP.RESIZE_NEAREST_NEIGHBOR,
        [mp, _i(wr, "up/size", [4, 4])],
        [up],
        mk.options(fb.ResizeNearestNeighborOptionsT, halfPixelCenters=True),
        version=3,
    )
    d = _unary(wr, OP.RELU, up, "d", [1, 4, 4, 12])
    seg = _unary(
        wr,
        OP.LOGISTIC,
        _conv(wr, d, "segc", _w(23, 1, 1, 1, 12), [1, 4, 4, 1]),
        "seg",
        [1, 4, 4, 1],
    )
    m = wr.tensor("mean", [1, 12])
    wr.op(OP.MEAN, [d, _i(wr, "mean/axes", [1, 2])], [m], mk.options(fb.ReducerOptionsT))
    out = wr.tensor("out", [1, 4])
    wr.op(
        OP.FULLY_CONNECTED,
        [m, _c(wr, "fc/w", _w(24, 4, 12)), _c(wr, "fc/b", np.zeros(4))],
        [out],
        mk.options(fb.FullyConnectedOptionsT),
    )
    return wr.finish([x], [seg, out]), (3, 8, 8)


def resize(code: int, align: bool, half: bool, size: tuple[int, int]) -> Callable[[], Model]:
    def build() -> Model:
        wr = mk.TFLiteWriter()
        x = wr.tensor("x", [1, 5, 4, 2])
        c = _conv(wr, x, "c", _w(10, 3, 1, 1, 2), [1, 5, 4, 3])
        y = wr.tensor("up", [1, *size, 3])
        cls = (
            fb.ResizeBilinearOptionsT
            if code == OP.RESIZE_BILINEAR
            else fb.ResizeNearestNeighborOptionsT
        )
        opts = mk.options(cls, alignCorners=align, halfPixelCenters=half)
        wr.op(code, [c, _i(wr, "size", list(size))], [y], opts, version=3 if half else 1)
        return wr.finish([x], [y]), (2, 5, 4)

    return build


MODELS: dict[str, Callable[[], Model]] = {"gates": gates, "head": head, "blaze": blaze}
for _code, _kind in ((OP.RESIZE_BILINEAR, "bilinear"), (OP.RESIZE_NEAREST_NEIGHBOR, "nearest")):
    for _align, _half, _mode in (
        (False, False, "asym"),
        (True, False, "corners"),
        (False, True, "half"),
    ):
        for _size in ((10, 8), (7, 3)):
            MODELS[f"{_kind}_{_mode}_{_size[0]}x{_size[1]}"] = resize(_code, _align, _half, _size)


def transpose_conv(k: int, s: int, pad: int, bias: bool) -> Callable[[], Model]:
    def build() -> Model:
        wr = mk.TFLiteWriter()
        x = wr.tensor("x", [1, 4, 3, 2])
        c = _conv(wr, x, "c", _w(40, 3, 1, 1, 2), [1, 4, 3, 3], act=ACT.RELU)
        if pad == fb.Padding.SAME:
            out = [4 * s, 3 * s]
        else:
            out = [(4 - 1) * s + k, (3 - 1) * s + k]
        y = wr.tensor("up", [1, *out, 5])
        ins = [_i(wr, "shape", [1, *out, 5]), _c(wr, "w", _w(41, 5, k, k, 3)), c]
        if bias:
            ins.append(_c(wr, "b", np.linspace(-0.3, 0.3, 5)))
        opts = mk.options(fb.TransposeConvOptionsT, padding=pad, strideH=s, strideW=s)
        wr.op(OP.TRANSPOSE_CONV, ins, [y], opts, version=3 if bias else 1)
        return wr.finish([x], [y]), (2, 4, 3)

    return build


for _k, _s, _pad, _b in (
    (3, 2, fb.Padding.SAME, True), (4, 2, fb.Padding.SAME, False), (2, 2, fb.Padding.VALID, True),
    (3, 1, fb.Padding.SAME, True), (3, 3, fb.Padding.VALID, False), (5, 2, fb.Padding.SAME, True),
):  # fmt: skip
    _pname = "same" if _pad == fb.Padding.SAME else "valid"
    MODELS[f"transpose_conv_k{_k}_s{_s}_{_pname}"] = transpose_conv(_k, _s, _pad, _b)


def alias() -> Model:
    """CONV_2D -> identity RESHAPE -> MUL by a per-channel constant, ADDed to the conv output
    itself: the conv has two readers (one through the alias), so the MUL must not fold."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 4, 4, 2])
    c = _conv(wr, x, "c", _w(50, 3, 1, 1, 2), [1, 4, 4, 3])
    r = wr.tensor("same", [1, 4, 4, 3])
    wr.op(
        OP.RESHAPE,
        [c, _i(wr, "same/shape", [1, 4, 4, 3])],
        [r],
        mk.options(fb.ReshapeOptionsT, newShape=[1, 4, 4, 3]),
    )
    m = _binary(wr, OP.MUL, r, _c(wr, "m/c", [2.0, -1.0, 0.5]), "m", [1, 4, 4, 3], fb.MulOptionsT)
    out = _binary(wr, OP.ADD, m, c, "out", [1, 4, 4, 3], fb.AddOptionsT)
    return wr.finish([x], [out]), (2, 4, 4)


MODELS["alias"] = alias


def _write(tmp_path: Path, name: str, model: bytes) -> Path:
    p = tmp_path / f"{name}.tflite"
    p.write_bytes(model)
    return p


def _data(shape: tuple[int, ...], n: int = 12) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ann_view_equals_litert(name, tmp_path):
    """Every tensor with a TFLite twin and every output (in order) equal LiteRT's."""
    model, shape = MODELS[name]()
    path = _write(tmp_path, name, model)
    g = import_tflite(path)
    x = _data(shape)
    trace = Simulator(g, "ann").run(x, 1, record=True).trace
    twins = sorted(g.meta["tflite"]["tensors"])
    acts = litert_runner(path, g)(x, twins)
    for t in twins:
        np.testing.assert_allclose(acts[t], trace[t][0], rtol=1e-4, atol=1e-5, err_msg=t)
    ref = litert_outputs(path, x)
    assert len(ref) == len(g.outputs)
    for k, out in enumerate(g.outputs):
        want = ref[k]
        if k in _dropped_positions(g):
            want = np.log(want)  # the graph gives logits: log-softmax of them equals log(prob)
            got = trace[out][0] - np.log(np.exp(trace[out][0]).sum(-1, keepdims=True))
        else:
            got = trace[out][0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=out)
        np.testing.assert_array_equal(litert_logits(path, x, output=k), ref[k])


def _dropped_positions(g) -> list[int]:
    dropped = g.meta["source"]["dropped_softmax"]
    return [k for k, o in enumerate(g.outputs) if o in dropped]


def test_gates_map_to_the_onnx_vocabulary(tmp_path):
    """Constants fold into the conv before them where they can (MUL, ADD after conv_2d_1),
    else become scale / channel_scale / offset; c - x is a negation then an offset; x *
    LOGISTIC(x) is one silu node (the LOGISTIC goes)."""
    g = import_tflite(_write(tmp_path, "g", gates()[0]))
    assert [n.op for n in g.nodes] == [
        "pad", "conv2d", "prelu", "conv2d", "hardswish", "avgpool2d", "conv2d", "relu",
        "sigmoid", "mul", "offset", "scale", "channel_scale", "scale", "prelu", "tanh",
        "scale", "add", "silu", "scale", "offset", "add",
    ]  # fmt: skip
    assert g.node("pad_0").attrs["pads"] == [0, 1, 1, 1, 1, 1]  # (C, H, W) begins, then ends
    assert g.node("prelu_4").params["slope"].shape == (8, 1, 1)
    assert g.node("mul_12").attrs["factor"] == 0.5
    assert g.node("mul_13").params["factor"].shape == (8, 1, 1)
    assert g.node("div_14").attrs["factor"] == pytest.approx(0.25)
    assert float(g.node("leaky_relu_15").params["slope"]) == pytest.approx(0.1)
    assert g.node("sub_11").params["value"].shape == (8, 1, 1)
    assert g.outputs == ["add_21", "conv_2d_8_relu", "prelu_4"]
    assert g.meta["source"]["outputs"] == ["sum", "se/conv", "prelu"]


def test_no_fold_into_a_layer_read_twice(tmp_path):
    g = import_tflite(_write(tmp_path, "a", alias()[0]))
    assert [n.op for n in g.nodes] == ["conv2d", "channel_scale", "add"]


def test_head_layouts_and_dropped_softmax(tmp_path):
    """(1, anchors, 4) tensors keep TFLite's order: the NHWC conv output is transposed to
    (H, W, C) once, then reshaped; the final SOFTMAX is dropped and recorded."""
    g = import_tflite(_write(tmp_path, "h", head()[0]))
    assert [g.shape(o) for o in g.outputs] == [(40, 4), (40, 2), (3,)]
    assert g.node("reshape_2_hwc").attrs["perm"] == [1, 2, 0]
    assert g.node("concatenation_6").attrs["axis"] == 0
    assert g.meta["source"]["dropped_softmax"] == ["fully_connected_11"]
    assert any("SOFTMAX" in n and "dropped" in n for n in g.meta["source"]["notes"])


@pytest.mark.parametrize("name", ["blaze", "gates", "head"])
def test_convert_calibrates_on_litert(name, tmp_path):
    """Calibration reads LiteRT's tensors, and the IR's own view for IR-only tensors."""
    model, shape = MODELS[name]()
    path = _write(tmp_path, name, model)
    np.savez(tmp_path / "calib.npz", x=_data(shape, 32))
    snn = convert(path, tmp_path / "calib.npz")
    assert snn.outputs == import_tflite(path).outputs and snn.stage == "snn"


def test_blaze_quantizes_and_runs(tmp_path):
    model, shape = blaze()
    path = _write(tmp_path, "b", model)
    x = _data(shape, 32)
    np.savez(tmp_path / "calib.npz", x=x)
    q = quantize(convert(path, tmp_path / "calib.npz"), x, get_profile("sim"))
    out = Simulator(q, "int").run(x[:4], 4).outputs
    assert [out[o].shape[1:] for o in q.outputs] == [(4, 1, 4, 4), (4, 4)]


# ---- refusals: one line, operator index and op name -------------------------------------


def _chain(code: int, opts=None, extra: list[int] | None = None, **kw) -> bytes:
    """x -> CONV_2D -> <op> -> CONV_2D (the op is operator 1)."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 4, 4, 2])
    h = _conv(wr, x, "a", _w(11, 2, 1, 1, 2), [1, 4, 4, 2])
    ins = [h] + [e(wr) if callable(e) else e for e in (extra or [])]
    y = wr.tensor("y", kw.get("shape", [1, 4, 4, 2]))
    wr.op(code, ins, [y], opts, version=kw.get("version", 1))
    out = _conv(wr, y, "b", _w(12, 2, 1, 1, 2), kw.get("shape", [1, 4, 4, 2]))
    return wr.finish([x], [out])


REFUSED = {
    "unknown op": (lambda: _chain(OP.EXP), r"operator 1 \(EXP\): op is not in"),
    "mirror pad": (
        lambda: _chain(
            OP.MIRROR_PAD,
            mk.options(fb.MirrorPadOptionsT),
            extra=[lambda wr: _i(wr, "p", [[0, 0]] * 4)],
        ),
        r"operator 1 \(MIRROR_PAD\): op is not in",
    ),
    "pad value": (
        lambda: _chain(
            OP.PADV2,
            extra=[lambda wr: _i(wr, "p", [[0, 0]] * 4), lambda wr: _c(wr, "v", [1.0])],
        ),
        r"operator 1 \(PADV2\): only zero padding",
    ),
    "resize corners and half pixel": (
        lambda: _chain(
            OP.RESIZE_BILINEAR,
            mk.options(fb.ResizeBilinearOptionsT, alignCorners=True, halfPixelCenters=True),
            extra=[lambda wr: _i(wr, "s", [4, 4])],
        ),
        r"operator 1 \(RESIZE_BILINEAR\): align_corners with half_pixel",
    ),
    "zero scale": (
        lambda: _chain(
            OP.MUL, mk.options(fb.MulOptionsT), extra=[lambda wr: _c(wr, "z", [[[[1.0, 0.0]]]])]
        ),
        None,  # folded into the conv before: allowed (a zero weight row)
    ),
    "fused sign bit": (
        lambda: _chain(
            OP.ADD,
            mk.options(fb.AddOptionsT, fusedActivationFunction=ACT.SIGN_BIT),
            extra=[lambda wr: _c(wr, "z", [1.0])],
        ),
        r"operator 1 \(ADD\): fused activation SIGN_BIT",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_refusals_name_the_operator(case, tmp_path):
    build, pattern = REFUSED[case]
    path = _write(tmp_path, "m", build())
    if pattern is None:
        import_tflite(path)
        return
    with pytest.raises(UnsupportedOp, match=pattern):
        import_tflite(path)
    np.savez(tmp_path / "c.npz", x=_data((2, 4, 4), 2))
    res = CliRunner().invoke(
        main,
        ["convert", str(path), "--calib", str(tmp_path / "c.npz"), "-o", str(tmp_path / "o.spk")],
    )
    assert res.exit_code == 2 and res.stderr.strip().count("\n") == 0
    assert "operator 1" in res.stderr


def test_mul_by_zero_not_after_a_layer_is_refused(tmp_path):
    """A zero in a constant MUL that cannot fold would zero a channel: not a scale."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 4, 4, 2])
    h = _unary(wr, OP.RELU, x, "r", [1, 4, 4, 2])
    y = _binary(wr, OP.MUL, h, _c(wr, "z", [1.0, 0.0]), "y", [1, 4, 4, 2], fb.MulOptionsT)
    out = _conv(wr, y, "b", _w(12, 2, 1, 1, 2), [1, 4, 4, 2])
    path = _write(tmp_path, "z", wr.finish([x], [out]))
    with pytest.raises(UnsupportedOp, match=r"operator 1 \(MUL\): multiplying by a constant"):
        import_tflite(path)


# ---- int8: the new ops in a full-integer body -----------------------------------------------


def int8_blocks(act: dict[str, list[float]] | None = None) -> Model:
    """QUANTIZE -> PAD -> CONV_2D -> PRELU -> LOGISTIC, MUL of the two (SiLU), ADD back -> MEAN and
    RESIZE_BILINEAR -> DEQUANTIZE, in float (act None) or int8 with activation ranges `act`
    (TFLite's spec: per-channel int8 weights, int32 biases, LOGISTIC at 1/256 - 128, PAD and
    RESIZE sharing their input's parameters)."""
    wr = mk.TFLiteWriter()
    q = act is not None
    dt = np.int8 if q else np.float32

    def qa(name: str):
        return mk.asymmetric(*act[name]) if q else None  # type: ignore[index]

    def t(name: str, shape: list[int], quant=None):
        return wr.tensor(name, shape, dt, quant=quant if q else None)

    x = wr.tensor("x", [1, 6, 6, 2])
    cur = x
    if q:
        cur = t("x_q", [1, 6, 6, 2], mk.asymmetric(0.0, 4.0))
        wr.op(OP.QUANTIZE, [x], [cur], version=2)
    q_in = mk.asymmetric(0.0, 4.0)
    p = t("pad", [1, 8, 8, 2], q_in)
    wr.op(OP.PAD, [cur, _i(wr, "pad/p", [[0, 0], [1, 1], [1, 1], [0, 0]])], [p], version=2)
    w = _w(30, 4, 3, 3, 2)
    bias = np.linspace(-0.2, 0.2, 4).astype(np.float32)
    if q:
        sw = np.abs(w.reshape(4, -1)).max(1) / 127
        wt = wr.tensor(
            "c/w",
            [4, 3, 3, 2],
            np.int8,
            np.round(w / sw[:, None, None, None]),
            mk.Quant(list(sw), [0] * 4),
        )
        bt = wr.tensor(
            "c/b",
            [4],
            np.int32,
            np.round(bias / (sw * q_in.scale[0])),
            mk.Quant(list(sw * q_in.scale[0]), [0] * 4),
        )
    else:
        wt, bt = _c(wr, "c/w", w), _c(wr, "c/b", bias)
    c = t("conv", [1, 6, 6, 4], qa("conv"))
    wr.op(
        OP.CONV_2D,
        [p, wt, bt],
        [c],
        mk.options(fb.Conv2DOptionsT, padding=fb.Padding.VALID, strideH=1, strideW=1),
        version=3 if q else 1,
    )
    alpha = np.linspace(0.1, 0.4, 4).reshape(1, 1, 4).astype(np.float32)
    if q:
        sa = float(np.abs(alpha).max() / 127)
        at = wr.tensor("prelu/alpha", [1, 1, 4], np.int8, np.round(alpha / sa), mk.Quant([sa], [0]))
    else:
        at = _c(wr, "prelu/alpha", alpha)
    pr = t("prelu", [1, 6, 6, 4], qa("prelu"))
    wr.op(OP.PRELU, [c, at], [pr])
    sg = t("sig", [1, 6, 6, 4], mk.Quant([1 / 256], [-128]))
    wr.op(OP.LOGISTIC, [pr], [sg], version=2 if q else 1)
    m = t("mul", [1, 6, 6, 4], qa("mul"))
    wr.op(OP.MUL, [pr, sg], [m], mk.options(fb.MulOptionsT), version=2 if q else 1)
    a = t("add", [1, 6, 6, 4], qa("add"))
    wr.op(OP.ADD, [m, pr], [a], mk.options(fb.AddOptionsT), version=2 if q else 1)
    mean = t("mean", [1, 1, 1, 4], qa("mean"))
    wr.op(
        OP.MEAN,
        [a, _i(wr, "mean/axes", [1, 2])],
        [mean],
        mk.options(fb.ReducerOptionsT, keepDims=True),
        version=2 if q else 1,
    )
    up = t("up", [1, 9, 9, 4], qa("add"))
    wr.op(
        OP.RESIZE_BILINEAR,
        [a, _i(wr, "up/size", [9, 9])],
        [up],
        mk.options(fb.ResizeBilinearOptionsT, halfPixelCenters=True),
        version=3,
    )
    outs = [mean, up]
    if q:
        outs = []
        for name, src, shape in (("mean_f", mean, [1, 1, 1, 4]), ("up_f", up, [1, 9, 9, 4])):
            o = wr.tensor(name, shape)
            wr.op(OP.DEQUANTIZE, [src], [o], version=2)
            outs.append(o)
    return wr.finish([x], outs), (2, 6, 6)


def test_int8_new_ops_match_litert(tmp_path):
    """The dequantised graph of an int8 PAD / PRELU / LOGISTIC / MUL / ADD / MEAN / RESIZE body
    is within a few int8 steps of LiteRT's int8 kernels."""
    x = np.random.default_rng(1).uniform(0, 4, size=(16, 2, 6, 6)).astype(np.float32)
    model_f, _ = int8_blocks()
    ranges = mk.float_ranges(model_f, x)
    model, _ = int8_blocks({k: list(v) for k, v in ranges.items()})
    path = _write(tmp_path, "q", model)
    g = import_tflite(path)
    assert [n.op for n in g.nodes] == [
        "pad",
        "conv2d",
        "prelu",
        "silu",
        "add",
        "avgpool2d",
        "resize",
    ]  # prelu * LOGISTIC(prelu) is SiLU
    assert g.meta["source"]["activations"] == "int8 (dequantised)"
    out = Simulator(g, "ann").run(x, 1).outputs
    for k, o in enumerate(g.outputs):
        ref = litert_outputs(path, x)[k]
        step = mk.asymmetric(*ranges["add"]).scale[0]
        assert np.abs(out[o][0] - ref).max() <= 3 * step, o  # measured: 0.4 and 2.0 steps


def _mediapipe_transpose_conv_bias(x, w, b, padding: int, stride: tuple[int, int]):
    """MediaPipe's Convolution2DTransposeBias as its Prepare and Eval compute it (NHWC x,
    OHWI w): every input pixel scatters w into the output at in * s - P // 2 + f."""
    n, h, wd, _ = x.shape
    cout, kh, kw, _ = w.shape
    sh, sw = stride
    lost = [max(0, k - (i - 1) % s - 1) if padding == 1 else 0 for k, i, s in
            ((kh, h, sh), (kw, wd, sw))]  # fmt: skip
    out = np.broadcast_to(b, (n, sh * (h - 1) + kh - lost[0], sw * (wd - 1) + kw - lost[1], cout))
    out = out.astype(np.float64).copy()
    for iy in range(h):
        for ix in range(wd):
            for fy in range(kh):
                for fx in range(kw):
                    oy, ox = iy * sh - lost[0] // 2 + fy, ix * sw - lost[1] // 2 + fx
                    if 0 <= oy < out.shape[1] and 0 <= ox < out.shape[2]:
                        out[:, oy, ox] += x[:, iy, ix] @ w[:, fy, fx].T
    return out


@pytest.mark.parametrize(
    "padding, stride, kernel, size",
    [(1, (2, 2), (4, 4), (5, 6)), (1, (2, 2), (3, 3), (4, 4)), (2, (2, 1), (3, 2), (3, 5))],
)
def test_mediapipe_transpose_conv_bias_matches_its_kernel(tmp_path, padding, stride, kernel, size):
    """The custom op of MediaPipe's selfie and hair segmentation models: raw options (padding,
    stride_w, stride_h), inputs x, filter, bias; the ANN view equals its reference loop."""
    wr = mk.TFLiteWriter()
    h, wd = size
    x = wr.tensor("x", [1, h, wd, 3])
    w = _w(1, 2, *kernel, 3)
    b = np.array([0.3, -0.2], np.float32)
    ref = _mediapipe_transpose_conv_bias(np.zeros((1, h, wd, 3)), w, b, padding, stride)
    y = wr.tensor("y", list(ref.shape))
    opts = np.array([padding, stride[1], stride[0]], "<i4").tobytes()
    wr.op(OP.CUSTOM, [x, _c(wr, "w", w), _c(wr, "b", b)], [y], custom="Convolution2DTransposeBias",
          custom_options=opts)  # fmt: skip
    path = _write(tmp_path, "tcb", wr.finish([x], [y]))
    g = import_tflite(path)
    assert g.meta["tflite"]["own_kernels"] == ["CUSTOM:Convolution2DTransposeBias"]
    xs = _data((h, wd, 3), 4)
    got = Simulator(g, "ann").run(xs.transpose(0, 3, 1, 2), 1).outputs[g.outputs[0]][0]
    want = _mediapipe_transpose_conv_bias(xs, w, b, padding, stride)
    np.testing.assert_allclose(got, want.transpose(0, 3, 1, 2), rtol=1e-5, atol=1e-5)
    # LiteRT runs it in its XNNPACK delegate only: eval's reference falls back to that, and says so
    (ref,), kernels = litert_reference(path, xs.transpose(0, 3, 1, 2))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert kernels == "LiteRT (ai-edge-litert), XNNPACK delegate"
