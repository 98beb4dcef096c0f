"""TFLite import: the digits CNN as float and int8 .tflite against its ONNX twin (acceptance:
within 0.5 points at T = 4 and 8), every supported op against LiteRT on small generated
models, int8 provenance, and refusals (unsupported op, SOFTMAX inside, truncated file)."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("ai_edge_litert")

from spikeport.cli.main import main  # noqa: E402
from spikeport.convert import convert, import_onnx  # noqa: E402
from spikeport.convert.calibrate import onnx_runner  # noqa: E402
from spikeport.convert.litert import litert_logits, litert_runner  # noqa: E402
from spikeport.convert.pipeline import import_model  # noqa: E402
from spikeport.convert.tflite_import import import_tflite  # noqa: E402
from spikeport.data import load_data  # noqa: E402
from spikeport.errors import BadInput, UnsupportedOp  # noqa: E402
from spikeport.eval import evaluate  # noqa: E402
from spikeport.eval.evaluate import onnx_logits  # noqa: E402
from spikeport.quantize import get_profile, quantize  # noqa: E402
from spikeport.sim.simulator import Simulator  # noqa: E402
from spikeport.targets import emit, verify  # noqa: E402

EX = Path(__file__).resolve().parent.parent / "examples"
CALIB, TEST = EX / "digits_calib.npz", EX / "digits_test.npz"
TFLITE = {"float": EX / "digits_cnn.tflite", "int8": EX / "digits_cnn_int8.tflite"}

_spec = importlib.util.spec_from_file_location("make_digits_tflite", EX / "make_digits_tflite.py")
assert _spec is not None and _spec.loader is not None
mk = sys.modules.setdefault("make_digits_tflite", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(mk)
fb, OP, ACT = mk.fb, mk.fb.BuiltinOperator, mk.fb.ActivationFunctionType


def cli(*args: object) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


# ---- the digits CNN: acceptance ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> dict[str, dict[str, Any]]:
    """Integer-mode accuracy at T = 4, 8 and the ANN's, per source (onnx, float, int8)."""
    ds = load_data(TEST, labels=True)
    calib_x = np.load(CALIB)["x"]
    sources = {"onnx": ("onnx_path", EX / "digits_cnn.onnx")}
    sources |= {kind: ("tflite_path", path) for kind, path in TFLITE.items()}
    out = {}
    for kind, (ref, path) in sources.items():
        g = quantize(convert(path, CALIB), calib_x, get_profile("sim"))
        rep = evaluate(g, ds, [4, 8], "int", **{ref: str(path)})
        out[kind] = {r["T"]: r["accuracy"] for r in rep["records"]}
        out[kind]["ann"] = rep["ann"]["accuracy"]
        out[kind]["source"] = rep["ann"]["source"]
        out[kind]["graph"] = g
    return out


@pytest.mark.parametrize("kind", ["float", "int8"])
@pytest.mark.parametrize("T", [4, 8])
def test_digits_tflite_within_half_a_point_of_onnx(digits, kind, T):
    assert abs(digits[kind][T] - digits["onnx"][T]) <= 0.005 + 1e-9
    assert digits[kind]["source"].startswith("LiteRT")
    assert abs(digits[kind]["ann"] - digits["onnx"]["ann"]) <= 0.005 + 1e-9


def test_float_tflite_imports_the_same_network_as_onnx():
    """NHWC weights transposed back, the flatten's H, W, C order undone in the dense weights."""
    a, b = import_onnx(EX / "digits_cnn.onnx"), import_tflite(TFLITE["float"])
    assert [n.op for n in a.nodes] == [n.op for n in b.nodes]
    for na, nb in zip(a.nodes, b.nodes, strict=True):
        assert na.attrs == nb.attrs
        for k, v in na.params.items():
            np.testing.assert_allclose(nb.params[k], v, rtol=1e-6, atol=1e-7)


