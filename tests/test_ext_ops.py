"""The activations, gates, normalisation and data movement of spikeport.ir.ext_ops, op by op on
small hand-built graphs: (a) the ANN view against numpy / torch / onnxruntime, (b) float mode
telescopes (outputs summed over T steps == T * f(mean input)), (c) after quantize with the
"sim" profile the integer mode stays within the op's documented bound of the float mode run on
the same (int8) input, (d) the torch layers give the float simulator's outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as TF
from onnx import TensorProto, helper, numpy_helper

from spikeport.finetune import SpikingNet
from spikeport.ir import Graph, Node, TensorInfo, check_graph
from spikeport.ir.ops import ShapeMismatch
from spikeport.quantize import get_profile, quantize
from spikeport.sim import Simulator, mean_output
from spikeport.sim import intfunc as F
from spikeport.sim.ops import KERNELS
from spikeport.sim.seq_ops import ExpectationCompensated

RNG = np.random.default_rng(0)
T_INT = 4


def _sig(x):
    return 1 / (1 + np.exp(-x))


@dataclass
class Case:
    """A graph from float input 'x' (and int64 input 'mask' when `mask`) to one output."""

    nodes: list[Node]
    shape: tuple[int, ...]
    ref: object  # ann reference: x (N, *shape) [, mask] -> output
    tol: object = 0.0  # int-vs-float bound in real units: number, or fn(graph, x) -> number
    mask: int = 0  # > 0: a (mask,) int64 input too
    spread: float = 3.0
    extra: dict = field(default_factory=dict)

    def graph(self) -> Graph:
        ins = [TensorInfo("x", self.shape)]
        if self.mask:
            ins.append(TensorInfo("mask", (self.mask,), "int64"))
        return check_graph(Graph(ins, self.nodes, [self.nodes[-1].output], stage="snn"))

    def inputs(self, n: int) -> dict[str, np.ndarray]:
        x = (RNG.normal(0, 1, (n, *self.shape)) * self.spread).astype(np.float32)
        out = {"x": x}
        if self.mask:
            m = (RNG.random((n, self.mask)) < 0.6).astype(np.int64)
            m[:, 0] = 1
            out["mask"] = m
        return out


def N(name, op, inputs, attrs=None, **params) -> Node:
    return Node(name, op, inputs, name, attrs or {}, params)


def _func_scale(g: Graph, name: str = "y") -> float:
    """The scale quantize requantized a node's running mean to: s_in * 2^shift / mul."""
    n = g.node(name)
    return (
        float(g.scales[n.inputs[0]].max())
        * 2 ** n.attrs["requant_shift"]
        / float(n.params["requant_q"].max())
    )


def _act_tol(bound: float, out_steps: float, lip: float):
    """The documented bound (`bound` + `out_steps` steps s of the function's input scale), plus
    `lip` (the function's Lipschitz constant) times the one step s that requantization floors,
    plus one output step where the output drops bits (its scale is then coarser than s)."""

    def tol(g: Graph, x: dict) -> float:
        dropped = g.node("y").attrs["int"].get("drop", 0) > 0
        return bound + (out_steps + lip) * _func_scale(g) + dropped * float(g.scales["y"].max())

    return tol


def _l2_tol(g: Graph, x: dict) -> float:
    """2^-15 + 1 / (||q|| - 1) (intfunc), plus what flooring each entry to the step s moves
    a unit vector: at most 2 sqrt(d) s / ||x||."""
    norms = np.linalg.norm(x["x"], axis=-1)
    s, norm, d = _func_scale(g), norms[norms > 0].min(), x["x"].shape[-1]
    return 2**-15 + s / (norm - s) + 2 * np.sqrt(d) * s / norm


