"""Integer graph of neuron kind "sdn" -> a chain of Lava SigmaDelta layers behind graded Dense
connections (num_message_bits 24), exact by construction.

How each op maps (anything else is refused by name before anything is written):
  if         one SigmaDelta population, act_mode RELU, cum_error off, spike_exp 0, state_exp =
             the node's, vth = the layer's integer delta threshold, bias = the integer bias of
             the synapses in front (Lava's sigma holds W * level, sigma + bias the current);
             a capped neuron (sdn_cap_q, c) is two neurons of it reading the same synapses,
             the second's bias lower by c, and its readers' weights are W for the first and
             -W for the second: relu(I) - relu(I - c) = min(relu(I), c)
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
from spikeport.targets.lava.plan import LINEAR_OPS, Layer, Network, affine_many, refuse

SDN_OUTPUT_VTH = int_limit(cap.SDN_STATE_BITS)
# Between sigma-delta layers every tensor is a level, so an add with shift 0 (quantize folds it
# into the synapses: Profile.fold_add) and a concat are linear too, as long as the chain reads
# one layer (one graded Dense); several are refused by name.
SDN_LINEAR = (*LINEAR_OPS, "add", "concat")


def _inputs(
    net: Network, graph: Graph, sink: str
) -> tuple[list[tuple[str | None, np.ndarray]], np.ndarray, float]:
    """What feeds `sink`'s layer: [(source layer, or None for the host, W over its neurons)],
    the bias, and the largest |graded input| of a step: per neuron of the sink, |W| times
    each source's message peaks, summed over the sources (a concat's branches reach the same
    neuron at once); through a readout (a max pool's pairs, a capped neuron's halves, whose
    messages at a step sum to the change of one value) the bound is over the values."""
    ws, b = affine_many(graph, sink, set(net.sources) | {graph.input.name}, SDN_LINEAR)
    if graph.input.name in ws and len(ws) > 1:
        raise refuse(sink, "synapses", "reads the input and a layer; the host feeds one alone")
    out: list[tuple[str | None, np.ndarray]] = []
    a_in = np.zeros(len(b))
    for leaf, w in ws.items():
        if leaf == graph.input.name:
            out.append((None, w))
            continue
        src = net.layer(net.sources[leaf])
        peak = np.broadcast_to(np.asarray(src.msg_peak, np.float64), w.shape[1:])
        a_in += np.abs(w) @ peak
        readout = net.readout.get(leaf)
        out.append((src.name, w if readout is None else readout(w)))
    return out, b, float(a_in.max(initial=0))


def _layer(name: str, role: str, inputs: list, b: np.ndarray, vth: int, exp: int = 0) -> Layer:
    (src, w), *extra = inputs
    zero = np.zeros(w.shape[0], np.int64)
    return Layer(name, role, w.shape[0], vth, zero, b, w, src, state_exp=exp, extra=extra)


def _message_peak(bound: float, vth: int, exp: int) -> int:
    """|message| of a neuron whose act lies in [0, bound]: |delta| < bound + vth, shifted."""
    return (int(bound) + max(vth, 1)) >> exp


def _neuron(net: Network, graph: Graph, node: Node, bounds: dict[str, NodeBounds]) -> None:
    inputs, b, a_in = _inputs(net, graph, node.inputs[0])
    vth = int(np.asarray(node.params["threshold_q"]).reshape(-1)[0])
    exp = int(node.attrs.get("state_exp", 0))
    if "sdn_cap_q" in node.params:  # two neurons a value, on I and on I - cap
        cap_q = np.broadcast_to(node.params["sdn_cap_q"], graph.shape(node.output))
        inputs = [(src, np.vstack([w, w])) for src, w in inputs]
        la = _layer(node.name, "sdn", inputs, np.concatenate([b, b]), vth, exp)
        la.offset = np.concatenate([np.zeros(b.shape, np.int64), -cap_q.reshape(-1)])
        # the proof bounds the pair's level and its step's change alike, per value (ranges._sdn)
        la.msg_peak = bounds[node.output].step.reshape(-1)
        net.readout[node.output] = lambda w: np.hstack([w, -w])
    else:
        la = _layer(node.name, "sdn", inputs, b, vth, exp)
        la.msg_peak = _message_peak(float(bounds[node.inputs[0]].step.max(initial=0)), vth, exp)
    la.a_in_peak = a_in
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
    """The tournament's rounds, one SigmaDelta layer each. The first reads the pooled tensor's
    cells as linear maps of the layers behind it (no bias: levels of neurons, moved, summed
    or averaged), the next ones the round before."""
    inputs, b, a_in = _inputs(net, graph, node.inputs[0])
    if inputs[0][0] is None or np.any(b):
        raise refuse(node.name, node.op, "its input is not the levels of neuron layers")
    cells = _cells(graph, node)
    n_out, k = cells.shape
    ok = cells >= 0
    # per source: coef[o, j] = item j of window o as a row over the source's neurons
    coefs = []
    for src, w in inputs:
        padded = np.vstack([w, np.zeros((1, w.shape[1]), np.int64)])  # row -1: padding reads 0
        coefs.append((src, padded[np.where(ok, cells, -1)]))
    peak = int(bounds[node.output].step.max(initial=0))  # every round holds values in [0, it]
    for r, rnd in enumerate(sdn_pool_rounds(k)):
        layer_in, items = [], []
        for src, coef in coefs:
            rows = []
            for o in range(n_out):
                for p in rnd:
                    rows.append(coef[o, p[0]])
                    if len(p) > 1:
                        rows.append(coef[o, p[1]] - coef[o, p[0]])
            layer_in.append((src, np.stack(rows)))
        size = len(layer_in[0][1])
        first = 0
        for _ in range(n_out):  # which neurons of this round each item's value sums
            for p in rnd:
                items.append(range(first, first + len(p)))
                first += len(p)
        zero = np.zeros(size, np.int64)
        la = _layer(f"{node.name}/round{r}", "pool", layer_in, zero, 0)
        la.msg_peak = peak
        la.a_in_peak = a_in if r == 0 else float(np.abs(la.weight).sum(1).max()) * peak
        net.layers.append(la)
        nxt = np.zeros((n_out, len(rnd), size), np.int64)
        for i, neurons in enumerate(items):
            nxt[i // len(rnd), i % len(rnd), list(neurons)] = 1
        coefs = [(la.name, nxt)]
    net.sources[node.output] = coefs[0][0]
    # its readers see the pooled values, each in [0, its own bound] (per channel: caps)
    net.layer(coefs[0][0]).msg_peak = bounds[node.output].step.reshape(-1)
    pairs = coefs[0][1][:, 0, :]
    net.readout[node.output] = lambda w: w @ pairs


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
        elif node.op == "add" and node.attrs.get("shift", 0) != 0:
            raise refuse(node.name, node.op, "a floor shift is not a synapse")
        elif node.op not in SDN_LINEAR:
            raise refuse(node.name, node.op, "the op is not supported")
    inputs, b, a_in = _inputs(net, graph, graph.outputs[0])
    la = _layer("output", "output", inputs, b, SDN_OUTPUT_VTH)
    la.a_in_peak = a_in
    net.layers.append(la)
    _check_sources(net)
    return net


def _check_sources(net: Network) -> None:
    """Every layer reads layers before it (a DAG in graph order) or, alone, the host."""
    seen: set[str] = set()
    for la in net.layers:
        srcs = [la.src, *(s for s, _ in la.extra)]
        for s in srcs:
            if s is not None and s not in seen:
                raise refuse(la.name, "synapses", f"reads '{s}', which is not before it")
        seen.add(la.name)


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
    for la in net.layers:
        if la.state_exp > cap.SDN_MAX_STATE_EXP:  # a graph quantized before the limit
            raise refuse(la.name, "state_exp", f"{la.state_exp} is beyond Lava's 3 bits (0..7)")
        _check_mantissa(la, "bias", la.neuron_bias(), cap.SDN_BIAS_BITS)
        if la.src is None:  # the host sends W x + b once; sigma keeps it
            peak = float((np.abs(la.weight).sum(1) * 127 + np.abs(la.bias)).max(initial=0))
            if peak > lim:
                raise refuse(la.name, "synapses", f"its input can reach {peak:.0f}, beyond 24 bits")
            continue
        for _, w in [(la.src, la.weight), *la.extra]:
            top = int(np.abs(w).max(initial=0))
            if top > int_limit(cap.WEIGHT_BITS):
                raise refuse(la.name, "synapses", f"a composed weight reaches {top}, beyond 8 bits")
        if la.a_in_peak > lim:
            raise refuse(
                la.name,
                "synapses",
                f"a step's graded input can reach {la.a_in_peak:.0f}, beyond the 24-bit a_in",
            )
        _check_mantissa(la, "threshold", np.array([la.vth]), cap.SDN_STATE_BITS)
        if la.vth < 0:
            raise refuse(la.name, "threshold", f"{la.vth} is negative")
