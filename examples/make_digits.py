"""Train the two bundled digits examples and export them to ONNX (deterministic).

Data: scikit-learn's bundled 8x8 digits (1,797 images, no download). The split is fixed by a
seed and disjoint: train (fine-tuning data too), calib (threshold balancing and input scale
only), test (held out: never seen in training or calibration).

    .venv/bin/python examples/make_digits.py      # rewrites examples/digits_*.{onnx,npz}

The demo and tests use the committed files; nothing retrains at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

HERE = Path(__file__).resolve().parent
SEED = 0


def split() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8) in [0, 1]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    parts = {"train": order[:1077], "calib": order[1077:1257], "test": order[1257:]}
    return {k: (x[i], y[i]) for k, i in parts.items()}


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(32 * 2 * 2, 10),
    )


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int = 60, seed: int = SEED
) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(xt)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def accuracy(model: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of `model` (a module, or any function of a batch giving class scores)."""
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def export(model: nn.Module, path: Path) -> None:
    torch.onnx.export(
        model,
        (torch.zeros(1, 1, 8, 8),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        external_data=False,
    )


def main() -> None:
    data = split()
    for name, (x, y) in data.items():
        np.savez(HERE / f"digits_{name}.npz", x=x, y=y)
    for name, make in (("cnn", cnn), ("mlp", mlp)):
        torch.manual_seed(SEED)
        model = train(make(), *data["train"])
        export(model, HERE / f"digits_{name}.onnx")
        print(f"{name}: test accuracy {accuracy(model, *data['test']):.4f}")


if __name__ == "__main__":
    main()
