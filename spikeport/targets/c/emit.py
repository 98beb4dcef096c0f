"""Integer graph -> C99 sources (model.h, model.c), a test harness, a Makefile and a README.

Every tensor is a buffer in one static state struct (spikes int8, currents int32; a reshape
aliases its input). Weights, biases, thresholds and multipliers are `static const` arrays, so
they live in flash. Layers whose inputs never change (the direct-encoded input through
stateless ops) run once after spk_reset(), exactly as in the reference simulator.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import spike_levels, static_tensors
from spikeport.registry import registrar
from spikeport.targets.c import kernels as K

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOARD = Path(__file__).resolve().parent / "board"
CTYPE_BYTES = {"int8_t": 1, "int16_t": 2, "int32_t": 4}


@dataclass
class Layer:
    """What one node contributes to model.c."""

    node: Node
    body: str
    static: bool = False
    consts: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # ctype, name, data
    state: list[tuple[str, str, int]] = field(default_factory=list)  # ctype, name, size
    reset: str = ""


def c_ident(text: str) -> str:
    return re.sub(r"\W", "_", text)


def broadcast_index(full: tuple[int, ...], compact: tuple[int, ...], var: str = "i") -> str:
    """C expression: index into a compact (broadcast) array for flat index `var` of `full`."""
    compact = (1,) * (len(full) - len(compact)) + tuple(compact)
    terms, cstride = [], 1
    strides = [int(np.prod(full[k + 1 :])) for k in range(len(full))]
    for k in reversed(range(len(full))):
        if compact[k] != 1:
            coord = (
                f"({var} / {strides[k]}) % {full[k]}" if strides[k] > 1 else f"{var} % {full[k]}"
            )
            terms.append(f"({coord}) * {cstride}" if cstride > 1 else f"({coord})")
            cstride *= compact[k]
    return " + ".join(reversed(terms)) or "0"


class Plan:
    """Buffers and names for every tensor of the graph."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.ctype: dict[str, str] = {graph.input.name: "int8_t"}
        self.buffer: dict[str, str] = {graph.input.name: "spk_state.in"}
        self.static = static_tensors(graph)
        for n in graph.nodes:
            self.ctype[n.output] = self._ctype(n)
            if n.op == "reshape":
                self.buffer[n.output] = self.buffer[n.inputs[0]]
            else:
                self.buffer[n.output] = f"spk_state.{c_ident('t_' + n.name)}"

    def _ctype(self, n: Node) -> str:
        if n.op == "if":
            return "int8_t"
        if n.op in ("reshape", "maxpool2d", "concat") and all(
            self.ctype[i] == "int8_t" for i in n.inputs
        ):
            return "int8_t"
        return "int32_t"

    def size(self, tensor: str) -> int:
        return int(np.prod(self.graph.shape(tensor)))


def _geometry(plan: Plan, n: Node) -> dict[str, Any]:
    c, h_in, w_in = plan.graph.shape(n.inputs[0])
    _, h_out, w_out = plan.graph.shape(n.output)
    a = n.attrs
    pads, strides = a["pads"], a["strides"]
    return dict(
        c=c,
        h_in=h_in,
        w_in=w_in,
        h_out=h_out,
        w_out=w_out,
        pt=pads[0],
        pl=pads[1],
        sh=strides[0],
        sw=strides[1],
        x=plan.buffer[n.inputs[0]],
        y=plan.buffer[n.output],
    )


LayerMaker = Callable[[Plan, Node, str], Layer]
C_OPS: dict[str, LayerMaker] = {}


c_op = registrar(C_OPS)


@c_op("dense")
def _dense(plan: Plan, n: Node, cid: str) -> Layer:
    w = n.params["weight_q"]
    n_out, n_in = w.shape
    rows = plan.size(n.inputs[0]) // n_in
    body = K.DENSE.substitute(
        rows=rows,
        n_in=n_in,
        n_out=n_out,
        w=f"w_{cid}",
        b=f"b_{cid}",
        x=plan.buffer[n.inputs[0]],
        y=plan.buffer[n.output],
    )
    return Layer(
        n, body, consts=[("int8_t", f"w_{cid}", w), ("int32_t", f"b_{cid}", n.params["bias_q"])]
    )


@c_op("conv2d")
def _conv(plan: Plan, n: Node, cid: str) -> Layer:
    w = n.params["weight_q"]
    g = _geometry(plan, n)
    body = K.CONV2D.substitute(
        g,
        c_out=w.shape[0],
        og=w.shape[0] // n.attrs["group"],
        cg=w.shape[1],
        kh=w.shape[2],
        kw=w.shape[3],
        dh=n.attrs["dilations"][0],
        dw=n.attrs["dilations"][1],
        w=f"w_{cid}",
        b=f"b_{cid}",
    )
    return Layer(
        n, body, consts=[("int8_t", f"w_{cid}", w), ("int32_t", f"b_{cid}", n.params["bias_q"])]
    )


