"""Patterns that exporters spell in several nodes import as one IR op, each checked against
onnxruntime on the exported file (tiny torch models, random weights, exported here)."""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from spikeport.convert import import_onnx
from spikeport.errors import UnsupportedOp
from spikeport.sim import simulate


def _export(model: nn.Module, args: tuple, path, names: list[str], dynamic: bool = True, **kw):
    model.eval()
    axes = {n: {0: "N"} for n in names} if dynamic else None
    torch.onnx.export(
        model, args, str(path), input_names=names, dynamic_axes=axes, dynamo=False, **kw
    )
    return path


def _check(path, feeds: dict[str, np.ndarray], input_shapes=None):
    graph = import_onnx(path, input_shapes)
    ref = ort.InferenceSession(str(path)).run(None, feeds)[0]
    x = (
        feeds
        if len(feeds) > 1 or feeds[next(iter(feeds))].dtype == np.int64
        else next(iter(feeds.values()))
    )
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max() + 1e-6)
    return graph


class ChannelNorm(nn.Module):
    """ConvNeXt's channels-first LayerNorm, written out (mean over C of (N, C, H, W))."""

    def __init__(self, c: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.w, self.b = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.randn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + 1e-6)
        return self.w[:, None, None] * x + self.b[:, None, None]


def test_a_decomposed_channel_norm_is_one_layernorm(tmp_path):
    torch.manual_seed(0)
    path = _export(ChannelNorm(), (torch.randn(2, 3, 5, 5),), tmp_path / "cn.onnx", ["x"])
    x = np.random.default_rng(0).normal(size=(3, 3, 5, 5)).astype(np.float32)
    graph = _check(path, {"x": x})
    assert [n.op for n in graph.nodes].count("layernorm") == 1


class TokensNorm(nn.Module):
    """SVTR's mixer (PaddleOCR's recogniser, through paddle2onnx): conv features flattened and
    transposed to tokens, then a LayerNorm written out over the last axis. onnxruntime's
    transpose optimiser would move the Transpose into the middle of that chain (after the
    Sub), where no LayerNorm pattern matches; import turns it off."""

    def __init__(self, c: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.w, self.b = nn.Parameter(torch.rand(c) + 0.5), nn.Parameter(torch.randn(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.conv(x).flatten(2).transpose(1, 2)  # (N, H*W, C)
        u = t.mean(-1, keepdim=True)
        s = (t - u).pow(2).mean(-1, keepdim=True)
        return self.w * ((t - u) / torch.sqrt(s + 1e-5)) + self.b


def test_a_layernorm_over_transposed_tokens_is_one_layernorm(tmp_path):
    torch.manual_seed(0)
    args = (torch.randn(2, 3, 4, 5),)  # opset 12, as paddle2onnx writes it: axes attributes
    path = _export(TokensNorm(), args, tmp_path / "tn.onnx", ["x"], opset_version=12)
    x = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    graph = _check(path, {"x": x})
    assert [n.op for n in graph.nodes].count("layernorm") == 1


class TanhGelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)  # BERT's gelu_new, as transformers writes it
        return 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h**3)))


def test_the_tanh_gelu_is_one_gelu(tmp_path):
    torch.manual_seed(0)
    path = _export(TanhGelu(), (torch.randn(2, 4, 6),), tmp_path / "g.onnx", ["x"])
    x = np.random.default_rng(0).normal(0, 2, size=(3, 4, 6)).astype(np.float32)
    graph = _check(path, {"x": x})
    gelu = [n for n in graph.nodes if n.op == "gelu"]
    assert len(gelu) == 1 and gelu[0].attrs["approximate"] == "tanh"


class Roberta(nn.Module):
    """RoBERTa's embeddings: position ids from the token ids, token types from a buffer."""

    def __init__(self, pad: int = 1):
        super().__init__()
        self.pad = pad
        self.words, self.pos, self.types = (
            nn.Embedding(50, 8),
            nn.Embedding(40, 8),
            nn.Embedding(1, 8),
        )
        self.register_buffer("type_ids", torch.zeros(1, 12, dtype=torch.long))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = ids.ne(self.pad).int()
        positions = torch.cumsum(mask, dim=1).type_as(mask) * mask + self.pad
        types = self.type_ids[:, : ids.shape[1]].expand(ids.shape[0], ids.shape[1])
        return self.words(ids) + self.pos(positions.long()) + self.types(types)


