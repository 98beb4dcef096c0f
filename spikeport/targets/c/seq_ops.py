"""C layers of the transformer and extension ops (spikeport/sim/seq_ops.py, ext_ops.py).

Data movement (transpose, take, slice, pad, nearest resize) is one gather through a const
index table, computed by running the simulator's own kernel on the numbers 1..n: the C reads
exactly the element the specification reads. Nonlinear operators are expectation-compensated
(EC) as in the simulator: running sums S of the inputs (int32, within the proven state
bound), G(t) = g(S, t) in int64 through the functions of intfunc.py, out = G(t) - G(t-1).
"""

from __future__ import annotations

from string import Template

import numpy as np

from spikeport.errors import CapabilityExceeded
from spikeport.ir.graph import Node
from spikeport.ir.ops import attr
from spikeport.sim import intfunc as F
from spikeport.sim.ops import KERNELS
from spikeport.targets.c.emit import Layer, Plan, broadcast_index, c_op, narrow

GATHER = Template("""\
    for (int i = 0; i < $n; ++i) ${y}[i] = ${x}[${idx}[i]];
""")
# A padded cell reads the sentinel index $none and comes out 0.
GATHER_PAD = Template("""\
    for (int i = 0; i < $n; ++i) ${y}[i] = ${idx}[i] == $none ? 0 : ${x}[${idx}[i]];
""")
ELEMENTWISE = Template("""\
    for (int i = 0; i < $n; ++i) ${y}[i] = $expr;
""")
SCATTER_ADD = Template("""\
    for (int o = 0; o < $n_out; ++o) ${y}[o] = 0;
    for (int i = 0; i < $n; ++i) ${y}[${idx}[i]] += ${x}[i];
""")
EMBED = Template("""\
    for (int r = 0; r < $rows; ++r) {
        int32_t count = 0;
        for (int s = 0; s < $seq; ++s) {
            const int32_t id = ${ids}[r * $seq + s];
            int32_t row = id;$position
            for (int j = 0; j < $d; ++j) ${y}[(r * $seq + s) * $d + j] = ${table}[row * $d + j];
        }
    }
""")
# RoBERTa's position ids (intfunc.position_ids): real tokens count up from pad + 1.
POSITION = """
            count += id != $pad;
            row = id != $pad ? count + $pad : $pad;"""
NO_POSITION = """
            (void)count;"""
ACCUMULATE_SUM = Template("""\
    for (int i = 0; i < $n; ++i) ${s}[i] += ${x}[i];
""")
# EC over rows of d: q = the running mean at the function's input scale (intfunc.requant_mean),
# then the row or element function in place, then out = t * f - G(t - 1).
EC_ROWS = Template("""\
    const int64_t t = (int64_t)spk_state.steps + 1;
$accumulate    for (int r = 0; r < $rows; ++r) {
        int64_t *q = $row;
        for (int j = 0; j < $d; ++j) {
            const int i = r * $d + j;
            /* floor(a / (t 2^k)) = floor(floor(a / 2^k) / t): a shift, then a small division */
            q[j] = spk_floor_div(spk_asr((int64_t)${s}[i] * ${mul}[$mi], $shift), t);
        }
$apply        for (int j = 0; j < $d; ++j) {
            const int i = r * $d + j;
            const int64_t g = t * q[j];
            ${y}[i] = (int32_t)(g - ${g}[i]);
            ${g}[i] = g;
        }
    }
""")
EC_ELEMENTS = Template("""\
    const int64_t t = (int64_t)spk_state.steps + 1;
    (void)t; /* not every G depends on t */
$accumulate    for (int i = 0; i < $n; ++i) {
        const int64_t g = $expr;
        ${y}[i] = (int32_t)(g - ${g}[i]);
        ${g}[i] = g;
    }
""")
MATMUL = Template("""\
    const int64_t t = (int64_t)spk_state.steps + 1;
$accumulate    for (int b = 0; b < $batches; ++b) {
        for (int m = 0; m < $m; ++m) {
            const ${sat} *a = &${sa}[b * $a_step + m * $k];
$weigh            for (int o = 0; o < $n; ++o) {
                const ${sbt} *bb = &${sb}[b * $b_step + o];
                const int i = (b * $m + m) * $n + o;
                int64_t acc = 0, g;
                for (int k = 0; k < $k; ++k) acc += (int64_t)${row}[k] * bb[k * $n];
                g = spk_floor_div(spk_shl(acc, $frac), $divisor);
                ${y}[i] = (int32_t)(g - ${g}[i]);
                ${g}[i] = g;
            }
        }
    }
""")
MASKED_MEAN = Template("""\
    int64_t count = 0;
$accumulate    for (int k = 0; k < $tokens; ++k) count += ${mask}[k] > 0;
    if (count < 1) count = 1;
    for (int o = 0; o < $n_out; ++o) ${acc}[o] = 0;
    for (int i = 0; i < $n; ++i) {
        if (${mask}[${tok}[i]] > 0) ${acc}[${idx}[i]] += ${s}[i];
    }
    for (int o = 0; o < $n_out; ++o) {
        const int64_t g = spk_floor_div(${acc}[o], count);
        ${y}[o] = (int32_t)(g - ${g}[o]);
        ${g}[o] = g;
    }
""")
RESIZE = Template("""\
    for (int c = 0; c < $c; ++c) {
        for (int h = 0; h < $h; ++h) {
            for (int w = 0; w < $w; ++w) {
                int64_t acc = 0;
                for (int hh = 0; hh < $h_in; ++hh) {
                    const int64_t rh = ${rows}[h * $h_in + hh];
                    if (rh == 0) continue;
                    for (int ww = 0; ww < $w_in; ++ww) {
                        acc += rh * ${x}[(c * $h_in + hh) * $w_in + ww] * ${cols}[w * $w_in + ww];
                    }
                }
                ${y}[(c * $h + h) * $w + w] = (int32_t)acc;
            }
        }
    }
""")


