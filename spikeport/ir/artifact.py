"""The `.spk` artifact: one versioned zip holding `graph.json` and `tensors.npz`.

graph.json: format version, stage, inputs, outputs, tensors, nodes (attrs inline, every array
named by its npz key with shape and dtype), tensor scales, meta (provenance, calibration,
quantisation profile). tensors.npz is read with allow_pickle=False. Writes are atomic.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from typing import Any

import numpy as np

from spikeport import __version__
from spikeport.errors import FormatError
from spikeport.fileio import atomic_output, existing_file
from spikeport.ir.check import check_graph
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


def _read_zip(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Any]:
    p = existing_file(path, "model")
    try:
        with zipfile.ZipFile(p) as z:
            doc = json.loads(z.read("graph.json"))
            npz_bytes = z.read("tensors.npz")
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise FormatError(f"{p}: not a readable .spk artifact ({e})") from None
    try:
        arrays = np.load(io.BytesIO(npz_bytes), allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as e:
        raise FormatError(f"{p}: tensors.npz is unreadable ({e})") from None
    return doc, arrays


def _load_array(path: Any, arrays: Any, entry: dict[str, Any], what: str) -> np.ndarray:
    key = entry.get("key")
    try:
        arr = arrays[key]
    except KeyError:
        raise FormatError(f"{path}: {what}: array '{key}' is missing from tensors.npz") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise FormatError(f"{path}: {what}: array '{key}' is corrupted ({e})") from None
    if list(arr.shape) != list(entry["shape"]) or str(arr.dtype) != entry["dtype"]:
        raise FormatError(
            f"{path}: {what}: array '{key}' is {arr.dtype}{list(arr.shape)}, "
            f"graph.json says {entry['dtype']}{entry['shape']}"
        )
    return arr


def load(path: str | os.PathLike[str]) -> Graph:
    """Read and fully check a `.spk` file; errors name the bad entry."""
    doc, arrays = _read_zip(path)
    if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
        raise FormatError(
            f"{path}: format {doc.get('format')!r} version "
            f"{doc.get('format_version')!r}; this spikeport reads {FORMAT} "
            f"version {FORMAT_VERSION}"
        )
    try:
        nodes = []
        for e in doc["nodes"]:
            params = {
                k: _load_array(path, arrays, v, f"node '{e['name']}' param '{k}'")
                for k, v in e["params"].items()
            }
            nodes.append(
                Node(e["name"], e["op"], list(e["inputs"]), e["output"], dict(e["attrs"]), params)
            )
        scales = {
            t: _load_array(path, arrays, v, f"scale of '{t}'") for t, v in doc["scales"].items()
        }
        graph = Graph(
            inputs=[TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in doc["inputs"]],
            nodes=nodes,
            outputs=list(doc["outputs"]),
            stage=doc["stage"],
            meta=doc["meta"],
            scales=scales,
            tensors={
                k: TensorInfo(k, tuple(v["shape"]), v["dtype"]) for k, v in doc["tensors"].items()
            },
        )
    except (KeyError, TypeError) as e:
        raise FormatError(f"{path}: graph.json lacks or mistypes entry {e}") from None
    stored = {k: t.shape for k, t in graph.tensors.items()}
    check_graph(graph)
    for k, t in graph.tensors.items():
        if stored.get(k) != t.shape:
            raise FormatError(
                f"{path}: tensor '{k}' is stored as {stored.get(k)}, its node gives {t.shape}"
            )
    return graph
