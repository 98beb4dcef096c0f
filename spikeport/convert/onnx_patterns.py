"""Patterns that real exporters write for one operation, fused into the one ONNX node (or IR
op) that says it, before the per-op importers run. Each fusion is checked, not assumed.

- `0.5 * x * (1 + erf(x / sqrt 2))` -> Gelu (older torch exports; onnxruntime's basic optimiser
  does not fuse it, its Gelu fusion lives in the contrib-op transformer optimiser).
- ReduceMean/Sub/Pow/ReduceMean/[Add eps]/Sqrt/Div/[Mul gamma]/[Add beta] -> LayerNormalization,
  and any other spelling of it (jax2tf's, Keras's) found by its data flow and checked by its
  values on random inputs (`fuse_layernorm_by_value`).
- attention_mask -> (Cast/Sub/Mul/Where/Expand/...) -> Add to the scores -> Softmax: the mask
  subgraph is run by onnxruntime on random 0/1 masks and must give 0 for kept keys and a large
  negative value for masked ones (`plan_masks`), then the Softmax becomes `masked_softmax`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from spikeport.convert.onnx_load import quiet_session_options, readers
from spikeport.errors import UnsupportedOp


def _attrs(n: onnx.NodeProto) -> dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}


def fuse_erf_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the exported erf pattern 0.5 * x * (1 + erf(x / sqrt 2)) by one Gelu node."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    users = readers(g)
    producer = {o: node for node in g.node for o in node.output}

    def scalar(name: str) -> float | None:
        v = consts.get(name)
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    for erf in [node for node in g.node if node.op_type == "Erf"]:
        div = producer.get(erf.input[0])
        if div is None or div.op_type not in ("Div", "Mul"):
            continue
        c = scalar(div.input[1])
        ok = c is not None and math.isclose(
            c if div.op_type == "Div" else 1 / c, math.sqrt(2), rel_tol=1e-3
        )
        chain = [users.get(erf.output[0], [None])[0]]
        while ok and chain[-1] is not None and len(chain) < 3:
            chain.append(users.get(chain[-1].output[0], [None])[0])
        if not ok or None in chain or [m.op_type for m in chain] != ["Add", "Mul", "Mul"]:
            continue
        x = div.input[0]
        if x not in chain[1].input and x not in chain[2].input:
            continue
        gelu = onnx.helper.make_node("Gelu", [x], [chain[2].output[0]], name=erf.name + "_gelu")
        for dead in [div, erf, *chain]:
            g.node.remove(dead)
        g.node.insert(_index_after(g, x), gelu)
        model.opset_import[0].version = max(model.opset_import[0].version, 20)
    return model


def _index_after(g: onnx.GraphProto, tensor: str) -> int:
    for k, node in enumerate(g.node):
        if tensor in node.output:
            return k + 1
    return 0


# -- attention masks ---------------------------------------------------------------------------

SPIKEPORT_DOMAIN = "spikeport"  # fused nodes that no ONNX op spells: MaskedMean, L2Norm
MASKED_BELOW = -1e4  # an additive mask value at or below this excludes a key (exp underflows)


@dataclass
class MaskPlan:
    """How the model uses its integer inputs besides embedding lookups.

    skip:  nodes that compute only from integer inputs (the mask's Equal/Where/Expand/Reshape
           chain); they are not imported one by one.
    adds:  output of each Add(scores, mask values) that feeds Softmax -> (scores tensor, the
           integer input it masks by); the Softmax becomes one masked_softmax node.
    """

    skip: set[str] = field(default_factory=set)
    adds: dict[str, tuple[str, str]] = field(default_factory=dict)
    derived: dict[str, set[str]] = field(default_factory=dict)  # tensor -> its integer inputs


def _integer_inputs(g: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in g.initializer}
    ints = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}
    return [i for i in g.input if i.name not in inits and i.type.tensor_type.elem_type in ints]


def plan_masks(model: onnx.ModelProto) -> MaskPlan:
    """Find the additive attention masks; refuse any other use of an integer input."""
    g = model.graph
    consts = _consts(g)
    ints = {i.name: i for i in _integer_inputs(g)}
    plan = MaskPlan()
    derived = plan.derived = _derived(g, consts, plan.skip)
    users = readers(g)
    for n in g.node:
        if n.name in plan.skip or n.domain == SPIKEPORT_DOMAIN:
            continue
        masked = [i for i in n.input if i in derived]
        if n.op_type == "Add" and len(masked) == 1 and len(derived[masked[0]]) == 1:
            outputs = {o.name for o in g.output}
            reading = users.get(n.output[0], [])
            to_softmax = bool(reading) and all(u.op_type == "Softmax" for u in reading)
            if to_softmax and n.output[0] not in outputs:
                (source,) = derived[masked[0]]
                _check_key_mask(model, n, masked[0], ints[source])
                scores = next(i for i in n.input if i != masked[0])
                plan.adds[n.output[0]] = (scores, source)
                continue
        if masked and not _is_embedding(n, consts):
            raise UnsupportedOp(
                f"node '{n.name}' ({n.op_type}): computes with integer input "
                f"'{sorted(derived[masked[0]])[0]}'; integer inputs are supported as token ids "
                "of an embedding (Gather) and as an additive attention mask before Softmax"
            )
    return plan


def _derived(g: onnx.GraphProto, consts: set[str], skip: set[str]) -> dict[str, set[str]]:
    """tensor -> the integer inputs it is computed from, for tensors computed only from
    integer inputs and constants (mask arithmetic); their nodes' names go into `skip`."""
    derived: dict[str, set[str]] = {i.name: {i.name} for i in _integer_inputs(g)}
    for n in g.node:
        live = [i for i in n.input if i and i not in consts]
        if not live or not all(i in derived for i in live) or _is_embedding(n, consts):
            continue
        for o in n.output:
            derived[o] = set().union(*(derived[i] for i in live))
        skip.add(n.name)
    return derived