SLOPE = np.array([0.1, -0.2, 0.25], np.float32).reshape(3, 1, 1)
FACTOR = np.array([1e-3, -2.0, 0.5], np.float32).reshape(3, 1, 1)
POSITIONS = np.array([[[1.0, 1.5], [1.5, 2.25]]] * 3, np.float32)  # 9 / covered cells
CONV1 = {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1}
CASES = {
    "sigmoid": Case([N("y", "sigmoid", ["x"])], (3, 5), _sig, F.SIGMOID_BOUND + 2**-10),
    "hardsigmoid": Case(
        [N("y", "hardsigmoid", ["x"], {"alpha": 0.25, "beta": 0.4})],
        (3, 5),
        lambda x: np.clip(0.25 * x + 0.4, 0, 1),
        _act_tol(F.HARD_BOUND, 0.25, 0.25),
    ),
    "hardsigmoid/defaults": Case(
        [N("y", "hardsigmoid", ["x"])],
        (4,),
        lambda x: np.clip(0.2 * x + 0.5, 0, 1),
        _act_tol(F.HARD_BOUND, 0.2, 0.2),
    ),
    "hardswish": Case(
        [N("y", "hardswish", ["x"])],
        (3, 5),
        lambda x: TF.hardswish(torch.from_numpy(x)).numpy(),
        _act_tol(F.HARDSWISH_BOUND, 2, 1.5),
    ),
    "silu": Case(
        [N("y", "silu", ["x"])],
        (3, 5),
        lambda x: TF.silu(torch.from_numpy(x)).numpy(),
        _act_tol(F.SILU_BOUND, 2, 1.1),
    ),
    "prelu": Case(
        [N("y", "prelu", ["x"], slope=SLOPE)],
        (3, 2, 4),
        lambda x: TF.prelu(torch.from_numpy(x), torch.from_numpy(SLOPE.reshape(-1))).numpy(),
        # a floor of the running sum (one output step at t = 1) and the slope's rounding
        lambda g, x: g.scales["y"].max() + 2**-14 * float(np.abs(x["x"]).max()),
    ),
    "prelu/leaky": Case(
        [N("y", "prelu", ["x"], slope=np.array(0.01, np.float32))],
        (6,),
        lambda x: TF.leaky_relu(torch.from_numpy(x), 0.01).numpy(),
        lambda g, x: g.scales["y"].max() + 2**-14 * float(np.abs(x["x"]).max()),
    ),
    "mul/squeeze_excite": Case(
        [
            N("pool", "reduce_mean", ["x"], {"axes": [1, 2], "keepdims": 1}),
            N("gate", "sigmoid", ["pool"]),
            N("y", "mul", ["x", "gate"]),
        ],
        (3, 2, 4),
        lambda x: x * _sig(x.mean(axis=(2, 3), keepdims=True)),
        lambda g, x: (
            float(np.abs(x["x"]).max()) * (F.SIGMOID_BOUND + 2**-10) + 2 * g.scales["y"].max()
        ),
    ),
    "mul/x_sigmoid_x": Case(
        [N("gate", "sigmoid", ["x"]), N("y", "mul", ["x", "gate"])],
        (5,),
        lambda x: x * _sig(x),
        lambda g, x: (
            float(np.abs(x["x"]).max()) * (F.SIGMOID_BOUND + 2**-10) + 2 * g.scales["y"].max()
        ),
    ),
    "div/masked_mean_pool": Case(
        [
            N("m", "reshape", ["mask"], {"shape": [5, 1]}),
            N("xm", "mul", ["x", "m"]),
            N("total", "reduce_sum", ["xm"], {"axes": [0], "keepdims": 0}),
            N("count", "reduce_sum", ["m"], {"axes": [0], "keepdims": 0}),
            N("y", "div", ["total", "count"]),
        ],
        (5, 4),
        lambda x, m: (x * m[:, :, None]).sum(1) / m.sum(1, keepdims=True),
        # the quotient's floor; x * mask is exact when x is static, else each of the 5 tokens
        # floors its product once
        lambda g, x: (
            2 * g.scales["y"].max() + 5 * g.scales["xm"].max() * (g.node("xm").attrs["frac"] > 0)
        ),
        mask=5,
    ),
    "l2norm": Case(
        [N("y", "l2norm", ["x"], {"axis": -1, "eps": 1e-12})],
        (3, 8),
        lambda x: TF.normalize(torch.from_numpy(x), dim=-1).numpy(),
        _l2_tol,
    ),
    # an add after it: a graph output needs one scale, channel_scale's is per channel
    "channel_scale": Case(
        [N("cs", "channel_scale", ["x"], factor=FACTOR), N("y", "add", ["cs", "x"])],
        (3, 2, 2),
        lambda x: FACTOR * x + x,
        lambda g, x: 2 * g.scales["y"].max() + 2**-13 * 3 * float(np.abs(x["x"]).max()),
    ),
    # a factor that varies inside a channel (an average pool that excludes padding): integer
    # multipliers of 2^-15, then a 1x1 conv that needs one scale per channel
    "channel_scale/per_position": Case(
        [
            N("cs", "channel_scale", ["x"], factor=POSITIONS),
            N("y", "conv2d", ["cs"], CONV1, weight=np.ones((1, 3, 1, 1)), bias=np.zeros(1)),
        ],
        (3, 2, 2),
        lambda x: (POSITIONS * x).sum(axis=1, keepdims=True),
        # each of the 3 channels floors once a step (one step of cs's scale), factors at 2^-15
        lambda g, x: 3 * g.scales["cs"].max() + 2**-13 * 3 * float(np.abs(x["x"]).max()),
    ),
    "pad": Case(
        [N("y", "pad", ["x"], {"pads": [0, 1, 2, 0, 2, 1]})],
        (2, 3, 3),
        lambda x: np.pad(x, [(0, 0), (0, 0), (1, 2), (2, 1)]),
    ),
    "reduce_sum": Case(
        [N("y", "reduce_sum", ["x"], {"axes": [1], "keepdims": 1})],
        (3, 4, 5),
        lambda x: x.sum(axis=2, keepdims=True),
    ),
}

