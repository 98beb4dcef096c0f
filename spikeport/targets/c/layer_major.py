"""Layer-major schedule for feed-forward graphs: each layer runs all T steps before the next.

Step-major C (spk_step, emit.py) keeps every neuron's potential, and the static input current
of the layer fed by the input, for the whole inference. In a feed-forward graph of the ops
below the same integers come out when each layer runs its T steps before the next (no layer
reads a later layer, and a layer's step t reads only step t of its inputs), and then:

- a neuron's T steps run back to back, so its potential is a local, not an array, and so is
  the static current of a layer fed by the input (computed once, as step-major does);
- between layers only spikes (or pooled values) are kept, bit-packed: T fields of b bits per
  element, value - lo in each (b = 1 for binary spikes; graded, signed and pooled values take
  the bits their range needs), one word of SPK_MAX_TIMESTEPS * b bits per element, where
  SPK_MAX_TIMESTEPS is the most steps the firmware runs (emit --max-T; by default the max-T
  quantize proved), so a firmware built for fewer steps holds narrower words;
- a synaptic layer that reads packed spikes computes a block of outputs at a time: the
  currents of the block for every step (a scratch no larger than the largest packed buffer,
  or SCRATCH_BYTES) gather the events of its inputs, weights transposed as the event-driven
  kernel has them; then each neuron of the block runs its T steps.

Packed buffers and scratch share arenas by liveness (memory.py), over the layers' order. A
graph with an op, neuron kind or tensor this module has no kernel for stays step-major, and
the size report says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from string import Template

import numpy as np

from spikeport.batch import is_integer
from spikeport.ir.graph import Graph, Node
from spikeport.ir.ops import spike_levels
from spikeport.targets.c import kernels as K
from spikeport.targets.c.emit import (
    ARENA,
    CTYPE_BYTES,
    Layer,
    Memory,
    Plan,
    _arenas,
    _functions,
    _geometry,
    _pool,
    broadcast_index,
    counts_spikes,
    if_core,
    input_fields,
)
from spikeport.targets.c.memory import Lifetime, plan_offsets

# The bytes a synaptic layer's block of currents (outputs x SPK_MAX_TIMESTEPS) may always take
# (more where a packed buffer is larger): a bigger block reads each input word for fewer
# blocks, a smaller one keeps RAM down.
SCRATCH_BYTES = 128
WORDS = (("uint8_t", 8), ("uint16_t", 16), ("uint32_t", 32), ("uint64_t", 64))
OPS = frozenset({"dense", "conv2d", "avgpool2d", "maxpool2d", "if", "reshape"})
ARGS_BYTES = 16  # spk_args on a 32-bit core: two pointers and two ints


@dataclass(frozen=True)
class Packing:
    """The T values of one element in one `word`: field t holds value - lo in `bits` bits."""

    bits: int
    lo: int
    word: str

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def fill(self, **more: object) -> dict[str, object]:
        """Template values of the packing (a loop over fields may stop at an all-zero rest
        only where a zero field is the value 0)."""
        more_fields = "x != 0" if self.lo == 0 else "t < T"
        return dict(bits=self.bits, lo=self.lo, mask=self.mask, word=self.word,
                    more=more_fields, **more)  # fmt: skip


def packing(lo: int, hi: int, t_max: int) -> Packing | None:
    """The narrowest word holding t_max fields of values in [lo, hi]; None past 64 bits."""
    bits = max(1, int(hi - lo).bit_length())
    for word, size in WORDS:
        if t_max * bits <= size:
            return Packing(bits, lo, word)
    return None


@dataclass
class Stage:
    """One layer of the schedule: `node` computes, then its `sink` takes every element's T
    values: "if" (the neuron fused behind it), "packed" (kept for later layers), "output"."""

    node: Node
    sink: str
    out: str  # the tensor written: the neuron's output, or the node's
    neuron: Node | None = None


def _spike_range(n: Node) -> tuple[int, int]:
    k = spike_levels(n)
    return (-k if n.attrs.get("signed") or n.attrs.get("bipolar") else 0), k


def _stage(plan: Plan, n: Node) -> Stage | str:
    g = plan.graph
    users = g.consumers(n.output)
    if len(users) == 1 and users[0].op == "if" and n.output not in g.outputs:
        neuron = users[0]
        if neuron.output in g.outputs:
            return f"graph output '{neuron.output}' is a neuron layer's spikes"
        return Stage(n, "if", neuron.output, neuron)
    if n.output in g.outputs and not users:
        return Stage(n, "output", n.output)
    if plan.root[n.inputs[0]] in {t.name for t in g.inputs}:
        return f"'{n.name}' reads the input and feeds no neuron of its own"
    return Stage(n, "packed", n.output)


def _nonneg(plan: Plan, n: Node, packed: dict[str, Packing]) -> bool:
    """Whether n's output is never negative: as the range proof says, or a pool of values that
    are not (a sum of them is not, and neither is the max pool's M_t - M_(t-1), its running
    sums only growing)."""
    if plan.bounds[n.output].nonneg:
        return True
    x = packed.get(plan.root[n.inputs[0]])
    return n.op in ("avgpool2d", "maxpool2d") and x is not None and x.lo >= 0


def _unsupported(g: Graph) -> str | None:
    """An op, neuron kind or input the schedule has no kernel for (the clearest reason)."""
    for n in g.nodes:
        if n.op not in OPS:
            return f"'{n.name}' ({n.op}) has no layer-major kernel"
        if n.attrs.get("kind", "subtract") != "subtract":
            return f"'{n.name}' is of kind '{n.attrs['kind']}'"
    if any(is_integer(t) for t in g.inputs):
        return "integer inputs (token ids, masks)"
    return None


def plan_stages(plan: Plan) -> tuple[dict[str, Stage], dict[str, Packing]] | str:
    """The stages and the packing of every packed tensor (by buffer root), or why the graph
    must stay step-major."""
    g = plan.graph
    t_max = plan.max_t
    inputs = {t.name for t in g.inputs}
    stages: dict[str, Stage] = {}
    packed: dict[str, Packing] = {}
    fused: set[str] = set()
    unsupported = _unsupported(g)
    if unsupported:
        return unsupported
    for n in g.nodes:
        if n.op == "reshape":
            continue
        if n.op == "if":
            if n.name not in fused:
                return f"neuron '{n.name}' does not follow a layer of its own"
            continue
        x = plan.root[n.inputs[0]]
        if x in inputs and n.op not in ("dense", "conv2d"):
            return f"'{n.name}' ({n.op}) reads the input"
        if x not in inputs and x not in packed:
            return f"'{n.name}' reads '{n.inputs[0]}', which is not kept packed"
        stage = _stage(plan, n)
        if isinstance(stage, str):
            return stage
        if stage.sink == "if":
            assert stage.neuron is not None
            fused.add(stage.neuron.name)
            lo, hi = _spike_range(stage.neuron)
        else:
            hi = int(plan.step_bound(n.output))
            lo = 0 if _nonneg(plan, n, packed) else -hi
        if stage.sink != "output":
            pk = packing(lo, hi, t_max)
            if pk is None:
                return f"'{stage.out}' needs {t_max} x {(hi - lo).bit_length()} bits, over 64"
            packed[stage.out] = pk
        stages[n.name] = stage
    written = {st.out for st in stages.values() if st.sink == "output"}
    for o in g.outputs:  # the output sink writes the accumulators; a reshape in between not
        if o not in written:
            return f"graph output '{o}' is not the output of a layer of its own"
    return stages, packed


def layer_major_reason(plan: Plan) -> str | None:
    """Why `plan`'s graph must run step-major; None where layer-major applies."""
    if plan.kernels == "reference":
        return "reference kernels asked for (they are step-major)"
    found = plan_stages(plan)
    return found if isinstance(found, str) else None


