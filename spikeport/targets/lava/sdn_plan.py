"""Integer graph of neuron kind "sdn" -> a chain of Lava SigmaDelta layers behind graded Dense
connections (num_message_bits 24), exact by construction.

How each op maps (anything else is refused by name before anything is written):
  if         one SigmaDelta population, act_mode RELU, cum_error off, spike_exp 0, state_exp =
             the node's, vth = the layer's integer delta threshold, bias = the integer bias of
             the synapses in front (Lava's sigma holds W * level, sigma + bias the current)
  dense, conv2d, avgpool2d, reshape
             folded into the graded Dense in front of the next population, as for kind "lava"
             (plan.affine: the integer kernels run on impulses)
  maxpool2d  the rounds of spikeport.sim.kinds.sdn_pool_rounds, one SigmaDelta population each
             (vth 0, state_exp 0: every change is sent whole, so each passes its values on
             exactly): a pair (u, v) is two neurons relu(u) and relu(v - u), which the next
             Dense sums; the weights into a round are 0 / +-1
  input      the first population's input W x + b is sent by the host into a_in at step 1
             only: sigma keeps it (it accumulates), so act sees it at every step; bias 0
  output     a SigmaDelta with act_mode UNIT and the output bias: its act (sigma + bias) is the
             output level at every step (vth at its largest: it sends nothing)
"""

from __future__ import annotations

import numpy as np

from spikeport.ir.graph import Graph, Node
from spikeport.quantize.ranges import NodeBounds, range_bounds
from spikeport.sim import kernels as K
from spikeport.sim.arith import int_limit
from spikeport.sim.kinds import SDN, kind_of, sdn_pool_rounds
from spikeport.targets.lava import capabilities as cap
from spikeport.targets.lava.plan import LINEAR_OPS, Layer, Network, affine, refuse

SDN_OUTPUT_VTH = int_limit(cap.SDN_STATE_BITS)


def _connect(net: Network, graph: Graph, sink: str) -> tuple[str | None, np.ndarray, np.ndarray]:
    """(source layer or None for the host, W over that layer's neurons, b)."""
    leaf, w, b = affine(graph, sink, set(net.sources) | {graph.input.name})
    if leaf == graph.input.name:
        return None, w, b
    readout = net.readout.get(leaf)
    return net.sources[leaf], (w if readout is None else w @ readout), b


def _a_in_peak(net: Network, graph: Graph, sink: str) -> float:
    """The largest |graded input| of a step into `sink`'s layer: |W| times the messages'
    peak. Through a readout (a max pool's pairs) the pair's two messages at a step sum to the
    change of one pooled value, so the bound is over the pooled values, not the neurons."""
    leaf, w, _ = affine(graph, sink, set(net.sources) | {graph.input.name})
    if leaf == graph.input.name:
        return 0.0
    peak = net.layer(net.sources[leaf]).msg_peak
    return float(np.abs(w).sum(1).max(initial=0)) * peak


def _message_peak(bound: float, vth: int, exp: int) -> int:
    """|message| of a neuron whose act lies in [0, bound]: |delta| < bound + vth, shifted."""
    return (int(bound) + max(vth, 1)) >> exp


def _neuron(net: Network, graph: Graph, node: Node, bounds: dict[str, NodeBounds]) -> None:
    src, w, b = _connect(net, graph, node.inputs[0])
    vth = int(np.asarray(node.params["threshold_q"]).reshape(-1)[0])
    exp = int(node.attrs.get("state_exp", 0))
    zero = np.zeros(w.shape[0], np.int64)
    la = Layer(node.name, "sdn", w.shape[0], vth, zero, b, w, src, state_exp=exp)
    la.msg_peak = _message_peak(float(bounds[node.inputs[0]].step.max(initial=0)), vth, exp)
    la.a_in_peak = _a_in_peak(net, graph, node.inputs[0])
    net.layers.append(la)
    net.sources[node.output] = node.name


def _cells(graph: Graph, node: Node) -> np.ndarray:
    """(outputs, kh * kw) the input cell each window position reads, -1 for padding."""
    shape = graph.shape(node.inputs[0])
    idx = np.arange(int(np.prod(shape))).reshape((1,) + shape)
    a = node.attrs
    win = K.windows(idx, a["kernel"], a["strides"], a["pads"], pad_value=-1)
    return win.reshape(-1, a["kernel"][0] * a["kernel"][1])