RESIZES = {
    "nearest/asymmetric/floor/x2": ("nearest", "asymmetric", "floor", (3, 8, 6)),
    "nearest/half_pixel/round_prefer_floor": (
        "nearest",
        "half_pixel",
        "round_prefer_floor",
        (3, 7, 5),
    ),
    "nearest/half_pixel/round_prefer_ceil/down": (
        "nearest",
        "half_pixel",
        "round_prefer_ceil",
        (3, 3, 2),
    ),
    "linear/half_pixel/x2": ("linear", "half_pixel", "round_prefer_floor", (3, 8, 6)),
    "linear/align_corners": ("linear", "align_corners", "round_prefer_floor", (3, 7, 5)),
    "linear/pytorch_half_pixel": ("linear", "pytorch_half_pixel", "round_prefer_floor", (3, 5, 1)),
    "linear/asymmetric/down": ("linear", "asymmetric", "round_prefer_floor", (3, 3, 2)),
}


def _onnx_resize(mode, how, nearest, out_shape):
    def ref(x):
        node = helper.make_node(
            "Resize",
            ["x", "", "", "sizes"],
            ["y"],
            mode=mode,
            coordinate_transformation_mode=how,
            nearest_mode=nearest,
        )
        g = helper.make_graph(
            [node],
            "r",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array([len(x), *out_shape], np.int64), "sizes")],
        )
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0]

    return ref


for label, (mode, how, nearest, out) in RESIZES.items():
    attrs = {
        "mode": mode,
        "out_shape": list(out),
        "coordinate_transformation_mode": how,
        "nearest_mode": nearest,
    }
    CASES[f"resize/{label}"] = Case(
        [N("y", "resize", ["x"], attrs)],
        (3, 4, 3),
        _onnx_resize(mode, how, nearest, out),
        # linear: integer weights are the float ones rounded to 2^-8 (each row sums exactly)
        (lambda g, x: 2**-8 * float(np.abs(x["x"]).max())) if mode == "linear" else 0.0,
    )


def _feeds(case: Case, x: dict) -> object:
    return x if case.mask else x["x"]


@pytest.mark.parametrize("label", sorted(CASES))
def test_ann_view_matches_the_reference(label):
    case = CASES[label]
    g, x = case.graph(), case.inputs(16)
    got = Simulator(g, "ann").run(_feeds(case, x), 1).outputs["y"][0]
    want = case.ref(*([x["x"], x["mask"]] if case.mask else [x["x"]]))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def _int_and_float(case: Case, g: Graph, T: int, max_t: int = 16):
    """Quantize with the sim profile; run the integer mode, and the float mode on the same
    input decoded from its int8 codes: what is left is the integer functions' own error.
    Returns the quantized graph, the (T, N, ...) mean outputs of both, and the decoded input."""
    q = quantize(g, _feeds(case, case.inputs(64)), get_profile("sim"), max_timesteps=max_t)
    x = case.inputs(32)
    decoded, s_in = dict(x), float(q.scales["x"].max())
    decoded["x"] = np.clip(np.floor(x["x"] / s_in + 0.5), -127, 127) * s_in
    got = mean_output(q, Simulator(q, "int").run(_feeds(case, x), T), "int")
    want = mean_output(g, Simulator(g, "float").run(_feeds(case, decoded), T), "float")
    return q, got, want, decoded


