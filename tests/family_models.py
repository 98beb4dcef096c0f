"""Miniatures of the model families people actually have (issue #15), each exported to ONNX the
way its real exporter writes it: legacy torch.onnx with a dynamic batch axis, the dynamo
exporter, initializers listed as graph inputs, a batch axis fixed at 1, HF-style text inputs.

Tiny widths, seeded random weights, plain torch (no timm / transformers). Every family is one
function `(out_dir) -> Fixture`: the .onnx file written into `out_dir` and calibration data of
the right shape (a float array `x`, or {input_ids, attention_mask[, token_type_ids]} int64 with
some padding). `FAMILIES` maps each family's name (the test id) to its function.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

Batch = np.ndarray | dict[str, np.ndarray]
N_CALIB = 16
VOCAB, SEQ = 50, 12


@dataclass
class Fixture:
    name: str
    onnx: Path
    calib: Batch
    # Full input shapes (batch 1) of the axes that stay dynamic beyond the batch (sequence
    # length): what `import_onnx(..., input_shapes=)` needs when no calibration data is given.
    input_shapes: dict[str, tuple[int, ...]] | None = None

    def __iter__(self):  # noqa: ANN204  (`path, calib = FAMILIES[name](out_dir)`)
        return iter((self.onnx, self.calib))

    def save_calib(self, path: Path) -> Path:
        """Write the calibration data as a spikeport data file (DESIGN.md section 4)."""
        arrays = self.calib if isinstance(self.calib, dict) else {"x": self.calib}
        np.savez(path, **arrays)
        return path


# --- data -----------------------------------------------------------------------------------


def images(shape: tuple[int, ...], seed: int, n: int = N_CALIB) -> np.ndarray:
    """Smooth-ish positive images in [0, 1] (like normalised pixels), float32, N x shape."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, *shape)).astype(np.float32)


def tokens(
    seed: int, n: int = N_CALIB, seq: int = SEQ, types: bool = False
) -> dict[str, np.ndarray]:
    """HF-style text inputs: [CLS]=1 first, random ids, trailing padding (id 0, mask 0) of
    random length on every other sample; token_type_ids 0 then 1 for a sentence pair."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, (n, seq)).astype(np.int64)
    ids[:, 0] = 1
    lengths = np.where(np.arange(n) % 2 == 0, seq, rng.integers(seq // 3, seq, n))
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    ids = ids * mask
    out = {"input_ids": ids, "attention_mask": mask}
    if types:
        out["token_type_ids"] = ((np.arange(seq)[None, :] >= lengths[:, None] // 2) * mask).astype(
            np.int64
        )
    return out


# --- export ---------------------------------------------------------------------------------


def _seed(module_fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build under a fixed seed, randomise BatchNorm statistics (fresh ones are the identity,
    which would hide a wrong fold), eval mode."""
    torch.manual_seed(seed)
    m = module_fn()
    g = torch.Generator().manual_seed(seed + 1)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            mod.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            mod.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
    return m.eval()


def export(
    module: nn.Module,
    calib: Batch,
    path: Path,
    outputs: list[str],
    *,
    dynamo: bool = False,
    batch_axis: bool = True,
    seq_axis: bool = False,
    keep_initializers_as_inputs: bool = False,
) -> Path:
    """Export like the real exporters: legacy torch.onnx (`dynamic_axes` on axis 0 of every
    input and output, and axis 1 of text inputs when `seq_axis`) or dynamo (`dynamic_shapes`)."""
    names = list(calib) if isinstance(calib, dict) else ["x"]
    arrays = list(calib.values()) if isinstance(calib, dict) else [calib]
    args = tuple(torch.from_numpy(a[:2]) for a in arrays)
    if not batch_axis:
        args = tuple(a[:1] for a in args)
    with torch.no_grad():
        if dynamo:
            batch = torch.export.Dim("batch")
            shapes = tuple({0: batch} for _ in args) if batch_axis else None
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=outputs,
                dynamic_shapes=shapes, dynamo=True, external_data=False, verbose=False,
            )  # fmt: skip
        else:
            axes: dict[str, dict[int, str]] = {}
            if batch_axis:
                seq = {1: "sequence"} if seq_axis else {}
                axes = {n: {0: "batch", **seq} for n in names}
                axes.update({o: {0: "batch"} for o in outputs})
            torch.onnx.export(
                module, args, str(path), input_names=names, output_names=outputs,
                dynamic_axes=axes or None, dynamo=False, opset_version=17,
                keep_initializers_as_inputs=keep_initializers_as_inputs,
            )  # fmt: skip
    return path