def _index_type(top: int) -> str:
    return "uint16_t" if top <= 0xFFFF else "int32_t"


def _index_map(plan: Plan, n: Node) -> np.ndarray:
    """For each output element, the flat index of the input element the simulator puts there
    (-1: a padded cell). The simulator's own kernel moves the numbers 1..n_in."""
    shape = plan.graph.shape(n.inputs[0])
    ids = np.arange(1, int(np.prod(shape)) + 1, dtype=np.int64).reshape((1,) + shape)
    kernel = KERNELS[n.op](n, "int", plan.graph.shape(n.output))
    kernel.reset(1)
    return np.asarray(kernel(ids)).reshape(-1) - 1


def _gather(plan: Plan, n: Node, cid: str) -> Layer:
    idx = _index_map(plan, n)
    n_in = plan.size(n.inputs[0])
    padded = bool((idx < 0).any())
    table = np.where(idx < 0, n_in, idx)
    io = dict(n=len(idx), x=plan.buf(n.inputs[0]), y=plan.buf(n.output), idx=f"ix_{cid}")
    body = GATHER_PAD.substitute(io, none=n_in) if padded else GATHER.substitute(io)
    return Layer(n, body, consts=[(_index_type(n_in), f"ix_{cid}", table)])


c_op("transpose", "take", "gather", "slice", "pad")(_gather)


@c_op("resize")
def _resize(plan: Plan, n: Node, cid: str) -> Layer:
    if attr(n, "mode") == "nearest":
        return _gather(plan, n, cid)
    c, h_in, w_in = plan.graph.shape(n.inputs[0])
    _, h, w = plan.graph.shape(n.output)
    body = RESIZE.substitute(
        c=c, h=h, w=w, h_in=h_in, w_in=w_in, rows=f"rh_{cid}", cols=f"rw_{cid}",
        x=plan.buf(n.inputs[0]), y=plan.buf(n.output),
    )  # fmt: skip
    consts = [
        ("int32_t", f"rh_{cid}", n.params["rows_q"]),
        ("int32_t", f"rw_{cid}", n.params["cols_q"]),
    ]
    return Layer(n, body, consts=consts)


def _elementwise(plan: Plan, n: Node, expr: str, consts: list | None = None) -> Layer:
    body = ELEMENTWISE.substitute(n=plan.size(n.output), y=plan.buf(n.output), expr=expr)
    return Layer(n, body, consts=consts or [])


@c_op("scale")
def _scale(plan: Plan, n: Node, cid: str) -> Layer:
    # |factor| lives in the output scale; only its sign touches integers
    sign = "-" if n.attrs["factor"] < 0 else ""
    return _elementwise(plan, n, f"{sign}(int32_t){plan.buf(n.inputs[0])}[i]")


