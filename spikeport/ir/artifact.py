"""The `.spk` artifact: one versioned zip holding `graph.json` and `tensors.npz`.

graph.json: format version, stage, inputs, outputs, tensors, nodes (attrs inline, every array
named by its npz key with shape and dtype), tensor scales, meta (provenance, calibration,
quantisation profile). tensors.npz is read with allow_pickle=False. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from spikeport import __version__
from spikeport.errors import BadInput, FormatError
from spikeport.fileio import MAX_ARRAY_BYTES, atomic_output, existing_file, read_npz, zip_member
from spikeport.ir.check import check_artifact, check_graph
from spikeport.ir.graph import Graph, Node, TensorInfo

FORMAT = "spikeport.spk"
FORMAT_VERSION = 1


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous copy that keeps a 0-d array 0-d (ascontiguousarray makes it 1-d)."""
    return np.ascontiguousarray(arr).reshape(np.shape(arr))


def _array_entry(key: str, arr: np.ndarray) -> dict[str, Any]:
    return {"key": key, "shape": list(arr.shape), "dtype": str(arr.dtype)}


def to_json(graph: Graph) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Split a graph into its JSON document and its named arrays."""
    arrays: dict[str, np.ndarray] = {}
    nodes = []
    for n in graph.nodes:
        entry = {
            "name": n.name,
            "op": n.op,
            "inputs": n.inputs,
            "output": n.output,
            "attrs": n.attrs,
            "params": {},
        }
        for pname, arr in n.params.items():
            key = f"{n.name}/{pname}"
            arrays[key] = _contiguous(arr)
            entry["params"][pname] = _array_entry(key, arr)
        nodes.append(entry)
    scales = {}
    for t, arr in graph.scales.items():
        key = f"scale/{t}"
        arrays[key] = _contiguous(arr)
        scales[t] = _array_entry(key, arr)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "spikeport_version": __version__,
        "stage": graph.stage,
        "inputs": [
            {"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in graph.inputs
        ],
        "outputs": graph.outputs,
        "tensors": {
            k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in graph.tensors.items()
        },
        "nodes": nodes,
        "scales": scales,
        "meta": graph.meta,
    }
    return doc, arrays


def save(graph: Graph, path: str | os.PathLike[str]) -> None:
    """Write `graph` to `path` atomically (nothing is left behind on failure)."""
    check_graph(graph)
    doc, arrays = to_json(graph)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_output(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("graph.json", json.dumps(doc, indent=1, default=_json_default))
            z.writestr("tensors.npz", buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in graph.json")


GRAPH_JSON_LIMIT = 256 << 20  # bytes graph.json may declare
MAX_DEPTH = 64  # nesting of graph.json (meta and attrs included)


def fingerprint(graph: Graph) -> str:
    """sha256 of the graph as it would be saved (document and arrays), without the version of
    spikeport that wrote it: equal graphs give equal fingerprints, loaded or in memory."""
    doc, arrays = to_json(graph)
    doc.pop("spikeport_version", None)
    h = hashlib.sha256(json.dumps(doc, sort_keys=True, default=_json_default).encode())
    for key in sorted(arrays):
        arr = arrays[key]
        h.update(f"{key}|{arr.dtype.str}|{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def _read_zip(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """graph.json and every array of tensors.npz, each size checked before it is read."""
    p = existing_file(path, "model")
    try:
        with zipfile.ZipFile(p) as z:
            info = zip_member(z, "graph.json", str(p), GRAPH_JSON_LIMIT)
            raw = z.read(info)
            info = zip_member(z, "tensors.npz", str(p), MAX_ARRAY_BYTES)
            with z.open(info) as f:
                arrays = read_npz(io.BytesIO(f.read()), f"{p}: tensors.npz")
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
        raise FormatError(f"{p}: not a readable .spk artifact ({e})") from None
    except FormatError:
        raise
    except BadInput as e:  # the container checks of fileio
        raise FormatError(str(e)) from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise FormatError(f"{p}: graph.json is not UTF-8 text (byte {e.start})") from None
    except RecursionError:
        raise FormatError(f"{p}: graph.json is nested too deeply") from None
    except ValueError as e:
        raise FormatError(f"{p}: graph.json is not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise FormatError(f"{p}: graph.json holds a {type(doc).__name__}, not an object")
    return doc, arrays


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            break
        if isinstance(v, dict):
            stack += [(x, d + 1) for x in v.values()]
        elif isinstance(v, list):
            stack += [(x, d + 1) for x in v]
    return deepest


class _Doc:
    """Hand checks of graph.json's structure, in one place; every error names the entry."""

    def __init__(self, path: Any):
        self.path = path

    def fail(self, where: str, why: str) -> FormatError:
        return FormatError(f"{self.path}: graph.json {where}: {why}")

    def obj(self, v: Any, where: str) -> dict[str, Any]:
        if not isinstance(v, dict):
            raise self.fail(where, f"must be an object, got {type(v).__name__}")
        return v

    def lst(self, v: Any, where: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.fail(where, f"must be a list, got {type(v).__name__}")
        return v

    def text(self, v: Any, where: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(where, f"must be a non-empty string, got {v!r:.40}")
        return v

    def key(self, d: dict[str, Any], k: str, where: str) -> Any:
        if k not in d:
            raise self.fail(where, f"lacks '{k}'")
        return d[k]

    def shape(self, v: Any, where: str) -> tuple[int, ...]:
        dims = self.lst(v, where)
        if not all(type(d) is int and d >= 0 for d in dims):
            raise self.fail(where, f"shape {v!r:.60} must be a list of non-negative integers")
        return tuple(dims)

    def dtype(self, v: Any, where: str) -> str:
        try:
            dt = np.dtype(self.text(v, where))
        except TypeError:
            raise self.fail(where, f"'{v}' is not a numpy dtype") from None
        if dt.hasobject or dt.kind not in "biuf":
            raise self.fail(where, f"dtype '{v}' is not a boolean, integer or float type")
        return str(dt)

    def tensor(self, v: Any, where: str) -> TensorInfo:
        t = self.obj(v, where)
        shape = self.shape(self.key(t, "shape", where), where)
        if any(d == 0 for d in shape):
            raise self.fail(where, f"shape {list(shape)} has a zero axis")
        name = t.get("name", where)
        return TensorInfo(name, shape, self.dtype(self.key(t, "dtype", where), where))

    def array(self, arrays: dict[str, np.ndarray], v: Any, where: str) -> np.ndarray:
        e = self.obj(v, where)
        key = self.text(self.key(e, "key", where), where)
        shape = self.shape(self.key(e, "shape", where), where)
        dtype = self.dtype(self.key(e, "dtype", where), where)
        if key not in arrays:
            raise self.fail(where, f"array '{key}' is missing from tensors.npz")
        arr = arrays[key]
        if arr.shape != shape or str(arr.dtype) != dtype:
            raise self.fail(
                where,
                f"array '{key}' is {arr.dtype}{list(arr.shape)}, graph.json says "
                f"{dtype}{list(shape)}",
            )
        return arr


def _graph_from_doc(doc: dict[str, Any], arrays: dict[str, np.ndarray], path: Any) -> Graph:
    c = _Doc(path)
    if _depth(doc) > MAX_DEPTH:
        raise FormatError(f"{path}: graph.json is nested more than {MAX_DEPTH} levels deep")
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: format {doc.get('format')!r:.40} version "
            f"{doc.get('format_version')!r:.20}; this spikeport reads {FORMAT} "
            f"version {FORMAT_VERSION}"
        )
    nodes = []
    for i, e in enumerate(c.lst(c.key(doc, "nodes", "top level"), "'nodes'")):
        where = f"node {i}"
        e = c.obj(e, where)
        name = c.text(c.key(e, "name", where), where)
        where = f"node '{name}'"
        params = {
            c.text(k, f"{where} params"): c.array(arrays, v, f"{where} param '{k}'")
            for k, v in c.obj(c.key(e, "params", where), f"{where} params").items()
        }
        inputs = [c.text(t, f"{where} inputs") for t in c.lst(c.key(e, "inputs", where), where)]
        nodes.append(
            Node(
                name,
                c.text(c.key(e, "op", where), f"{where} op"),
                inputs,
                c.text(c.key(e, "output", where), f"{where} output"),
                dict(c.obj(c.key(e, "attrs", where), f"{where} attrs")),
                params,
            )
        )
    scales = {
        t: c.array(arrays, v, f"scale of '{t}'")
        for t, v in c.obj(c.key(doc, "scales", "top level"), "'scales'").items()
    }
    inputs = [c.tensor(t, f"input {k}") for k, t in enumerate(c.lst(doc.get("inputs"), "'inputs'"))]
    for k, t in enumerate(c.lst(doc.get("inputs"), "'inputs'")):
        c.text(c.key(t, "name", f"input {k}"), f"input {k} name")
    outputs = [
        c.text(t, "'outputs'") for t in c.lst(c.key(doc, "outputs", "top level"), "'outputs'")
    ]
    tensors = {
        k: c.tensor({"name": k, **c.obj(v, f"tensor '{k}'")}, f"tensor '{k}'")
        for k, v in c.obj(c.key(doc, "tensors", "top level"), "'tensors'").items()
    }
    return Graph(
        inputs=inputs,
        nodes=nodes,
        outputs=outputs,
        stage=c.text(c.key(doc, "stage", "top level"), "'stage'"),
        meta=c.obj(c.key(doc, "meta", "top level"), "'meta'"),
        scales=scales,
        tensors=tensors,
    )


def load(path: str | os.PathLike[str]) -> Graph:
    """Read and fully check a `.spk` file; errors name the file and the bad entry.

    Checked before anything is trusted: the zip (sizes, methods, no encryption), every npz
    header before its array is allocated, graph.json's structure (_Doc), every shape by the op
    rules (check_graph), and the values later stages rely on (check_artifact)."""
    doc, arrays = _read_zip(path)
    graph = _graph_from_doc(doc, arrays, path)
    stored = {k: t.shape for k, t in graph.tensors.items()}
    try:
        check_artifact(graph)
        check_graph(graph)
    except FormatError as e:
        raise FormatError(f"{path}: {e}") from None
    except BadInput as e:  # ShapeMismatch and the like
        raise FormatError(f"{path}: {e}") from None
    for k, t in graph.tensors.items():
        if stored.get(k) != t.shape:
            raise FormatError(
                f"{path}: tensor '{k}' is stored as {stored.get(k)}, its node gives {t.shape}"
            )
    return graph
