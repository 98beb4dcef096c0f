"""Train the benchmark's own networks, not made by the example scripts (deterministic).

The accuracy benchmark (benchmarks/run.py) converts these beside the examples, as a proxy for
the networks a user brings: written the way a user writes them, exported with torch's
TorchScript ONNX exporter (`dynamo=False`, opset 17: Conv+BatchNorm folded by the exporter,
nn.MultiheadAttention as its own op sequence, LayerNormalization) where the examples use the
dynamo exporter (opset 20).

bench_cnn_bn      digits: 3 convolutions with BatchNorm (the second one stride 2), ReLU,
                  2x2 average pooling, two dense layers; seed 1 (the examples use 0)
bench_resnet      digits: a convolution stem and two basic residual blocks (BatchNorm,
                  identity shortcut; then stride 2 with a 1x1 convolution + BatchNorm
                  shortcut), global average pooling, one dense layer
bench_count_bert  a counting task, generated here: [CLS] then 5..15 tokens of a vocabulary
                  of 14 words; the label is how many times word A occurs (classes 0..4, drawn
                  uniformly). A BERT-like encoder: token + learned position embedding, two
                  pre-norm nn.TransformerEncoderLayer (ReLU feed-forward, key padding mask),
                  LayerNorm, the [CLS] token -> linear head. Counting exactly is a task of
                  small margins: 3 and 4 occurrences differ by one token among up to 15.

Data: the digits networks train on examples/digits_train.npz (calib and test: the examples'
splits, never trained on); the counting task writes count_{train,calib,test}.npz, disjoint
splits drawn with seed 0 (test never trained on or calibrated with). No download.

    .venv/bin/python benchmarks/nets.py   # rewrites benchmarks/nets/*.{onnx,npz}, prints accuracy

The benchmark reads the committed files (each under 300 KB) and never retrains: torch's float
sums depend on its thread count, so a rerun elsewhere may train slightly different networks.
Two torch threads, fixed seeds; 1 min 40 s of CPU time, 2 min 15 s wall on a busy 2-core
machine (6 min at a busier moment); it prints the ANN test accuracies 0.9944, 0.9981 and
1.0000 and, on that machine, rewrites the committed files byte for byte.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
OUT = HERE / "nets"
EX = HERE.parent / "examples"
sys.path.insert(0, str(EX))
from make_digits import train as train_digits  # noqa: E402
from make_text import CLS, MAX_LEN, make_split  # noqa: E402

SEED = 1  # the examples train with seed 0
OPSET = 17
DYNAMO_OPSET = 18

# ---------------------------------------------------------------------------------------------
# digits networks


class CnnBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),  # 8x8 -> 4x4
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.AvgPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(32 * 2 * 2, 64),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        )
        self.relu = nn.ReLU()
        self.block1 = BasicBlock(16, 16)
        self.block2 = BasicBlock(16, 32, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block2(self.block1(self.relu(self.stem(x))))
        return self.fc(torch.flatten(self.pool(h), 1))


class ResNet18(nn.Module):
    """benchmarks/resnet.py's ResNet-18 shape as a torch module, for SpikingJelly's side of the
    throughput table (its Conv/Gemm weights come from that ONNX file): CIFAR stem (a 3x3
    convolution and ReLU on 3x32x32), four stages of two basic blocks, width 16."""

    def __init__(self, width: int = 16, channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU())
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for j in range(2):
                blocks.append(BasicBlock(cin, width * mult, 2 if j == 0 and stage > 0 else 1))
                cin = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def fold_bn(model: nn.Module) -> nn.Module:
    """The module as the exporter writes it: every BatchNorm an identity (folded into the
    convolution before it, which then has a bias). For SpikingJelly (benchmarks/peer_sj.py),
    which loads the ONNX file's Conv/Gemm initializers into this module."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.Identity())
        elif isinstance(child, nn.Conv2d) and child.bias is None:
            child.bias = nn.Parameter(torch.zeros(child.out_channels))
        else:
            fold_bn(child)
    return model


# ---------------------------------------------------------------------------------------------
# counting task and its BERT-like encoder

A = 2  # PAD 0, CLS 1 and MAX_LEN 16 as in examples/make_text.py
OTHER = range(3, 16)  # 13 other words; with A a vocabulary of 14 words
VOCAB = 16
CLASSES = 5  # count(A) in 0..4
COUNT_SPLITS = {"train": 6000, "calib": 500, "test": 1000}


def count_sentence(rng: np.random.Generator) -> tuple[list[int], int]:
    count = int(rng.integers(CLASSES))
    length = int(rng.integers(max(5, count), MAX_LEN))  # tokens after [CLS]: 5..15
    tokens = rng.choice(list(OTHER), size=length).tolist()
    for i in rng.choice(length, size=count, replace=False):
        tokens[i] = A
    return [CLS] + tokens, count


