"""C layers of the synaptic ops (dense, conv2d): the reference loops, and fast kernels beside
them chosen per layer from the calibration activity quantize records.

A layer that reads spikes every step can run event-driven: walk the step's nonzero spikes and
add their weights into the targets, so its cost follows the spikes, not the fan-in. A layer that
reads dense values, or runs once (the encoded input), keeps the dense form; the dense-form conv
computes each output's valid window once instead of testing bounds at every multiply. The
choice compares instruction estimates (Thumb-2 at -Os, from QEMU counts on the examples) and is
written to the size report; `emit --kernels reference` keeps the reference loops everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

import numpy as np

from spikeport.ir.graph import Node
from spikeport.sim.kernels import conv_fanout
from spikeport.targets.c import kernels as K
from spikeport.targets.c.emit import Layer, Plan, _geometry, c_op

# Instructions per unit of work (Cortex-M3, -Os): a multiply-accumulate of the dense loop, of the
# reference conv loop (bounds tests and index arithmetic at every tap) and of the row-pointer
# conv; an event-driven synaptic op; the scan of one input for nonzero spikes; one conv tap an
# input spike reaches (its output position computed).
DENSE_MAC, CONV_MAC_REFERENCE, CONV_MAC_ROWS = 5.1, 23.0, 7.0
SYNOP, SCAN, TAP = 5.0, 5.0, 12.0
# Without recorded activity: assume half the inputs fire (the event kernel's break-even is far
# above the rates converted networks show, 10-45 % on the examples).
DEFAULT_ACTIVITY = 0.5


@dataclass
class Choice:
    kernel: str
    activity: float | None
    estimates: dict[str, float]

    def report(self) -> dict[str, object]:
        return {
            "kernel": self.kernel,
            "activity": self.activity,
            "instructions_per_step_estimate": {k: round(v) for k, v in self.estimates.items()},
        }


def _reads_spikes(plan: Plan, n: Node) -> bool:
    """Whether the input changes every step as int8 spike counts (event kernels apply)."""
    x = n.inputs[0]
    return plan.ctype[x] == "int8_t" and x not in plan.static


def _choose(plan: Plan, n: Node, dense_cost: float, event_cost: float | None) -> Choice:
    activity = plan.activity.get(plan.root[n.inputs[0]], plan.activity.get(n.inputs[0]))
    estimates = {"dense": dense_cost}
    if event_cost is not None and plan.kernels != "reference" and _reads_spikes(plan, n):
        rate = DEFAULT_ACTIVITY if activity is None else activity
        estimates["events"] = event_cost * max(rate, 0.0) + SCAN * plan.size(n.inputs[0])
    kernel = min(estimates, key=estimates.__getitem__)
    if plan.kernels == "events" and "events" in estimates:
        kernel = "events"
    return Choice(kernel, activity, estimates)


def _synapse_consts(n: Node, cid: str, weights: np.ndarray) -> list:
    return [("int8_t", f"w_{cid}", weights), ("int32_t", f"b_{cid}", n.params["bias_q"])]


@c_op("dense")
def _dense(plan: Plan, n: Node, cid: str) -> Layer:
    w = n.params["weight_q"]
    n_out, n_in = w.shape
    rows = plan.size(n.inputs[0]) // n_in
    choice = _choose(plan, n, DENSE_MAC * w.size * rows, SYNOP * w.size * rows)
    io = dict(rows=rows, n_in=n_in, n_out=n_out, b=f"b_{cid}", x=plan.buf(n.inputs[0]))
    io.update(y=plan.buf(n.output), yt=plan.ctype[n.output])
    io["store"] = Template(K.DENSE_STORE).substitute(io)
    if choice.kernel == "events":  # columns contiguous: a spike's weights are one run
        body = K.DENSE_EVENTS.substitute(io, wt=f"w_{cid}")
        layer = Layer(n, body, consts=_synapse_consts(n, cid, np.ascontiguousarray(w.T)))
    else:
        layer = Layer(n, K.DENSE.substitute(io, w=f"w_{cid}"), consts=_synapse_consts(n, cid, w))
    layer.kernel = choice.report()
    return layer


@c_op("conv2d")
def _conv(plan: Plan, n: Node, cid: str) -> Layer:
    w = n.params["weight_q"]
    a, g = n.attrs, _geometry(plan, n)
    c_out, cg, kh, kw = w.shape
    og = c_out // a["group"]
    geo = dict(g, c_out=c_out, og=og, cg=cg, kh=kh, kw=kw, dh=a["dilations"][0])
    geo.update(dw=a["dilations"][1], b=f"b_{cid}", c_in=g["c"], yt=plan.ctype[n.output])
    fanout = conv_fanout(
        plan.graph.shape(n.inputs[0]), w.shape, a["strides"], a["pads"], a["dilations"], a["group"]
    )
    macs = float(np.sum(fanout))  # every (input, output, tap) pair the window covers
    reached_taps = macs / og
    mac_cost = CONV_MAC_REFERENCE if plan.kernels == "reference" else CONV_MAC_ROWS
    choice = _choose(plan, n, mac_cost * macs, SYNOP * macs + TAP * reached_taps)
    if choice.kernel == "events":  # [ci][i][j][o]: an input's weights per tap are one run
        wt = w.reshape(a["group"], og, cg, kh, kw).transpose(0, 2, 3, 4, 1)
        body = K.CONV2D_EVENTS.substitute(geo, wt=f"w_{cid}")
        layer = Layer(n, body, consts=_synapse_consts(n, cid, np.ascontiguousarray(wt)))
    elif plan.kernels == "reference":
        layer = Layer(n, K.CONV2D.substitute(geo, w=f"w_{cid}"), consts=_synapse_consts(n, cid, w))
    else:
        store = Template(K.CONV2D_STORE).substitute(geo)
        body = K.CONV2D_ROWS.substitute(geo, w=f"w_{cid}", xt=plan.ctype[n.inputs[0]], store=store)
        layer = Layer(n, body, consts=_synapse_consts(n, cid, w))
        choice.kernel = "rows"
    layer.kernel = choice.report()
    return layer


@c_op("conv_transpose2d")
def _conv_transpose(plan: Plan, n: Node, cid: str) -> Layer:
    w, a = n.params["weight_q"], n.attrs
    c_in, h_in, w_in = plan.graph.shape(n.inputs[0])
    c_out, h_out, w_out = plan.graph.shape(n.output)
    body = K.CONV_TRANSPOSE2D.substitute(
        c_in=c_in, h_in=h_in, w_in=w_in, c_out=c_out, h_out=h_out, w_out=w_out,
        cg=c_in // a["group"], og=w.shape[1], kh=w.shape[2], kw=w.shape[3],
        sh=a["strides"][0], sw=a["strides"][1], dh=a["dilations"][0], dw=a["dilations"][1],
        pt=a["pads"][0], pl=a["pads"][1], x=plan.buf(n.inputs[0]), y=plan.buf(n.output),
        w=f"w_{cid}", b=f"b_{cid}",
    )  # fmt: skip
    return Layer(n, body, consts=_synapse_consts(n, cid, w))