def _consts(g: onnx.GraphProto) -> set[str]:
    return {i.name for i in g.initializer} | {
        o for n in g.node if n.op_type == "Constant" for o in n.output
    }


def _is_embedding(n: onnx.NodeProto, consts: set[str]) -> bool:
    return n.op_type == "Gather" and n.input[0] in consts and n.input[1] not in consts


def _check_key_mask(
    model: onnx.ModelProto, add: onnx.NodeProto, bias: str, mask: onnx.ValueInfoProto
) -> None:
    """Run the mask's subgraph on random 0/1 masks: it must give 0 for kept keys and at most
    MASKED_BELOW for masked ones, one value per key along the last axis (key padding)."""
    sub = onnx.utils.Extractor(model).extract_model([mask.name], [bias])
    sess = ort.InferenceSession(
        sub.SerializeToString(), quiet_session_options(), providers=["CPUExecutionProvider"]
    )
    shape = [d.dim_value for d in mask.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(mask.type.tensor_type.elem_type)
    rng = np.random.default_rng(0)
    for _ in range(4):
        flags = (rng.random(shape) < 0.6).astype(dtype)
        flags.reshape(-1)[0] = 1
        values = sess.run(None, {mask.name: flags})[0]
        keep = flags.reshape(-1) > 0
        ok = values.shape[-1] == keep.size and (
            np.all(values[..., keep] == 0) and np.all(values[..., ~keep] <= MASKED_BELOW)
        )
        if not ok:
            raise UnsupportedOp(
                f"node '{add.name}' (Add): '{bias}' is not a key-padding mask of "
                f"'{mask.name}' (0 where kept, <= {MASKED_BELOW:g} where masked, per key)"
            )


# -- decomposed LayerNorm ------------------------------------------------------------------------


def fuse_decomposed_layernorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace mean/centre/variance/sqrt/divide (+ scale, + shift) chains over one axis, as
    older exports write LayerNorm (and channel norms of images), by one node."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    for rm in [n for n in g.node if n.op_type == "ReduceMean"]:
        chain = _layernorm_chain(g, rm, consts)
        if chain is None:
            continue
        nodes, x, out, eps, gamma, beta, axis = chain
        shape = _shape_of(g, x)
        width = shape[axis]
        last = axis == len(shape) - 1
        names = [f"{rm.name}_ln_gamma", f"{rm.name}_ln_beta"]
        gamma = np.ones(width) if gamma is None else gamma
        beta = np.zeros(width) if beta is None else beta
        for name, v in zip(names, (gamma, beta), strict=True):
            v = np.broadcast_to(v, (width,)).astype(np.float32)
            g.initializer.append(onnx.numpy_helper.from_array(v, name))
        # ONNX's LayerNormalization normalises every axis from `axis` on; a channel norm of
        # (N, C, H, W) over C alone has no ONNX op: spikeport's own node says it.
        ln = onnx.helper.make_node(
            "LayerNormalization" if last else "AxisLayerNorm",
            [x, *names],
            [out],
            name=rm.name + "_layernorm",
            axis=-1 if last else axis,
            epsilon=eps,
            **({} if last else {"domain": SPIKEPORT_DOMAIN}),
        )
        at = list(g.node).index(nodes[0])
        for dead in nodes:
            g.node.remove(dead)
        g.node.insert(at, ln)
    return model


def _along(v: np.ndarray, shape: list[int] | None, axis: int) -> np.ndarray | None:
    """A gamma/beta constant as its (width,) vector when it varies along `axis` only."""
    if shape is None or v.ndim > len(shape):
        return None
    v = v.reshape((1,) * (len(shape) - v.ndim) + v.shape)
    if any(d != 1 for i, d in enumerate(v.shape) if i != axis) or v.shape[axis] not in (
        1,
        shape[axis],
    ):
        return None
    return np.broadcast_to(v.reshape(-1), (shape[axis],))


def _layernorm_chain(g: onnx.GraphProto, rm: onnx.NodeProto, consts: dict[str, np.ndarray]):
    """(nodes, x, output, eps, gamma, beta) of the pattern starting at `rm`, or None."""
    users = readers(g)

    def only(t: str, op: str) -> onnx.NodeProto | None:
        u = users.get(t, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    def scalar(t: str) -> float | None:
        v = consts.get(t)
        return float(v.reshape(())) if v is not None and v.size == 1 else None

    x = rm.input[0]
    axis = _reduced_axis(g, rm, consts)
    if axis is None:
        return None
    sub = only(rm.output[0], "Sub")
    if sub is None or list(sub.input) != [x, rm.output[0]]:
        return None
    d_users = users.get(sub.output[0], [])
    pw = next((u for u in d_users if u.op_type == "Pow"), None)
    div = next((u for u in d_users if u.op_type == "Div"), None)
    if len(d_users) != 2 or pw is None or div is None or scalar(pw.input[1]) != 2.0:
        return None
    rm2 = only(pw.output[0], "ReduceMean")
    if rm2 is None or _reduced_axis(g, rm2, consts) != axis:
        return None
    nodes, eps, t = [rm, sub, pw, rm2], 0.0, rm2.output[0]
    add = only(t, "Add")
    if add is not None:
        e = scalar(next(i for i in add.input if i != t))
        if e is None:
            return None
        nodes, eps, t = nodes + [add], e, add.output[0]
    sq = only(t, "Sqrt")
    if sq is None or list(div.input) != [sub.output[0], sq.output[0]]:
        return None
    nodes += [sq, div]
    out, affine = div.output[0], {}
    for op in ("Mul", "Add"):  # the optional gamma, then the optional beta
        node = only(out, op)
        c = (
            None
            if node is None
            else next((i for i in node.input if i != out and i in consts), None)
        )
        if c is None:
            continue
        affine[op] = _along(consts[c], _shape_of(g, x), axis)
        if affine[op] is None:
            return None
        nodes, out = nodes + [node], node.output[0]
    return nodes, x, out, eps, affine.get("Mul"), affine.get("Add"), axis


def _reduced_axis(g: onnx.GraphProto, rm: onnx.NodeProto, consts: dict) -> int | None:
    """The one axis (non-negative) a ReduceMean reduces, or None."""
    if len(rm.input) > 1 and rm.input[1]:
        axes = consts.get(rm.input[1])
        axes = None if axes is None else [int(a) for a in np.atleast_1d(axes)]
    else:
        axes = [int(a) for a in _attrs(rm).get("axes", [])]
    shape = _shape_of(g, rm.input[0])
    if axes is None or len(axes) != 1 or shape is None:
        return None
    return axes[0] % len(shape)


# -- LayerNorm in any other spelling, recognised by its values --------------------------------

# Ops a LayerNorm's arithmetic is written in (jax2tf: E[x^2] - E[x]^2, a floor at 0, Rsqrt as
# Sqrt and Reciprocal; Keras via tf2onnx: x * inv + (beta - mean * inv); broadcasts and casts).
# A softmax written out (jax.nn.softmax: x - max, exp, sum, divide) uses ReduceMax and Exp too.
NORM_OPS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceMax", "Sub", "Mul", "Add", "Div", "Pow", "Sqrt",
    "Reciprocal", "Max", "Min", "Clip", "Exp", "Reshape", "Expand", "Squeeze", "Unsqueeze",
    "Cast", "Neg", "Identity",
})  # fmt: skip
EPSILONS = [10.0**-k for k in range(2, 13)]  # Keras 1e-3, torch 1e-5, JAX 1e-6, BERT 1e-12
NORM_MATCH = 1e-3  # largest error of the fitted LayerNorm, relative to the largest output