class _Emitter:
    """Layer bodies of the stages of one plan."""

    def __init__(self, plan: Plan, stages: dict[str, Stage], packed: dict[str, Packing]):
        self.plan, self.stages, self.packed = plan, stages, packed
        self.t_max = plan.max_t
        offsets, offset = {}, 0
        for o in plan.graph.outputs:
            offsets[o], offset = offset, offset + plan.size(o)
        self.offsets = offsets
        self.largest_packed = max(
            (CTYPE_BYTES[pk.word] * plan.size(t) for t, pk in packed.items()), default=0
        )

    def pk(self, tensor: str) -> Packing:
        return self.packed[self.plan.root[tensor]]

    def sink(self, st: Stage, cur: str, consts: list) -> str:
        """C of the stage's sink for element j, with `cur` the value of step t."""
        plan = self.plan
        if st.sink == "output":
            return K.OUT_OVER_T.substitute(cur=cur, offset=self.offsets[st.out])
        pk = self.packed[st.out]
        y = plan.buf(st.out)
        if st.sink == "packed":
            return K.PACK_OVER_T.substitute(pk.fill(cur=cur, y=y))
        neuron = st.neuron
        assert neuron is not None
        th = neuron.params["threshold_q"]
        cid = plan.graph.nodes.index(neuron)
        consts.append(("int32_t", f"th_{cid}", th))
        counted = counts_spikes(neuron)
        core = Template(if_core(neuron, "cnt")).substitute(x=cur)
        return K.IF_OVER_T.substitute(
            pk.fill(
                th=f"th_{cid}",
                ti=broadcast_index(plan.graph.shape(neuron.output), th.shape, "j"),
                count_decl="\n                int32_t cnt = 0;" if counted else "",
                core=core,
                y=y,
            )
        )

    def block(self, n: Node, n_out: int) -> tuple[str, int]:
        """The scratch type of a block of outputs' currents for every step, and the block's
        size B: the largest divisor of n_out (so every block is full and its loops have a
        constant count) whose scratch fits the larger of SCRATCH_BYTES and the largest packed
        buffer (the scratch then at most doubles the peak of what the layers keep)."""
        ct = self.plan.ctype[n.output]
        per_output = self.t_max * CTYPE_BYTES[ct]
        cap = max(SCRATCH_BYTES, self.largest_packed)
        fits = [b for b in range(1, n_out + 1) if n_out % b == 0 and b * per_output <= cap]
        return ct, max(fits, default=1)

    def layer(self, i: int, n: Node) -> Layer:
        st = self.stages.get(n.name)
        if st is None:  # a reshape (same buffer) or a neuron fused into its layer
            return Layer(n, "")
        consts: list = []
        static = self.plan.root[n.inputs[0]] in {t.name for t in self.plan.graph.inputs}
        if n.op in ("dense", "conv2d"):
            layer = (self.static_synapse if static else self.packed_synapse)(i, n, st, consts)
        else:
            layer = self.pool(i, n, st, consts)
        layer.body = "    const int T = spk_args.T;\n" + layer.body
        layer.consts = consts + layer.consts
        if st.sink == "if":
            assert st.neuron is not None
            pk, size = self.packed[st.out], self.plan.size(st.out)
            layer.probe = K.PROBE_PACKED.substitute(
                pk.fill(n=size, y=self.plan.buf(st.out), p=self.plan.probe[st.neuron.name])
            )
        return layer

    def static_synapse(self, i: int, n: Node, st: Stage, consts: list) -> Layer:
        """Dense or conv on the input: each output's current once (the dense-form loops of
        step-major), then its sink over the T steps with that constant current."""
        plan, w = self.plan, n.params["weight_q"]
        if n.op == "dense":
            n_out, n_in = w.shape
            io = dict(rows=plan.size(n.inputs[0]) // n_in, n_in=n_in, n_out=n_out, w=f"w_{i}")
            io.update(b=f"b_{i}", x=plan.buf(n.inputs[0]))
            store = self._store(f"r * {n_out} + o", st, consts)
            body = K.DENSE.substitute(io, store=store)
        else:
            geo = _conv_geometry(plan, n)
            store = self._store(Template(CONV_INDEX).substitute(geo), st, consts)
            body = K.CONV2D_ROWS.substitute(geo, w=f"w_{i}", b=f"b_{i}", xt="int8_t", store=store)
        own = [("int8_t", f"w_{i}", w), ("int32_t", f"b_{i}", n.params["bias_q"])]
        layer = Layer(n, body, consts=own)
        layer.kernel = _report("rows", "the input's current once per output", plan, n)
        return layer

    def _store(self, index: str, st: Stage, consts: list) -> str:
        """The store of a dense-form loop's sum `acc` for output `index`: the sink."""
        sink = self.sink(st, "acc", consts)
        return f"{{\n            const int32_t j = {index};\n{sink}            }}"

    def packed_synapse(self, i: int, n: Node, st: Stage, consts: list) -> Layer:
        """Dense or conv on packed spikes: blocks of outputs, every step at once."""
        make = self._packed_dense if n.op == "dense" else self._packed_conv
        body, wt, ct, B = make(i, n, st, consts)
        own = [("int8_t", f"w_{i}", wt), ("int32_t", f"b_{i}", n.params["bias_q"])]
        layer = Layer(n, body, consts=own, scratch=[(ct, f"cur_{i}", B * self.t_max)])
        layer.kernel = _report("events", f"packed spikes, {B} outputs a block", self.plan, n)
        return layer

    def _scatter(self, n: Node, i: int, ct: str, B: int, src: str, wp: str) -> str:
        fill = self.pk(n.inputs[0]).fill(ct=ct, cur=f"cur_{i}", B=B, wp=wp)
        fill.update(add_w=K.block_add(B, "w[{o}]"), add_kw=K.block_add(B, "k * w[{o}]"))
        return K.SCATTER_PACKED.substitute(fill, src=f"{self.plan.buf(n.inputs[0])}[{src}]")

    def _packed_dense(self, i: int, n: Node, st: Stage, consts: list) -> tuple:
        w, cur = n.params["weight_q"], f"cur_{i}"
        n_out, n_in = w.shape
        ct, B = self.block(n, n_out)
        body = K.DENSE_PACKED.substitute(
            rows=self.plan.size(n.inputs[0]) // n_in, n_out=n_out, n_in=n_in, B=B,
            bias=K.BLOCK_BIAS.substitute(cur=cur, B=B, b=f"b_{i}", o_first="o0"),
            scatter=self._scatter(n, i, ct, B, f"r * {n_in} + i", f"&w_{i}[i * {n_out} + o0]"),
            sink=self.sink(st, f"{cur}[t * {B} + o]", consts),
        )  # fmt: skip
        return body, np.ascontiguousarray(w.T), ct, B

    def _packed_conv(self, i: int, n: Node, st: Stage, consts: list) -> tuple:
        w, cur, geo = n.params["weight_q"], f"cur_{i}", _conv_geometry(self.plan, n)
        ct, B = self.block(n, geo["og"])
        wp = f"&w_{i}[((ci * {geo['kh']} + i) * {geo['kw']} + jj) * {geo['og']} + o0]"
        bias = K.BLOCK_BIAS.substitute(cur=cur, B=B, b=f"b_{i}", o_first=f"g * {geo['og']} + o0")
        body = K.CONV2D_PACKED.substitute(
            geo, b=f"b_{i}", groups=n.attrs["group"], B=B, bias=_indent(bias),
            scatter=self._scatter(n, i, ct, B, f"row + jj * {geo['dw']}", wp),
            sink=self.sink(st, f"{cur}[t * {B} + o]", consts),
        )  # fmt: skip
        # [group][c][i][j][o]: the weights of one input and tap to a block are one run
        _, cg, kh, kw = w.shape
        wt = w.reshape(n.attrs["group"], geo["og"], cg, kh, kw).transpose(0, 2, 3, 4, 1)
        return body, np.ascontiguousarray(wt), ct, B

    def pool(self, i: int, n: Node, st: Stage, consts: list) -> Layer:
        pk, cur = self.pk(n.inputs[0]), f"cur_{i}"
        fill = pk.fill(cur=cur)
        if n.op == "avgpool2d":
            init, fold, diff = K.AVGPOOL_PACKED_INIT, K.AVGPOOL_PACKED_FOLD, ""
        else:
            init, fold, diff = K.MAXPOOL_PACKED_INIT, K.MAXPOOL_PACKED_FOLD, K.MAXPOOL_PACKED_DIFF
        store = Template(diff).substitute(cur=cur) + self.sink(st, f"{cur}[t]", consts)
        body = _pool(
            self.plan,
            n,
            Template(init).substitute(cur=cur),
            Template(fold).safe_substitute(fill),
            store.replace("$", "$$"),
            self.plan.buf(n.inputs[0]),
        )
        return Layer(n, body, scratch=[("int32_t", cur, self.t_max)])


CONV_INDEX = "(o * $h_out + oh) * $w_out + ow"


def _indent(text: str) -> str:
    return "\n".join("    " + ln if ln else ln for ln in text.split("\n"))


def _conv_geometry(plan: Plan, n: Node) -> dict:
    w, a = n.params["weight_q"], n.attrs
    c_out, cg, kh, kw = w.shape
    geo = dict(_geometry(plan, n), c_out=c_out, og=c_out // a["group"], cg=cg, kh=kh, kw=kw)
    geo.update(dh=a["dilations"][0], dw=a["dilations"][1])
    return geo


def _report(kernel: str, how: str, plan: Plan, n: Node) -> dict[str, object]:
    """The size report's entry: the kernel's name as step-major reports it, and how it runs."""
    activity = plan.activity.get(plan.root[n.inputs[0]], plan.activity.get(n.inputs[0]))
    return {"kernel": kernel, "layer_major": how, "activity": activity}


def _memory(plan: Plan, stages: dict[str, Stage], packed: dict[str, Packing], layers) -> Memory:
    """Packed tensors live from the layer that writes them to the last that reads them; a
    layer's scratch only while it runs. The inputs are read where the caller holds them."""
    g = plan.graph
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, n in enumerate(g.nodes):
        if n.name in stages:
            first[stages[n.name].out] = i
        for t in n.inputs:
            last[plan.root[t]] = i
    by_type: dict[str, list[Lifetime]] = {}
    for t, pk in packed.items():
        life = Lifetime(t, plan.size(t), first[t], max(first[t], last.get(t, first[t])))
        by_type.setdefault(pk.word, []).append(life)
    for i, layer in enumerate(layers):
        for ctype, name, size in layer.scratch:
            by_type.setdefault(ctype, []).append(Lifetime(name, size, i, i))
    defines = [
        f"#define {plan.macro[t.name]} (spk_args.in->{field[1]}) /* {t.name} */"
        for t, field in zip(g.inputs, input_fields(g), strict=True)
    ]
    arenas: dict[str, int] = {}
    for ctype, lives in sorted(by_type.items()):
        offsets, arenas[ctype] = plan_offsets(lives)
        for life in lives:
            macro = plan.macro.get(life.name, life.name)
            note = f" /* {life.name}: packed */" if life.name in plan.macro else ""
            defines.append(f"#define {macro} ({ARENA[ctype]} + {offsets[life.name]}){note}")
    return Memory([], {t: s for t, s in arenas.items() if s}, defines, fixed_bytes=ARGS_BYTES)


def layer_major_values(plan: Plan) -> tuple[list[Layer], Memory, dict[str, str]]:
    """The layers, memory and model.c / model.h parts of the layer-major model."""
    found = plan_stages(plan)
    assert not isinstance(found, str), found
    stages, packed = found
    emitter = _Emitter(plan, stages, packed)
    layers = [emitter.layer(i, n) for i, n in enumerate(plan.graph.nodes)]
    memory = _memory(plan, stages, packed, layers)
    probe = max((plan.size(n.output) for n in plan.graph.nodes if n.op == "if"), default=0)
    arenas = _arenas(memory)
    if probe:
        arenas += f"\n#ifdef SPK_PROBE_HOOK\nstatic int8_t spk_probe_buf[{probe}];\n#endif"
    calls = [f"    layer_{i}();" for i, layer in enumerate(layers) if layer.body]
    return (
        layers,
        memory,
        dict(
            state=K.LAYER_MAJOR_STATE,
            arena_note="Packed spikes between layers and each layer's scratch, by liveness.",
            arenas=arenas,
            buffers="\n".join(memory.defines),
            functions=_functions(plan, layers),
            api=K.LAYER_MAJOR_API.substitute(calls="\n".join(calls)),
            schedule_declarations=K.LAYER_MAJOR_DECLARATIONS,
        ),
    )