@pytest.mark.parametrize("label", sorted(CASES))
def test_integer_mode_stays_within_the_bound_of_the_float_mode(label):
    case = CASES[label]
    q, got, want, decoded = _int_and_float(case, case.graph(), T_INT)
    tol = case.tol(q, decoded) if callable(case.tol) else case.tol
    err = np.abs(got - want).max()
    assert err <= tol + 1e-6 * np.abs(want).max(), (label, err, tol)


BIPOLAR = {"signed": True, "bipolar": True, "cap": None}


@pytest.mark.parametrize("label", sorted(CASES))
def test_integer_mode_on_spike_trains_stays_within_the_bound(label):
    """x -> bipolar IF neuron -> the case, so the op's input varies from step to step. The
    reference is the float kernels stepped on the integer run's own spikes (decoded): the gap
    after T steps is the integer functions' own error."""
    case, T = CASES[label], 8
    rank = len(case.shape)
    theta = np.full((1,) * rank, 2.0, np.float32)
    nodes = [Node("spk", "if", ["x"], "spk", BIPOLAR, {"threshold": theta})] + [
        Node(
            n.name,
            n.op,
            ["spk" if i == "x" else i for i in n.inputs],
            n.output,
            dict(n.attrs),
            dict(n.params),
        )
        for n in case.nodes
    ]
    g = check_graph(Graph(case.graph().inputs, nodes, ["y"], stage="snn"))
    q = quantize(g, _feeds(case, case.inputs(64)), get_profile("sim"), max_timesteps=16)
    x = case.inputs(16)
    run = Simulator(q, "int").run(_feeds(case, x), T, record=True)
    spikes = run.trace["spk"] * q.scales["spk"]
    steps = [(n, KERNELS[n.op](n, "float", g.shape(n.output))) for n in g.nodes[1:]]
    total = 0.0
    for _, k in steps:
        k.reset(len(spikes[0]))
    for t in range(T):
        values = {"spk": spikes[t], **({"mask": x["mask"]} if case.mask else {})}
        for n, k in steps:
            values[n.output] = k(*[values[i] for i in n.inputs])
        total = total + values["y"]
    got = run.outputs["y"][-1] * q.scales["y"] / T
    mean_in = {**x, "x": spikes.mean(axis=0)}
    tol = case.tol(q, mean_in) if callable(case.tol) else case.tol
    err = np.abs(got - total / T).max()
    assert err <= tol + 1e-6 * np.abs(total).max(), (label, err, tol)


@pytest.mark.parametrize("label", sorted(CASES))
def test_torch_module_gives_the_float_simulator(label):
    case = CASES[label]
    g, x = case.graph(), case.inputs(8)
    ref = Simulator(g, "float").run(_feeds(case, x), 5).outputs["y"]
    net = SpikingNet(g).double()
    feeds = {
        k: torch.from_numpy(v if v.dtype == np.int64 else v.astype(np.float64))
        for k, v in x.items()
    }
    with torch.no_grad():
        got = net.run(feeds if case.mask else feeds["x"], 5).outputs.numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


# -- (b) expectation compensation, kernel by kernel ------------------------------------------

EC = {
    "sigmoid": (Node("n", "sigmoid", ["a"], "o"), _sig),
    "hardsigmoid": (
        Node("n", "hardsigmoid", ["a"], "o", {"alpha": 0.3, "beta": 0.4}),
        lambda m: np.clip(0.3 * m + 0.4, 0, 1),
    ),
    "hardswish": (Node("n", "hardswish", ["a"], "o"), lambda m: m * np.clip(m / 6 + 0.5, 0, 1)),
    "silu": (Node("n", "silu", ["a"], "o"), lambda m: m * _sig(m)),
    "prelu": (
        Node("n", "prelu", ["a"], "o", {}, {"slope": np.array([0.1, -0.5, 2.0, 0.0])}),
        lambda m: np.where(m >= 0, m, np.array([0.1, -0.5, 2.0, 0.0]) * m),
    ),
    "l2norm": (Node("n", "l2norm", ["a"], "o"), lambda m: F.l2norm(m, 1e-12)),
}