@c_op("offset")
def _offset(plan: Plan, n: Node, cid: str) -> Layer:
    value = n.params["value_q"]
    vi = broadcast_index(plan.graph.shape(n.output), value.shape)
    expr = f"(int32_t){plan.buf(n.inputs[0])}[i] + off_{cid}[{vi}]"
    return _elementwise(plan, n, expr, [("int32_t", f"off_{cid}", value)])


@c_op("channel_scale")
def _channel_scale(plan: Plan, n: Node, cid: str) -> Layer:
    shape, x = plan.graph.shape(n.output), plan.buf(n.inputs[0])
    if "factor_q" in n.params:  # a factor that varies inside a channel: floor(x * q / 2^s)
        q = n.params["factor_q"]
        plan.functions.add("floor_div")
        expr = (
            f"(int32_t)spk_floor_div((int64_t){x}[i] * cs_{cid}[{broadcast_index(shape, q.shape)}],"
            f" (int64_t)1 << {n.attrs['shift']})"
        )
        return _elementwise(plan, n, expr, [("int32_t", f"cs_{cid}", q)])
    sign = np.where(n.params["factor"] < 0, -1, 1)
    expr = f"cs_{cid}[{broadcast_index(shape, sign.shape)}] * (int32_t){x}[i]"
    return _elementwise(plan, n, expr, [("int8_t", f"cs_{cid}", sign)])


def _reduced_index(in_shape: tuple[int, ...], axes: list[int]) -> tuple[np.ndarray, int]:
    """For each input element, the flat index of the output element its reduction adds to."""
    keep = [1 if k in {a % len(in_shape) for a in axes} else d for k, d in enumerate(in_shape)]
    n_out = int(np.prod(keep))
    return np.broadcast_to(np.arange(n_out).reshape(keep), in_shape).reshape(-1), n_out


@c_op("reduce_sum", "reduce_mean")  # integer mode sums: 1/count lives in the output scale
def _reduce(plan: Plan, n: Node, cid: str) -> Layer:
    idx, n_out = _reduced_index(plan.graph.shape(n.inputs[0]), n.attrs["axes"])
    body = SCATTER_ADD.substitute(
        n_out=n_out, n=len(idx), idx=f"ix_{cid}", x=plan.buf(n.inputs[0]), y=plan.buf(n.output)
    )
    return Layer(n, body, consts=[(_index_type(n_out), f"ix_{cid}", idx)])


@c_op("embed")
def _embed(plan: Plan, n: Node, cid: str) -> Layer:
    table = n.params["table_q"]
    ids_shape = plan.graph.shape(n.inputs[0])
    seq = ids_shape[-1] if ids_shape else 1
    pad = attr(n, "position_pad")
    position = Template(POSITION).substitute(pad=pad) if pad is not None else NO_POSITION
    body = EMBED.substitute(
        rows=plan.size(n.inputs[0]) // seq, seq=seq, d=table.shape[1], ids=plan.buf(n.inputs[0]),
        y=plan.buf(n.output), table=f"emb_{cid}", position=position,
    )  # fmt: skip
    return Layer(n, body, consts=[("int8_t", f"emb_{cid}", table)])


# -- expectation-compensated operators ------------------------------------------------------


def plan_sum_type(plan: Plan, tensor: str) -> str:
    """C type of the running sum of `tensor`: what its proven total needs."""
    return narrow(plan.total_bound(tensor), "int16_t")


def _g_type(plan: Plan, n: Node) -> str:
    """C type of G(t), the sum of the operator's outputs so far: bounded by its total."""
    return narrow(plan.total_bound(n.output), "int32_t")


def _running_sums(plan: Plan, n: Node, cid: str, inputs: list[str]) -> tuple[list[str], str, list]:
    """State arrays S of the inputs (int32: the range proof bounds them like any state), the
    C that adds this step's inputs to them, and the state entries."""
    names, code, state = [], "", []
    for k, t in enumerate(inputs):
        s = f"spk_state.s{k}_{cid}"
        names.append(s)
        code += ACCUMULATE_SUM.substitute(n=plan.size(t), s=s, x=plan.buf(t))
        state.append((plan_sum_type(plan, t), f"s{k}_{cid}", plan.size(t)))
    return names, code, state