# --- building blocks --------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Residual(nn.Module):
    """ResNet BasicBlock: conv-bn-relu-conv-bn + shortcut (1x1 stride-2 conv-bn when it
    downsamples), relu."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(), *conv_bn(cout, cout))
        self.short = nn.Sequential(*conv_bn(cin, cout, 1, stride)) if stride > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand + ReLU6, depthwise 3x3 + ReLU6, 1x1 project (linear), skip."""

    def __init__(
        self, c: int, expand: int, act: type[nn.Module] = nn.ReLU6, se: nn.Module | None = None
    ):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            *conv_bn(c, h, 1), act(), *conv_bn(h, h, 3, groups=h), act(),
            se or nn.Identity(), *conv_bn(h, c, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SqueezeExcite(nn.Module):
    """EfficientNet's SE (timm SqueezeExcite): mean, 1x1 conv, act, 1x1 conv, gate, Mul."""

    def __init__(self, c: int, act: type[nn.Module], gate: type[nn.Module]):
        super().__init__()
        self.reduce, self.expand = nn.Conv2d(c, max(c // 4, 2), 1), nn.Conv2d(max(c // 4, 2), c, 1)
        self.act, self.gate = act(), gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class ConvNeXtBlock(nn.Module):
    """timm ConvNeXt block (channels-last MLP): dw 7x7, permute, LN, Linear, GELU, Linear,
    layer scale gamma, permute back, residual."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc1, self.act, self.fc2 = nn.Linear(c, 4 * c), nn.GELU(), nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(torch.rand(c) * 0.5 + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.fc2(self.act(self.fc1(self.norm(h)))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class Attention(nn.Module):
    """timm / HF self-attention written out: qkv Linear(s), split heads, softmax(QK^T scale
    [+ mask]) V, merge heads, projection."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        n, s, d = x.shape
        q, k, v = self.qkv(x).reshape(n, s, 3, self.h, self.dh).permute(2, 0, 3, 1, 4).unbind(0)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.dh)
        if mask is not None:
            scores = scores + mask
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, s, d)
        return self.proj(out)


class PreNormBlock(nn.Module):
    """ViT encoder block: x + attn(LN(x)); x + MLP(LN(x)) with GELU."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.n1, self.attn, self.n2 = (
            nn.LayerNorm(d, eps=1e-6),
            Attention(d, heads),
            nn.LayerNorm(d, eps=1e-6),
        )
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.n1(x))
        return x + self.mlp(self.n2(x))


class PostNormBlock(nn.Module):
    """BERT layer: LN(x + attn(x, mask)); LN(h + FFN(h)) with erf GELU."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.attn, self.n1 = Attention(d, heads), nn.LayerNorm(d, eps=1e-12)
        self.ffn, self.n2 = (
            nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d)),
            nn.LayerNorm(d, eps=1e-12),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.n1(x + self.attn(x, mask))
        return self.n2(h + self.ffn(h))


class TextEncoder(nn.Module):
    """HF BERT embeddings + encoder: word + position (a registered position_ids buffer sliced
    to the length) [+ token type] embeddings, LN, the extended mask
    `(1 - mask[:, None, None, :]) * finfo.min` added to the scores, post-LN layers."""

    def __init__(self, d: int = 16, heads: int = 2, layers: int = 1, types: bool = True):
        super().__init__()
        self.word, self.pos = nn.Embedding(VOCAB, d), nn.Embedding(32, d)
        self.token_type = nn.Embedding(2, d) if types else None
        self.register_buffer("position_ids", torch.arange(32).unsqueeze(0), persistent=False)
        self.ln = nn.LayerNorm(d, eps=1e-12)
        self.layers = nn.ModuleList(PostNormBlock(d, heads) for _ in range(layers))

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.word(ids) + self.pos(self.position_ids[:, : ids.shape[1]])
        if self.token_type is not None and types is not None:
            h = h + self.token_type(types)
        h = self.ln(h)
        ext = (1.0 - mask[:, None, None, :].to(h.dtype)) * torch.finfo(torch.float32).min
        for layer in self.layers:
            h = layer(h, ext)
        return h