@pytest.mark.parametrize("op", sorted(EC))
@pytest.mark.parametrize("T", [1, 2, 7])
def test_float_outputs_telescope_to_t_times_f_of_the_mean(op, T):
    node, f = EC[op]
    xs = RNG.normal(0, 2, (T, 5, 3, 4))
    k = KERNELS[node.op](node, "float", (3, 4))
    assert isinstance(k, ExpectationCompensated)
    k.reset(5)
    total = sum(k(x) for x in xs)
    np.testing.assert_allclose(total, T * f(xs.mean(axis=0)), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("T", [1, 3, 6])
def test_products_and_quotients_telescope(T):
    a, b = RNG.normal(0, 1, (T, 4, 3, 5)), RNG.uniform(0.5, 2, (T, 4, 3, 1))
    for op, f in (("mul", np.multiply), ("div", np.divide)):
        k = KERNELS[op](Node("n", op, ["a", "b"], "o"), "float", (3, 5))
        k.reset(4)
        total = sum(k(x, y) for x, y in zip(a, b, strict=True))
        np.testing.assert_allclose(total, T * f(a.mean(0), b.mean(0)), rtol=1e-9)


@pytest.mark.parametrize("T", [1, 3, 8])
def test_integer_product_sums_to_the_product_of_sums_over_t(T):
    """G(t) = floor(S_A S_B 2^frac / t): the outputs sum to it exactly (broadcast (3,1))."""
    a, b = RNG.integers(-1, 2, (T, 2, 3, 4)), RNG.integers(-300, 300, (T, 2, 3, 1))
    node = Node("n", "mul", ["a", "b"], "o", {"frac": 6})
    k = KERNELS["mul"](node, "int", (3, 4))
    k.reset(2)
    total = sum(k(x, y) for x, y in zip(a, b, strict=True))
    np.testing.assert_array_equal(total, (a.sum(0) * b.sum(0) * 2**6) // T)


def test_integer_prelu_is_exact_on_the_running_sum():
    """G(t) = f(S_t): the integer outputs sum to int_prelu of the summed input, for any T."""
    node = Node(
        "n",
        "prelu",
        ["a"],
        "o",
        {"slope_shift": 14, "frac": 3},
        {"slope_q": np.array([1638, -8192], np.int64)},
    )
    k = KERNELS["prelu"](node, "int", (2,))
    k.reset(3)
    xs = RNG.integers(-9, 9, (6, 3, 2))
    total = sum(k(x) for x in xs)
    np.testing.assert_array_equal(total, F.int_prelu(xs.sum(0), node.params["slope_q"], 14, 3))


def test_sentence_embedding_head_quantizes_and_tracks_the_float_mode():
    """Masked mean pooling then L2 normalisation, end to end through quantize."""
    case = Case(
        CASES["div/masked_mean_pool"].nodes + [N("e", "l2norm", ["y"])], (5, 4), None, mask=5
    )
    q, got, want, _ = _int_and_float(case, case.graph(), 4, max_t=8)
    assert np.abs(got - want).max() <= 0.01
    np.testing.assert_allclose(np.linalg.norm(got[-1], axis=-1), 1, atol=0.01)


# -- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "node, shape, why",
    [
        (N("y", "prelu", ["x"], slope=np.ones((4, 1))), (3, 5), "does not broadcast"),
        (N("y", "channel_scale", ["x"], factor=np.array([1.0, 0.0, 2.0])), (3,), "zeros"),
        (N("y", "pad", ["x"], {"pads": [0, 1, 0]}), (3, 5), "not 4 values"),
        (N("y", "pad", ["x"], {"pads": [0, -1, 0, 0]}), (3, 5), "not 4 values"),
        (N("y", "l2norm", ["x"], {"axis": 0}), (3, 5), "last axis only"),
        (N("y", "resize", ["x"], {"mode": "cubic", "out_shape": [2, 4, 4]}), (2, 2, 2), "cubic"),
        (N("y", "resize", ["x"], {"out_shape": [3, 4, 4]}), (2, 2, 2), "resizes"),
        (N("y", "mul", ["x", "x2"]), (3, 5), "do not broadcast"),
    ],
)
def test_bad_nodes_are_refused_by_name(node, shape, why):
    ins = [TensorInfo("x", shape)] + ([TensorInfo("x2", (4,))] if len(node.inputs) > 1 else [])
    with pytest.raises(ShapeMismatch, match=f"node 'y' \\({node.op}\\).*{why}"):
        check_graph(Graph(ins, [node], ["y"], stage="snn"))


def test_a_non_positive_hard_sigmoid_slope_is_refused_at_quantize():
    case = Case([N("y", "hardsigmoid", ["x"], {"alpha": -0.2, "beta": 0.5})], (4,), None)
    with pytest.raises(Exception, match="node 'y' \\(hardsigmoid\\).*alpha"):
        quantize(case.graph(), case.inputs(8)["x"], get_profile("sim"))


# -- the quantized graphs save, load and stay inside their proven ranges ----------------------


def _proven_bounds(q: Graph, T: int) -> dict[str, np.ndarray]:
    """Per-step |value| bounds of every tensor, by the range rules (as prove_ranges runs them)."""
    from spikeport.quantize.ranges import BOUNDS, MOVES

    b = {t.name: np.full(t.shape, 1.0 if t.dtype == "int64" else 127.0) for t in q.inputs}
    c = {k: T * v for k, v in b.items()}
    for n in q.nodes:
        res = BOUNDS[n.op](n, [b[i] for i in n.inputs], T, [c[i] for i in n.inputs])
        b[n.output] = np.broadcast_to(res[0], q.shape(n.output))
        if len(res) > 2:
            c[n.output] = res[2]
        elif n.op in MOVES:
            c[n.output] = BOUNDS[n.op](n, [c[i] for i in n.inputs], T, [c[i] for i in n.inputs])[0]
        else:
            c[n.output] = T * b[n.output]
    return b


@pytest.mark.parametrize("label", sorted(CASES))
def test_values_stay_within_the_proven_bounds_and_survive_save_load(label, tmp_path):
    from spikeport.ir import load, save

    case, T = CASES[label], 8
    q = quantize(case.graph(), _feeds(case, case.inputs(64)), get_profile("sim"), max_timesteps=T)
    x = case.inputs(32)
    x["x"] *= 3  # past the calibrated range: the int8 codes saturate, the bounds still hold
    run = Simulator(q, "int").run(_feeds(case, x), T, record=True)
    bounds = _proven_bounds(q, T)
    for n in q.nodes:
        seen = np.abs(run.trace[n.output]).max(axis=(0, 1))
        assert (seen <= bounds[n.output]).all(), n.name
    save(q, tmp_path / "m.spk")
    again = Simulator(load(tmp_path / "m.spk"), "int").run(_feeds(case, x), T)
    np.testing.assert_array_equal(again.outputs["y"], run.outputs["y"])


def test_stateful_ops_fed_int8_input_codes_do_not_wrap():
    """A graph input arrives as int8 codes; running sums over steps must not stay int8."""
    x = np.broadcast_to(np.array([[100, 20], [5, -3]], np.int8), (2, 1, 2, 2))
    for op, attrs in (
        ("maxpool2d", {"kernel": [2, 2], "strides": [2, 2], "pads": [0, 0, 0, 0]}),
        ("mul", {"frac": 0}),
    ):
        node = Node("n", op, ["a"] * (2 if op == "mul" else 1), "o", attrs)
        k = KERNELS[op](node, "int", (1, 1, 1) if op == "maxpool2d" else (1, 2, 2))
        k.reset(2)
        ins = [x, np.ones_like(x)] if op == "mul" else [x]
        total = sum(k(*ins).astype(np.int64) for _ in range(4))
        want = 400 if op == "maxpool2d" else 4 * x.astype(np.int64)  # max(S_4); S_4 * 1
        assert (total == want).all(), op


def _hostile(T: int, n: int, shape: tuple[int, ...], b: int) -> np.ndarray:
    """(T, n, *shape) integer inputs with |x| <= b that move the running mean as far and as fast
    as they can: a sign flip after a run of k steps (k = 1: alternating), a jump to the other
    extreme after t0 steps, and uniform noise."""
    t = np.arange(T).reshape((T,) + (1,) * (1 + len(shape)))
    k = RNG.integers(1, T + 1, (1, n) + shape)
    flips = np.where((t // k) % 2 == 0, b, -b)
    jump = np.where(t < k, -b, b) * RNG.choice([-1, 1], (1, n) + shape)
    noise = RNG.integers(-b, b + 1, (T, n) + shape)
    pick = RNG.integers(0, 3, (1, n) + shape)
    return np.choose(np.broadcast_to(pick, (T, n) + shape), [flips, jump, noise])


@pytest.mark.parametrize("label", ["sigmoid", "hardsigmoid", "hardswish", "silu"])
@pytest.mark.parametrize("T", [4, 16, 64])
@pytest.mark.parametrize("b", [40, 3000, 10**6])
def test_activation_steps_stay_within_their_proven_bound_on_hostile_inputs(label, T, b):
    """The EC activations' step bound (from the function's slope, far below (2T - 1) max|f|)
    holds on inputs that swing the running mean as hard as |x_t| <= b allows; so do the
    bound of the outputs' running sums and of the kept input sum."""
    from spikeport.quantize.ranges import BOUNDS

    case = CASES[label]
    q = quantize(case.graph(), case.inputs(64)["x"], get_profile("sim"), max_timesteps=T)
    node = q.node("y")
    xs = _hostile(T, 64, case.shape, b)
    k = KERNELS[node.op](node, "int", case.shape)
    k.reset(64)
    outs = np.stack([k(x) for x in xs])
    full = np.full(case.shape, float(b))
    step, state, total = BOUNDS[node.op](node, [full], T, [T * full])
    assert (np.abs(outs) <= step).all(), (np.abs(outs).max(), step.max())
    assert (np.abs(np.cumsum(outs, axis=0)) <= total).all()
    assert k.state_peak <= state


@pytest.mark.parametrize("label", ["hardswish", "silu"])
def test_a_gated_activation_drops_the_bits_its_proof_needs(label):
    """Where the calibrated output scale would let the proven steps pass the state width,
    quantize drops more bits of the function's result (and notes it) instead of refusing;
    hostile inputs then stay within that width, steps and sums."""
    import dataclasses

    from spikeport.sim.arith import int_limit

    case, T = CASES[label], 64
    calib = (np.random.default_rng(0).normal(0, 1, (64, *case.shape)) * case.spread).astype(
        np.float32
    )  # its own generator: the module's RNG state depends on the tests run before
    narrow = dataclasses.replace(get_profile("sim"), state_bits=14)
    wide = quantize(case.graph(), calib, get_profile("sim"), max_timesteps=T)
    q = quantize(case.graph(), calib, narrow, max_timesteps=T)
    extra = q.node("y").attrs["int"]["drop"] - wide.node("y").attrs["int"]["drop"]
    assert extra > 0
    assert any(f"drops {extra} more bits" in n for n in q.meta["quantization"]["notes"])
    node = q.node("y")
    k = KERNELS[node.op](node, "int", case.shape)
    k.reset(64)
    outs = np.stack([k(x) for x in _hostile(T, 64, case.shape, 127)])
    assert np.abs(outs).max() <= int_limit(14)
    assert np.abs(np.cumsum(outs, axis=0)).max() <= int_limit(14)


@pytest.mark.parametrize("T", [1, 4, 16, 64])
@pytest.mark.parametrize("frac", [-20, -3, 0, 6])
def test_product_steps_stay_within_their_proven_bound_on_hostile_inputs(T, frac):
    """x * gate with x hostile (|x_t| <= 5000) and the gate an EC sigmoid's output (its sum
    stays within t 2^15, its steps do not): every step and running sum of the product within
    the mul rule's bounds, for fraction bits of either sign."""
    from spikeport.quantize.ranges import BOUNDS

    xs = _hostile(T, 64, (3, 5), 5000)
    gate_case = CASES["sigmoid"]
    q = quantize(gate_case.graph(), gate_case.inputs(64)["x"], get_profile("sim"), max_timesteps=T)
    gate_node = q.node("y")
    gk = KERNELS["sigmoid"](gate_node, "int", (3, 5))
    gk.reset(64)
    gates = np.stack([gk(x) for x in _hostile(T, 64, (3, 5), 3000)])
    full = np.full((3, 5), 3000.0)
    g_step, _, g_total = BOUNDS["sigmoid"](gate_node, [full], T, [T * full])
    node = Node("n", "mul", ["a", "b"], "o", {"frac": frac})
    k = KERNELS["mul"](node, "int", (3, 5))
    k.reset(64)
    outs = np.stack([k(x, g) for x, g in zip(xs, gates, strict=True)])
    x_b = np.full((3, 5), 5000.0)
    step, state, total = BOUNDS["mul"](node, [x_b, g_step], T, [T * x_b, g_total])
    assert (np.abs(outs) <= step).all(), (np.abs(outs).max(), step.max())
    assert (np.abs(np.cumsum(outs, axis=0)) <= total).all()
    assert k.state_peak <= state


def test_bilinear_2x_upsample_keeps_two_weight_bits_per_axis_exactly():
    """Weights 1/4 and 3/4: 2 bits per axis hold them exactly, so the output's integers grow
    16 times the input's, not 2^16 (the conv reading them overflowed int32)."""
    node = N("y", "resize", ["x"], {"mode": "linear", "out_shape": [3, 8, 6]})
    g = Case([node], (3, 4, 3), None).graph()
    q = quantize(g, RNG.normal(0, 1, (16, 3, 4, 3)).astype(np.float32), get_profile("sim"))
    s_in, s_out = float(q.scales["x"].max()), float(q.scales["y"].max())
    assert s_out == s_in * 2.0**-4
    x = RNG.integers(-127, 128, (2, 3, 4, 3))
    got = Simulator(q, "int").run(x * s_in, 1).outputs["y"][0] * s_out
    want = Simulator(g, "ann").run(x * s_in, 1).outputs["y"][0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


def test_a_sum_kept_past_a_resize_counts_its_integer_gain():
    """A PReLU's integers pass through a 2x bilinear resize (times 16) to a neuron that sums
    them (MediaPipe's palm detector overflowed there by 4 bits): the reach is 16; through a
    reshape alone 1; with no summing reader 0."""
    from spikeport.quantize.quantize import summing_reach

    theta = {"threshold": np.ones((3, 8, 6), np.float32)}
    nodes = [
        N("p", "prelu", ["x"], slope=np.array(0.5, np.float32)),
        N("r", "resize", ["p"], {"mode": "linear", "out_shape": [3, 8, 6]}),
        N("y", "if", ["r"], {"signed": False}, **theta),
    ]
    g = Case(nodes, (3, 4, 3), None).graph()
    assert summing_reach(g, "p") == 16.0
    assert summing_reach(g, "x") == 16.0  # the PReLU keeps its own sum too, slope below 1
    assert summing_reach(g, "y") == 0.0
    flat = [
        N("f", "reshape", ["x"], {"shape": [36]}),
        N("y", "if", ["f"], {}, threshold=np.ones(36, np.float32)),
    ]
    assert summing_reach(Case(flat, (3, 4, 3), None).graph(), "x") == 1.0


@pytest.mark.parametrize("family", ["efficientnet", "mobilenetv3", "prelu_leakyrelu"])
def test_gated_families_stay_within_their_proven_bounds(family, tmp_path):
    """Whole squeeze-excite / SiLU / HardSwish / PReLU networks (tests/family_models.py),
    quantized for T <= 12 and run on images far outside the calibrated range: every tensor at
    every step within the proof's bound."""
    from family_models import FAMILIES

    from spikeport.convert import convert

    T = 12
    fx = FAMILIES[family](tmp_path)
    snn = convert(fx.onnx, fx.save_calib(tmp_path / "calib.npz"))
    q = quantize(snn, fx.calib, get_profile("sim"), max_timesteps=T)
    x = RNG.uniform(-3, 4, (24, *fx.calib.shape[1:])).astype(np.float32)
    run = Simulator(q, "int").run(x, T, record=True)
    bounds = _proven_bounds(q, T)
    for n in q.nodes:
        seen = np.abs(run.trace[n.output]).max(axis=(0, 1))
        assert (seen <= bounds[n.output]).all(), n.name
