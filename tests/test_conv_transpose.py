"""conv_transpose2d (ONNX ConvTranspose): imported exactly (ANN view == onnxruntime), the int
mode equals a plain integer loop, the range proof bounds what runs, synaptic ops count the
outputs each input writes."""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from spikeport.convert import convert, import_onnx
from spikeport.errors import CapabilityExceeded, UnsupportedOp
from spikeport.ir import Node
from spikeport.quantize import Profile, get_profile, quantize
from spikeport.quantize.profiles import fanin
from spikeport.quantize.ranges import BOUNDS
from spikeport.sim import Simulator, simulate
from spikeport.sim import kernels as K
from spikeport.targets import emit, verify
from spikeport.targets.compare import random_inputs

# (in channels, out channels, kernel, stride, padding, output_padding, groups, dilation)
CASES = {
    "stride2": (4, 6, 2, 2, 0, 0, 1, 1),
    "padding": (4, 6, 3, 2, 1, 0, 1, 1),
    "output_padding": (4, 6, 3, 2, 1, 1, 1, 1),
    "groups": (4, 6, 3, 2, 1, 1, 2, 1),
    "dilation": (4, 6, 3, 1, 2, 0, 1, 2),
    "asymmetric": (4, 4, (3, 2), (2, 3), (1, 0), (1, 2), 4, (2, 1)),
}


def _layer(case: str) -> nn.ConvTranspose2d:
    cin, cout, k, s, p, op, g, d = CASES[case]
    return nn.ConvTranspose2d(cin, cout, k, s, p, op, g, dilation=d)


def _export(model: nn.Module, path, shape=(4, 5, 7)) -> np.ndarray:
    """Save `model` as ONNX (dynamic batch); return test inputs."""
    model.eval()
    x = torch.randn(2, *shape)
    torch.onnx.export(
        model, (x,), str(path), input_names=["x"], dynamic_axes={"x": {0: "N"}}, dynamo=False
    )
    return np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)


def _ann_matches_onnxruntime(path, x: np.ndarray) -> None:
    graph = import_onnx(path)
    assert "conv_transpose2d" in {n.op for n in graph.nodes}
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_ann_view_equals_onnxruntime(tmp_path, case):
    torch.manual_seed(0)
    path = tmp_path / "m.onnx"
    _ann_matches_onnxruntime(path, _export(_layer(case), path))


def _onnx_convt(tmp_path, x_hw: tuple[int, int], **attrs) -> tuple:
    r = np.random.default_rng(1)
    w, b = r.normal(size=(2, 3, 3, 3)), r.normal(size=3)
    g = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, *x_hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in (("w", w), ("b", b))],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path, r.normal(size=(3, 2, *x_hw)).astype(np.float32)


@pytest.mark.parametrize(
    "attrs",
    [
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        {"strides": [2, 2], "auto_pad": "SAME_LOWER"},
        {"strides": [2, 1], "auto_pad": "VALID"},
        {"strides": [2, 2], "output_shape": [8, 9]},  # odd total padding on one axis
        {"strides": [3, 2], "output_padding": [2, 1]},
    ],
)
def test_auto_pad_and_output_shape_resolve_like_onnxruntime(tmp_path, attrs):
    path, x = _onnx_convt(tmp_path, (4, 5), **attrs)
    _ann_matches_onnxruntime(path, x)


