"""Integer graph -> C99 sources (model.h, model.c), a test harness, a Makefile and a README.

Spikes are int8; every other buffer and state array takes the narrowest C type that holds
its bound from the range proof (`narrow`), and the integer functions of the
expectation-compensated operators compute in int64. Tensors that live within a step share
per-type arenas planned by liveness (memory.py); the inputs, the tensors computed once, and all
neuron and operator state live in one static state struct; a reshape aliases its input.
Weights, biases, thresholds, multipliers and index tables are `static const` arrays, so they
live in flash. Layers whose inputs never change (the direct-encoded input through stateless
ops) run once after spk_reset(), exactly as in the reference simulator.

That is the step-major schedule (spk_step runs every layer once per timestep), the reference
and the fallback. A feed-forward graph of the ops layer_major.py has kernels for runs
layer-major instead (each layer over all T steps, bit-packed spikes between layers); the size
report says which schedule a model got, and why.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

from spikeport.batch import is_integer
from spikeport.errors import BadInput
from spikeport.ir.graph import Graph, Node, TensorInfo
from spikeport.ir.ops import attr, spike_levels, static_tensors
from spikeport.quantize.ranges import range_bounds
from spikeport.registry import registrar
from spikeport.targets.c import kernels as K
from spikeport.targets.c.boards import check_fit
from spikeport.targets.c.intfunc import c_functions
from spikeport.targets.c.memory import Lifetime, plan_offsets

TEMPLATES = Path(__file__).resolve().parent / "templates"
BOARD = Path(__file__).resolve().parent / "board"
CTYPE_BYTES = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}
CTYPE_BYTES.update({f"u{t}": b for t, b in CTYPE_BYTES.items()})


@dataclass
class Layer:
    """What one node contributes to model.c."""

    node: Node
    body: str
    static: bool = False
    consts: list[tuple[str, str, np.ndarray]] = field(default_factory=list)  # ctype, name, data
    state: list[tuple[str, str, int]] = field(default_factory=list)  # ctype, name, size
    reset: str = ""
    scratch: list[tuple[str, str, int]] = field(default_factory=list)  # ctype, name, size
    probe: str = ""  # the verification hook's call, after a neuron layer
    kernel: dict[str, Any] | None = None  # which kernel a synaptic layer runs, and why


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


def firmware_timesteps(graph: Graph, max_timesteps: int | None = None) -> int:
    """The most timesteps the emitted firmware runs (its SPK_MAX_TIMESTEPS): `max_timesteps`
    (emit --max-T), which may not exceed the max-T quantize proved free of overflow; by
    default that proven max-T."""
    proven = int(graph.meta["quantization"]["max_timesteps"])
    if max_timesteps is None:
        return proven
    if not 1 <= max_timesteps <= proven:
        raise BadInput(
            f"--max-T {max_timesteps} is outside 1..{proven}: the graph is proven free of "
            f"overflow for T <= {proven} only (quantize --max-T {proven})"
        )
    return max_timesteps


class Plan:
    """C types, buffers and names of every tensor of the graph, for runs of at most `max_t`
    timesteps (firmware_timesteps).

    A reshape shares its input's buffer. Layer bodies name a tensor's buffer by a macro
    (`plan.buf(t)`, B<k>); `model_sources` defines it once the buffers are placed (memory.py).
    """

    def __init__(self, graph: Graph, kernels: str = "auto", max_timesteps: int | None = None):
        self.graph = graph
        self.kernels = kernels  # "auto": fast kernels where cheaper; "reference": none
        self.max_t = firmware_timesteps(graph, max_timesteps)
        # Nonzero fraction of each synaptic input at calibration (quantize --target c)
        self.activity: dict[str, float] = graph.meta.get("quantization", {}).get("activity", {})
        # What the range proof knows of every tensor and state: buffers and state take the
        # narrowest C type that holds their bound. The firmware refuses runs past max_t, so
        # the proof it needs is the one for T <= max_t (tighter where running sums grow).
        self.bounds = range_bounds(graph, self.max_t)
        self.static = static_tensors(graph)
        self.ctype: dict[str, str] = {t.name: input_ctype(t) for t in graph.inputs}
        self.root: dict[str, str] = {t.name: t.name for t in graph.inputs}
        for n in graph.nodes:
            self.ctype[n.output] = self._ctype(n)
            self.root[n.output] = self.root[n.inputs[0]] if n.op == "reshape" else n.output
        roots = dict.fromkeys(self.root.values())
        self.macro = {t: f"B{k}" for k, t in enumerate(roots)}
        self.probe = {n.name: k for k, n in enumerate(n for n in graph.nodes if n.op == "if")}
        self.functions: set[str] = set()  # integer functions the layers call (intfunc.py)

    def _ctype(self, n: Node) -> str:
        if n.op == "if":
            return "int8_t"
        moves = n.op in INT8_KEEPING or (n.op == "resize" and attr(n, "mode") == "nearest")
        if moves and all(self.ctype[i] == "int8_t" for i in n.inputs):
            return "int8_t"
        return narrow(self.step_bound(n.output), "int16_t")

    def step_bound(self, tensor: str) -> float:
        return float(self.bounds[tensor].step.max(initial=0))

    def total_bound(self, tensor: str) -> float:
        """Bound of the running sum of `tensor` over the steps (what a reader accumulates)."""
        return float(self.bounds[tensor].total.max(initial=0))

    def buf(self, tensor: str) -> str:
        return self.macro[self.root[tensor]]

    def size(self, tensor: str) -> int:
        return int(np.prod(self.graph.shape(tensor)))


def input_ctype(t: TensorInfo) -> str:
    """C type of a graph input: int32 integers (token ids, masks), int8 codes otherwise."""
    return "int32_t" if is_integer(t) else "int8_t"


NUMPY_TYPE = {"int8_t": np.int8, "int32_t": np.int32}

C_TYPES = (("int8_t", 127), ("int16_t", 32767), ("int32_t", 2**31 - 1), ("int64_t", 2**63 - 1))


def narrow(bound: float, least: str = "int8_t") -> str:
    """The narrowest signed C type, `least` or wider, that holds every |value| <= bound."""
    names = [t for t, _ in C_TYPES]
    for ctype, top in C_TYPES[names.index(least) :]:
        if bound <= top:
            return ctype
    raise ValueError(f"no C integer type holds {bound}")


# Ops that only move or pick values keep int8 spikes int8 (a max of int8 running maxima too).
INT8_KEEPING = frozenset(
    {"reshape", "maxpool2d", "concat", "transpose", "take", "gather", "slice", "pad"}
)


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
        x=plan.buf(n.inputs[0]),
        y=plan.buf(n.output),
    )


LayerMaker = Callable[[Plan, Node, str], Layer]
C_OPS: dict[str, LayerMaker] = {}


c_op = registrar(C_OPS)


def _pool(plan: Plan, n: Node, init: str, fold: str, store: str, src: str, **extra: Any) -> str:
    g = _geometry(plan, n)
    k = n.attrs["kernel"]
    fold_c = Template(fold).substitute(g, src=src)
    store_c = Template(store).substitute(g, **extra)
    return K.POOL.substitute(g, kh=k[0], kw=k[1], init=init, fold=fold_c, store=store_c)


@c_op("avgpool2d")
def _avgpool(plan: Plan, n: Node, cid: str) -> Layer:
    body = _pool(plan, n, "int32_t m = 0;", K.AVGPOOL_FOLD, K.AVGPOOL_STORE, plan.buf(n.inputs[0]))
    return Layer(n, body)


@c_op("maxpool2d")
def _maxpool(plan: Plan, n: Node, cid: str) -> Layer:
    n_in, n_out = plan.size(n.inputs[0]), plan.size(n.output)
    total, prev = f"spk_state.s_{cid}", f"spk_state.m_{cid}"
    pre = K.MAXPOOL_PRE.substitute(n_in=n_in, sum=total, x=plan.buf(n.inputs[0]))
    body = pre + _pool(
        plan, n, "int32_t m = INT32_MIN;", K.MAXPOOL_FOLD, K.MAXPOOL_STORE, total, prev=prev
    )
    # Running sums of the input and their running maximum: bounded by the input's total.
    ctype = narrow(plan.total_bound(n.inputs[0]))
    return Layer(n, body, state=[(ctype, f"s_{cid}", n_in), (ctype, f"m_{cid}", n_out)])


@c_op("add")
def _add(plan: Plan, n: Node, cid: str) -> Layer:
    shape = plan.graph.shape(n.output)
    mult = n.params["mult_q"]
    terms, consts = [], []
    for k, t in enumerate(n.inputs):
        consts.append((narrow(float(np.abs(mult[k]).max()), "int16_t"), f"m{k}_{cid}", mult[k]))
        terms.append(
            K.ADD_TERM.substitute(
                m=f"m{k}_{cid}", x=plan.buf(t), mi=broadcast_index(shape, mult.shape[1:])
            )
        )
    body = K.ADD.substitute(
        n=plan.size(n.output),
        y=plan.buf(n.output),
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
                x=plan.buf(t),
                y=plan.buf(n.output),
            )
        )
        offset += inner
    return Layer(n, K.CONCAT.substitute(outer=outer, parts="".join(parts)))


@c_op("reshape")
def _reshape(plan: Plan, n: Node, cid: str) -> Layer:
    return Layer(n, "    /* reshape: same buffer, new shape */\n")


def if_core(n: Node, count: str) -> str:
    """One step of neuron `n` on the C locals v, s, th with current `x` (IF_CORE / graded);
    `count` is the lvalue of a signed neuron's net count."""
    bipolar = n.attrs.get("bipolar", False)
    signed = n.attrs["signed"] and not bipolar  # only the signed variant counts its spikes
    levels = spike_levels(n)
    if levels > 1:
        low = f"-{levels}" if bipolar else (f"-({count} < {levels} ? {count} : {levels})")
        return K.IF_GRADED_CORE.substitute(
            x="$x",
            levels=levels,
            low=low if bipolar or signed else "0",
            count_update=f"\n        {count} += s;" if signed else "",
        )
    branch = K.IF_BIPOLAR if bipolar else (K.IF_SIGNED.substitute(count=count) if signed else "")
    return K.IF_CORE.substitute(x="$x", signed_branch=branch)