def disjoint_splits(
    sizes: dict[str, int],
    rng: np.random.Generator,
    draw: Callable[[np.random.Generator], tuple[list[int], int]],
) -> dict[str, dict[str, np.ndarray]]:
    """Splits of `sizes` sentences drawn by `draw`, in order: a sentence that also occurs in
    an earlier split is drawn again (short sentences of few words repeat otherwise)."""
    seen: set[bytes] = set()
    data = {}
    for name, n in sizes.items():
        d = make_split(n, rng, draw)
        keep = np.array([r.tobytes() not in seen for r in d["input_ids"]])
        while not keep.all():
            more = make_split(int((~keep).sum()), rng, draw)
            for k in d:
                d[k][~keep] = more[k]
            keep = np.array([r.tobytes() not in seen for r in d["input_ids"]])
        seen.update(r.tobytes() for r in d["input_ids"])
        data[name] = d
    return data


def count_data() -> dict[str, dict[str, np.ndarray]]:
    """The counting task's disjoint splits, drawn with seed 0."""
    return disjoint_splits(COUNT_SPLITS, np.random.default_rng(0), count_sentence)


class CountBert(nn.Module):
    def __init__(self, width: int = 32, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(1, MAX_LEN, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.tok(input_ids) + self.pos
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        return self.head(self.norm(h[:, 0]))


def fit(model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor, epochs: int,
        lr: float = 3e-3, batch: int = 128, seed: int = SEED) -> nn.Module:  # fmt: skip
    """AdamW (weight decay 0.01) under a one-cycle schedule, cross-entropy, shuffled batches
    drawn from torch's generator seeded with `seed`: the benchmarks' transformer training."""
    torch.manual_seed(seed)
    steps = epochs * ((len(y) + batch - 1) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(batch):
            opt.zero_grad()
            nn.functional.cross_entropy(model(*(t[idx] for t in inputs)), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def train_bert(model: nn.Module, data: dict[str, np.ndarray], epochs: int) -> nn.Module:
    ids, mask, y = (torch.from_numpy(data[k]) for k in ("input_ids", "attention_mask", "y"))
    return fit(model, (ids, mask), y, epochs)


# ---------------------------------------------------------------------------------------------


def accuracy(model: nn.Module, inputs: tuple[np.ndarray, ...], y: np.ndarray) -> float:
    with torch.no_grad():
        logits = model(*(torch.from_numpy(a) for a in inputs))
    return float((logits.argmax(-1).numpy() == y).mean())


def export(
    model: nn.Module,
    example: tuple[torch.Tensor, ...],
    names: list[str],
    path: Path,
    dynamo: bool = False,
) -> None:
    """`model` to ONNX at `path`, inputs `names` and output "logits", the batch axis dynamic:
    by the TorchScript exporter at OPSET, or with `dynamo` by the dynamo exporter at
    DYNAMO_OPSET."""
    # With grad enabled and parameters that require it, nn.TransformerEncoderLayer takes its
    # plain path (its inference fast path is one fused op that the exporter cannot write).
    with torch.enable_grad():
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=None if dynamo else {n: {0: "batch"} for n in [*names, "logits"]},
            dynamic_shapes=({0: torch.export.Dim("batch")},) * len(names) if dynamo else None,
            opset_version=DYNAMO_OPSET if dynamo else OPSET,
            dynamo=dynamo,
        )


def main() -> None:
    torch.set_num_threads(2)
    OUT.mkdir(exist_ok=True)
    digits = {s: np.load(EX / f"digits_{s}.npz") for s in ("train", "test")}
    x_tr, y_tr = digits["train"]["x"], digits["train"]["y"]
    for name, make, epochs in (("bench_cnn_bn", CnnBn, 40), ("bench_resnet", ResNet, 30)):
        t0 = time.perf_counter()
        torch.manual_seed(SEED)
        model = train_digits(make(), x_tr, y_tr, epochs, seed=SEED)
        export(model, (torch.zeros(1, 1, 8, 8),), ["x"], OUT / f"{name}.onnx")
        acc = accuracy(model, (digits["test"]["x"],), digits["test"]["y"])
        print(f"{name}: test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = time.perf_counter()
    data = count_data()
    for split, d in data.items():
        np.savez_compressed(OUT / f"count_{split}.npz", **d)
    torch.manual_seed(SEED)
    model = train_bert(CountBert(), data["train"], epochs=8)
    names = ["input_ids", "attention_mask"]
    example = tuple(torch.from_numpy(data["train"][k][:2]) for k in names)
    export(model, example, names, OUT / "bench_count_bert.onnx")
    acc = accuracy(model, tuple(data["test"][k] for k in names), data["test"]["y"])
    print(f"bench_count_bert: test accuracy {acc:.4f} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
