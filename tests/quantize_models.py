"""Realistic networks built in plain torch (random weights, seeded) that quantize used to refuse
(issue 15, item 4): a MobileNetV2 (width 0.5, ReLU6, depthwise convs, folded BatchNorm,
linear-bottleneck residual adds) and a post-norm text encoder (BERT/MiniLM-like: a LayerNorm
output feeds both the next block and a residual Add). Each builder writes an ONNX file with
the legacy exporter and a calibration .npz, and returns their paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn


def _divisible(v: float, d: int = 8) -> int:
    new = max(d, int(v + d / 2) // d * d)
    return new + d if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int, act: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn(cin, hidden, 1, 1, 1, True)] if expand != 1 else []
        layers += [
            _conv_bn(hidden, hidden, 3, stride, hidden, True),  # depthwise
            _conv_bn(hidden, cout, 1, 1, 1, False),  # linear bottleneck: no activation
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 layout (same settings, rounding and init)."""

    SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                [6, 160, 3, 2], [6, 320, 1, 1]]  # fmt: skip

    def __init__(self, width: float = 0.5, classes: int = 10, last: int = 1280):
        super().__init__()
        cin = _divisible(32 * width)
        layers: list[nn.Module] = [_conv_bn(3, cin, 3, 2, 1, True)]
        for t, c, n, s in self.SETTINGS:
            cout = _divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers.append(_conv_bn(cin, last, 1, 1, 1, True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(last, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GlobalAveragePool + Flatten (x.mean((2, 3)) exports a ReduceMean, issue 15 item 1)
        return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _set_bn_stats(model: nn.Module, batches: list[torch.Tensor]) -> None:
    """Realistic BatchNorm: random affine params, running stats from forward passes in train
    mode (cumulative average over the batches)."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.eval()


def mobilenetv2(root: Path, n_calib: int = 64) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = MobileNetV2()
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (n_calib + 32, 3, 64, 64)).astype(np.float32)
    _set_bn_stats(model, [torch.from_numpy(x[i : i + 32]) for i in range(0, len(x), 32)])
    path, calib = root / "mobilenetv2.onnx", root / "mobilenetv2_calib.npz"
    torch.onnx.export(
        model, torch.from_numpy(x[:2]), str(path), input_names=["x"], output_names=["y"],
        dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, dynamo=False, opset_version=17,
    )  # fmt: skip
    np.savez(calib, x=x[32:])
    return path, calib


class PostNormEncoder(nn.Module):
    """BERT-like post-norm encoder: embeddings -> LayerNorm -> layers of
    LN(x + attn(x)), LN(h + ffn(h)) -> [CLS] -> classifier."""

    def __init__(
        self, vocab: int, length: int, width: int, layers: int, gamma: float, outlier: float
    ):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Parameter(torch.randn(1, length, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(
            width, 4, 4 * width, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(width, 2)
        g = torch.Generator().manual_seed(2)
        with torch.no_grad():  # trained LayerNorms carry gammas far from 1, and trained
            for m in self.modules():  # linear layers a few outlier weights
                if isinstance(m, nn.LayerNorm):
                    m.weight.copy_(gamma * (0.5 + torch.rand(width, generator=g)))
                    m.bias.normal_(0, 0.1, generator=g)
                elif isinstance(m, nn.Linear | nn.MultiheadAttention) and outlier:
                    w = m.weight if isinstance(m, nn.Linear) else m.out_proj.weight
                    w[0, 0] = outlier

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.tok(input_ids) + self.pos)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        return self.head(h[:, 0])


def post_norm_encoder(
    root: Path,
    width: int = 64,
    layers: int = 6,
    gamma: float = 4.0,
    outlier: float = 0.0,
    n_calib: int = 64,
) -> tuple[Path, Path]:
    torch.manual_seed(0)
    vocab, length = 100, 16
    model = PostNormEncoder(vocab, length, width, layers, gamma, outlier).eval()
    rng = np.random.default_rng(0)
    ids = rng.integers(1, vocab, (n_calib, length)).astype(np.int64)
    mask = np.ones_like(ids)
    for row, n in zip(mask, rng.integers(5, length + 1, n_calib), strict=True):
        row[n:] = 0
    ids[mask == 0] = 0
    path, calib = root / "post_norm.onnx", root / "post_norm_calib.npz"
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused kernel has no ONNX export
    with torch.no_grad():
        torch.onnx.export(
            model, (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "N"}, "attention_mask": {0: "N"}, "logits": {0: "N"}},
            dynamo=False, opset_version=17,
        )  # fmt: skip
    torch.backends.mha.set_fastpath_enabled(fast)
    np.savez(calib, input_ids=ids, attention_mask=mask)
    return path, calib