def _pool(plan: Plan, n: Node, init: str, fold: str, store: str, src: str, **extra: Any) -> str:
    g = _geometry(plan, n)
    k = n.attrs["kernel"]
    fold_c = Template(fold).substitute(g, src=src)
    store_c = Template(store).substitute(g, **extra)
    return K.POOL.substitute(g, kh=k[0], kw=k[1], init=init, fold=fold_c, store=store_c)


@c_op("avgpool2d")
def _avgpool(plan: Plan, n: Node, cid: str) -> Layer:
    body = _pool(plan, n, "0", K.AVGPOOL_FOLD, K.AVGPOOL_STORE, plan.buffer[n.inputs[0]])
    return Layer(n, body)


@c_op("maxpool2d")
def _maxpool(plan: Plan, n: Node, cid: str) -> Layer:
    n_in, n_out = plan.size(n.inputs[0]), plan.size(n.output)
    total, prev = f"spk_state.s_{cid}", f"spk_state.m_{cid}"
    pre = K.MAXPOOL_PRE.substitute(n_in=n_in, sum=total, x=plan.buffer[n.inputs[0]])
    body = pre + _pool(plan, n, "INT32_MIN", K.MAXPOOL_FOLD, K.MAXPOOL_STORE, total, prev=prev)
    return Layer(n, body, state=[("int32_t", f"s_{cid}", n_in), ("int32_t", f"m_{cid}", n_out)])


@c_op("add")
def _add(plan: Plan, n: Node, cid: str) -> Layer:
    shape = plan.graph.shape(n.output)
    mult = n.params["mult_q"]
    terms, consts = [], []
    for k, t in enumerate(n.inputs):
        consts.append(("int16_t", f"m{k}_{cid}", mult[k]))
        terms.append(
            K.ADD_TERM.substitute(
                m=f"m{k}_{cid}", x=plan.buffer[t], mi=broadcast_index(shape, mult.shape[1:])
            )
        )
    body = K.ADD.substitute(
        n=plan.size(n.output),
        y=plan.buffer[n.output],
        terms="\n            + ".join(terms),
        div=f"INT64_C({1 << n.attrs.get('shift', 0)})",
    )
    return Layer(n, body, consts=consts)


@c_op("concat")
def _concat(plan: Plan, n: Node, cid: str) -> Layer:
    shape = plan.graph.shape(n.output)
    ax = n.attrs["axis"] % len(shape)
    outer = int(np.prod(shape[:ax]))
    inner_out = int(np.prod(shape[ax:]))
    parts, offset = [], 0
    for t in n.inputs:
        inner = int(np.prod(plan.graph.shape(t)[ax:]))
        parts.append(
            K.CONCAT_PART.substitute(
                inner=inner,
                inner_out=inner_out,
                offset=offset,
                x=plan.buffer[t],
                y=plan.buffer[n.output],
            )
        )
        offset += inner
    return Layer(n, K.CONCAT.substitute(outer=outer, parts="".join(parts)))


@c_op("reshape")
def _reshape(plan: Plan, n: Node, cid: str) -> Layer:
    return Layer(n, "    /* reshape: same buffer, new shape */\n")


@c_op("if")
def _if(plan: Plan, n: Node, cid: str) -> Layer:
    shape = plan.graph.shape(n.output)
    th = n.params["threshold_q"]
    size, v, count = plan.size(n.output), f"spk_state.v_{cid}", f"spk_state.c_{cid}"
    ti = broadcast_index(shape, th.shape)
    bipolar = n.attrs.get("bipolar", False)
    signed = n.attrs["signed"] and not bipolar  # only the signed variant counts its spikes
    levels = spike_levels(n)
    io = dict(
        n=size, th=f"th_{cid}", ti=ti, v=v, x=plan.buffer[n.inputs[0]], y=plan.buffer[n.output]
    )
    if levels > 1:
        low = f"-{levels}" if bipolar else (f"-({count}[i] < {levels} ? {count}[i] : {levels})")
        body = K.IF_GRADED.substitute(
            io,
            levels=levels,
            low=low if bipolar or signed else "0",
            count_update=f"\n        {count}[i] += s;" if signed else "",
        )
    else:
        branch = (
            K.IF_BIPOLAR if bipolar else (K.IF_SIGNED.substitute(count=count) if signed else "")
        )
        body = K.IF_NEURON.substitute(io, signed_branch=branch)
    state = [("int32_t", f"v_{cid}", size)] + ([("int32_t", f"c_{cid}", size)] if signed else [])
    return Layer(
        n,
        body,
        consts=[("int32_t", f"th_{cid}", th)],
        state=state,
        reset=K.IF_RESET.substitute(n=size, v=v, th=f"th_{cid}", ti=ti),
    )


