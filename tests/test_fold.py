"""fold_offsets (convert/fold.py): a constant shift beside a linear layer moves into its bias
exactly (the ANN view is unchanged), and stays a node where that would not be exact."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from spikeport.convert.fold import fold_offsets
from spikeport.ir.check import check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.sim import simulate

RNG = np.random.default_rng(0)


def _conv(name: str, x: str, cin: int, cout: int, group: int = 1, pads=(0, 0, 0, 0)) -> Node:
    params = {
        "weight": RNG.normal(size=(cout, cin // group, 3, 3)).astype(np.float32),
        "bias": RNG.normal(size=cout).astype(np.float32),
    }
    attrs = {"strides": [1, 1], "pads": list(pads), "dilations": [1, 1], "group": group}
    return Node(name, "conv2d", [x], name, attrs, params)


def _dense(name: str, x: str, k: int, o: int) -> Node:
    params = {"weight": RNG.normal(size=(o, k)).astype(np.float32), "bias": np.zeros(o, "f4")}
    return Node(name, "dense", [x], name, {}, params)


def _offset(name: str, x: str, value: np.ndarray) -> Node:
    return Node(name, "offset", [x], name, {}, {"value": np.asarray(value, np.float32)})


def _relu(name: str, x: str) -> Node:
    return Node(name, "relu", [x], name, {"cap": None})


def _folded(nodes: list[Node], shape: tuple[int, ...], out: str) -> list[str]:
    """fold_offsets on the graph; asserts the ANN view is unchanged; the ops left."""
    g = check_graph(Graph([TensorInfo("x", shape)], nodes, [out]))
    x = RNG.normal(size=(5, *shape)).astype(np.float32)
    before = simulate(g, x, 1, "ann").outputs[out]
    folded = fold_offsets(copy.deepcopy(g))
    np.testing.assert_allclose(
        simulate(folded, x, 1, "ann").outputs[out], before, rtol=1e-5, atol=1e-5
    )
    return [n.op for n in folded.nodes]


def test_a_per_channel_shift_folds_into_grouped_convolutions_on_both_sides():
    shift = RNG.normal(size=(4, 1, 1))
    nodes = [
        _conv("a", "x", 2, 4),
        _offset("s", "a", shift),  # into a's bias
        _relu("r", "s"),
        _offset("t", "r", shift),  # into b's bias, through its two groups
        _conv("b", "t", 4, 6, group=2),
    ]
    assert _folded(nodes, (2, 7, 7), "b") == ["conv2d", "relu", "conv2d"]


@pytest.mark.parametrize(
    "pads, shift", [((1, 1, 1, 1), np.ones((4, 1, 1))), ((0, 0, 0, 0), np.ones((4, 5, 5)))]
)
def test_a_shift_stays_before_a_padded_convolution_or_where_it_varies_over_the_image(pads, shift):
    """A padded border reads zeros, not the shift; a per-pixel shift has no per-channel bias."""
    nodes = [
        _conv("a", "x", 2, 4),
        _relu("r", "a"),
        _offset("t", "r", shift),
        _conv("b", "t", 4, 3, pads=pads),
    ]
    assert _folded(nodes, (2, 7, 7), "b") == ["conv2d", "relu", "offset", "conv2d"]


def test_a_per_token_shift_becomes_a_per_token_dense_bias_and_shifts_merge():
    nodes = [
        _relu("r", "x"),
        _offset("s", "r", RNG.normal(size=(3, 4))),
        _offset("t", "s", RNG.normal(size=4)),  # merges into s, then both into d
        _dense("d", "t", 4, 2),
    ]
    assert _folded(nodes, (3, 4), "d") == ["relu", "dense"]


def test_a_shift_that_is_a_graph_output_or_read_by_a_neuron_stays():
    nodes = [_relu("r", "x"), _offset("s", "r", np.ones(4)), _relu("q", "s")]
    assert _folded(nodes, (4,), "q") == ["relu", "offset", "relu"]
    assert _folded([_relu("r", "x"), _offset("s", "r", np.ones(4))], (4,), "s") == [
        "relu",
        "offset",
    ]


def _layernorm(name: str, x: str, features: int) -> Node:
    params = {
        "gamma": RNG.uniform(0.5, 2, features).astype(np.float32),
        "beta": RNG.normal(size=features).astype(np.float32),
    }
    return Node(name, "layernorm", [x], name, {"epsilon": 1e-5}, params)


def test_a_per_feature_shift_folds_into_the_layernorm_before_it_alone():
    """One value per feature moves into beta; one per token, or a LayerNorm that something
    else also reads, keeps the shift."""
    per_feature = [_layernorm("n", "x", 4), _offset("s", "n", RNG.normal(size=4)), _relu("q", "s")]
    assert _folded(per_feature, (3, 4), "q") == ["layernorm", "relu"]
    per_token = [
        _layernorm("n", "x", 4),
        _offset("s", "n", RNG.normal(size=(3, 4))),
        _relu("q", "s"),
    ]
    assert _folded(per_token, (3, 4), "q") == ["layernorm", "offset", "relu"]
    shared = [
        _layernorm("n", "x", 4),
        _offset("s", "n", RNG.normal(size=4)),
        _relu("q", "s"),
        Node("a", "add", ["q", "n"], "a", {}, {}),
    ]
    assert _folded(shared, (3, 4), "a") == ["layernorm", "offset", "relu", "add"]