def _int_reference(x: np.ndarray, node: Node) -> np.ndarray:
    """ConvTranspose by its definition, one multiply-add at a time on Python ints."""
    a, w, b = node.attrs, node.params["weight_q"].astype(int), node.params["bias_q"].astype(int)
    (sh, sw), (dh, dw), g = a["strides"], a["dilations"], a["group"]
    top, left, bottom, right = a["pads"]
    n, c, h, wd = x.shape
    cg, og, kh, kw = c // g, w.shape[1], w.shape[2], w.shape[3]
    fh = (h - 1) * sh + (kh - 1) * dh + 1 + a["output_padding"][0]
    fw = (wd - 1) * sw + (kw - 1) * dw + 1 + a["output_padding"][1]
    y = np.zeros((n, og * g, fh - top - bottom, fw - left - right), object)
    for ci in range(c):
        grp = ci // cg
        for o in range(og):
            for i in range(kh):
                for j in range(kw):
                    for r in range(h):
                        for q in range(wd):
                            oy, ox = r * sh + i * dh - top, q * sw + j * dw - left
                            if 0 <= oy < y.shape[2] and 0 <= ox < y.shape[3]:
                                y[:, grp * og + o, oy, ox] += int(w[ci, o, i, j]) * x[:, ci, r, q]
    return y + b.reshape(1, -1, 1, 1)


class _Up(nn.Module):
    """conv -> relu -> grouped transposed conv (feeds neurons: per-channel scales) -> relu ->
    transposed conv (the output: one scale)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, 2, 1)
        self.up1 = nn.ConvTranspose2d(4, 6, 3, 2, 1, 1, groups=2)
        self.up2 = nn.ConvTranspose2d(6, 2, 2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up2(torch.relu(self.up1(torch.relu(self.conv(x)))))


@pytest.fixture(scope="module")
def up_net(tmp_path_factory):
    """The snn and int graphs of _Up, and test inputs."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("convt")
    path = tmp / "up.onnx"
    x = _export(_Up(), path, (3, 8, 8))
    r = np.random.default_rng(2)
    np.savez(tmp / "calib.npz", x=r.normal(size=(32, 3, 8, 8)).astype(np.float32))
    snn = convert(path, tmp / "calib.npz")
    return snn, quantize(snn, np.load(tmp / "calib.npz")["x"], get_profile("sim"), 16), x


def test_int_mode_equals_an_integer_loop(up_net):
    _, q, x = up_net
    ups = [n for n in q.nodes if n.op == "conv_transpose2d"]
    assert len(ups) == 2 and all(n.params["weight_q"].dtype == np.int8 for n in ups)
    assert ups[0].params["weight_q"].shape == ups[0].params["weight"].shape  # ONNX layout
    res = Simulator(q, "int").run(x[:2], 5, record=True)
    for n in ups:
        for t in (0, 4):
            got = res.trace[n.output][t]
            assert got.dtype == np.int64
            want = _int_reference(res.trace[n.inputs[0]][t].astype(object), n)
            assert np.array_equal(got, want.astype(np.int64)), (n.name, t)