def c_array(ctype: str, name: str, data: np.ndarray) -> str:
    flat = [str(int(v)) for v in np.asarray(data).reshape(-1)]
    rows = [", ".join(flat[i : i + 16]) for i in range(0, len(flat), 16)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(rows) + "\n};"


def build_layers(graph: Graph) -> tuple[Plan, list[Layer]]:
    plan = Plan(graph)
    layers = []
    for i, n in enumerate(graph.nodes):
        layer = C_OPS[n.op](plan, n, f"{i}")
        layer.static = n.output in plan.static
        layers.append(layer)
    return plan, layers


def _render(name: str, **values: Any) -> str:
    return Template((TEMPLATES / name).read_text()).substitute(values)


def _state_fields(plan: Plan, layers: list[Layer]) -> list[tuple[str, str, int]]:
    g = plan.graph
    fields = [("int8_t", "in", plan.size(g.input.name))]
    for n in g.nodes:
        if n.op != "reshape":
            fields.append((plan.ctype[n.output], c_ident("t_" + n.name), plan.size(n.output)))
    for layer in layers:
        fields += layer.state
    fields += [("int32_t", f"acc{k}", plan.size(o)) for k, o in enumerate(g.outputs)]
    return fields


def model_sources(graph: Graph) -> dict[str, str]:
    """model.h and model.c for `graph`, plus size figures."""
    plan, layers = build_layers(graph)
    probes = [n for n in graph.nodes if n.op == "if"]
    out = graph.outputs[0]
    fields = _state_fields(plan, layers)
    functions, static_calls, step_calls = [], [], []
    for i, layer in enumerate(layers):
        n = layer.node
        functions.append(
            f"/* {n.name}: {n.op} -> {list(graph.shape(n.output))} */\n"
            f"static void layer_{i}(void)\n{{\n{layer.body}}}\n"
        )
        if layer.static:
            static_calls.append(f"        layer_{i}();")
        else:
            step_calls.append(f"    layer_{i}();")
    consts = [c for layer in layers for c in layer.consts]
    flash = sum(CTYPE_BYTES[t] * np.asarray(d).size for t, _, d in consts)
    ram = sum(CTYPE_BYTES[t] * size for t, _, size in fields) + 4
    values = dict(
        input_size=plan.size(graph.input.name),
        output_size=plan.size(out),
        num_probes=len(probes),
        graded_define=(
            "#define SPK_GRADED 1 /* a spike is a count; an event adds count * w */\n"
            if any(spike_levels(n) > 1 for n in probes)
            else ""
        ),
        input_scale=repr(float(graph.scales[graph.input.name].item())),
        output_scale=repr(float(graph.scales[out].item())),
        max_t=graph.meta["quantization"]["max_timesteps"],
        probe_names="\n".join(
            f" *   {k}: {n.name} {list(graph.shape(n.output))}" for k, n in enumerate(probes)
        ),
        consts="\n\n".join(c_array(*c) for c in consts),
        state_fields="\n".join(f"    {t} {name}[{size}];" for t, name, size in fields),
        probe_ptrs=", ".join(plan.buffer[n.output] for n in probes) or "0",
        probe_sizes=", ".join(str(plan.size(n.output)) for n in probes) or "0",
        functions="\n".join(functions),
        resets="".join(layer.reset for layer in layers),
        static_calls="\n".join(static_calls),
        step_calls="\n".join(step_calls),
        accumulate=K.ACCUMULATE.substitute(n=plan.size(out), acc="acc0", y=plan.buffer[out]),
        flash_bytes=flash,
        ram_bytes=ram,
    )
    return {
        "model.h": _render("model.h.tmpl", **values),
        "model.c": _render("model.c.tmpl", **values),
        "flash_bytes": str(flash),
        "ram_bytes": str(ram),
    }


def emit_c(graph: Graph, outdir: Path) -> dict[str, Any]:
    """Write the C target into `outdir`; return the size summary."""
    src = model_sources(graph)
    for name in ("model.h", "model.c"):
        (outdir / name).write_text(src[name])
    for name in ("harness.c", "Makefile", "README.md"):
        (outdir / name).write_text((TEMPLATES / f"{name}.tmpl").read_text())
    board = outdir / "board"
    board.mkdir()
    for f in BOARD.iterdir():
        (board / f.name).write_text(f.read_text())
    probes = [
        {"node": n.name, "size": int(np.prod(graph.shape(n.output)))}
        for n in graph.nodes
        if n.op == "if"
    ]
    size = {
        "flash_bytes_model_data": int(src["flash_bytes"]),
        "ram_bytes_state": int(src["ram_bytes"]),
    }
    (outdir / "size_report.txt").write_text(
        "spikeport C target, size of the model alone (before compilation):\n"
        "  flash (weights, biases, thresholds, multipliers): "
        f"{size['flash_bytes_model_data']} bytes\n"
        f"  RAM (state struct: buffers, potentials): {size['ram_bytes_state']} bytes\n"
        "Compiled section sizes: `make size` (arm-none-eabi-size of model.o).\n"
    )
    import json

    (outdir / "size_report.json").write_text(json.dumps(size, indent=2) + "\n")
    return {
        "size": size,
        "probes": probes,
        "input_size": int(np.prod(graph.input.shape)),
        "output_size": int(np.prod(graph.shape(graph.outputs[0]))),
    }