def fuse_layernorm_by_value(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace any region that reads one tensor x (only through NORM_OPS and constants),
    reduces it over one axis and computes gamma * (x - mean) / sqrt(var + eps) + beta there,
    by one LayerNormalization (AxisLayerNorm for another axis than the last; then a Mul and an
    Add where gamma and beta vary along another axis than the normalised one): the region is
    found by its data flow (it starts at x's readers and nothing outside it reads anything
    inside but its output), run by onnxruntime on random x, and gamma, beta and eps are fitted
    to what it gives; it is fused only where the fit is exact to NORM_MATCH. Runs after
    fuse_decomposed_layernorm (the usual spelling)."""
    g = model.graph
    consts = _consts(g)
    values = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    for red in [n for n in g.node if n.op_type in ("ReduceMean", "ReduceSum", "ReduceMax")]:
        if red not in g.node:
            continue  # inside a region fused already
        x, shape = red.input[0], _shape_of(g, red.input[0])
        axis = _reduced_axis(g, red, values)
        if shape is None or axis is None or axis == 0:
            continue
        region, users, probes = _region(g, x, consts), readers(g), _probes(shape, axis)
        for end in reversed(region):
            nodes = _sealed(g, users, region, end, red)
            if nodes is None or _shape_of(g, end.output[0]) != shape:
                continue
            try:
                sess = _sub_session(model, [x], [end.output[0]])
                got = [sess.run(None, {x: p})[0] for p in probes]
            except Exception:  # the region needs more than x: no function of x alone
                continue
            if _is_softmax(probes, got, axis):
                _replace(g, nodes, [onnx.helper.make_node(
                    "Softmax", [x], [end.output[0]], name=f"{nodes[0].name}_softmax", axis=axis
                )])  # fmt: skip
                break
            fit = _fit_norm(probes, got, shape, axis)
            if fit is not None:
                _replace(
                    g, nodes, _norm_nodes(g, nodes[0].name, x, end.output[0], shape, axis, *fit)
                )
                break
    return model


def _region(
    g: onnx.GraphProto, x: str, consts: set[str], ops: frozenset[str] = NORM_OPS
) -> list[onnx.NodeProto]:
    """The nodes of `ops`, in order, computed from x and constants alone."""
    inside, region = {x}, []
    for n in g.node:
        data = [t for t in n.input if t and t not in consts]
        if n.op_type in ops and data and all(t in inside for t in data):
            region.append(n)
            inside.update(n.output)
    return region


def _sealed(g: onnx.GraphProto, users: dict[str, list[onnx.NodeProto]],
            region: list[onnx.NodeProto], end: onnx.NodeProto,
            red: onnx.NodeProto) -> list[onnx.NodeProto] | None:  # fmt: skip
    """The nodes of `region` that `end` depends on, if they include `red` and nothing outside
    them reads any of their outputs but `end`'s (`users`: readers(g)); else None."""
    producer = {o: n for n in region for o in n.output}
    nodes, todo = {id(end): end}, [end]
    while todo:
        for t in todo.pop().input:
            p = producer.get(t)
            if p is not None and id(p) not in nodes:
                nodes[id(p)] = p
                todo.append(p)
    if id(red) not in nodes:
        return None
    outputs = {o.name for o in g.output}
    for n in nodes.values():
        if n is end:
            continue
        if n.output[0] in outputs or any(id(u) not in nodes for u in users.get(n.output[0], [])):
            return None
    return [n for n in region if id(n) in nodes]


def _probes(shape: list[int], axis: int) -> list[np.ndarray]:
    """Random inputs of several scales (the small ones tell a LayerNorm's eps apart), each row
    along `axis` with its own offset."""
    rng = np.random.default_rng(0)
    row = list(shape)
    row[axis] = 1
    return [
        (scale * (rng.normal(0, 1, row) + rng.normal(0, 1, shape))).astype(np.float32)
        for scale in (1e-3, 3e-3, 1e-2, 0.1, 1.0, 10.0)
    ]


def _is_softmax(probes: list[np.ndarray], got: list[np.ndarray], axis: int) -> bool:
    for x, y in zip(probes, got, strict=True):
        e = np.exp(x - x.max(axis, keepdims=True))
        if y.shape != x.shape or not np.allclose(y, e / e.sum(axis, keepdims=True), atol=1e-5):
            return False
    return True


def _fit_norm(probes: list[np.ndarray], got: list[np.ndarray], shape: list[int], axis: int):
    """(gamma, beta, eps, along) with y = gamma * (x - mean) / sqrt(var + eps) + beta, mean
    and var over `axis`, gamma and beta one per index of axis `along` (the normalised one, or
    another), fitted on the probes; or None where no such fit is exact to NORM_MATCH."""
    xs, got = np.stack(probes).astype(np.float64), np.stack(got).astype(np.float64)
    centred = xs - xs.mean(axis + 1, keepdims=True)
    var = (centred**2).mean(axis + 1, keepdims=True)
    top = max(float(np.abs(got).max()), 1e-30)
    best = None
    for eps in EPSILONS:
        ln = centred / np.sqrt(var + eps)
        for along in [axis] + [a for a in range(1, len(shape)) if a != axis and shape[a] > 1]:
            # per index of `along`: y = gamma ln + beta, least squares
            lc, yc = (np.moveaxis(v, along + 1, -1).reshape(-1, shape[along]) for v in (ln, got))
            lm, ym = lc.mean(0), yc.mean(0)
            gamma = ((lc - lm) * (yc - ym)).sum(0) / np.maximum(((lc - lm) ** 2).sum(0), 1e-30)
            beta = ym - gamma * lm
            err = float(np.abs(gamma * lc + beta - yc).max()) / top
            if best is None or err < best[0]:
                best = (err, gamma, beta, eps, along)
    if best is None or best[0] > NORM_MATCH:
        return None
    return best[1:]


def _norm_nodes(g: onnx.GraphProto, name: str, x: str, y: str, shape: list[int], axis: int,
                gamma: np.ndarray, beta: np.ndarray, eps: float,
                along: int) -> list[onnx.NodeProto]:  # fmt: skip
    """One LayerNormalization (AxisLayerNorm off the last axis); where gamma and beta vary
    along another axis, a unit norm followed by Mul gamma and Add beta. Their constants go
    into g."""
    last = axis == len(shape) - 1
    width = shape[axis]
    names = [f"{y}:ln_gamma", f"{y}:ln_beta"]
    if along == axis:
        affine, normed = (gamma, beta), y
    else:
        affine, normed = (np.ones(width), np.zeros(width)), f"{y}:normed"
    for key, v in zip(names, affine, strict=True):
        g.initializer.append(onnx.numpy_helper.from_array(v.astype(np.float32), key))
    made = [onnx.helper.make_node(
        "LayerNormalization" if last else "AxisLayerNorm", [x, *names], [normed],
        name=f"{name}_layernorm", axis=-1 if last else axis, epsilon=eps,
        **({} if last else {"domain": SPIKEPORT_DOMAIN}),
    )]  # fmt: skip
    if along != axis:
        column = [1] * len(shape)
        column[along] = shape[along]
        steps = (("Mul", gamma, normed, f"{y}:scaled"), ("Add", beta, f"{y}:scaled", y))
        for op, v, inp, out in steps:
            key = f"{y}:{op.lower()}_along"
            g.initializer.append(
                onnx.numpy_helper.from_array(v.reshape(column).astype(np.float32), key)
            )
            made.append(onnx.helper.make_node(op, [inp, key], [out], name=f"{name}_{op.lower()}"))
    return made


def _replace(g: onnx.GraphProto, nodes: list[onnx.NodeProto], made: list[onnx.NodeProto]) -> None:
    at = list(g.node).index(nodes[0])
    for dead in nodes:
        g.node.remove(dead)
    for k, node in enumerate(made):
        g.node.insert(at + k, node)


# -- 1-D signals ---------------------------------------------------------------------------------

# Window ops that take a 1-D signal (N, C, L) as they take an image (N, C, H, W).
WINDOW_OPS = frozenset({
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool",
})  # fmt: skip
# Their per-axis attributes, and what the added height axis gets in each.
HEIGHT_ONE = {"kernel_shape": 1, "strides": 1, "dilations": 1, "output_padding": 0}


def lift_1d_windows(model: onnx.ModelProto) -> onnx.ModelProto:
    """A window op on a 1-D signal (N, C, L) as the same op on the image (N, C, 1, L) between
    an Unsqueeze and a Squeeze of that height axis (audio and text CNNs: Conv1d, MaxPool1d...),
    so that one 2-D importer serves both; a kernel becomes (O, I, 1, k)."""
    g = model.graph
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    nodes, lifted = [], 0
    for n in g.node:
        shape = _shape_of(g, n.input[0]) if n.op_type in WINDOW_OPS else None
        out_shape = _shape_of(g, n.output[0]) if shape is not None else None
        weight = consts.get(n.input[1]) if n.op_type.startswith("Conv") else None
        if (
            shape is None
            or len(shape) != 3
            or out_shape is None
            or (n.op_type.startswith("Conv") and weight is None)
        ):
            nodes.append(n)
            continue
        inputs = [f"{n.name}:image"] + list(n.input[1:])
        if weight is not None:
            inputs[1] = f"{n.name}:kernel_2d"
            g.initializer.append(onnx.numpy_helper.from_array(weight[:, :, None, :], inputs[1]))
        image = onnx.NodeProto()
        image.CopyFrom(n)
        image.input[:], image.output[0] = inputs, f"{n.name}:image_out"
        for a in image.attribute:
            if a.name in HEIGHT_ONE:
                a.ints[:] = [HEIGHT_ONE[a.name], *a.ints]
            elif a.name == "pads":
                a.ints[:] = [0, a.ints[0], 0, a.ints[1]]
        nodes += [_height(g, n, "Unsqueeze", n.input[0], inputs[0], opset), image,
                  _height(g, n, "Squeeze", image.output[0], n.output[0], opset)]  # fmt: skip
        # the two new tensors' shapes, as shape inference would give them (it cannot run again
        # here: the graph may hold spikeport's own fused ops)
        for t, dims in ((inputs[0], shape), (image.output[0], out_shape)):
            g.value_info.append(onnx.helper.make_tensor_value_info(
                t, onnx.TensorProto.FLOAT, [*dims[:2], 1, dims[2]]))  # fmt: skip
        lifted += 1
    if lifted:
        del g.node[:]
        g.node.extend(nodes)
    return model


def _height(
    g: onnx.GraphProto, n: onnx.NodeProto, op: str, x: str, y: str, opset: int
) -> onnx.NodeProto:
    """Unsqueeze or Squeeze of axis 2, the added height (axes an input from opset 13)."""
    name = f"{n.name}:{op.lower()}"
    if opset < 13:
        return onnx.helper.make_node(op, [x], [y], name=name, axes=[2])
    g.initializer.append(onnx.numpy_helper.from_array(np.asarray([2], np.int64), f"{name}_axes"))
    return onnx.helper.make_node(op, [x, f"{name}_axes"], [y], name=name)


# -- sentence-embedding heads --------------------------------------------------------------------


def _sub_session(
    model: onnx.ModelProto, inputs: list[str], outputs: list[str]
) -> ort.InferenceSession:
    """An onnxruntime session of the part of `model` from `inputs` to `outputs`."""
    sub = onnx.utils.Extractor(model).extract_model(inputs, outputs)
    return ort.InferenceSession(
        sub.SerializeToString(), quiet_session_options(), providers=["CPUExecutionProvider"]
    )


def _run_sub(model: onnx.ModelProto, inputs: list[str], outputs: list[str], feeds: dict):
    return _sub_session(model, inputs, outputs).run(None, feeds)


def _random_masks(mask: onnx.ValueInfoProto, rng: np.random.Generator) -> np.ndarray:
    shape = [d.dim_value for d in mask.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(mask.type.tensor_type.elem_type)
    flags = (rng.random(shape) < 0.6).astype(dtype)
    flags.reshape(-1)[0] = 1  # at least one kept token
    return flags


def fuse_masked_mean(model: onnx.ModelProto) -> onnx.ModelProto:
    """Div(ReduceSum(Mul(h, M), tokens), C) with M the 0/1 mask spread over the features and C
    the kept-token count (clamped away from 0) -> MaskedMean(h, mask): the mean of h over kept
    tokens (masked mean pooling of sentence encoders). M and C are checked by running their
    subgraphs on random masks."""
    g = model.graph
    consts = _consts(g)
    derived = _derived(g, consts, set())
    ints = {i.name: i for i in _integer_inputs(g)}
    producer = {o: n for n in g.node for o in n.output}
    users = readers(g)
    for div in [n for n in g.node if n.op_type == "Div" and n.input[1] in derived]:
        red = producer.get(div.input[0])
        mul = producer.get(red.input[0]) if red is not None else None
        if red is None or red.op_type != "ReduceSum" or mul is None or mul.op_type != "Mul":
            continue
        spread = next((i for i in mul.input if i in derived), None)
        h = next((i for i in mul.input if i not in derived and i not in consts), None)
        if spread is None or h is None or len(derived[spread] | derived[div.input[1]]) != 1:
            continue
        (source,) = derived[spread]
        axis = _reduce_axis(red, consts, g)
        if axis is None or not _is_mask_mean(model, ints[source], spread, div.input[1], axis):
            continue
        fused = onnx.helper.make_node(
            "MaskedMean",
            [h, source],
            [div.output[0]],
            name=div.name + "_masked_mean",
            domain=SPIKEPORT_DOMAIN,
            axis=axis,
            keepdims=_keepdims(red),
        )
        dead = [div] + [n for n in (red, mul) if len(users.get(n.output[0], [])) == 1]
        at = list(g.node).index(div)
        g.node.insert(at, fused)
        for n in dead:
            g.node.remove(n)
    return model


def _keepdims(n: onnx.NodeProto) -> int:
    return int(_attrs(n).get("keepdims", 1))


def _reduce_axis(red: onnx.NodeProto, consts: set[str], g: onnx.GraphProto) -> int | None:
    values = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    axes = values.get(red.input[1]) if len(red.input) > 1 and red.input[1] else None
    axes = _attrs(red).get("axes") if axes is None else axes
    if axes is None or np.size(axes) != 1:
        return None
    return int(np.reshape(axes, -1)[0])


def _is_mask_mean(
    model: onnx.ModelProto, mask: onnx.ValueInfoProto, spread: str, count: str, axis: int
) -> bool:
    """Whether `spread` is the mask (0/1 per token, the same over the features) and `count` is
    the number of kept tokens, on random masks."""
    rng = np.random.default_rng(0)
    for _ in range(3):
        flags = _random_masks(mask, rng)
        m, c = _run_sub(model, [mask.name], [spread, count], {mask.name: flags})
        per_token = np.moveaxis(m, axis, -1)
        kept = flags.reshape(-1).astype(np.float64)
        if per_token.shape[-1] != kept.size or not np.all(per_token == kept):
            return False
        if not np.allclose(c, kept.sum(), rtol=1e-6):
            return False
    return True


def fuse_l2norm(model: onnx.ModelProto) -> onnx.ModelProto:
    """x / [Expand](Clip|Max(ReduceL2(x, last axis, keepdims), eps)) -> L2Norm(x, eps): the
    L2 normalisation of torch.nn.functional.normalize and sentence-transformers' Normalize."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    values = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    for div in [n for n in g.node if n.op_type == "Div"]:
        chain, t, eps = [], div.input[1], 0.0
        node = producer.get(t)
        if node is not None and node.op_type == "Expand":
            chain.append(node)
            node = producer.get(node.input[0])
        if node is not None and node.op_type in ("Clip", "Max") and len(node.input) > 1:
            lo = values.get(node.input[1])
            if lo is None:
                continue
            eps = float(np.reshape(lo, -1)[0])
            chain.append(node)
            node = producer.get(node.input[0])
        if node is None or node.op_type != "ReduceL2" or node.input[0] != div.input[0]:
            continue
        axis = _reduce_axis(node, set(values), g)
        if axis is None or not _keepdims(node):
            continue
        fused = onnx.helper.make_node(
            "L2Norm",
            [div.input[0]],
            [div.output[0]],
            name=div.name + "_l2norm",
            domain=SPIKEPORT_DOMAIN,
            axis=axis,
            epsilon=eps,
        )
        at = list(g.node).index(div)
        g.node.insert(at, fused)
        users = readers(g)
        for dead in [div, *chain, node]:
            if dead is div or all(u in (div, *chain) for u in users.get(dead.output[0], [])):
                g.node.remove(dead)
    return model


# -- position ids computed from the token ids (RoBERTa, MPNet, ...) ----------------------------


def position_pad(model: onnx.ModelProto, ids: str, source: onnx.ValueInfoProto) -> int | None:
    """The padding id p for which tensor `ids`, computed from integer input `source` alone, is
    cumsum(source != p) * (source != p) + p (RoBERTa's position ids), checked on random ids with
    padding; None when no small constant of the graph fits."""
    from spikeport.sim.intfunc import position_ids

    values = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer]
    candidates = sorted(
        {int(v.reshape(())) for v in values if v.size == 1 and v.dtype.kind in "iu"}
    )
    shape = [d.dim_value for d in source.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(source.type.tensor_type.elem_type)
    rng = np.random.default_rng(0)
    for pad in [c for c in candidates if 0 <= c < 2**16]:
        ok = True
        for _ in range(3):
            tokens = rng.integers(0, 50, shape).astype(dtype)
            tokens[..., -rng.integers(0, shape[-1]) :] = pad  # right padding
            (got,) = _run_sub(model, [source.name], [ids], {source.name: tokens})
            if got.shape != tokens.shape or not np.array_equal(got, position_ids(tokens, pad)):
                ok = False
                break
        if ok:
            return pad
    return None


def constant_ids(
    model: onnx.ModelProto, ids: str, source: onnx.ValueInfoProto
) -> np.ndarray | None:
    """The value of `ids` when it does not depend on the values of integer input `source`
    (only on its shape, e.g. RoBERTa's all-zero token types from a buffer), else None."""
    shape = [d.dim_value for d in source.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(source.type.tensor_type.elem_type)
    rng = np.random.default_rng(1)
    runs = [
        _run_sub(
            model, [source.name], [ids], {source.name: rng.integers(0, 50, shape).astype(dtype)}
        )[0]
        for _ in range(3)
    ]
    return runs[0] if all(np.array_equal(runs[0], r) for r in runs[1:]) else None


# -- tanh-form GELU ------------------------------------------------------------------------------


TANH_GELU_OPS = frozenset({"Pow", "Mul", "Add", "Tanh", "Div"})


def fuse_tanh_gelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """The exported tanh GELU (x^3 as Pow or as products, Mul, Add, Tanh, Add, Mul, Mul in any
    order; torch's and jax2tf's alike) -> Gelu(approximate="tanh"). From each Tanh, x is the
    one tensor its input is computed from through TANH_GELU_OPS; the candidate regions are
    the nodes computed from x and constants alone that nothing outside reads (_region,
    _sealed), and the fusion is checked by running one on random x."""
    g = model.graph
    consts = _consts(g)
    for tanh in [n for n in g.node if n.op_type == "Tanh"]:
        for x in _cone(g, tanh, consts):
            if tanh in g.node and _fuse_tanh_gelu_from(model, x, tanh, consts):
                break
    return model


def _fuse_tanh_gelu_from(
    model: onnx.ModelProto, x: str, tanh: onnx.NodeProto, consts: set[str]
) -> bool:
    g = model.graph
    region, users = _region(g, x, consts, TANH_GELU_OPS), readers(g)
    for end in reversed(region):
        nodes = _sealed(g, users, region, end, tanh)
        if nodes is not None and _is_tanh_gelu(model, x, end.output[0]):
            name = tanh.name + "_gelu"
            _replace(g, nodes, [onnx.helper.make_node(
                "Gelu", [x], [end.output[0]], name=name, approximate="tanh"
            )])  # fmt: skip
            return True
    return False


def _cone(g: onnx.GraphProto, tanh: onnx.NodeProto, consts: set[str]) -> list[str]:
    """The tensors the Tanh's input is computed from through TANH_GELU_OPS, nearest first
    (x may itself come from such an op: a bias Add before the GELU)."""
    producer = {o: n for n in g.node for o in n.output}
    cone, todo = [], [tanh.input[0]]
    while todo:
        t = todo.pop(0)
        if t in cone or t in consts or not t:
            continue
        cone.append(t)
        p = producer.get(t)
        if p is not None and p.op_type in TANH_GELU_OPS - {"Tanh"}:
            todo.extend(p.input)
    return cone[1:]  # the Tanh's own input is no GELU's x


def _is_tanh_gelu(model: onnx.ModelProto, x: str, out: str) -> bool:
    from spikeport.sim.intfunc import gelu

    shape = _shape_of(model.graph, x)
    if shape is None:
        return False
    probe = np.random.default_rng(0).normal(0, 3, shape).astype(np.float32)
    try:
        (got,) = _run_sub(model, [x], [out], {x: probe})
    except Exception:  # the region needs more than x: not this pattern
        return False
    return got.shape == probe.shape and np.allclose(got, gelu(probe, "tanh"), atol=1e-4)


def _shape_of(g: onnx.GraphProto, t: str) -> list[int] | None:
    for v in list(g.value_info) + list(g.input) + list(g.output):
        if v.name == t:
            return [d.dim_value for d in v.type.tensor_type.shape.dim]
    return None


# -- one-hot codes times a table ----------------------------------------------------------------


def fuse_one_hot_matmul(model: onnx.ModelProto) -> onnx.ModelProto:
    """MatMul(A, W) where A is computed from one integer input `ids` alone and equals
    v * one_hot(ids, len(W)) (OneHot, or Equal against an arange, then Cast) -> Gather(v W,
    ids): an embedding lookup, exactly. Checked by running A's subgraph on random ids."""
    g = model.graph
    values = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    ints = {i.name: i for i in _integer_inputs(g)}
    derived = _derived(g, _consts(g), set())
    for mm in [n for n in g.node if n.op_type == "MatMul" and n.input[1] in values]:
        sources = derived.get(mm.input[0], set())
        table = values[mm.input[1]]
        if len(sources) != 1 or table.ndim != 2:
            continue
        (source,) = sources
        v = _one_hot_value(model, mm.input[0], ints[source], table.shape[0])
        if v is None:
            continue
        name = f"{mm.name}_table"
        g.initializer.append(onnx.numpy_helper.from_array((v * table).astype(np.float32), name))
        gather = onnx.helper.make_node(
            "Gather", [name, source], [mm.output[0]], name=mm.name + "_embedding", axis=0
        )
        g.node.insert(list(g.node).index(mm), gather)
        g.node.remove(mm)  # the one-hot nodes are left to the mask plan, which skips them
    return model


def _one_hot_value(
    model: onnx.ModelProto, codes: str, ids: onnx.ValueInfoProto, depth: int
) -> float | None:
    """v when tensor `codes` is v * one_hot(ids, depth) on random ids, else None."""
    shape = [d.dim_value for d in ids.type.tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(ids.type.tensor_type.elem_type)
    rng = np.random.default_rng(0)
    v = None
    for _ in range(3):
        tokens = rng.integers(0, depth, shape).astype(dtype)
        try:
            (got,) = _run_sub(model, [ids.name], [codes], {ids.name: tokens})
        except Exception:  # not computable from ids alone
            return None
        want = np.eye(depth)[tokens]
        if got.shape != want.shape:
            return None
        v = float(got.max()) if v is None else v
        if v == 0 or not np.array_equal(got, v * want):
            return None
    return v