class BertClassifier(nn.Module):
    """BertForSequenceClassification: encoder, pooler (dense + Tanh on [CLS]), classifier."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.enc, self.pool, self.cls = TextEncoder(d), nn.Linear(d, d), nn.Linear(d, 3)

    def forward(self, input_ids, attention_mask, token_type_ids):  # noqa: ANN001, ANN201
        h = self.enc(input_ids, attention_mask, token_type_ids)
        return self.cls(torch.tanh(self.pool(h[:, 0])))


class SentenceEmbedder(nn.Module):
    """sentence-transformers: encoder, masked mean pooling, L2 normalisation."""

    def __init__(self, d: int = 16):
        super().__init__()
        self.enc = TextEncoder(d, types=False)

    def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN201
        h = self.enc(input_ids, attention_mask)
        m = attention_mask.to(h.dtype)
        pooled = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


class ViT(nn.Module):
    """timm VisionTransformer: Conv patch embedding (stride = patch), flatten(2).transpose(1, 2),
    CLS token expanded and concatenated, position embedding, pre-norm blocks, LN, CLS, head."""

    def __init__(
        self, img: int = 16, patch: int = 4, d: int = 16, depth: int = 1, classes: int = 5
    ):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.Sequential(*(PreNormBlock(d, 2) for _ in range(depth)))
        self.norm, self.head = nn.LayerNorm(d, eps=1e-6), nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.expand(h.shape[0], -1, -1), h], dim=1) + self.pos
        h = self.norm(self.blocks(h))
        return self.head(h[:, 0])


class ConvTransformer(nn.Module):
    """MobileViT's block: a conv, the image unfolded into tokens (flatten(2).transpose(1, 2)),
    a pre-norm transformer block, the tokens folded back into an image (transpose, reshape),
    a 1x1 conv projection that reads them, ReLU, mean pooling, a head."""

    def __init__(self, d: int = 8, classes: int = 5):
        super().__init__()
        self.conv, self.block = nn.Conv2d(3, d, 3, 2, 1), PreNormBlock(d, 2)
        self.proj, self.head = nn.Conv2d(d, d, 1), nn.Linear(d, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        n, c, rows, cols = h.shape
        h = self.block(h.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(n, c, rows, cols)
        return self.head(torch.relu(self.proj(h)).mean((2, 3)))


class MetaFormerBlock(nn.Module):
    """PoolFormer's block: GroupNorm(1) (exported as InstanceNormalization between reshapes),
    pooling minus its input as the token mixer (border windows exclude padding), a 1x1 MLP."""

    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.norm2 = nn.GroupNorm(1, c), nn.GroupNorm(1, c)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.mlp = nn.Sequential(nn.Conv2d(c, 2 * c, 1), nn.GELU(), nn.Conv2d(2 * c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.pool(y) - y
        return x + self.mlp(self.norm2(x))


class EcaDense(nn.Module):
    """A DenseNet layer's concat of a list of one tensor, reflection padding, and ECA's channel
    attention (a Conv1d across the channels, expand_as before the product)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), nn.ReLU())
        self.gate = nn.Conv1d(1, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(torch.cat([x], 1))
        w = torch.sigmoid(self.gate(h.mean((2, 3)).unsqueeze(1))).squeeze(1)
        return h * w[:, :, None, None].expand_as(h)


class SelectiveKernel(nn.Module):
    """SKNet's attention over two branches (timm's SelectiveKernel): stacked, summed, pooled,
    a softmax across the branches, then the branches' weighted sum over the stacked axis."""

    def __init__(self, c: int):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, c, 3, padding=d, dilation=d), nn.ReLU()) for d in (1, 2)
        )
        self.reduce, self.expand = nn.Conv2d(c, 4, 1), nn.Conv2d(4, 2 * c, 1)
        self.c = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = torch.stack([p(x) for p in self.paths], dim=1)  # (N, 2, C, H, W)
        s = paths.sum(1).mean((2, 3), keepdim=True)
        a = self.expand(torch.relu(self.reduce(s)))
        a = torch.softmax(a.reshape(-1, 2, self.c, 1, 1), dim=1)
        return (paths * a).sum(1)