def counts_spikes(n: Node) -> bool:
    """Whether neuron `n` keeps a net spike count (the signed, not bipolar, variant)."""
    return bool(n.attrs["signed"]) and not n.attrs.get("bipolar", False)


@c_op("if")
def _if(plan: Plan, n: Node, cid: str) -> Layer:
    shape = plan.graph.shape(n.output)
    th = n.params["threshold_q"]
    size, v, count = plan.size(n.output), f"spk_state.v_{cid}", f"spk_state.c_{cid}"
    ti = broadcast_index(shape, th.shape)
    core = Template(if_core(n, f"{count}[i]")).substitute(x=f"{plan.buf(n.inputs[0])}[i]")
    body = K.IF_STEP.substitute(n=size, th=f"th_{cid}", ti=ti, v=v, y=plan.buf(n.output), core=core)
    bounds = plan.bounds[n.output]
    state = [(narrow(bounds.state, "int16_t"), f"v_{cid}", size)]
    if counts_spikes(n):  # the net count: |count| <= T * K
        state.append((narrow(plan.total_bound(n.output), "int16_t"), f"c_{cid}", size))
    return Layer(
        n,
        body,
        consts=[("int32_t", f"th_{cid}", th)],
        state=state,
        probe=(
            f"    SPK_PROBE({plan.probe[n.name]}, spk_state.steps + 1, {plan.buf(n.output)}, "
            f"{size});\n"
        ),
        reset=K.IF_RESET.substitute(n=size, v=v, th=f"th_{cid}", ti=ti),
    )


