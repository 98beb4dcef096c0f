"""The anchor of the C kernels' cost (issue #21): the same network as an int8 ANN in plain C.

The ANN of an ONNX CNN or MLP (spikeport's import, before conversion) is quantized the way
TFLite does it: int8 activations with a scale and zero point per tensor from the calibration
min/max, int8 weights symmetric per output channel (conv) or per tensor (dense), int32 biases,
and requantization by a Q31 multiplier and shift (QuantizeMultiplier, then
MultiplyByQuantizedMultiplier: SaturatingRoundingDoublingHighMul and RoundingDivideByPOT), with
ReLU fused as the output clamp. Tensors are NHWC. The C kernels are written as TFLite Micro's
reference kernels are (conv: out_y, out_x, out_channel, filter_y, filter_x, in_channel, the
image bounds tested per filter tap; fully connected; max and average pooling with its rounding),
not as an optimised library: the anchor is what a plain-C int8 deployment costs.

The C is emitted with the same API as spikeport's (`spk_input_t`, `spk_run`), so the same QEMU
count firmware and size measurement apply (spikeport.targets.c.flash); `spk_run` runs the ANN
once whatever T. A numpy twin of the same integer arithmetic gives its accuracy, and the host
build is checked equal to the twin on the test set.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from spikeport.convert import import_onnx
from spikeport.sim import Simulator
from spikeport.targets.c.emit import BOARD, TEMPLATES, c_array

KERNELS_C = r"""
static int32_t srdhm(int32_t a, int32_t b)
{
    /* SaturatingRoundingDoublingHighMul */
    int64_t ab, nudge;
    if (a == b && a == INT32_MIN) return INT32_MAX;
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? (1 << 30) : (1 - (1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

static int32_t rdbpot(int32_t x, int exponent)
{
    /* RoundingDivideByPOT */
    const int32_t mask = (int32_t)((1u << exponent) - 1u);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static int32_t requant(int32_t acc, int32_t mult, int shift)
{
    /* MultiplyByQuantizedMultiplier */
    const int left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
    return rdbpot(srdhm(acc * (1 << left), mult), right);
}

static int8_t clamp8(int32_t v, int32_t lo)
{
    return (int8_t)(v < lo ? lo : (v > 127 ? 127 : v));
}

/*@conv2d*/
/* Conv (TFLite Micro reference, per-channel): NHWC input, OHWI filter. */
static void conv(const int8_t *in, int in_h, int in_w, int in_c, int32_t in_offset,
                 const int8_t *filt, int f_h, int f_w, const int32_t *bias,
                 const int32_t *mult, const int8_t *shift, int stride, int pad_h, int pad_w,
                 int8_t *out, int out_h, int out_w, int out_c, int32_t out_offset, int32_t act_min)
{
    int oy, ox, oc, fy, fx, ic;
    for (oy = 0; oy < out_h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            const int in_y0 = oy * stride - pad_h, in_x0 = ox * stride - pad_w;
            for (oc = 0; oc < out_c; ++oc) {
                int32_t acc = 0;
                for (fy = 0; fy < f_h; ++fy) {
                    const int in_y = in_y0 + fy;
                    for (fx = 0; fx < f_w; ++fx) {
                        const int in_x = in_x0 + fx;
                        if (in_x < 0 || in_x >= in_w || in_y < 0 || in_y >= in_h) continue;
                        for (ic = 0; ic < in_c; ++ic) {
                            const int32_t x = in[(in_y * in_w + in_x) * in_c + ic];
                            const int32_t w = filt[((oc * f_h + fy) * f_w + fx) * in_c + ic];
                            acc += w * (x + in_offset);
                        }
                    }
                }
                acc += bias[oc];
                acc = requant(acc, mult[oc], shift[oc]) + out_offset;
                out[(oy * out_w + ox) * out_c + oc] = clamp8(acc, act_min);
            }
        }
    }
}

/*@dense*/
/* FullyConnected (TFLite Micro reference, per-tensor). */
static void fully_connected(const int8_t *in, int n_in, int32_t in_offset, const int8_t *w,
                            const int32_t *bias, int32_t mult, int shift, int8_t *out, int n_out,
                            int32_t out_offset, int32_t act_min)
{
    int o, i;
    for (o = 0; o < n_out; ++o) {
        int32_t acc = 0;
        for (i = 0; i < n_in; ++i) acc += (int32_t)w[o * n_in + i] * ((int32_t)in[i] + in_offset);
        acc += bias[o];
        out[o] = clamp8(requant(acc, mult, shift) + out_offset, act_min);
    }
}

/*@pool*/
/* MaxPool / AveragePool (TFLite Micro reference, int8, NHWC, no padding here). */
static void pool(const int8_t *in, int in_h, int in_w, int c, int k, int stride, int average,
                 int8_t *out, int out_h, int out_w)
{
    int oy, ox, ch, fy, fx;
    for (oy = 0; oy < out_h; ++oy) {
        for (ox = 0; ox < out_w; ++ox) {
            for (ch = 0; ch < c; ++ch) {
                int32_t acc = average ? 0 : -128;
                int count = 0;
                for (fy = 0; fy < k; ++fy) {
                    for (fx = 0; fx < k; ++fx) {
                        const int y = oy * stride + fy, x = ox * stride + fx;
                        int32_t v;
                        if (y >= in_h || x >= in_w) continue;
                        v = in[(y * in_w + x) * c + ch];
                        if (average) acc += v; else if (v > acc) acc = v;
                        ++count;
                    }
                }
                if (average) acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
                out[(oy * out_w + ox) * c + ch] = clamp8(acc, -128);
            }
        }
    }
}
"""


def _kernels(used: set[str]) -> str:
    """The helpers, and the kernels of `used` ops only (unused static functions are errors
    under -Wall -Werror)."""
    head, *parts = KERNELS_C.split("/*@")
    kept = [p.split("*/", 1)[1] for p in parts if p.split("*/", 1)[0] in used]
    return head + "".join(kept)


def quantize_multiplier(m: float) -> tuple[int, int]:
    """TFLite's QuantizeMultiplier: m = q * 2^(shift - 31), q in [2^30, 2^31)."""
    if m == 0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = round(frac * (1 << 31))
    if q == 1 << 31:
        q //= 2
        shift += 1
    return q, shift


def _srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ab = a.astype(np.int64) * np.asarray(b, np.int64)
    v = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    return np.where(v >= 0, v >> 31, -((-v) >> 31))  # C's division truncates toward zero


def _rdbpot(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + ((x & mask) > threshold)


def requant(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    return _rdbpot(_srdhm(acc * (np.int64(1) << left), mult), right)


class Int8Ann:
    """The int8 ANN of an imported CNN/MLP: layers with integer parameters, a numpy twin, C."""

    def __init__(self, onnx_path: Path, calib_x: np.ndarray):
        graph = import_onnx(onnx_path)
        res = Simulator(graph, "ann").run(calib_x, 1, record=True)
        assert res.trace is not None
        rng = {t: (float(min(v.min(), 0)), float(max(v.max(), 0))) for t, v in res.trace.items()}
        self.graph, self.layers = graph, []
        self.qparams = {graph.input.name: _qparams(*rng[graph.input.name])}
        self.input_shape = graph.input.shape
        fused = {n.inputs[0]: n for n in graph.nodes if n.op == "relu"}
        shape_of = {graph.input.name: graph.input.shape}
        current = graph.input.name
        for n in graph.nodes:
            if n.op in ("relu", "reshape"):
                if n.op == "reshape":  # NHWC flatten: the next dense reads (h, w, c) order
                    self.qparams[n.output] = self.qparams[n.inputs[0]]
                    shape_of[n.output] = shape_of[n.inputs[0]]
                    current = n.output
                continue
            out = fused[n.output].output if n.output in fused else n.output
            relu = n.output in fused
            if n.op in ("maxpool2d", "avgpool2d"):
                self.qparams[out] = self.qparams[n.inputs[0]]  # TFLite: same scale in and out
            else:
                self.qparams[out] = _qparams(*rng[out])
            layer = {"op": n.op, "node": n, "in": current, "out": out, "relu": relu}
            layer["in_shape"], layer["out_shape"] = shape_of[current], graph.shape(n.output)
            shape_of[out] = graph.shape(n.output)
            self._weights(layer)
            self.layers.append(layer)
            current = out
        self.output = current

    def _weights(self, layer: dict[str, Any]) -> None:
        n = layer["node"]
        if n.op not in ("conv2d", "dense"):
            if n.op not in ("maxpool2d", "avgpool2d"):
                raise ValueError(f"int8 anchor: op {n.op} not handled")
            return
        s_in, _ = self.qparams[layer["in"]]
        s_out, _ = self.qparams[layer["out"]]
        w, b = n.params["weight"].astype(np.float64), n.params["bias"].astype(np.float64)
        if n.op == "conv2d":  # per output channel; OIHW -> OHWI
            s_w = np.maximum(np.abs(w).reshape(len(w), -1).max(axis=1), 1e-12) / 127
            wq = np.round(w / s_w[:, None, None, None]).astype(np.int64).transpose(0, 2, 3, 1)
        else:  # per tensor; columns in NHWC flatten order
            s_w = np.full(len(w), max(np.abs(w).max(), 1e-12) / 127)
            wq = np.round(w / s_w[:, None]).astype(np.int64)
            src = layer["in_shape"]
            if len(src) == 3:  # (c, h, w) flattened by the ONNX graph: reorder to (h, w, c)
                c, h, wd = src
                wq = wq.reshape(len(w), c, h, wd).transpose(0, 2, 3, 1).reshape(len(w), -1)
        m = [quantize_multiplier(float(s_in * sw / s_out)) for sw in s_w]
        layer.update(
            wq=wq,
            bq=np.round(b / (s_in * s_w)).astype(np.int64),
            mult=np.array([q for q, _ in m], np.int64),
            shift=np.array([s for _, s in m], np.int64),
        )

    def codes(self, x: np.ndarray) -> np.ndarray:
        """int8 NHWC input codes of float inputs (N, C, H, W) or (N, F)."""
        s, zp = self.qparams[self.graph.input.name]
        q = np.clip(np.round(x / s) + zp, -128, 127).astype(np.int64)
        return q.transpose(0, 2, 3, 1).reshape(len(x), -1) if q.ndim == 4 else q.reshape(len(x), -1)

    def run(self, codes: np.ndarray) -> np.ndarray:
        """The numpy twin of the C: int8 output codes (N, n_out)."""
        x = codes.astype(np.int64)
        for layer in self.layers:
            x = self._layer(layer, x)
        return x

    def _layer(self, layer: dict[str, Any], x: np.ndarray) -> np.ndarray:
        n, op = layer["node"], layer["op"]
        zp_in = self.qparams[layer["in"]][1]
        zp_out = self.qparams[layer["out"]][1]
        lo = zp_out if layer["relu"] else -128
        if op == "dense":
            acc = (x - zp_in) @ layer["wq"].T + layer["bq"]
            return np.clip(requant(acc, layer["mult"], layer["shift"]) + zp_out, lo, 127)
        c, h, w = layer["in_shape"]
        img = x.reshape(len(x), h, w, c)
        if op == "conv2d":
            wq = layer["wq"]
            pt, pl, pb, pr = n.attrs["pads"]
            s = n.attrs["strides"][0]
            padded = np.pad(img - zp_in, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
            _, oh, ow = layer["out_shape"]
            kh, kw = wq.shape[1:3]
            acc = np.zeros((len(x), oh, ow, len(wq)), np.int64)
            for i in range(kh):
                for j in range(kw):
                    patch = padded[:, i : i + s * oh : s, j : j + s * ow : s, :]
                    acc += patch @ wq[:, i, j, :].T
            acc += layer["bq"]
            y = np.clip(requant(acc, layer["mult"], layer["shift"]) + zp_out, lo, 127)
            return y.reshape(len(x), -1)
        k, s = n.attrs["kernel"][0], n.attrs["strides"][0]
        _, oh, ow = layer["out_shape"]
        win = np.stack(
            [img[:, i : i + s * oh : s, j : j + s * ow : s, :] for i in range(k) for j in range(k)]
        )
        if op == "maxpool2d":
            return win.max(axis=0).reshape(len(x), -1)
        total, count = win.sum(axis=0), k * k
        avg = np.where(total > 0, (total + count // 2) // count, -((-total + count // 2) // count))
        return np.clip(avg, -128, 127).reshape(len(x), -1)

    # -- C ---------------------------------------------------------------------------------

    def write_c(self, outdir: Path) -> None:
        """model.c / model.h with spikeport's C API, plus its Makefile, harness and board."""
        shutil.rmtree(outdir, ignore_errors=True)
        outdir.mkdir(parents=True)
        consts, calls, buffers = [], [], []
        size_in = int(np.prod(self.input_shape))
        for k, layer in enumerate(self.layers):
            consts += self._c_consts(k, layer)
            out_size = int(np.prod(layer["out_shape"]))
            buffers.append(f"static int8_t a{k}[{out_size}];")
            calls.append(self._c_call(k, layer, "in->input" if k == 0 else f"a{k - 1}"))
        n_out = int(np.prod(self.layers[-1]["out_shape"]))
        last = len(self.layers) - 1
        (outdir / "model.h").write_text(
            "/* int8 ANN anchor (benchmarks/int8_ann.py), spikeport's C API. */\n"
            "#ifndef SPK_MODEL_H\n#define SPK_MODEL_H\n#include <stdint.h>\n"
            f"typedef struct {{\n    int8_t input[{size_in}];\n}} spk_input_t;\n"
            f"#define SPK_OUTPUT_SIZE {n_out}\n#define SPK_MAX_TIMESTEPS 1\n"
            "#define SPK_NUM_PROBES 0\nvoid spk_reset(void);\n"
            "void spk_step(const spk_input_t *in, int32_t *out);\n"
            "int spk_run(const spk_input_t *in, int T, int32_t *out);\n"
            "int spk_run_steps(const spk_input_t *in, int T, int32_t *out);\n"
            "#ifdef SPK_PROBE_HOOK\n"
            "void spk_probe(int probe, int t, const int8_t *spikes, int32_t n);\n"
            "#endif\n#endif\n"
        )
        used = {"pool" if "pool" in la["op"] else la["op"] for la in self.layers}
        (outdir / "model.c").write_text(
            '#include "model.h"\n'
            + _kernels(used)
            + "\n"
            + "\n\n".join(c_array(*c) for c in consts)
            + "\n\n"
            + "\n".join(buffers)
            + "\n\nvoid spk_reset(void)\n{\n}\n\n"
            + "void spk_step(const spk_input_t *in, int32_t *out)\n{\n    int i;\n"
            + "".join(f"    {c}\n" for c in calls)
            + f"    for (i = 0; i < {n_out}; ++i) out[i] = a{last}[i];\n}}\n\n"
            + "int spk_run(const spk_input_t *in, int T, int32_t *out)\n{\n"
            + "    (void)T; /* one pass: an ANN has no timesteps */\n    spk_step(in, out);\n"
            + "    return 0;\n}\n\n"
            + "int spk_run_steps(const spk_input_t *in, int T, int32_t *out)\n{\n"
            + "    return spk_run(in, T, out);\n}\n"
        )
        harness = (TEMPLATES / "harness.c.tmpl").read_text()
        harness = harness.replace(
            "$read_input", "fread(in->input, sizeof in->input, 1, stdin) == 1"
        )
        (outdir / "harness.c").write_text(harness)
        (outdir / "Makefile").write_text((TEMPLATES / "Makefile.tmpl").read_text())
        shutil.copytree(BOARD, outdir / "board")

    def _c_consts(self, k: int, layer: dict[str, Any]) -> list[tuple[str, str, np.ndarray]]:
        if "wq" not in layer:
            return []
        out = [("int8_t", f"w{k}", layer["wq"]), ("int32_t", f"b{k}", layer["bq"])]
        if layer["op"] == "conv2d":
            out += [("int32_t", f"m{k}", layer["mult"]), ("int8_t", f"s{k}", layer["shift"])]
        return out

    def _c_call(self, k: int, layer: dict[str, Any], src: str) -> str:
        n, op = layer["node"], layer["op"]
        zp_in, zp_out = self.qparams[layer["in"]][1], self.qparams[layer["out"]][1]
        lo = zp_out if layer["relu"] else -128
        if op == "dense":
            n_out, n_in = layer["wq"].shape
            return (
                f"fully_connected({src}, {n_in}, {-zp_in}, w{k}, b{k}, {int(layer['mult'][0])}, "
                f"{int(layer['shift'][0])}, a{k}, {n_out}, {zp_out}, {lo});"
            )
        c, h, w = layer["in_shape"]
        oc, oh, ow = layer["out_shape"]
        if op == "conv2d":
            kh, kw = layer["wq"].shape[1:3]
            pt, pl = n.attrs["pads"][:2]
            return (
                f"conv({src}, {h}, {w}, {c}, {-zp_in}, w{k}, {kh}, {kw}, b{k}, m{k}, s{k}, "
                f"{n.attrs['strides'][0]}, {pt}, {pl}, a{k}, {oh}, {ow}, {oc}, {zp_out}, {lo});"
            )
        average = int(op == "avgpool2d")
        kk, s = n.attrs["kernel"][0], n.attrs["strides"][0]
        return f"pool({src}, {h}, {w}, {c}, {kk}, {s}, {average}, a{k}, {oh}, {ow});"


def _qparams(lo: float, hi: float) -> tuple[float, int]:
    """TFLite's asymmetric int8: scale and zero point of a range that holds 0."""
    scale = max(hi - lo, 1e-12) / 255
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))