def _ec_rows(plan: Plan, n: Node, cid: str, apply: str, consts: list) -> Layer:
    """An EC function of the requantised running mean of input 0, row-wise over the last axis
    (`apply` transforms the row q[0..d) in place)."""
    shape = plan.graph.shape(n.output)
    d, size = shape[-1], plan.size(n.output)
    mul = n.params["requant_q"]
    (s,), accumulate, state = _running_sums(plan, n, cid, n.inputs[:1])
    plan.functions.update({"floor_div", "asr"})
    body = EC_ROWS.substitute(
        rows=size // d, d=d, s=s, y=plan.buf(n.output), g=f"spk_state.g_{cid}", row=f"R{cid}",
        mul=f"rq_{cid}", mi=broadcast_index(shape, mul.shape), shift=n.attrs["requant_shift"],
        accumulate=accumulate, apply=apply,
    )  # fmt: skip
    return Layer(
        n,
        body,
        consts=[("int32_t", f"rq_{cid}", mul), *consts],
        state=[*state, (_g_type(plan, n), f"g_{cid}", size)],
        scratch=[("int64_t", f"R{cid}", d)],
    )


def _ec_function(plan: Plan, n: Node, cid: str, fn: str, call: str) -> Layer:
    """An EC operator whose function applies to each element of the row alone."""
    plan.functions.add(fn)
    d = plan.graph.shape(n.output)[-1]
    return _ec_rows(plan, n, cid, f"        for (int j = 0; j < {d}; ++j) q[j] = {call};\n", [])


@c_op("gelu")
def _gelu(plan: Plan, n: Node, cid: str) -> Layer:
    c = n.attrs["int"]
    if "cubic" not in c:  # quantized before the sigmoid form: I-BERT's (intfunc.gelu_function)
        call = f"spk_gelu_ibert(q[j], {c['clip']}, {c['c']}, {c['one']}, {c['shift']})"
        return _ec_function(plan, n, cid, "gelu_ibert", call)
    args = ", ".join(str(c[k]) for k in ("a", "cubic", "clip", "ln2", "b", "c", "shift"))
    return _ec_function(plan, n, cid, "gelu", f"spk_gelu(q[j], {args})")


def _exp_args(n: Node) -> str:
    c = n.attrs["int"]
    return f"{c['ln2']}, {c['b']}, {c['c']}"


@c_op("tanh")
def _tanh(plan: Plan, n: Node, cid: str) -> Layer:
    return _ec_function(plan, n, cid, "tanh", f"spk_tanh(q[j], {_exp_args(n)})")


@c_op("sigmoid")
def _sigmoid(plan: Plan, n: Node, cid: str) -> Layer:
    return _ec_function(plan, n, cid, "sigmoid", f"spk_sigmoid(q[j], {_exp_args(n)})")


def _hardsigmoid_call(n: Node, q: str) -> str:
    c = n.attrs["int"]
    return f"spk_hardsigmoid({q}, {c['mul']}, {c['shift']}, {c['beta']})"


@c_op("hardsigmoid")
def _hardsigmoid(plan: Plan, n: Node, cid: str) -> Layer:
    return _ec_function(plan, n, cid, "hardsigmoid", _hardsigmoid_call(n, "q[j]"))


@c_op("hardswish")
def _hardswish(plan: Plan, n: Node, cid: str) -> Layer:
    plan.functions.add("hardsigmoid")
    call = f"spk_gated(q[j], {_hardsigmoid_call(n, 'q[j]')}, {n.attrs['int'].get('drop', 0)})"
    return _ec_function(plan, n, cid, "gated", call)


@c_op("silu")
def _silu(plan: Plan, n: Node, cid: str) -> Layer:
    c = n.attrs["int"]
    plan.functions.update({"sigmoid", "floor_div"})
    inner = f"spk_floor_div(q[j] * {c['mul']}, (int64_t)1 << {c['shift']})"
    gate = f"spk_sigmoid({inner}, {c['ln2']}, {c['b']}, {c['c']})"
    return _ec_function(plan, n, cid, "gated", f"spk_gated(q[j], {gate}, {c.get('drop', 0)})")


@c_op("softmax")
def _softmax(plan: Plan, n: Node, cid: str) -> Layer:
    plan.functions.add("softmax")
    d = plan.graph.shape(n.output)[-1]
    return _ec_rows(plan, n, cid, f"        spk_softmax(q, {d}, 0, {_exp_args(n)});\n", [])


