"""Whole-graph checks: names, topological order, stage, and every shape by the op rules."""

from __future__ import annotations

from spikeport.errors import FormatError
from spikeport.ir.graph import STAGES, Graph, TensorInfo
from spikeport.ir.ops import OPS, infer_shape


def check_graph(graph: Graph) -> Graph:
    """Validate `graph` and (re)compute the shape of every node output in `graph.tensors`.

    Raises FormatError / ShapeMismatch naming the first bad node or tensor.
    """
    if graph.stage not in STAGES:
        raise FormatError(f"graph stage '{graph.stage}' is not one of {STAGES}")
    known: dict[str, TensorInfo] = {t.name: t for t in graph.inputs}
    seen_nodes: set[str] = set()
    for node in graph.nodes:
        if node.name in seen_nodes:
            raise FormatError(f"node name '{node.name}' is used twice")
        seen_nodes.add(node.name)
        spec = OPS.get(node.op)
        if spec is None:
            raise FormatError(f"node '{node.name}': unknown op '{node.op}'")
        if graph.stage not in spec.stages:
            raise FormatError(
                f"node '{node.name}': op '{node.op}' is not allowed in a '{graph.stage}' graph"
            )
        for t in node.inputs:
            if t not in known:
                raise FormatError(f"node '{node.name}' reads '{t}' before anything writes it")
        if node.output in known:
            raise FormatError(f"tensor '{node.output}' is written twice")
        shape = infer_shape(node, [known[t].shape for t in node.inputs])
        old = graph.tensors.get(node.output)
        known[node.output] = TensorInfo(node.output, shape, old.dtype if old else "float32")
    for out in graph.outputs:
        if out not in known:
            raise FormatError(f"graph output '{out}' is not produced by any node")
    graph.tensors = known
    return graph