class BlazeBlock(nn.Module):
    """BlazeFace's / BlazePalm's block: depthwise 5x5, pointwise 1x1, plus the shortcut (max
    pooled and zero-padded in channels when it downsamples), then a PReLU."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cin, 5, stride, 2, groups=cin), nn.Conv2d(cin, cout, 1)
        )
        self.pool = nn.MaxPool2d(2) if stride > 1 else nn.Identity()
        self.extra, self.act = cout - cin, nn.PReLU(cout, 0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = nn.functional.pad(self.pool(x), (0, 0, 0, 0, 0, self.extra))
        return self.act(self.body(x) + short)


class Mean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class TwoOutputs(nn.Module):
    """An output that is also read inside the graph: the hidden features and a head on them."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, 2, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 8),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return h, self.head(h)


def _cnn(
    *mid: nn.Module, c: int = 4, classes: int = 5, pool: nn.Module | None = None
) -> nn.Sequential:
    """stem conv + ReLU, the family's layers, global pooling, flatten, Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), *mid,
        pool or nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes),
    )  # fmt: skip


# --- the families -----------------------------------------------------------------------------
# The mobile nets end like the real ones: last block, 1x1 conv-BN + activation (conv_head), pool.

IMG = (3, 16, 16)


def _image_family(
    name: str, build: Callable[[], nn.Module], seed: int, shape=IMG, **kw
) -> Callable[[Path], Fixture]:  # noqa: ANN001
    """A family with one float image input and one output `logits` (unless kw says otherwise)."""
    outputs = kw.pop("outputs", ["logits"])

    def make(out_dir: Path) -> Fixture:
        x = images(shape, seed)
        path = export(_seed(build, seed), x, Path(out_dir) / f"{name}.onnx", outputs, **kw)
        return Fixture(name, path, x)

    return make


def _text_family(
    name: str, build: Callable[[], nn.Module], seed: int, types: bool, outputs: list[str]
) -> Callable[[Path], Fixture]:
    """HF-style text inputs with dynamic batch and sequence axes (as optimum exports them)."""

    def make(out_dir: Path) -> Fixture:
        calib = tokens(seed, types=types)
        path = export(
            _seed(build, seed), calib, Path(out_dir) / f"{name}.onnx", outputs, seq_axis=True
        )
        return Fixture(name, path, calib, {k: (SEQ,) for k in calib})

    return make


def _mobile(act: type[nn.Module], se: nn.Module | None, stem_stride: int = 2) -> nn.Sequential:
    """stem, one inverted residual (with SE), conv_head 1x1 + activation, pool, classifier."""
    return _cnn(
        *conv_bn(4, 8, 3, stem_stride), act(),
        InvertedResidual(8, 2, act, se),
        *conv_bn(8, 8, 1), act(), c=8,
    )  # fmt: skip


def _upsample(mode: str) -> nn.Sequential:
    up = nn.Upsample(
        scale_factor=2, mode=mode, **({"align_corners": False} if mode != "nearest" else {})
    )
    return _cnn(
        nn.Conv2d(4, 8, 3, 2, 1), nn.ReLU(), up, nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), c=8
    )  # fmt: skip


def _efficientnet() -> nn.Sequential:
    """timm's 'same' padding of a stride-2 conv: ZeroPad2d (right/bottom) then an unpadded conv."""
    return _cnn(
        nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(4, 8, 3, 2), nn.BatchNorm2d(8), nn.SiLU(),
        InvertedResidual(8, 2, nn.SiLU, SqueezeExcite(16, nn.SiLU, nn.Sigmoid)),
        *conv_bn(8, 8, 1), nn.SiLU(), c=8,
    )  # fmt: skip


