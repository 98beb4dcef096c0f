"""Generate the negation-sentiment text task and train the tiny BERT-like example (deterministic).

The task (generated here, seed 0; no download): a sentence is [CLS] followed by 5..15 tokens:
filler words and one or three sentiment phrases, each a positive or negative word, optionally
preceded by "not". The label is the sign of the sum of the phrases' polarities, a phrase's
polarity flipped by its "not". Sentences are padded to 16 tokens; `attention_mask` marks the
real ones.

Why it is not trivial: which word a "not" negates depends on order, so a bag of words cannot
tell "not good ... bad" (negative) from "good ... not bad" (positive). A logistic regression on
token counts is the baseline this script prints: 0.498 on the test split, chance. The model
must attend to each word's neighbour and aggregate over the whole sentence: after 40 epochs it
is at 0.87 on test, after 200 (the setting here) at 0.979 (committed model).

torch's float sums depend on its thread count, so a rerun on another machine may train a
slightly different model (0.995 with one thread); the committed files are the reference.

text_bert: BERT-like encoder. Token embedding (Gather) + learned position embedding, a LayerNorm
written out by hand (the ReduceMean/Sub/Pow/Sqrt/Div form older exports carry), two post-norm
nn.TransformerEncoderLayer blocks (nn.MultiheadAttention with a key-padding mask, GELU), a
BERT pooler (the [CLS] token -> Linear -> Tanh) and a linear classifier.

Files: text_bert.onnx (inputs input_ids, attention_mask: int64, N x 16) and
text_{train,calib,test}.npz with input_ids, attention_mask and y. Test is never used in training
or calibration.

    .venv/bin/python examples/make_text.py
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_digits import SEED  # noqa: E402

MAX_LEN = 16
PAD, CLS, NOT = 0, 1, 2
POSITIVE = range(3, 9)
NEGATIVE = range(9, 15)
FILLER = range(15, 30)
VOCAB = 30
SPLITS = {"train": 6000, "calib": 500, "test": 1000}


def sentence(rng: np.random.Generator) -> tuple[list[int], int]:
    """One sentence and its label (1 = positive)."""
    n_phrases = int(rng.choice([1, 3]))
    words = []
    total = 0
    for _ in range(n_phrases):
        polarity = int(rng.choice([1, -1]))
        negated = bool(rng.random() < 0.5)
        word = int(rng.choice(POSITIVE if polarity > 0 else NEGATIVE))
        words.append([NOT, word] if negated else [word])
        total += -polarity if negated else polarity
    used = sum(len(w) for w in words)
    length = int(rng.integers(max(5, used), MAX_LEN))  # tokens after [CLS]
    fill = length - used
    slots = sorted(rng.choice(fill + 1, size=len(words), replace=True).tolist())
    tokens, k = [], 0
    for i in range(fill + 1):
        while k < len(words) and slots[k] == i:
            tokens += words[k]
            k += 1
        if i < fill:
            tokens.append(int(rng.choice(FILLER)))
    return [CLS] + tokens, int(total > 0)


def make_split(
    n: int,
    rng: np.random.Generator,
    draw: Callable[[np.random.Generator], tuple[list[int], int]] = sentence,
) -> dict[str, np.ndarray]:
    """n sentences drawn by `draw` (tokens from [CLS] on, label), padded to MAX_LEN."""
    ids = np.full((n, MAX_LEN), PAD, np.int64)
    mask = np.zeros((n, MAX_LEN), np.int64)
    y = np.zeros(n, np.int64)
    for i in range(n):
        tokens, y[i] = draw(rng)
        ids[i, : len(tokens)] = tokens
        mask[i, : len(tokens)] = 1
    return {"input_ids": ids, "attention_mask": mask, "y": y}


def bag_of_words_accuracy(train: dict, test: dict) -> float:
    from sklearn.linear_model import LogisticRegression

    def counts(d: dict) -> np.ndarray:
        return np.stack(
            [
                np.bincount(r[m > 0], minlength=VOCAB)
                for r, m in zip(d["input_ids"], d["attention_mask"], strict=True)
            ]
        )

    clf = LogisticRegression(max_iter=2000).fit(counts(train), train["y"])
    return float(clf.score(counts(test), test["y"]))


class DecomposedLayerNorm(nn.Module):
    """LayerNorm written out, as older BERT code does (exports ReduceMean/Sub/Pow/Sqrt/Div)."""

    def __init__(self, width: int, eps: float = 1e-12):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        return self.weight * ((x - u) / torch.sqrt(s + self.eps)) + self.bias


class TinyBert(nn.Module):
    def __init__(self, width: int = 32, heads: int = 2, layers: int = 2):
        super().__init__()
        self.tok = nn.Embedding(VOCAB, width)
        self.pos = nn.Parameter(torch.randn(1, MAX_LEN, width) * 0.02)
        self.norm = DecomposedLayerNorm(width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.1, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.pooler = nn.Linear(width, width)
        self.head = nn.Linear(width, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.tok(input_ids) + self.pos)
        h = self.encoder(h, src_key_padding_mask=attention_mask == 0)
        return self.head(torch.tanh(self.pooler(h[:, 0])))


def train(model: nn.Module, data: dict, epochs: int = 200) -> nn.Module:
    torch.manual_seed(SEED)
    steps = (len(data["y"]) + 63) // 64
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * steps)
    ids, mask, y = (torch.from_numpy(data[k]) for k in ("input_ids", "attention_mask", "y"))
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(ids[idx], mask[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(model: nn.Module, data: dict) -> float:
    with torch.no_grad():
        logits = model(
            torch.from_numpy(data["input_ids"]), torch.from_numpy(data["attention_mask"])
        )
    return float((logits.argmax(-1).numpy() == data["y"]).mean())


def main() -> None:
    rng = np.random.default_rng(SEED)
    data = {name: make_split(n, rng) for name, n in SPLITS.items()}
    for name, d in data.items():
        np.savez_compressed(HERE / f"text_{name}.npz", **d)
    bow = bag_of_words_accuracy(data["train"], data["test"])
    print(f"bag-of-words logistic regression: test accuracy {bow:.4f}")
    torch.manual_seed(SEED)
    model = train(TinyBert(), data["train"])
    example = tuple(torch.from_numpy(data["train"][k][:2]) for k in ("input_ids", "attention_mask"))
    batch = torch.export.Dim("batch")
    torch.onnx.export(
        model,
        example,
        str(HERE / "text_bert.onnx"),
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes=({0: batch}, {0: batch}),
        external_data=False,
    )
    print(f"text_bert: test accuracy {accuracy(model, data['test']):.4f}")


if __name__ == "__main__":
    main()