def test_quantized_weights_fold_the_input_scale_per_output_channel(up_net):
    """weight_q * s_w[out channel] / s_x[in channel] gives back the float weight."""
    snn, q, _ = up_net
    n = next(n for n in q.nodes if n.op == "conv_transpose2d")
    s_x = q.scales[n.inputs[0]].reshape(-1)
    s_y = q.scales[n.output].reshape(-1)
    assert s_y.size == 6 and len(set(s_y)) > 1  # feeds neurons only: one scale per channel
    cin, og = n.params["weight"].shape[:2]
    cg = cin // n.attrs["group"]
    out_ch = (np.arange(cin)[:, None] // cg) * og + np.arange(og)  # (C, O/g): o of w[c, k]
    s_in = np.broadcast_to(s_x, cin)
    back = n.params["weight_q"] * s_y[out_ch][:, :, None, None] / s_in[:, None, None, None]
    np.testing.assert_allclose(back, n.params["weight"], atol=0.51 * s_y.max() / s_x.min())


def test_feedback_rounding_names_the_transposed_convolutions_it_rounds_to_nearest(up_net):
    """--weight-rounding feedback weighs dense and conv2d layers; a transposed convolution
    keeps its nearest integers, and the artifact's notes say which."""
    snn, q, _ = up_net
    calib = np.random.default_rng(2).normal(size=(32, 3, 8, 8)).astype(np.float32)
    fed = quantize(snn, calib, get_profile("sim"), 16, weight_rounding="feedback")
    ups = [n.name for n in q.nodes if n.op == "conv_transpose2d"]
    (note,) = [n for n in fed.meta["quantization"]["notes"] if "rounded to nearest" in n]
    assert all(name in note for name in ups), note
    for name in ups:
        assert np.array_equal(fed.node(name).params["weight_q"], q.node(name).params["weight_q"])


def test_range_proof_holds_on_random_inputs(up_net):
    """Every step's |value| stays within the bound rule's, from the proven input bound; the
    summed bound holds for the T-step sums."""
    _, q, _ = up_net
    r = np.random.default_rng(3)
    x = r.normal(size=(16, 3, 8, 8)) * r.choice([0.1, 1.0, 30.0], size=(16, 1, 1, 1))
    T = 16
    res = Simulator(q, "int").run(x, T, record=True)
    bounds = {q.input.name: np.full(q.input.shape, 127.0)}
    sums = {q.input.name: T * bounds[q.input.name]}
    for n in q.nodes:
        out = BOUNDS[n.op](n, [bounds[i] for i in n.inputs], T, [sums[i] for i in n.inputs])
        bounds[n.output] = out[0]
        sums[n.output] = out[2] if len(out) > 2 else T * out[0]
        seen = np.abs(res.trace[n.output])
        assert (seen <= bounds[n.output]).all(), n.name
        assert (np.abs(res.trace[n.output].sum(0)) <= sums[n.output]).all(), n.name
    assert q.meta["quantization"]["proven_peak"]["value"] >= int(
        np.abs(res.outputs[q.outputs[0]]).max()
    )


def test_bound_rule_covers_extreme_int8_inputs():
    """Inputs at the int8 limits (the proof's worst case) stay within the rule's bound."""
    r = np.random.default_rng(4)
    a = {"strides": [2, 2], "pads": [1, 0, 0, 1], "dilations": [1, 2], "group": 2}
    a["output_padding"] = [1, 0]
    w = r.integers(-127, 128, (4, 3, 3, 2)).astype(np.int8)
    b = r.integers(-1000, 1000, 6).astype(np.int32)
    node = Node("up", "conv_transpose2d", ["x"], "y", a, {"weight_q": w, "bias_q": b})
    limit = np.full((4, 5, 5), 127.0)
    bound = BOUNDS["conv_transpose2d"](node, [limit], 1, [limit])[0]
    geo = (a["strides"], a["pads"], a["dilations"], a["group"], a["output_padding"])
    for _ in range(20):
        x = r.choice([-127, 0, 127], size=(3, 4, 5, 5)).astype(np.int8)
        assert (np.abs(K.conv_transpose2d(x, w, b, *geo)) <= bound).all()


def _pair(v: int | tuple[int, int]) -> list[int]:
    return list(v) if isinstance(v, tuple) else [v, v]


class _Shapes:
    """Stands in for a Graph where only the input's shape is read."""

    def __init__(self, shape: tuple[int, ...]):
        self.in_shape = shape

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.in_shape


@pytest.mark.parametrize("case", sorted(CASES))
def test_fanout_and_fanin_count_the_synapses(case):
    """Fan-out (sops per input spike) and fan-in (target limits) equal brute-force counts."""
    cin, cout, k, s, p, op, g, d = CASES[case]
    k, s, p, op, d = (_pair(v) for v in (k, s, p, op, d))
    shape, w_shape, pads = (cin, 5, 7), (cin, cout // g, *k), [p[0], p[1], p[0], p[1]]
    ones = np.ones(w_shape)

    def run(x: np.ndarray) -> np.ndarray:
        return K.conv_transpose2d(x, ones, None, s, pads, d, g, op)

    conn = np.zeros(shape)  # outputs one input element reaches
    for idx in np.ndindex(*shape):
        e = np.zeros((1, *shape))
        e[(0, *idx)] = 1
        conn[idx] = (run(e) != 0).sum()
    assert np.array_equal(K.conv_transpose_fanout(shape, w_shape, s, pads, d, op), conn)
    attrs = {"strides": s, "pads": pads, "dilations": d, "group": g, "output_padding": op}
    node = Node("up", "conv_transpose2d", ["x"], "y", attrs, {"weight": ones})
    assert fanin(_Shapes(shape), node) == int(run(np.ones((1, *shape))).max())


def test_sops_count_each_input_spike_times_its_fanout(up_net):
    _, q, x = up_net
    res = Simulator(q, "int").run(x[:3], 4, record=True)
    sim = Simulator(q, "int")
    for t in range(4):
        want = sum(
            int(((res.trace[n.inputs[0]][t] != 0) * sim.fanout[n.name]).sum())
            for n in q.nodes
            if n.name in sim.fanout and not (t > 0 and n.output in sim.static)  # once: static
        )
        assert res.sops[t] == want
    up = next(n for n in q.nodes if n.op == "conv_transpose2d")
    assert sim.fanout[up.name].shape == q.shape(up.inputs[0])


def test_current_limited_targets_refuse_it_naming_the_node(up_net):
    snn, _, _ = up_net
    x = np.random.default_rng(5).normal(size=(8, 3, 8, 8))
    with pytest.raises(CapabilityExceeded, match=r"\(conv_transpose2d\): per-step current"):
        quantize(snn, x, Profile("limited", max_current=1 << 20))


def test_an_output_shape_beyond_the_full_output_is_refused(tmp_path):
    path, _ = _onnx_convt(tmp_path, (4, 5), strides=[2, 2], output_shape=[12, 13])
    with pytest.raises(UnsupportedOp, match=r"'up' \(ConvTranspose\): output_shape \[12, 13\]"):
        import_onnx(path)


def test_the_finetune_module_spikes_like_the_float_simulator(up_net):
    from spikeport.finetune import SpikingNet

    snn, _, x = up_net
    ref = Simulator(snn, "float").run(x, 6, record=True)
    net = SpikingNet(snn).double()
    with torch.no_grad():
        run = net.run(torch.from_numpy(x).double(), 6, record=True)
    for n in (n for n in snn.nodes if n.op == "if"):
        assert np.array_equal(np.sign(ref.trace[n.output]), np.sign(run.trace[n.output].numpy()))
    np.testing.assert_allclose(run.outputs.numpy(), ref.outputs[snn.outputs[0]], atol=1e-9)


def test_batchnorm_and_bias_fold_into_a_grouped_conv_transpose(tmp_path):
    """BatchNorm after a grouped ConvTranspose folds into it: one node, still onnxruntime's."""
    import onnxruntime as ort
    from torch import nn

    from spikeport.convert import import_onnx
    from spikeport.sim import simulate

    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2), nn.BatchNorm2d(6))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    path = tmp_path / "ct.onnx"
    torch.onnx.export(
        model,
        (torch.randn(1, 4, 5, 5),),
        str(path),
        input_names=["x"],
        dynamic_axes={"x": {0: "N"}},
        dynamo=False,
    )
    graph = import_onnx(path)
    assert [n.op for n in graph.nodes] == ["conv_transpose2d"]
    x = np.random.default_rng(0).normal(size=(3, 4, 5, 5)).astype(np.float32)
    ref = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    ours = simulate(graph, x, 1, "ann").outputs[graph.outputs[0]][0]
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


@pytest.mark.skipif(shutil.which("cc") is None, reason="no host C compiler (cc)")
def test_c_target_is_bit_exact(up_net, tmp_path):
    """Grouped, strided, output-padded transposed convs on the C target: 100 random inputs,
    every step of T = 8 (the scatter kernel against the simulator)."""
    snn, _, _ = up_net
    q = quantize(snn, np.random.default_rng(2).normal(size=(32, 3, 8, 8)), get_profile("c"), 8)
    emit(q, "c", tmp_path / "c")
    verify(q, tmp_path / "c", random_inputs(q, 100, seed=4), T=8)