def _maxpool(net: Network, graph: Graph, node: Node, bounds: dict[str, NodeBounds]) -> None:
    src = node.inputs[0]
    if src not in net.sources:
        raise refuse(node.name, node.op, "its input is not the levels of a neuron layer")
    cells = _cells(graph, node)
    n_out, k = cells.shape
    readout = net.readout.get(src)
    n_in = int(np.prod(graph.shape(src)))
    # coef[o][j]: item j of window o as a row over the previous layer's neurons
    coef = np.zeros((n_out, k, n_in), np.int64)
    ok = cells >= 0
    coef[np.nonzero(ok)[0], np.nonzero(ok)[1], cells[ok]] = 1
    if readout is not None:
        coef = coef @ readout
    prev = net.sources[src]
    peak = int(bounds[node.output].step.max(initial=0))  # every round holds values in [0, it]
    rounds = sdn_pool_rounds(k)
    for r, rnd in enumerate(rounds):
        rows, items = [], []
        for o in range(n_out):
            for p in rnd:
                first = len(rows)
                rows.append(coef[o, p[0]])
                if len(p) > 1:
                    rows.append(coef[o, p[1]] - coef[o, p[0]])
                items.append(range(first, len(rows)))
        w = np.stack(rows)
        name = f"{node.name}/round{r}"
        zero = np.zeros(len(w), np.int64)
        la = Layer(name, "pool", len(w), 0, zero, zero, w, prev)
        la.msg_peak = peak
        # from the source neurons (|coef| rows of 0 / +-1) or from the pairs of the last round
        la.a_in_peak = float(np.abs(w).sum(1).max(initial=0)) * net.layer(prev).msg_peak
        net.layers.append(la)
        nxt = np.zeros((n_out, len(rnd), len(w)), np.int64)
        for i, neurons in enumerate(items):
            nxt[i // len(rnd), i % len(rnd), list(neurons)] = 1
        coef, prev = nxt, name
    net.sources[node.output] = prev
    net.readout[node.output] = coef[:, 0, :]


def build_sdn(graph: Graph) -> Network:
    """The SigmaDelta layer chain of an integer "sdn" graph (refuses, naming the node)."""
    net = Network(levels=True)
    bounds = range_bounds(graph, graph.meta["quantization"]["max_timesteps"])
    for node in graph.nodes:
        if node.op in ("if", "maxpool2d") and kind_of(node) != SDN:
            raise refuse(node.name, node.op, f"neuron kind '{kind_of(node)}' mixed with 'sdn'")
        if node.op == "if":
            _neuron(net, graph, node, bounds)
        elif node.op == "maxpool2d":
            _maxpool(net, graph, node, bounds)
        elif node.op not in LINEAR_OPS:
            raise refuse(node.name, node.op, "the op is not supported")
    out = graph.outputs[0]
    src, w, b = _connect(net, graph, out)
    zero = np.zeros(w.shape[0], np.int64)
    la = Layer("output", "output", w.shape[0], SDN_OUTPUT_VTH, zero, b, w, src)
    la.a_in_peak = _a_in_peak(net, graph, out)
    net.layers.append(la)
    return net


def _check_mantissa(la: Layer, what: str, x: np.ndarray, bits: int) -> None:
    """Lava's SigmaDelta takes vth and bias as mantissas it shifts left by state_exp."""
    step = 1 << la.state_exp
    if np.any(x % step):
        raise refuse(la.name, what, f"not a multiple of 2^{la.state_exp} (its state_exp)")
    if np.abs(x >> la.state_exp).max(initial=0) > int_limit(bits):
        raise refuse(la.name, what, f"its mantissa needs more than {bits} bits")


def check_sdn(net: Network) -> None:
    """Every number within SigmaDelta's and the graded Dense's registers."""
    lim = int_limit(cap.SDN_STATE_BITS)
    for prev, la in zip([None, *net.layers], net.layers, strict=False):
        if la.src is None:
            peak = float((np.abs(la.weight).sum(1) * 127 + np.abs(la.bias)).max(initial=0))
            if peak > lim:
                raise refuse(la.name, "synapses", f"its input can reach {peak:.0f}, beyond 24 bits")
            continue
        assert prev is not None
        top = int(np.abs(la.weight).max(initial=0))
        if top > int_limit(cap.WEIGHT_BITS):
            raise refuse(la.name, "synapses", f"a composed weight reaches {top}, beyond 8 bits")
        _check_mantissa(la, "bias", la.bias, cap.SDN_BIAS_BITS)
        a_in = la.a_in_peak
        if a_in > lim:
            raise refuse(
                la.name,
                "synapses",
                f"a step's graded input can reach {a_in:.0f}, beyond the 24-bit a_in",
            )
        _check_mantissa(la, "threshold", np.array([la.vth]), cap.SDN_STATE_BITS)
        if la.vth < 0:
            raise refuse(la.name, "threshold", f"{la.vth} is negative")
