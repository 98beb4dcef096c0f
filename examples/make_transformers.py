"""Train the bundled transformer example(s) and export them to ONNX (deterministic).

digits_vit: a tiny ViT on scikit-learn's 8x8 digits, built from nn.TransformerEncoderLayer
(so nn.MultiheadAttention, LayerNorm and GELU, as users export them): 2x2 patches -> 16 tokens
of width 32, a learned position embedding, 2 pre-norm encoder layers with 2 heads, mean pooling,
LayerNorm, linear head. Same data splits as examples/make_digits.py (test never seen).

    .venv/bin/python examples/make_transformers.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_digits import SEED, accuracy, split  # noqa: E402


class TinyViT(nn.Module):
    def __init__(self, patch: int = 2, width: int = 32, heads: int = 2, layers: int = 2):
        super().__init__()
        self.patch, self.tokens = patch, (8 // patch) ** 2
        self.embed = nn.Linear(patch * patch, width)
        self.pos = nn.Parameter(torch.randn(1, self.tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            2 * width,
            dropout=0.1,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, g = x.shape[0], self.patch, 8 // self.patch
        patches = x.reshape(n, 1, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, p * p)
        h = self.encoder(self.embed(patches) + self.pos)
        return self.head(self.norm(h.mean(dim=1)))


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 150) -> nn.Module:
    torch.manual_seed(SEED)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=epochs * 17)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx], label_smoothing=0.1).backward()
            opt.step()
            sched.step()
    return model.eval()


def main() -> None:
    data = split()
    torch.manual_seed(SEED)
    vit = train(TinyViT(), *data["train"])
    torch.onnx.export(
        vit,
        (torch.zeros(2, 1, 8, 8),),
        str(HERE / "digits_vit.onnx"),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )
    print(f"vit: test accuracy {accuracy(vit, *data['test']):.4f}")


if __name__ == "__main__":
    main()