def c_array(ctype: str, name: str, data: np.ndarray) -> str:
    flat = [str(int(v)) for v in np.asarray(data).reshape(-1)]
    rows = [", ".join(flat[i : i + 16]) for i in range(0, len(flat), 16)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(rows) + "\n};"


KERNEL_MODES = ("auto", "events", "reference")


def build_layers(
    graph: Graph, kernels: str = "auto", plan: Plan | None = None
) -> tuple[Plan, list[Layer]]:
    plan = plan or Plan(graph, kernels)
    layers = []
    for i, n in enumerate(graph.nodes):
        layer = C_OPS[n.op](plan, n, f"{i}")
        layer.static = n.output in plan.static
        layers.append(layer)
    return plan, layers


def _render(name: str, **values: Any) -> str:
    return Template((TEMPLATES / name).read_text()).substitute(values)


@dataclass
class Memory:
    """Where every buffer lives: persistent `fields` of the state struct (inputs, tensors
    computed once, neuron and operator state, accumulators) and one arena per C type for the
    tensors and scratch rows that live within a step."""

    fields: list[tuple[str, str, int]]
    arenas: dict[str, int]
    defines: list[str]
    fixed_bytes: int = 4  # the step counter (step-major), the call's arguments (layer-major)

    @property
    def ram_bytes(self) -> int:
        state = sum(CTYPE_BYTES[t] * size for t, _, size in self.fields) + self.fixed_bytes
        return state + sum(CTYPE_BYTES[t] * size for t, size in self.arenas.items())


ARENA = {t: f"spk_arena{t[0] if t[0] == 'u' else ''}{8 * CTYPE_BYTES[t]}" for t in CTYPE_BYTES}


def _lifetimes(plan: Plan, layers: list[Layer]) -> dict[str, list[Lifetime]]:
    """Lifetimes (in step order) of the tensors and scratch rows that live within a step."""
    g = plan.graph
    step = [layer for layer in layers if not layer.static]
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, layer in enumerate(step):
        n = layer.node
        for t in n.inputs:
            last[plan.root[t]] = i
        if n.op != "reshape":
            first.setdefault(n.output, i)
    for o in g.outputs:  # read after the last layer, by the accumulators
        last[plan.root[o]] = len(step)
    by_type: dict[str, list[Lifetime]] = {}
    for t, i in first.items():
        size = plan.size(t)
        by_type.setdefault(plan.ctype[t], []).append(Lifetime(t, size, i, max(i, last.get(t, i))))
    for i, layer in enumerate(step):
        for ctype, name, size in layer.scratch:
            by_type.setdefault(ctype, []).append(Lifetime(name, size, i, i))
    return by_type


def plan_memory(plan: Plan, layers: list[Layer]) -> Memory:
    g = plan.graph
    fields: list[tuple[str, str, int]] = []
    defines: list[str] = []
    persistent = [t.name for t in g.inputs] + [
        n.output for n in g.nodes if n.op != "reshape" and n.output in plan.static
    ]
    for t in persistent:
        name = plan.macro[t].lower()
        fields.append((plan.ctype[t], name, plan.size(t)))
        defines.append(f"#define {plan.macro[t]} (spk_state.{name}) /* {t} */")
    arenas: dict[str, int] = {}
    for ctype, lives in sorted(_lifetimes(plan, layers).items()):
        offsets, arenas[ctype] = plan_offsets(lives)
        for life in lives:
            macro = plan.macro.get(life.name, life.name)
            note = f" /* {life.name} */" if life.name in plan.macro else ""
            defines.append(f"#define {macro} ({ARENA[ctype]} + {offsets[life.name]}){note}")
    for layer in layers:
        fields += layer.state
    fields += [("int32_t", f"acc{k}", plan.size(o)) for k, o in enumerate(g.outputs)]
    return Memory(fields, {t: s for t, s in arenas.items() if s}, defines)


def input_fields(graph: Graph) -> list[tuple[str, str, int, str]]:
    """(ctype, field name, size, description) of each graph input in spk_input_t."""
    out, seen = [], set()
    for t in graph.inputs:
        name = c_ident(t.name)
        while name in seen:
            name += "_"
        seen.add(name)
        if is_integer(t):
            note = "integers (token ids, mask flags), as given"
        else:
            scale = float(graph.scales[t.name].reshape(-1)[0])
            note = f"int8 codes q = clamp(floor(x / {scale!r} + 1/2), -127, 127)"
        out.append(
            (input_ctype(t), name, int(np.prod(t.shape)), f"'{t.name}' {list(t.shape)}: {note}")
        )
    return out


def _io_values(graph: Graph, plan: Plan) -> dict[str, Any]:
    fields = input_fields(graph)
    outs, offset = [], 0
    for o in graph.outputs:
        outs.append(
            f" *   out[{offset}..{offset + plan.size(o) - 1}]: '{o}' {list(graph.shape(o))}"
        )
        offset += plan.size(o)
    return dict(
        input_fields="\n".join(
            f"    {t} {name}[{size}]; /* {note} */" for t, name, size, note in fields
        ),
        copy_inputs="\n".join(
            f"        memcpy({plan.buf(t.name)}, in->{f[1]}, sizeof in->{f[1]});"
            for t, f in zip(graph.inputs, fields, strict=True)
        ),
        read_input=" &&\n           ".join(
            f"fread(in->{name}, sizeof in->{name}, 1, stdin) == 1" for _, name, _, _ in fields
        ),
        output_size=offset,
        output_map="\n".join(outs),
        output_scales="\n".join(
            f" *   '{o}': {float(graph.scales[o].reshape(-1)[0])!r}"
            + (" (per channel: see the artifact)" if graph.scales[o].size > 1 else "")
            for o in graph.outputs
        ),
    )


def _accumulate(plan: Plan) -> str:
    parts, offset = [], 0
    for k, o in enumerate(plan.graph.outputs):
        n = plan.size(o)
        parts.append(K.ACCUMULATE.substitute(n=n, acc=f"acc{k}", y=plan.buf(o), offset=offset))
        offset += n
    return "".join(parts)


def _functions(plan: Plan, layers: list[Layer]) -> str:
    return "\n".join(
        f"/* {layer.node.name}: {layer.node.op} -> {list(plan.graph.shape(layer.node.output))} */\n"
        f"static void layer_{i}(void)\n{{\n{layer.body}{layer.probe}}}\n"
        for i, layer in enumerate(layers)
        if layer.body
    )


def _arenas(memory: Memory) -> str:
    return "\n".join(f"static {t} {ARENA[t]}[{size}];" for t, size in sorted(memory.arenas.items()))


def step_major_values(plan: Plan, layers: list[Layer]) -> tuple[Memory, dict[str, str]]:
    """The step-major model: spk_step runs every layer once per timestep."""
    memory = plan_memory(plan, layers)
    static_calls = [f"        layer_{i}();" for i, la in enumerate(layers) if la.static]
    step_calls = [f"    layer_{i}();" for i, la in enumerate(layers) if not la.static]
    api = K.STEP_MAJOR_API.substitute(
        copy_inputs=_io_values(plan.graph, plan)["copy_inputs"],
        static_calls="\n".join(static_calls),
        step_calls="\n".join(step_calls),
        resets="".join(layer.reset for layer in layers),
        accumulate=_accumulate(plan),
    )
    state = K.STEP_MAJOR_STATE.substitute(
        fields="\n".join(f"    {t} {name}[{size}];" for t, name, size in memory.fields)
    )
    return memory, dict(
        state=state,
        arena_note="Tensors that live within one step share these arenas (planned by liveness).",
        arenas=_arenas(memory),
        buffers="\n".join(memory.defines),
        functions=_functions(plan, layers),
        api=api,
        schedule_declarations=K.STEP_MAJOR_DECLARATIONS,
    )


SCHEDULES = ("auto", "step")


def model_sources(
    graph: Graph,
    kernels: str = "auto",
    schedule: str = "auto",
    max_timesteps: int | None = None,
) -> dict[str, Any]:
    """model.h, model.c, harness.c and README.md for `graph`, plus size figures and kernel
    choices. `schedule` "auto" runs a feed-forward graph layer-major (layer_major.py) where it
    can and needs less RAM than step-major; "step" keeps step-major. `max_timesteps` is the
    most timesteps the firmware runs (firmware_timesteps)."""
    from spikeport.targets.c.layer_major import layer_major_reason, layer_major_values

    plan = Plan(graph, kernels, max_timesteps)
    reason = layer_major_reason(plan) if schedule == "auto" else "step-major asked for"
    step_plan, step_layers = build_layers(graph, kernels, plan)
    step_memory, step_parts = step_major_values(step_plan, step_layers)
    if reason is None:
        layers, memory, parts = layer_major_values(plan)
        # Packed spikes grow with max-T, potentials do not: at a large max-T a small network
        # can need less RAM step-major, and RAM is what layer-major is for.
        if memory.ram_bytes >= step_memory.ram_bytes:
            reason = (
                f"less RAM at max-T {plan.max_t}: "
                f"{step_memory.ram_bytes:,} B against {memory.ram_bytes:,} B layer-major"
            )
    if reason is None:
        chosen = {"schedule": "layer-major"}
    else:
        plan, layers, memory, parts = step_plan, step_layers, step_memory, step_parts
        chosen = {"schedule": "step-major", "why": reason}
    probes = [n for n in graph.nodes if n.op == "if"]
    consts = [c for layer in layers for c in layer.consts]
    flash = sum(CTYPE_BYTES[t] * np.asarray(d).size for t, _, d in consts)
    values = dict(
        **_io_values(graph, plan),
        **parts,
        num_probes=len(probes),
        graded_define=(
            "#define SPK_GRADED 1 /* a spike is a count; an event adds count * w */\n"
            if any(spike_levels(n) > 1 for n in probes)
            else ""
        ),
        max_t=plan.max_t,
        proven_max_t=graph.meta["quantization"]["max_timesteps"],
        probe_names="\n".join(
            f" *   {k}: {n.name} {list(graph.shape(n.output))}" for k, n in enumerate(probes)
        ),
        int_functions=c_functions(plan.functions),
        consts="\n\n".join(c_array(*c) for c in consts),
        flash_bytes=flash,
        ram_bytes=memory.ram_bytes,
    )
    return {
        "model.h": _render("model.h.tmpl", **values),
        "model.c": _render("model.c.tmpl", **values),
        "harness.c": _render("harness.c.tmpl", **values),
        "README.md": _render("README.md.tmpl", **values),
        "flash_bytes": flash,
        "ram_bytes": memory.ram_bytes,
        "max_timesteps": plan.max_t,
        "schedule": chosen,
        "kernels": {layer.node.name: layer.kernel for layer in layers if layer.kernel},
    }


def emit_c(
    graph: Graph,
    outdir: Path,
    board: str | None = None,
    kernels: str = "auto",
    schedule: str = "auto",
    max_timesteps: int | None = None,
) -> dict[str, Any]:
    """Write the C target into `outdir` for runs of at most `max_timesteps` steps (default:
    the proven max-T); return the size summary. With a `board`, a model that does not fit
    its flash or RAM is refused before anything is written, and so is a `max_timesteps`
    beyond the proven max-T."""
    src = model_sources(graph, kernels, schedule, max_timesteps)
    size: dict[str, Any] = {
        "flash_bytes_model_data": int(src["flash_bytes"]),
        "ram_bytes_state": int(src["ram_bytes"]),
        "max_timesteps": src["max_timesteps"],
        "proven_max_timesteps": int(graph.meta["quantization"]["max_timesteps"]),
        "schedule": src["schedule"],
        "kernels": src["kernels"],
    }
    if board is not None:
        size["board"] = check_fit(board, size["flash_bytes_model_data"], size["ram_bytes_state"])
    for name in ("model.h", "model.c", "harness.c", "README.md"):
        (outdir / name).write_text(src[name])
    (outdir / "Makefile").write_text((TEMPLATES / "Makefile.tmpl").read_text())
    board_dir = outdir / "board"
    board_dir.mkdir()
    for f in BOARD.iterdir():
        (board_dir / f.name).write_text(f.read_text())
    probes = [
        {"node": n.name, "size": int(np.prod(graph.shape(n.output)))}
        for n in graph.nodes
        if n.op == "if"
    ]
    (outdir / "size_report.txt").write_text(size_text(size))
    (outdir / "size_report.json").write_text(json.dumps(size, indent=2) + "\n")
    return {
        "size": size,
        "probes": probes,
        "input_size": sum(int(np.prod(t.shape)) for t in graph.inputs),
        "output_size": sum(int(np.prod(graph.shape(o))) for o in graph.outputs),
    }


def size_text(size: dict[str, Any]) -> str:
    lines = [
        "spikeport C target, size of the model alone (before compilation):",
        "  flash (weights, biases, thresholds, multipliers, tables): "
        f"{size['flash_bytes_model_data']} bytes",
        "  RAM (state struct and the step arenas, planned by liveness): "
        f"{size['ram_bytes_state']} bytes",
        f"Built for T <= {size['max_timesteps']} (SPK_MAX_TIMESTEPS; emit --max-T, at most the "
        f"{size['proven_max_timesteps']} steps quantize proved free of overflow): spk_run "
        "refuses more",
    ]
    if "board" in size:
        b = size["board"]
        lines.append(
            f"  board {b['name']}: {b['flash_bytes']} bytes flash, {b['ram_bytes']} bytes RAM "
            f"({b['core']})"
        )
    sched = size.get("schedule", {})
    if sched:
        why = f" ({sched['why']})" if "why" in sched else ""
        lines.append(f"Schedule: {sched['schedule']}{why}")
    lines.append("Synaptic layers (kernel; calibration activity; instructions/step estimates):")
    for name, k in size.get("kernels", {}).items():
        activity = "not recorded" if k["activity"] is None else f"{100 * k['activity']:.1f} %"
        if "layer_major" in k:
            lines.append(f"  {name}: {k['kernel']}, {k['layer_major']} (activity {activity})")
            continue
        est = ", ".join(f"{kind} {v:,}" for kind, v in k["instructions_per_step_estimate"].items())
        lines.append(f"  {name}: {k['kernel']} (activity {activity}; {est})")
    lines.append("Compiled section sizes: `make size` (arm-none-eabi-size of model.o).")
    return "\n".join(lines) + "\n"


# The synapses (dense, conv: reference and fast kernels) and the transformer and extension ops
# register into C_OPS too.
from spikeport.targets.c import seq_ops as _seq_ops  # noqa: E402,F401
from spikeport.targets.c import synapses as _synapses  # noqa: E402,F401