def _check_mask(plan: Plan, n: Node, what: str, length: int) -> None:
    """The C reads a mask (input 1) as `length` int32 flags held for the whole inference."""
    mask = n.inputs[1]
    if plan.size(mask) != length or plan.ctype[mask] != "int32_t" or mask not in plan.static:
        raise CapabilityExceeded(
            f"node '{n.name}' ({n.op}): target 'c' takes a {what} mask of {length} int32 flags "
            f"held for the inference, not '{mask}' {list(plan.graph.shape(mask))}"
        )


@c_op("masked_softmax")
def _masked_softmax(plan: Plan, n: Node, cid: str) -> Layer:
    d, mask = plan.graph.shape(n.output)[-1], n.inputs[1]
    _check_mask(plan, n, "key", d)
    plan.functions.add("softmax")
    # The mask is constant over steps: its running sum is > 0 exactly where it is.
    apply = f"        spk_softmax(q, {d}, {plan.buf(mask)}, {_exp_args(n)});\n"
    return _ec_rows(plan, n, cid, apply, [])


@c_op("layernorm")
def _layernorm(plan: Plan, n: Node, cid: str) -> Layer:
    plan.functions.add("layernorm")
    c, d = n.attrs.get("int", {}), plan.graph.shape(n.output)[-1]
    apply = (
        f"        spk_layernorm(q, {d}, {c.get('eps', 0)}, ln_g_{cid}, ln_b_{cid}, "
        f"{c.get('out_shift', 0)});\n"
    )
    consts = [
        ("int32_t", f"ln_g_{cid}", n.params["gamma_q"]),
        ("int64_t", f"ln_b_{cid}", n.params["beta_q"]),
    ]
    return _ec_rows(plan, n, cid, apply, consts)


@c_op("l2norm")
def _l2norm(plan: Plan, n: Node, cid: str) -> Layer:
    plan.functions.add("l2norm")
    d = plan.graph.shape(n.output)[-1]
    apply = f"        spk_l2norm(q, {d}, {n.attrs['int']['eps']});\n"
    return _ec_rows(plan, n, cid, apply, [])


def _ec_elements(plan: Plan, n: Node, cid: str, expr: str, consts: list) -> Layer:
    """An EC operator whose G is `expr` of the running sums (s0, s1 at their broadcast
    indices), element by element."""
    sums, accumulate, state = _running_sums(plan, n, cid, n.inputs)
    shape, size = plan.graph.shape(n.output), plan.size(n.output)
    for k, t in enumerate(n.inputs):
        expr = expr.replace(f"$s{k}", f"{sums[k]}[{broadcast_index(shape, plan.graph.shape(t))}]")
    plan.functions.add("floor_div")
    body = EC_ELEMENTS.substitute(
        n=size, y=plan.buf(n.output), g=f"spk_state.g_{cid}", expr=expr, accumulate=accumulate
    )
    return Layer(n, body, consts=consts, state=[*state, (_g_type(plan, n), f"g_{cid}", size)])


@c_op("prelu")
def _prelu(plan: Plan, n: Node, cid: str) -> Layer:
    # Positively homogeneous: G is PReLU of the running sum itself (intfunc.int_prelu).
    mul, shift, frac = n.params["slope_q"], n.attrs["slope_shift"], n.attrs["frac"]
    mi = broadcast_index(plan.graph.shape(n.output), mul.shape)
    plan.functions.add("shl")
    expr = (
        f"$s0 >= 0 ? spk_shl($s0, {frac}) : "
        f"spk_floor_div(spk_shl((int64_t)$s0 * sl_{cid}[{mi}], {frac}), (int64_t)1 << {shift})"
    )
    return _ec_elements(plan, n, cid, expr, [("int32_t", f"sl_{cid}", mul)])


@c_op("mul")
def _mul(plan: Plan, n: Node, cid: str) -> Layer:
    frac = n.attrs["frac"]  # intfunc.int_product
    product = "(int64_t)$s0 * $s1"
    if frac >= 0:
        plan.functions.add("shl")
        expr = f"spk_floor_div(spk_shl({product}, {frac}), t)"
    else:
        expr = f"spk_floor_div({product}, t << {-frac})"
    return _ec_elements(plan, n, cid, expr, [])