_I, _T = _image_family, _text_family
FAMILIES: dict[str, Callable[[Path], Fixture]] = {
    "cnn_softmax": _I("cnn_softmax", lambda: nn.Sequential(
        _cnn(*conv_bn(4, 8, 3, 2), nn.ReLU(), c=8), nn.Softmax(-1)), 1, outputs=["probs"]),
    "cnn_mean_dynamo": _I("cnn_mean_dynamo", lambda: _cnn(
        *conv_bn(4, 8, 3, 2), nn.ReLU(), c=8, pool=Mean()), 2, dynamo=True),
    "resnet_block": _I("resnet_block", lambda: _cnn(Residual(4, 4, 1), Residual(4, 8, 2), c=8), 3),
    "mobilenetv2": _I("mobilenetv2", lambda: _mobile(nn.ReLU6, None, 1), 4),
    "efficientnet": _I("efficientnet", _efficientnet, 5),
    "mobilenetv3": _I("mobilenetv3", lambda: _mobile(
        nn.Hardswish, SqueezeExcite(16, nn.ReLU, nn.Hardsigmoid)), 6),
    "convnext": _I("convnext", lambda: _cnn(nn.Conv2d(4, 8, 2, 2), ConvNeXtBlock(8), c=8), 7),
    "vit": _I("vit", ViT, 8),
    "bert_hf": _T("bert_hf", BertClassifier, 9, True, ["logits"]),
    "sentence_embedding": _T("sentence_embedding", SentenceEmbedder, 10, False, ["embedding"]),
    "initializers_as_inputs": _I("initializers_as_inputs", lambda: _cnn(
        *conv_bn(4, 8), nn.ReLU(), c=8), 11, keep_initializers_as_inputs=True),
    "fixed_batch1": _I("fixed_batch1", lambda: _cnn(
        *conv_bn(4, 8, 3, 2), nn.ReLU(), c=8), 12, batch_axis=False),
    "prelu_leakyrelu": _I("prelu_leakyrelu", lambda: _cnn(
        nn.Conv2d(4, 8, 3, padding=1), nn.PReLU(8, 0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.LeakyReLU(0.1), c=8), 13),
    "maxpool_ceil": _I("maxpool_ceil", lambda: _cnn(
        nn.MaxPool2d(3, 2, ceil_mode=True), nn.Conv2d(4, 8, 3), nn.ReLU(), c=8),
        14, shape=(3, 15, 15)),
    "avgpool_exclude_pad": _I("avgpool_exclude_pad", lambda: _cnn(
        nn.AvgPool2d(3, 2, padding=1, count_include_pad=False), nn.Conv2d(4, 8, 3), nn.ReLU(),
        c=8), 15),
    "upsample_nearest": _I("upsample_nearest", lambda: _upsample("nearest"), 16, shape=(3, 8, 8)),
    "upsample_bilinear": _I("upsample_bilinear", lambda: _upsample("bilinear"), 17),
    "output_also_read": _I("output_also_read", TwoOutputs, 18, outputs=["hidden", "logits"]),
    "conv_transformer": _I("conv_transformer", ConvTransformer, 19),
    # keyword spotting / sensor CNNs: Conv1d, BatchNorm1d, MaxPool1d, global average pooling
    "signal_1d": _I("signal_1d", lambda: nn.Sequential(
        nn.Conv1d(2, 8, 5, stride=2, padding=2), nn.BatchNorm1d(8), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(8, 4)), 20, shape=(2, 32)),
    "poolformer": _I("poolformer", lambda: _cnn(
        nn.Conv2d(4, 8, 2, 2), MetaFormerBlock(8), c=8), 21),
    "eca_dense": _I("eca_dense", lambda: _cnn(EcaDense(4)), 22),
    # MediaPipe's selfie segmentation: a squeeze-excite gate pools a linear-bottleneck sum
    "se_on_residual": _I("se_on_residual", lambda: _cnn(
        *conv_bn(4, 8, 3, 2), nn.ReLU(), InvertedResidual(8, 2, nn.Hardswish, None),
        SqueezeExcite(8, nn.ReLU, nn.Hardsigmoid), c=8), 23),
    "selective_kernel": _I("selective_kernel", lambda: _cnn(SelectiveKernel(4)), 24),
    "blaze": _I("blaze", lambda: _cnn(BlazeBlock(4, 4, 1), BlazeBlock(4, 8, 2), c=8), 25),
}  # fmt: skip