def test_roberta_position_ids_and_buffered_token_types(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(2, 50, (2, 12))
    path = _export(Roberta(), (ids,), tmp_path / "r.onnx", ["ids"])
    rng = np.random.default_rng(0)
    tokens = rng.integers(2, 50, (4, 12))
    tokens[1, 7:] = 1  # padding
    tokens[3, 2:] = 1
    graph = _check(path, {"ids": tokens})
    embeds = [n for n in graph.nodes if n.op == "embed"]
    assert sorted(str(n.attrs.get("position_pad")) for n in embeds) == ["1", "None"]


class Positions(nn.Module):
    """Position ids computed some other way (reversed): not RoBERTa's, refused by name."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Embedding(40, 8)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.pos(ids.flip(1) * 2 % 40)


def test_other_ids_computed_from_the_input_are_refused_by_name(tmp_path):
    path = _export(Positions(), (torch.randint(0, 20, (2, 6)),), tmp_path / "p.onnx", ["ids"])
    with pytest.raises(
        UnsupportedOp, match=r"\(Gather\): the ids .* must be an integer model input"
    ):
        import_onnx(path)


@pytest.mark.parametrize("op", ["unshuffle", "shuffle"])
def test_pixel_shuffles_are_data_movement(tmp_path, op):
    torch.manual_seed(0)
    layer = nn.PixelUnshuffle(2) if op == "unshuffle" else nn.PixelShuffle(2)
    channels = 3 if op == "unshuffle" else 8
    model = nn.Sequential(nn.Conv2d(channels, channels, 1), layer)
    path = _export(model, (torch.randn(2, channels, 4, 6),), tmp_path / "s.onnx", ["x"])
    x = np.random.default_rng(0).normal(size=(3, channels, 4, 6)).astype(np.float32)
    _check(path, {"x": x})


@pytest.mark.parametrize(
    "op,attrs,channels",
    [
        ("SpaceToDepth", {}, 3),
        ("DepthToSpace", {"mode": "DCR"}, 8),
        ("DepthToSpace", {"mode": "CRD"}, 8),
    ],
)
def test_space_to_depth_ops(tmp_path, op, attrs, channels):
    from onnx import TensorProto, helper

    node = helper.make_node(op, ["x"], ["y"], name="shuffle", blocksize=2, **attrs)
    g = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, None, None])],
    )
    path = tmp_path / "s.onnx"
    import onnx

    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.random.default_rng(0).normal(size=(3, channels, 4, 6)).astype(np.float32)
    _check(path, {"x": x})


class OneHotTable(nn.Module):
    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(30, 8))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(ids, 30).float() @ self.table


def test_one_hot_times_a_table_is_an_embedding(tmp_path):
    torch.manual_seed(0)
    path = _export(OneHotTable(), (torch.randint(0, 30, (2, 5)),), tmp_path / "o.onnx", ["ids"])
    graph = _check(path, {"ids": np.random.default_rng(0).integers(0, 30, (3, 5))})
    assert [n.op for n in graph.nodes] == ["embed"]


def test_a_masked_score_that_is_a_graph_output_is_refused_by_name(tmp_path):
    """The masked scores can be fused into a masked softmax only when nothing else reads
    them; as a graph output they would be the mask's own -1e9s: refused, one line."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("Cast", ["mask"], ["m"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "m"], ["inv"], name="inv"),
        helper.make_node("Mul", ["inv", "big"], ["bias"], name="bias"),
        helper.make_node("Add", ["x", "bias"], ["scores"], name="masked"),
        helper.make_node("Softmax", ["scores"], ["p"], name="softmax", axis=-1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4]),
            helper.make_tensor_value_info("mask", TensorProto.INT64, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 4, 4]),
        ],
        [
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
            numpy_helper.from_array(np.array(-1e9, np.float32), "big"),
        ],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(UnsupportedOp, match=r"node 'masked' \(Add\): computes with integer input"):
        import_onnx(path)