@c_op("div")
def _div(plan: Plan, n: Node, cid: str) -> Layer:
    frac, least = n.attrs["frac"], n.attrs["least"]  # intfunc.int_div(t * a, b, frac, t * least)
    plan.functions.add("shl")
    expr = (
        f"spk_floor_div(spk_shl(t * $s0, {frac}), $s1 > t * {least} ? (int64_t)$s1 : t * {least})"
    )
    return _ec_elements(plan, n, cid, expr, [])


@c_op("matmul")
def _matmul(plan: Plan, n: Node, cid: str) -> Layer:
    a, b = (plan.graph.shape(t) for t in n.inputs)
    out = plan.graph.shape(n.output)
    if len(a) < 2 or len(b) < 2 or (a[:-2] != b[:-2] and len(a) > 2 and len(b) > 2):
        raise CapabilityExceeded(
            f"node '{n.name}' (matmul): target 'c' multiplies stacks of equal leading axes "
            f"or a stack by one matrix, not {list(a)} x {list(b)}"
        )
    (sa, sb), accumulate, state = _running_sums(plan, n, cid, n.inputs)
    plan.functions.update({"floor_div", "shl"})
    batches = int(np.prod(out[:-2]))
    # per contracted index multipliers (quantize.seq._matmul), one row per output stack: each
    # row of A's running sum is weighted once, before the products that read it
    contract = n.params.get("contract_q")
    consts, scratch, weigh, row = [], [], "", "a"
    shift = n.attrs.get("out_shift", 0)  # quantize.seq._out_shift
    if contract is not None:
        rows = np.broadcast_to(contract, tuple(out[:-2]) + (1, a[-1])).reshape(batches, a[-1])
        consts = [("int16_t", f"cq_{cid}", rows)]  # at most 2^MATMUL_CONTRACT_BITS
        wtype = narrow(plan.total_bound(n.inputs[0]) * float(rows.max()), "int32_t")
        scratch, row = [(wtype, f"W{cid}", a[-1])], f"W{cid}"
        weigh = (
            f"            for (int k = 0; k < {a[-1]}; ++k) "
            f"W{cid}[k] = ({wtype})a[k] * cq_{cid}[b * {a[-1]} + k];\n"
        )
        shift += F.MATMUL_CONTRACT_BITS
    divisor = f"((int64_t)t << {shift})" if shift else "t"
    body = MATMUL.substitute(
        batches=batches, m=a[-2], k=a[-1], n=b[-1], sa=sa, sb=sb, y=plan.buf(n.output),
        weigh=weigh, row=row, divisor=divisor, g=f"spk_state.g_{cid}",
        frac=F.MATMUL_FRAC_BITS, accumulate=accumulate,
        sat=plan_sum_type(plan, n.inputs[0]), sbt=plan_sum_type(plan, n.inputs[1]),
        a_step=a[-2] * a[-1] if len(a) > 2 else 0, b_step=b[-2] * b[-1] if len(b) > 2 else 0,
    )  # fmt: skip
    g_state = (_g_type(plan, n), f"g_{cid}", plan.size(n.output))
    return Layer(n, body, consts=consts, state=[*state, g_state], scratch=scratch)


@c_op("masked_mean")
def _masked_mean(plan: Plan, n: Node, cid: str) -> Layer:
    x_shape, mask = plan.graph.shape(n.inputs[0]), n.inputs[1]
    axis = attr(n, "axis") % len(x_shape)
    tokens = x_shape[axis]
    _check_mask(plan, n, "token", tokens)
    idx, n_out = _reduced_index(x_shape, [axis])
    tok = np.indices(x_shape)[axis].reshape(-1)
    (s,), accumulate, state = _running_sums(plan, n, cid, n.inputs[:1])
    plan.functions.add("floor_div")
    body = MASKED_MEAN.substitute(
        tokens=tokens, n_out=n_out, n=len(idx), mask=plan.buf(mask), tok=f"tk_{cid}",
        idx=f"ix_{cid}", acc=f"R{cid}", s=s, y=plan.buf(n.output), g=f"spk_state.g_{cid}",
        accumulate=accumulate,
    )  # fmt: skip
    return Layer(
        n,
        body,
        consts=[(_index_type(n_out), f"ix_{cid}", idx), (_index_type(tokens), f"tk_{cid}", tok)],
        state=[*state, (_g_type(plan, n), f"g_{cid}", n_out)],
        scratch=[("int64_t", f"R{cid}", n_out)],
    )