def test_litert_reference_matches_onnxruntime():
    x = np.load(TEST)["x"][:64]
    np.testing.assert_allclose(
        litert_logits(TFLITE["float"], x), onnx_logits(EX / "digits_cnn.onnx", x), atol=1e-4
    )
    g_onnx, g_tfl = import_onnx(EX / "digits_cnn.onnx"), import_tflite(TFLITE["float"])
    relu_a = [n.output for n in g_onnx.nodes if n.op == "relu"]
    relu_b = [n.output for n in g_tfl.nodes if n.op == "relu"]
    acts_a = onnx_runner(EX / "digits_cnn.onnx")(x, relu_a)
    acts_b = litert_runner(TFLITE["float"], g_tfl)(x, relu_b)
    for a, b in zip(relu_a, relu_b, strict=True):
        np.testing.assert_allclose(acts_b[b], acts_a[a], atol=1e-4)


def test_int8_scales_are_kept_and_the_first_layer_keeps_its_codes(digits):
    """Provenance: every int8 scale / zero point in meta; the first conv (uniform input scale)
    gets exactly the TFLite int8 codes back from spikeport's own quantisation."""
    g = digits["int8"]["graph"]
    q = g.meta["tflite"]["quantization"]
    assert q["tensors"]["input"] == {
        "dtype": "int8",
        "scale": [pytest.approx(1 / 255)],
        "zero_point": [-128],
    }
    conv = g.node("conv_2d_0")
    rec = q["params"]["conv_2d_0"]["weight"]
    assert rec["dtype"] == "int8" and rec["axis"] == 0 and len(rec["scale"]) == 16
    codes = np.round(conv.params["weight"] / np.array(rec["scale"])[:, None, None, None])
    assert np.abs(codes).max() == 127
    np.testing.assert_array_equal(conv.params["weight_q"], codes)
    assert g.meta["source"]["activations"] == "int8 (dequantised)"
    relu = q["tensors"]["conv_2d_0_relu"]
    assert g.node("conv_2d_0_relu").attrs["cap"] == pytest.approx(
        relu["scale"][0] * (127 - relu["zero_point"][0])
    )


def test_per_layer_thresholds_keep_every_int8_code():
    """With one threshold per layer every layer's input scale is uniform, so spikeport's int8
    weights are exactly the TFLite model's codes in every layer."""
    snn = convert(TFLITE["int8"], CALIB, per_channel=False)
    g = quantize(snn, np.load(CALIB)["x"], get_profile("sim"))
    params = g.meta["tflite"]["quantization"]["params"]
    for name, rec in params.items():
        w = g.node(name).params["weight"]
        scale = np.array(rec["weight"]["scale"]).reshape((-1,) + (1,) * (w.ndim - 1))
        np.testing.assert_array_equal(g.node(name).params["weight_q"], np.round(w / scale))
    assert sorted(params) == ["conv_2d_0", "conv_2d_2", "fully_connected_5"]


HAS_CC = shutil.which("cc") is not None and shutil.which("make") is not None


@pytest.mark.skipif(not HAS_CC, reason="no host C compiler (cc) / make")
def test_int8_tflite_emits_bit_exact_c(digits, tmp_path):
    g = digits["int8"]["graph"]
    emit(g, "c", tmp_path / "c")
    x = np.load(TEST)["x"][:16]
    assert verify(g, tmp_path / "c", x, T=8)["samples"] == 16


def test_cli_flow_and_tflite_reference(tmp_path):
    spk, q = tmp_path / "m.spk", tmp_path / "m_q.spk"
    assert cli("convert", TFLITE["int8"], "--calib", CALIB, "-o", spk, "-q")[0] == 0
    assert cli("quantize", spk, "--calib", CALIB, "-o", q, "-q")[0] == 0
    code, out, _ = cli("eval", q, "--data", TEST, "-T", "8", "--tflite", TFLITE["int8"])
    assert code == 0 and "| 8 |" in out
    code, _, err = cli("eval", q, "--data", TEST, "--tflite", TFLITE["float"], "-q")
    assert code == 2 and "sha256 differs" in err
    code, _, err = cli(
        "eval", q, "--data", TEST, "--tflite", TFLITE["int8"], "--onnx", EX / "digits_cnn.onnx"
    )
    assert code == 2 and "give one" in err