def test_a_gather_that_permutes_channels_is_slices_and_a_concat(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    order = np.array([0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11], np.int64)
    g = helper.make_graph(
        [helper.make_node("Gather", ["x", "order"], ["y"], name="shuffle", axis=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 12, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 12, 2, 2])],
        [numpy_helper.from_array(order, "order")],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.random.default_rng(0).normal(size=(3, 12, 2, 2)).astype(np.float32)
    graph = _check(path, {"x": x})
    assert [n.op for n in graph.nodes] == ["slice"] * 4 + ["concat"]


def test_a_gather_by_scattered_indices_is_one_gather(tmp_path):
    """More runs than MAX_GATHER_RUNS: one gather node, equal to onnxruntime."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    order = np.random.default_rng(1).permutation(40)[:30].astype(np.int64)
    g = helper.make_graph(
        [helper.make_node("Gather", ["x", "order"], ["y"], name="pick", axis=2)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 30])],
        [numpy_helper.from_array(order, "order")],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = np.random.default_rng(0).normal(size=(4, 3, 40)).astype(np.float32)
    graph = _check(path, {"x": x})
    assert [(n.op, n.attrs["indices"]) for n in graph.nodes] == [("gather", order.tolist())]


class SentenceTransformersPooling(nn.Module):
    """sentence-transformers' Pooling (mean tokens) and Normalize as they are written: the mask
    expanded to the token embeddings' size, so the kept-token count is spread over the
    features and clamped there (all-MiniLM-L6-v2, exported by benchmarks/zoo/build.py)."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.table, self.proj = nn.Embedding(20, d), nn.Linear(d, d)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.proj(self.table(ids))
        m = mask.unsqueeze(-1).expand(h.size()).to(h.dtype)
        pooled = (h * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


def test_sentence_transformers_pooling_is_masked_mean_and_l2norm(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(1, 20, (3, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5])
    path = tmp_path / "st_pool.onnx"
    torch.onnx.export(
        SentenceTransformersPooling().eval(), (ids * mask, mask), str(path),
        input_names=["input_ids", "attention_mask"], output_names=["sentence_embedding"],
        dynamic_axes={"input_ids": {0: "N", 1: "S"}, "attention_mask": {0: "N", 1: "S"}},
        dynamo=False,
    )  # fmt: skip
    feeds = {"input_ids": (ids * mask).numpy(), "attention_mask": mask.numpy()}
    graph = _check(path, feeds, {"input_ids": (7,), "attention_mask": (7,)})
    ops = [n.op for n in graph.nodes]
    assert "masked_mean" in ops and "l2norm" in ops, ops


# -- spellings found by their values (onnx_patterns.fuse_layernorm_by_value, fuse_tanh_gelu) ----


class JaxNorms(nn.Module):
    """jax2tf's spellings (magika): LayerNorm as E[x^2] - E[x]^2 floored at 0 and a reciprocal
    square root, over the last axis and over the tokens (gamma along the features); GELU's x^3
    as products after a bias add; a softmax written out at the output."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.w, self.b = nn.Parameter(torch.rand(d) + 0.5), nn.Parameter(torch.randn(d))
        self.out = nn.Linear(d, 3)

    @staticmethod
    def norm(x: torch.Tensor, axis: int, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mean = x.sum(axis, keepdim=True) * (1 / x.shape[axis])
        var = torch.clamp(
            (x * x).sum(axis, keepdim=True) * (1 / x.shape[axis]) - mean * mean, min=0
        )
        return (x - mean) * (1 / torch.sqrt(var + 1e-6) * w) + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = h * (0.5 * (1 + torch.tanh(0.7978845608 * (h + 0.044715 * (h * h * h)))))
        h = self.norm(h, 1, self.w, self.b)  # over the tokens, gamma per feature
        h = self.norm(h, 2, self.w, self.b)  # over the features
        z = self.out(h[:, 0])
        e = torch.exp(z - z.max(-1, keepdim=True).values)
        return e / e.sum(-1, keepdim=True)


class KerasNorm(nn.Module):
    """Keras's LayerNorm through tf2onnx: x * inv + (beta - mean * inv), inv = gamma *
    rsqrt(var + eps), then a softmax written out inside the network."""

    def __init__(self, d: int = 6):
        super().__init__()
        self.fc = nn.Linear(d, d)
        self.w, self.b = nn.Parameter(torch.rand(d) + 0.5), nn.Parameter(torch.randn(d))
        self.out = nn.Linear(d, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        mean = h.mean(-1, keepdim=True)
        inv = torch.rsqrt(((h - mean) ** 2).mean(-1, keepdim=True) + 1e-3) * self.w
        h = h * inv + (self.b - mean * inv)
        e = torch.exp(h - h.max(-1, keepdim=True).values)
        return self.out(e / e.sum(-1, keepdim=True))


class RmsNorm(nn.Module):
    def __init__(self, d: int = 6):
        super().__init__()
        self.fc = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return h / torch.sqrt((h * h).mean(-1, keepdim=True) + 1e-6)


@pytest.mark.parametrize("model, ops", [
    (JaxNorms, ["dense", "gelu", "layernorm", "layernorm", "dense"]),
    (KerasNorm, ["dense", "layernorm", "softmax", "dense"]),
])  # fmt: skip
def test_other_spellings_of_layernorm_softmax_and_gelu_are_found_by_value(tmp_path, model, ops):
    """Each fused into one op (checked on random inputs of several scales when fused), the
    network equal to onnxruntime; a softmax at the output is dropped (same argmax)."""
    torch.manual_seed(0)
    path = _export(model(), (torch.randn(2, 5, 6),), tmp_path / "m.onnx", ["x"])
    x = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float32)
    graph = import_onnx(path)
    fused = [n.op for n in graph.nodes if n.op in {"dense", "gelu", "layernorm", "softmax"}]
    assert fused == ops
    assert not {"mul", "tanh", "reduce_mean", "reduce_sum"} & {n.op for n in graph.nodes}
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    if graph.meta["source"]["dropped_softmax"]:
        e = np.exp(ours - ours.max(-1, keepdims=True))
        ours = e / e.sum(-1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_a_norm_that_is_no_layernorm_is_not_fused(tmp_path):
    """RMSNorm (no mean taken out) fits no LayerNorm: it stays as written and is refused by
    name, not imported as something else."""
    torch.manual_seed(0)
    path = _export(RmsNorm(), (torch.randn(2, 5, 6),), tmp_path / "m.onnx", ["x"])
    with pytest.raises(UnsupportedOp, match="\\(Sqrt\\): op is not in spikeport's vocabulary"):
        import_onnx(path)


class Signal(nn.Module):
    """A 1-D signal (N, C, L): conv, the global max over L, a slice keeping every sample."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x[0:1_000_000_000]))
        return self.fc(torch.amax(h, 2, keepdim=True)[..., 0])


def test_global_max_of_a_signal_and_a_whole_batch_slice(tmp_path):
    torch.manual_seed(0)
    model = Signal()
    path = tmp_path / "s.onnx"
    torch.onnx.export(model.eval(), (torch.randn(2, 2, 9),), str(path), input_names=["x"],
                      dynamic_axes={"x": {0: "N"}}, dynamo=False)  # fmt: skip
    import onnx

    m = onnx.load(str(path))  # torch writes amax as ReduceMax: make it the GlobalMaxPool op
    (red,) = [n for n in m.graph.node if n.op_type == "ReduceMax"]
    red.op_type, red.input[1:] = "GlobalMaxPool", []
    del red.attribute[:]
    onnx.save(m, str(path))
    x = np.random.default_rng(0).normal(size=(3, 2, 9)).astype(np.float32)
    graph = _check(path, {"x": x})
    assert "maxpool2d" in [n.op for n in graph.nodes]