# ---- small generated models: every op against LiteRT ---------------------------------------


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (_rng().normal(size=shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def depthwise_mean_softmax() -> tuple[bytes, tuple[int, ...]]:
    """DEPTHWISE_CONV_2D (multiplier 2, stride 2, SAME, fused RELU6), MEAN over H, W without
    keepDims, FULLY_CONNECTED, SOFTMAX at the output."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 6, 6, 3])
    w = wr.tensor("dw/w", [1, 3, 3, 6], data=_w(6, 3, 3).transpose(1, 2, 0)[None] * 3)
    b = wr.tensor("dw/b", [6], data=np.linspace(-0.2, 0.4, 6, dtype=np.float32))
    y = wr.tensor("dw", [1, 3, 3, 6])
    opts = mk.options(
        fb.DepthwiseConv2DOptionsT,
        padding=fb.Padding.SAME,
        strideH=2,
        strideW=2,
        depthMultiplier=2,
        fusedActivationFunction=ACT.RELU6,
    )
    wr.op(OP.DEPTHWISE_CONV_2D, [x, w, b], [y], opts)
    axes = wr.tensor("mean/axes", [2], np.int32, np.array([1, 2]))
    m = wr.tensor("mean", [1, 6])
    wr.op(OP.MEAN, [y, axes], [m], mk.options(fb.ReducerOptionsT, keepDims=False))
    fw = wr.tensor("fc/w", [4, 6], data=_w(4, 6))
    fbias = wr.tensor("fc/b", [4], data=np.zeros(4, np.float32))
    logits = wr.tensor("logits", [1, 4])
    wr.op(OP.FULLY_CONNECTED, [m, fw, fbias], [logits], mk.options(fb.FullyConnectedOptionsT))
    prob = wr.tensor("prob", [1, 4])
    wr.op(OP.SOFTMAX, [logits], [prob], mk.options(fb.SoftmaxOptionsT, beta=1.0))
    return wr.finish([x], [prob]), (3, 6, 6)


def residual_concat_flatten() -> tuple[bytes, tuple[int, ...]]:
    """CONV_2D (SAME, fused RELU), a 1x1 CONV_2D without bias plus a constant ADD (folded),
    ADD of two streams (fused RELU), CONCATENATION on channels, MAX_POOL_2D with SAME padding,
    AVERAGE_POOL_2D, RESHAPE to (batch, features), a standalone RELU on the flattened NHWC
    tensor, FULLY_CONNECTED."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 5, 5, 2])
    a = _conv(wr, x, "a", _w(4, 3, 3, 2), ACT.RELU, fb.Padding.SAME)
    c1 = wr.tensor("b/w", [4, 1, 1, 2], data=_w(4, 1, 1, 2))
    zero = wr.tensor("b/zero", [4], data=np.zeros(4, np.float32))  # LiteRT needs a conv bias
    pre = wr.tensor("b/pre", [1, 5, 5, 4])
    wr.op(OP.CONV_2D, [x, c1, zero], [pre], _conv_opts(ACT.NONE, fb.Padding.VALID))
    bias = wr.tensor("b/bias", [1, 1, 1, 4], data=np.array([0.1, -0.1, 0.2, 0.0], np.float32))
    b = wr.tensor("b", [1, 5, 5, 4])
    wr.op(OP.ADD, [pre, bias], [b], mk.options(fb.AddOptionsT))
    s = wr.tensor("sum", [1, 5, 5, 4])
    wr.op(OP.ADD, [a, b], [s], mk.options(fb.AddOptionsT, fusedActivationFunction=ACT.RELU))
    cat = wr.tensor("cat", [1, 5, 5, 8])
    wr.op(OP.CONCATENATION, [s, a], [cat], mk.options(fb.ConcatenationOptionsT, axis=3))
    mp = wr.tensor("maxpool", [1, 3, 3, 8])
    wr.op(OP.MAX_POOL_2D, [cat], [mp], _pool(2, 2, fb.Padding.SAME))
    ap = wr.tensor("avgpool", [1, 2, 2, 8])
    wr.op(OP.AVERAGE_POOL_2D, [mp], [ap], _pool(2, 1, fb.Padding.VALID))
    shape = wr.tensor("flat/shape", [2], np.int32, np.array([-1, 32]))
    flat = wr.tensor("flat", [1, 32])
    wr.op(OP.RESHAPE, [ap, shape], [flat], mk.options(fb.ReshapeOptionsT, newShape=[-1, 32]))
    r = wr.tensor("flat_relu", [1, 32])
    wr.op(OP.RELU, [flat], [r])
    fw = wr.tensor("fc/w", [3, 32], data=_w(3, 32))
    fbias = wr.tensor("fc/b", [3], data=np.array([0.0, 0.1, -0.1], np.float32))
    out = wr.tensor("out", [1, 3])
    wr.op(OP.FULLY_CONNECTED, [r, fw, fbias], [out], mk.options(fb.FullyConnectedOptionsT))
    return wr.finish([x], [out]), (2, 5, 5)


def _conv(wr, x: int, name: str, w: np.ndarray, act: int, pad: int) -> int:
    wt = wr.tensor(f"{name}/w", list(w.shape), data=w)
    bt = wr.tensor(f"{name}/b", [w.shape[0]], data=np.full(w.shape[0], 0.05, np.float32))
    shape = list(wr.tensors[x].shape[:3]) + [w.shape[0]]
    y = wr.tensor(name, shape)
    wr.op(OP.CONV_2D, [x, wt, bt], [y], _conv_opts(act, pad))
    return y


def _conv_opts(act: int, pad: int):
    return mk.options(
        fb.Conv2DOptionsT, padding=pad, strideH=1, strideW=1, fusedActivationFunction=act
    )


def _pool(k: int, s: int, pad: int):
    return mk.options(
        fb.Pool2DOptionsT, padding=pad, filterHeight=k, filterWidth=k, strideH=s, strideW=s
    )


def dense_on_image() -> tuple[bytes, tuple[int, ...]]:
    """FULLY_CONNECTED straight on an NHWC image (TFLite flattens it implicitly, H, W, C)."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 4, 4, 2])
    wt = _w(3, 3, 3, 2)
    w = wr.tensor("c/w", [3, 3, 3, 2], data=wt)
    b = wr.tensor("c/b", [3], data=np.full(3, 0.1, np.float32))
    y = wr.tensor("c", [1, 2, 2, 3])
    wr.op(OP.CONV_2D, [x, w, b], [y], _conv_opts(ACT.RELU, fb.Padding.VALID))
    fw = wr.tensor("fc/w", [4, 12], data=_w(4, 12))
    out = wr.tensor("out", [1, 4])
    wr.op(OP.FULLY_CONNECTED, [y, fw, -1], [out], mk.options(fb.FullyConnectedOptionsT))
    return wr.finish([x], [out]), (2, 4, 4)


def clamps() -> tuple[bytes, tuple[int, ...]]:
    """FULLY_CONNECTED with a fused RELU_N1_TO_1, MAXIMUM and MINIMUM by scalar constants, a
    standalone RELU_N1_TO_1: each one ReLU between shifts."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 6])
    h = wr.tensor("h", [1, 5])
    fc = mk.options(fb.FullyConnectedOptionsT, fusedActivationFunction=ACT.RELU_N1_TO_1)
    wr.op(OP.FULLY_CONNECTED, [x, wr.tensor("h/w", [5, 6], data=_w(5, 6)), -1], [h], fc)
    lo, hi = wr.tensor("lo", [], data=np.float32(-0.5)), wr.tensor("hi", [], data=np.float32(0.3))
    m = wr.tensor("m", [1, 5])
    wr.op(OP.MAXIMUM, [h, lo], [m])
    g = wr.tensor("g", [1, 4])
    plain = mk.options(fb.FullyConnectedOptionsT)
    wr.op(OP.FULLY_CONNECTED, [m, wr.tensor("g/w", [4, 5], data=_w(4, 5)), -1], [g], plain)
    n, r = wr.tensor("n", [1, 4]), wr.tensor("r", [1, 4])
    wr.op(OP.MINIMUM, [hi, g], [n])
    wr.op(OP.RELU_N1_TO_1, [n], [r])
    out = wr.tensor("out", [1, 3])
    wr.op(OP.FULLY_CONNECTED, [r, wr.tensor("o/w", [3, 4], data=_w(3, 4)), -1], [out], plain)
    return wr.finish([x], [out]), (6,)


FLOAT_MODELS = {
    "clamps": clamps,
    "dense_on_image": dense_on_image,
    "depthwise_mean_softmax": depthwise_mean_softmax,
    "residual": residual_concat_flatten,
}


def _write(tmp_path: Path, name: str, model: bytes) -> Path:
    p = tmp_path / f"{name}.tflite"
    p.write_bytes(model)
    return p


@pytest.mark.parametrize("name", sorted(FLOAT_MODELS))
def test_every_tensor_matches_litert(name, tmp_path):
    """The IR's ANN view equals LiteRT on every tensor that has a TFLite twin (layouts
    included: NHWC images and a flattened NHWC vector)."""
    model, shape = FLOAT_MODELS[name]()
    path = _write(tmp_path, name, model)
    g = import_tflite(path)
    x = _rng().normal(size=(16, *shape)).astype(np.float32)
    trace = Simulator(g, "ann").run(x, 1, record=True).trace
    twins = sorted(g.meta["tflite"]["tensors"])
    acts = litert_runner(path, g)(x, twins)
    for t in twins:
        np.testing.assert_allclose(acts[t], trace[t][0], rtol=1e-4, atol=1e-5, err_msg=t)
    out = trace[g.outputs[0]][0]
    assert (litert_logits(path, x).argmax(1) == out.argmax(1)).all()
    np.savez(tmp_path / "calib.npz", x=x)
    snn = convert(path, tmp_path / "calib.npz")
    assert sum(n.op == "if" for n in snn.nodes) == sum(n.op == "relu" for n in g.nodes)


def test_shifts_around_neurons_fold_into_the_layers_beside_them(tmp_path):
    """The clamps' shifts fold into the dense layer before the neuron, into each other and into
    the dense layer after it; the folded network still equals LiteRT."""
    path = _write(tmp_path, "clamps", clamps()[0])
    g = import_model(path)
    assert [n.op for n in g.nodes] == [
        "dense", "relu", "offset", "relu", "dense",  # clip(-1, 1), max(., -0.5)
        "scale", "offset", "relu", "scale", "offset", "relu", "dense",  # min(., 0.3), clip
    ]  # fmt: skip
    x = _rng().normal(size=(64, 6)).astype(np.float32)
    out = Simulator(g, "ann").run(x, 1).outputs[g.outputs[0]][0]
    np.testing.assert_allclose(out, litert_logits(path, x), rtol=1e-4, atol=1e-5)


def test_folds_and_notes(tmp_path):
    g = import_tflite(_write(tmp_path, "d", depthwise_mean_softmax()[0]))
    conv = g.node("depthwise_conv_2d_0")
    assert conv.attrs["group"] == 3 and conv.params["weight"].shape == (6, 1, 3, 3)
    assert conv.attrs["pads"] == [0, 0, 1, 1]
    assert g.node("depthwise_conv_2d_0_relu6").attrs["cap"] == 6.0
    assert any("SOFTMAX" in n and "dropped" in n for n in g.meta["source"]["notes"])
    g = import_tflite(_write(tmp_path, "r", residual_concat_flatten()[0]))
    assert "add_2" not in [n.name for n in g.nodes]  # the constant ADD became conv_2d_1's bias
    np.testing.assert_allclose(g.node("conv_2d_1").params["bias"], [0.1, -0.1, 0.2, 0.0])
    assert g.node("max_pool_2d_5").attrs["pads"] == [0, 0, 1, 1]
    assert g.meta["tflite"]["tensors"]["reshape_7"]["layout"] == ["hwc", 8, 2, 2]


def int8_mlp() -> tuple[bytes, tuple[int, ...]]:
    """Float I/O around an int8 body: QUANTIZE, two int8 FULLY_CONNECTED, DEQUANTIZE."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 8])
    q_in = mk.Quant([4.0 / 255], [-128])
    xq = wr.tensor("x_q", [1, 8], np.int8, quant=q_in)
    wr.op(OP.QUANTIZE, [x], [xq], version=2)
    h_q, o_q = mk.Quant([3.0 / 255], [-128]), mk.Quant([0.05], [3])
    layers = [("h", _w(16, 8), h_q, ACT.RELU), ("o", _w(5, 16), o_q, ACT.NONE)]
    cur, cur_q = xq, q_in
    for name, w, q, act in layers:
        sw = float(np.abs(w).max() / 127)
        wq = wr.tensor(f"{name}/w", list(w.shape), np.int8, np.round(w / sw), mk.Quant([sw], [0]))
        bq = wr.tensor(
            f"{name}/b",
            [len(w)],
            np.int32,
            np.arange(len(w)) * 3,
            mk.Quant([sw * cur_q.scale[0]], [0]),
        )
        y = wr.tensor(name, [1, len(w)], np.int8, quant=q)
        opts = mk.options(fb.FullyConnectedOptionsT, fusedActivationFunction=act)
        wr.op(OP.FULLY_CONNECTED, [cur, wq, bq], [y], opts, version=4)
        cur, cur_q = y, q
    out = wr.tensor("out", [1, 5])
    wr.op(OP.DEQUANTIZE, [cur], [out], version=2)
    return wr.finish([x], [out]), (8,)


def test_int8_with_quantize_dequantize_matches_litert(tmp_path):
    path = _write(tmp_path, "q", int8_mlp()[0])
    g = import_tflite(path)
    assert [n.op for n in g.nodes] == ["dense", "relu", "dense"]
    assert g.node("fully_connected_1_relu").attrs["cap"] == pytest.approx(3.0)
    assert sum("QUANTIZE" in n for n in g.meta["source"]["notes"]) == 2
    x = _rng().uniform(0, 4, size=(64, 8)).astype(np.float32)
    ir = Simulator(g, "ann").run(x, 1).outputs[g.outputs[0]][0]
    ref = litert_logits(path, x)
    assert np.abs(ir - ref).max() < 0.1  # two output steps: int8 rounding inside
    assert (ir.argmax(1) == ref.argmax(1)).mean() >= 0.9


# ---- refusals ------------------------------------------------------------------------------


def _mlp_with(code: int, *, extra_fc: bool = True, opts=None) -> bytes:
    """x -> FULLY_CONNECTED -> <op code> -> FULLY_CONNECTED."""
    wr = mk.TFLiteWriter()
    x = wr.tensor("x", [1, 4])
    w = wr.tensor("w", [4, 4], data=_w(4, 4))
    h = wr.tensor("h", [1, 4])
    wr.op(OP.FULLY_CONNECTED, [x, w, -1], [h], mk.options(fb.FullyConnectedOptionsT))
    y = wr.tensor("y", [1, 4])
    wr.op(code, [h], [y], opts)
    out = wr.tensor("out", [1, 4])
    wr.op(OP.FULLY_CONNECTED, [y, w, -1], [out], mk.options(fb.FullyConnectedOptionsT))
    return wr.finish([x], [out])


def test_unsupported_builtin_is_refused_by_name_and_index(tmp_path):
    path = _write(tmp_path, "exp", _mlp_with(OP.EXP))
    with pytest.raises(UnsupportedOp, match=r"operator 1 \(EXP\): op is not in"):
        import_tflite(path)
    code, out, err = cli("convert", path, "--calib", CALIB, "-o", tmp_path / "o.spk")
    assert code == 2 and err.strip().count("\n") == 0 and "operator 1 (EXP)" in err
    assert not (tmp_path / "o.spk").exists()


def test_softmax_inside_the_network_is_refused(tmp_path):
    path = _write(tmp_path, "sm", _mlp_with(OP.SOFTMAX, opts=mk.options(fb.SoftmaxOptionsT)))
    with pytest.raises(UnsupportedOp, match=r"operator 1 \(SOFTMAX\): .*graph output"):
        import_tflite(path)


@pytest.mark.parametrize("frac", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_flatbuffer_is_one_line_and_exit_2(tmp_path, frac):
    data = TFLITE["int8"].read_bytes()
    path = _write(tmp_path, "cut", data[: int(len(data) * frac)])
    with pytest.raises(BadInput):
        import_tflite(path)
    code, out, err = cli("convert", path, "--calib", CALIB, "-o", tmp_path / "o.spk")
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0
    assert not (tmp_path / "o.spk").exists()


def test_unknown_extension_names_both_formats(tmp_path):
    p = tmp_path / "m.pb"
    p.write_bytes(b"x")
    code, _, err = cli("convert", p, "--calib", CALIB, "-o", tmp_path / "o.spk")
    assert code == 2 and ".tflite" in err
