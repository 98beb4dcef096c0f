"""Bad input, every verb (issue 19): a table of faulty inputs, each run through the CLI in-process
(click's CliRunner, faithful here: the command's own exception handling decides the exit code
and stderr). For each case: the documented exit code (2 bad input or usage, 1 a failed check),
exactly one stderr line and it starts with `error:`, no traceback, nothing created in the
working folder (no output, no temp file) and no existing file changed or deleted.

The faults are built by class (output paths, .spk structure and values, zip and npz containers,
data files, options and counts, target directories), not for one file each.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from spikeport.cli.main import main

EX = Path(__file__).resolve().parent.parent / "examples"
CNN, CALIB, TEST = EX / "digits_cnn.onnx", EX / "digits_calib.npz", EX / "digits_test.npz"
BERT, TCALIB, TTEST = EX / "text_bert.onnx", EX / "text_calib.npz", EX / "text_test.npz"


def run_cli(args: list[str]) -> tuple[int, str, str, BaseException | None]:
    res = CliRunner().invoke(main, args)
    exc = res.exception if not isinstance(res.exception, SystemExit) else None
    return res.exit_code, res.stdout, res.stderr, exc


# ---------------------------------------------------------------- building faulty files


def _zip(path: Path, members: dict[str, bytes], compress: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compress) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _spk_parts(spk: Path) -> tuple[dict[str, Any], bytes]:
    with zipfile.ZipFile(spk) as z:
        return json.loads(z.read("graph.json")), z.read("tensors.npz")


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _huge_npy(shape: tuple[int, ...]) -> bytes:
    """An .npy whose header declares `shape` (float32) but that holds 16 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f4", "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + b"\0" * 16


def _set_zip_flag(path: Path, member: str, flag: int | None = None, method: int | None = None):
    """Patch a member's local and central headers: general-purpose flag bits or method."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    local = info.header_offset
    for off in [local] + [i for i in range(len(data)) if data[i : i + 4] == b"PK\x01\x02"]:
        sig = bytes(data[off : off + 4])
        if sig == b"PK\x03\x04":
            name_len = struct.unpack_from("<H", data, off + 26)[0]
            if bytes(data[off + 30 : off + 30 + name_len]).decode() != member:
                continue
            fo, mo = off + 6, off + 8
        else:
            name_len = struct.unpack_from("<H", data, off + 28)[0]
            if bytes(data[off + 46 : off + 46 + name_len]).decode() != member:
                continue
            fo, mo = off + 8, off + 10
        if flag is not None:
            struct.pack_into("<H", data, fo, struct.unpack_from("<H", data, fo)[0] | flag)
        if method is not None:
            struct.pack_into("<H", data, mo, method)
    path.write_bytes(bytes(data))
    return path


@dataclass
class Files:
    root: Path
    snn: Path  # CNN, stage snn
    q: Path  # CNN, stage int (profile sim)
    qc: Path  # CNN quantized for the C target
    bert_snn: Path
    bert_q: Path
    cdir: Path  # `emit --target c` of qc
    other_cdir: Path  # `emit --target c` of another model (the MLP)
    bad: dict[str, Path]  # faulty .spk files by name
    data: dict[str, Path]  # faulty data files by name


def _spk_variants(root: Path, q: Path, snn: Path) -> dict[str, Path]:
    doc, npz = _spk_parts(q)
    arrays = _npz_arrays(npz)
    out: dict[str, Path] = {}

    def put(name: str, members: dict[str, bytes]) -> None:
        out[name] = _zip(root / f"{name}.spk", members)

    def edit(name: str, fn: Callable[[dict[str, Any]], None], base: Path = q) -> None:
        d, n = _spk_parts(base)
        fn(d)
        put(name, {"graph.json": json.dumps(d).encode(), "tensors.npz": n})

    def edit_array(name: str, key: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
        a = dict(arrays)
        a[key] = fn(a[key].copy())
        put(name, {"graph.json": json.dumps(doc).encode(), "tensors.npz": _npz_bytes(a)})

    conv = next(i for i, n in enumerate(doc["nodes"]) if n["op"] == "conv2d")
    neuron = next(n for n in doc["nodes"] if n["op"] == "if")

    put("not_utf8", {"graph.json": b"\xff\xfe{\x00\x80", "tensors.npz": npz})
    put("json_list", {"graph.json": b"[1, 2]", "tensors.npz": npz})
    put("json_nested", {"graph.json": b"[" * 100000 + b"]" * 100000, "tensors.npz": npz})
    put("json_truncated", {"graph.json": json.dumps(doc).encode()[:200], "tensors.npz": npz})
    put("no_tensors", {"graph.json": json.dumps(doc).encode()})
    put("tensors_not_zip", {"graph.json": json.dumps(doc).encode(), "tensors.npz": b"hello"})
    edit("params_list", lambda d: d["nodes"][conv].__setitem__("params", [1, 2]))
    edit("attrs_missing", lambda d: d["nodes"][conv].pop("attrs"))
    edit("attrs_empty", lambda d: d["nodes"][conv].__setitem__("attrs", {}))
    edit("stride_zero", lambda d: d["nodes"][conv]["attrs"].__setitem__("strides", [0, 1]))
    edit("stride_str", lambda d: d["nodes"][conv]["attrs"].__setitem__("strides", "11"))
    edit("group_zero", lambda d: d["nodes"][conv]["attrs"].__setitem__("group", 0))
    edit("meta_list", lambda d: d.__setitem__("meta", [1]))
    edit("no_outputs", lambda d: d.__setitem__("outputs", []))
    edit("outputs_str", lambda d: d.__setitem__("outputs", "y"))
    edit("nodes_dict", lambda d: d.__setitem__("nodes", {"a": 1}))
    edit("node_null", lambda d: d["nodes"].__setitem__(0, None))
    edit("shape_str", lambda d: d["inputs"][0].__setitem__("shape", ["a"]))
    edit("shape_negative", lambda d: d["inputs"][0].__setitem__("shape", [-1, 8, 8]))
    edit("shape_huge", lambda d: d["inputs"][0].__setitem__("shape", [2**40, 2**40]))
    edit("version_str", lambda d: d.__setitem__("format_version", "1"))
    edit("no_quant_record", lambda d: d["meta"].pop("quantization"))
    edit("quant_record_list", lambda d: d["meta"].__setitem__("quantization", [1]))
    edit("no_input_scale", lambda d: d["scales"].pop(d["inputs"][0]["name"]))
    edit("max_t_zero", lambda d: d["meta"]["quantization"].__setitem__("max_timesteps", 0))
    edit("dtype_object", lambda d: d["nodes"][conv]["params"]["weight"].__setitem__("dtype", "O"))
    edit_array("threshold_zero", neuron["params"]["threshold"]["key"], lambda a: a * 0)
    edit_array("threshold_nan", neuron["params"]["threshold"]["key"], lambda a: a * np.nan)
    edit_array("threshold_q_zero", neuron["params"]["threshold_q"]["key"], lambda a: a * 0)
    wkey = doc["nodes"][conv]["params"]["weight"]["key"]
    edit_array("weight_inf", wkey, lambda a: a + np.inf)
    # npz member whose header declares 2^40 rows
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        for k, v in arrays.items():
            b = io.BytesIO()
            np.lib.format.write_array(b, v)
            z.writestr(f"{k}.npy", _huge_npy((2**40, 8)) if k == wkey else b.getvalue())
    put(
        "npz_huge_header", {"graph.json": json.dumps(doc).encode(), "tensors.npz": inner.getvalue()}
    )
    # zip bomb: 300 MB of spaces in graph.json
    bomb = root / "bomb.spk"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("graph.json", "w", force_zip64=True) as f:
            chunk = b" " * (1 << 20)
            for _ in range(300):
                f.write(chunk)
        z.writestr("tensors.npz", npz)
    out["zip_bomb"] = bomb
    enc = _zip(root / "encrypted.spk", {"graph.json": json.dumps(doc).encode(), "tensors.npz": npz})
    out["encrypted"] = _set_zip_flag(enc, "graph.json", flag=0x1)
    unk = _zip(root / "method.spk", {"graph.json": json.dumps(doc).encode(), "tensors.npz": npz})
    out["unknown_compression"] = _set_zip_flag(unk, "tensors.npz", method=99)
    out["empty_file"] = root / "empty.spk"
    out["empty_file"].write_bytes(b"")
    out["directory"] = root / "adir.spk"
    out["directory"].mkdir()
    out["truncated"] = root / "truncated.spk"
    out["truncated"].write_bytes(q.read_bytes()[:700])
    return out


def _data_variants(root: Path) -> dict[str, Path]:
    x = np.load(CALIB)["x"]
    t = np.load(TEST)
    out: dict[str, Path] = {}

    def save(name: str, **arrays: np.ndarray) -> None:
        out[name] = root / f"{name}.npz"
        np.savez(out[name], **arrays)

    out["npy_renamed"] = root / "npy_renamed.npz"
    with open(out["npy_renamed"], "wb") as f:
        np.save(f, x)
    save("complex_x", x=x.astype(np.complex64) + 1j, y=t["y"][: len(x)])
    save("nan_x", x=np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x))
    save("inf_x", x=x + np.inf)
    save("bool_x", x=x > 0)
    save("empty_x", x=x[:0])
    save("scalar_x", x=np.float32(1))
    save("labels_float", x=t["x"], y=t["y"].astype(np.float32))
    save("labels_2d", x=t["x"], y=t["y"][:, None])
    huge = root / "huge_header.npz"
    _zip(huge, {"x.npy": _huge_npy((2**40, 1, 8, 8))}, zipfile.ZIP_STORED)
    out["huge_header"] = huge
    out["text"] = root / "not_npz.npz"
    out["text"].write_text("x,y\n1,2\n")
    out["bomb"] = root / "bomb.npz"
    with zipfile.ZipFile(out["bomb"], "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            b = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                b, {"descr": "<f4", "fortran_order": False, "shape": (2**26, 1, 8, 8)}
            )
            f.write(b.getvalue())
            chunk = b"\0" * (1 << 20)
            for _ in range(300):
                f.write(chunk)
    npy = io.BytesIO()
    np.lib.format.write_array(npy, x)
    out["encrypted"] = _set_zip_flag(
        _zip(root / "enc.npz", {"x.npy": npy.getvalue()}), "x.npy", flag=0x1
    )
    tt = np.load(TTEST)
    ids = tt["input_ids"].copy()
    ids[0, 1] = 10_000
    save("token_beyond_vocab", input_ids=ids, attention_mask=tt["attention_mask"], y=tt["y"])
    ids = tt["input_ids"].copy()
    ids[2, 0] = -3
    save("token_negative", input_ids=ids, attention_mask=tt["attention_mask"], y=tt["y"])
    save("token_float", input_ids=tt["input_ids"] + 0.5, attention_mask=tt["attention_mask"])
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("badin")

    def ok(*args: object) -> None:
        code, out, err, exc = run_cli([str(a) for a in args])
        assert code == 0 and exc is None, (args, out, err, exc)

    # Percentile conversions (--no-t-aware): these files only need to be valid for the stages
    # after convert; the T-aware search would add a minute to every run of this file.
    ok("convert", CNN, "--calib", CALIB, "--no-t-aware", "-o", root / "cnn.spk", "-q")
    ok("quantize", root / "cnn.spk", "--calib", CALIB, "-o", root / "cnn_q.spk", "-q")
    ok("quantize", root / "cnn.spk", "--calib", CALIB, "--target", "c", "-o", root / "c.spk", "-q")
    ok("emit", root / "c.spk", "--target", "c", "-o", root / "cdir", "-q")
    mlp = EX / "digits_mlp.onnx"
    ok("convert", mlp, "--calib", CALIB, "--no-t-aware", "-o", root / "mlp.spk", "-q")
    ok("quantize", root / "mlp.spk", "--calib", CALIB, "--target", "c", "-o", root / "mq.spk", "-q")
    ok("emit", root / "mq.spk", "--target", "c", "-o", root / "mlp_cdir", "-q")
    ok("convert", BERT, "--calib", TCALIB, "--no-t-aware", "-o", root / "bert.spk", "-q")
    ok("quantize", root / "bert.spk", "--calib", TCALIB, "-o", root / "bert_q.spk", "-q")
    return Files(
        root,
        root / "cnn.spk",
        root / "cnn_q.spk",
        root / "c.spk",
        root / "bert.spk",
        root / "bert_q.spk",
        root / "cdir",
        root / "mlp_cdir",
        _spk_variants(root, root / "cnn_q.spk", root / "cnn.spk"),
        _data_variants(root),
    )


# ---------------------------------------------------------------- the table

# A case: (id, args built from (files, work dir), expected exit code). Outputs go in the work
# dir, which also holds a user's file that must survive.
Args = Callable[[Files, Path], list[object]]
CASES: list[tuple[str, Args, int]] = []


def case(name: str, code: int = 2) -> Callable[[Args], Args]:
    def deco(fn: Args) -> Args:
        CASES.append((name, fn, code))
        return fn

    return deco


# Output paths, for every verb that writes a file.
WRITERS: dict[str, Callable[[Files, str], list[object]]] = {
    "convert": lambda f, o: ["convert", CNN, "--calib", CALIB, "-o", o],
    "quantize": lambda f, o: ["quantize", f.snn, "--calib", CALIB, "-o", o],
    "finetune": lambda f, o: [
        "finetune",
        f.snn,
        "--data",
        CALIB.parent / "digits_train.npz",
        "--epochs",
        "1",
        "-o",
        o,
    ],
    "eval-json": lambda f, o: ["eval", f.q, "--data", TEST, "-T", "1", "--json", o],
    "eval-plot": lambda f, o: ["eval", f.q, "--data", TEST, "-T", "1", "--plot", o],
    "emit": lambda f, o: ["emit", f.qc, "--target", "c", "-o", o],
}
BAD_OUTPUTS: dict[str, Callable[[Path], str]] = {
    "existing_dir": lambda w: str(w / "somedir"),
    "empty": lambda w: "",
    "dot": lambda w: ".",
    "dotdot": lambda w: "..",
    "too_long": lambda w: str(w / ("n" * 300 + ".spk")),
    "parent_is_file": lambda w: str(w / "keep.txt" / "out.spk"),
    "trailing_slash": lambda w: str(w / "new") + "/",
    "unwritable": lambda w: "/proc/spikeport_out.spk",
}
for verb, make in WRITERS.items():
    for kind, path in BAD_OUTPUTS.items():
        if verb == "emit" and kind in ("existing_dir", "trailing_slash"):
            continue  # a directory output: see the emit cases
        case(f"{verb}-out-{kind}")(lambda f, w, make=make, path=path: make(f, path(w)))

# .spk faults, for every verb that reads one.
READERS: dict[str, Callable[[Files, Path, Path], list[object]]] = {
    "inspect": lambda f, m, w: ["inspect", m],
    "quantize": lambda f, m, w: ["quantize", m, "--calib", CALIB, "-o", w / "o.spk"],
    "eval": lambda f, m, w: ["eval", m, "--data", TEST, "-T", "1", "--json", w / "r.json"],
    "emit": lambda f, m, w: ["emit", m, "--target", "c", "-o", w / "odir"],
    "verify": lambda f, m, w: ["verify", m, f.cdir, "--data", TEST, "-n", "2"],
    "finetune": lambda f, m, w: ["finetune", m, "--data", TEST, "--epochs", "1", "-o", w / "o.spk"],
}
SPK_FAULTS = [
    "not_utf8",
    "json_list",
    "json_nested",
    "json_truncated",
    "no_tensors",
    "tensors_not_zip",
    "params_list",
    "attrs_missing",
    "attrs_empty",
    "stride_zero",
    "stride_str",
    "group_zero",
    "meta_list",
    "no_outputs",
    "outputs_str",
    "nodes_dict",
    "node_null",
    "shape_str",
    "shape_negative",
    "shape_huge",
    "version_str",
    "no_quant_record",
    "quant_record_list",
    "no_input_scale",
    "max_t_zero",
    "dtype_object",
    "threshold_zero",
    "threshold_nan",
    "threshold_q_zero",
    "weight_inf",
    "npz_huge_header",
    "zip_bomb",
    "encrypted",
    "unknown_compression",
    "empty_file",
    "directory",
    "truncated",
]
for verb, make in READERS.items():
    for fault in SPK_FAULTS:
        case(f"{verb}-spk-{fault}")(lambda f, w, make=make, fault=fault: make(f, f.bad[fault], w))
    case(f"{verb}-spk-missing")(lambda f, w, make=make: make(f, w / "nope.spk", w))

# Data faults, for every verb that reads data.
DATA_USERS: dict[str, Callable[[Files, Path, Path], list[object]]] = {
    "convert": lambda f, d, w: ["convert", CNN, "--calib", d, "-o", w / "o.spk"],
    "quantize": lambda f, d, w: ["quantize", f.snn, "--calib", d, "-o", w / "o.spk"],
    "eval": lambda f, d, w: ["eval", f.q, "--data", d, "-T", "1", "--json", w / "r.json"],
    "verify": lambda f, d, w: ["verify", f.qc, f.cdir, "--data", d, "-n", "2"],
    "finetune": lambda f, d, w: [
        "finetune",
        f.snn,
        "--data",
        d,
        "--epochs",
        "1",
        "-o",
        w / "o.spk",
    ],
}
IMAGE_DATA_FAULTS = [
    "npy_renamed",
    "complex_x",
    "nan_x",
    "inf_x",
    "bool_x",
    "empty_x",
    "scalar_x",
    "huge_header",
    "text",
    "bomb",
    "encrypted",
]
for verb, make in DATA_USERS.items():
    for fault in IMAGE_DATA_FAULTS:
        case(f"{verb}-data-{fault}")(lambda f, w, make=make, fault=fault: make(f, f.data[fault], w))
    case(f"{verb}-data-missing")(lambda f, w, make=make: make(f, w / "nope.npz", w))
for verb in ("eval", "finetune"):
    for fault in ("labels_float", "labels_2d"):
        case(f"{verb}-data-{fault}")(
            lambda f, w, verb=verb, fault=fault: DATA_USERS[verb](f, f.data[fault], w)
        )

TEXT_USERS: dict[str, Callable[[Files, Path, Path], list[object]]] = {
    "convert": lambda f, d, w: ["convert", BERT, "--calib", d, "-o", w / "o.spk"],
    "quantize": lambda f, d, w: ["quantize", f.bert_snn, "--calib", d, "-o", w / "o.spk"],
    "eval": lambda f, d, w: ["eval", f.bert_q, "--data", d, "-T", "1", "--json", w / "r.json"],
    "finetune": lambda f, d, w: [
        "finetune",
        f.bert_snn,
        "--data",
        d,
        "--epochs",
        "1",
        "-o",
        w / "o.spk",
    ],
}
for verb, make in TEXT_USERS.items():
    for fault in ("token_beyond_vocab", "token_negative", "token_float"):
        case(f"{verb}-text-{fault}")(lambda f, w, make=make, fault=fault: make(f, f.data[fault], w))

# Options and counts.
OPTION_CASES: dict[str, tuple[Args, int]] = {
    "convert-T-abc": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "-T", "abc", "-o", w / "o.spk"],
        2,
    ),
    "convert-T-0": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "-T", "0", "-o", w / "o.spk"],
        2,
    ),
    "convert-extra-neurons-negative": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--extra-neurons", "-1", "-o", w / "o.spk"],
        2,
    ),
    "convert-extra-neurons-nan": (
        lambda f, w: [
            "convert",
            CNN,
            "--calib",
            CALIB,
            "--extra-neurons",
            "nan",
            "-o",
            w / "o.spk",
        ],
        2,
    ),
    "convert-tune-samples-0": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--tune-samples", "0", "-o", w / "o.spk"],
        2,
    ),
    **{  # options of the T-aware search that --no-t-aware turns off
        f"convert-no-t-aware{option[1:]}": (
            lambda f, w, given=(option, value): [
                "convert",
                CNN,
                "--calib",
                CALIB,
                "--no-t-aware",
                *given,
                "-o",
                w / "o.spk",
            ],
            2,
        )
        for option, value in (
            ("--tune-samples", "40"),
            ("--extra-neurons", "1"),
            ("--search", "quick"),
        )
    },
    "convert-search-unknown": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--search", "fast", "-o", w / "o.spk"],
        2,
    ),
    "convert-percentile-200": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--percentile", "200", "-o", w / "o.spk"],
        2,
    ),
    "convert-percentile-nan": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--percentile", "nan", "-o", w / "o.spk"],
        2,
    ),
    "convert-unknown-option": (
        lambda f, w: ["convert", CNN, "--calib", CALIB, "--bogus", "-o", w / "o.spk"],
        2,
    ),
    "convert-missing-option": (lambda f, w: ["convert", CNN, "-o", w / "o.spk"], 2),
    "convert-not-a-model": (lambda f, w: ["convert", TEST, "--calib", CALIB, "-o", w / "o.spk"], 2),
    "unknown-verb": (lambda f, w: ["frobnicate"], 2),
    "convert-out-is-its-calib": (
        lambda f, w: ["convert", CNN, "--calib", w / "keep.txt", "-o", w / "keep.txt"],
        2,
    ),
    "quantize-out-is-its-model": (
        lambda f, w: ["quantize", w / "keep.txt", "--calib", CALIB, "-o", w / "keep.txt"],
        2,
    ),
    "eval-json-is-plot": (
        lambda f, w: ["eval", f.q, "--data", TEST, "--json", w / "r", "--plot", w / "r"],
        2,
    ),
    "eval-json-is-data": (
        lambda f, w: ["eval", f.q, "--data", w / "keep.txt", "--json", w / "keep.txt"],
        2,
    ),
    "finetune-out-is-its-data": (
        lambda f, w: ["finetune", f.snn, "--data", w / "keep.txt", "-o", w / "keep.txt"],
        2,
    ),
    "quantize-bad-target": (
        lambda f, w: ["quantize", f.snn, "--calib", CALIB, "--target", "bogus", "-o", w / "o.spk"],
        2,
    ),
    "quantize-max-T-0": (
        lambda f, w: ["quantize", f.snn, "--calib", CALIB, "--max-T", "0", "-o", w / "o.spk"],
        2,
    ),
    "quantize-max-T-neg": (
        lambda f, w: ["quantize", f.snn, "--calib", CALIB, "--max-T", "-1", "-o", w / "o.spk"],
        2,
    ),
    "eval-T-abc": (lambda f, w: ["eval", f.q, "--data", TEST, "-T", "abc"], 2),
    "eval-T-0": (lambda f, w: ["eval", f.q, "--data", TEST, "-T", "0"], 2),
    "eval-T-neg": (lambda f, w: ["eval", f.q, "--data", TEST, "-T", "-1"], 2),
    "eval-T-huge": (lambda f, w: ["eval", f.q, "--data", TEST, "-T", "100000000000"], 2),
    "eval-mode-bogus": (lambda f, w: ["eval", f.q, "--data", TEST, "--mode", "bogus"], 2),
    "eval-require-bad": (lambda f, w: ["eval", f.q, "--data", TEST, "--require", "x"], 2),
    "eval-require-acc-2": (lambda f, w: ["eval", f.q, "--data", TEST, "--require", "1:2"], 2),
    "eval-onnx-missing": (lambda f, w: ["eval", f.q, "--data", TEST, "--onnx", w / "n.onnx"], 2),
    "eval-missed-bar": (
        lambda f, w: ["eval", f.q, "--data", TEST, "-T", "1", "--require", "1:0.9999"],
        1,
    ),
    "emit-bad-target": (lambda f, w: ["emit", f.qc, "--target", "bogus", "-o", w / "o"], 2),
    "emit-snn-graph": (lambda f, w: ["emit", f.snn, "--target", "c", "-o", w / "o"], 2),
    "emit-into-user-dir": (lambda f, w: ["emit", f.qc, "--target", "c", "-o", w / "somedir"], 2),
    "emit-onto-file": (lambda f, w: ["emit", f.qc, "--target", "c", "-o", w / "keep.txt"], 2),
    "emit-into-cwd": (lambda f, w: ["emit", f.qc, "--target", "c", "-o", w], 2),
    "emit-c-option-on-nir": (
        lambda f, w: ["emit", f.qc, "--target", "nir", "--max-T", "8", "-o", w / "o"],
        2,
    ),
    "verify-n-0": (lambda f, w: ["verify", f.qc, f.cdir, "--data", TEST, "-n", "0"], 2),
    "verify-n-neg": (lambda f, w: ["verify", f.qc, f.cdir, "--data", TEST, "-n", "-1"], 2),
    "verify-T-0": (lambda f, w: ["verify", f.qc, f.cdir, "--data", TEST, "-T", "0"], 2),
    "verify-T-neg": (lambda f, w: ["verify", f.qc, f.cdir, "--data", TEST, "-T", "-1"], 2),
    "verify-not-a-dir": (lambda f, w: ["verify", f.qc, w / "keep.txt", "--data", TEST], 2),
    "verify-user-dir": (lambda f, w: ["verify", f.qc, w / "somedir", "--data", TEST], 2),
    "verify-other-model": (
        lambda f, w: ["verify", f.qc, f.other_cdir, "--data", TEST, "-n", "2"],
        2,
    ),
    "verify-manifest-list": (lambda f, w: ["verify", f.qc, w / "listdir", "--data", TEST], 2),
    "verify-manifest-bad-json": (lambda f, w: ["verify", f.qc, w / "badjson", "--data", TEST], 2),
    "flash-board-bogus": (lambda f, w: ["flash", f.cdir, "--board", "bogus!board"], 2),
    "flash-board-unknown": (lambda f, w: ["flash", f.cdir, "--board", "bogus"], 2),
    "flash-n-0": (lambda f, w: ["flash", f.cdir, "--board", "qemu-mps2-an385", "-n", "0"], 2),
    "flash-n-neg": (lambda f, w: ["flash", f.cdir, "--board", "qemu-mps2-an385", "-n", "-1"], 2),
    "flash-T-0": (lambda f, w: ["flash", f.cdir, "--board", "qemu-mps2-an385", "-T", "0"], 2),
    "flash-T-neg": (lambda f, w: ["flash", f.cdir, "--board", "qemu-mps2-an385", "-T", "-1"], 2),
    "flash-user-dir": (lambda f, w: ["flash", w / "somedir", "--board", "qemu-mps2-an385"], 2),
    "flash-manifest-list": (lambda f, w: ["flash", w / "listdir", "--board", "qemu-mps2-an385"], 2),
    "finetune-T-0": (
        lambda f, w: ["finetune", f.snn, "--data", TEST, "-T", "0", "-o", w / "o.spk"],
        2,
    ),
    "finetune-epochs-neg": (
        lambda f, w: ["finetune", f.snn, "--data", TEST, "--epochs", "-1", "-o", w / "o.spk"],
        2,
    ),
    "finetune-lr-nan": (
        lambda f, w: ["finetune", f.snn, "--data", TEST, "--lr", "nan", "-o", w / "o.spk"],
        2,
    ),
    "finetune-batch-0": (
        lambda f, w: ["finetune", f.snn, "--data", TEST, "--batch-size", "0", "-o", w / "o.spk"],
        2,
    ),
    "finetune-bad-target": (
        lambda f, w: ["finetune", f.snn, "--data", TEST, "--target", "bogus", "-o", w / "o.spk"],
        2,
    ),
    "finetune-int-graph": (
        lambda f, w: ["finetune", f.q, "--data", TEST, "--epochs", "1", "-o", w / "o.spk"],
        2,
    ),
}
for _name, (_fn, _code) in OPTION_CASES.items():
    case(_name, _code)(_fn)


def _snapshot(root: Path) -> dict[str, str]:
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return snap


def _workdir(tmp: Path) -> Path:
    """A folder as a user has it: a file and a directory of theirs, and two directories with a
    manifest that is not spikeport's (a JSON list, broken JSON)."""
    tmp.mkdir()
    (tmp / "keep.txt").write_text("mine\n")
    (tmp / "somedir").mkdir()
    (tmp / "somedir" / "notes.txt").write_text("also mine\n")
    (tmp / "listdir").mkdir()
    (tmp / "listdir" / "spikeport-target.json").write_text("[1, 2]")
    (tmp / "badjson").mkdir()
    (tmp / "badjson" / "spikeport-target.json").write_text("{")
    return tmp


@pytest.mark.parametrize("name,args,code", CASES, ids=[c[0] for c in CASES])
def test_bad_input(files: Files, tmp_path: Path, monkeypatch, name: str, args: Args, code: int):
    work = _workdir(tmp_path / "work")
    monkeypatch.chdir(work)
    before = _snapshot(work)
    given = _snapshot(files.root)
    got, out, err, exc = run_cli([str(a) for a in args(files, work)])
    assert exc is None, f"uncaught {type(exc).__name__}: {exc}"
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert got == code, (got, err)
    assert _snapshot(work) == before, "the work dir changed"
    assert _snapshot(files.root) == given, "an input changed"


def test_a_full_disk_mid_write_is_one_line_and_leaves_nothing(files, tmp_path, monkeypatch):
    """ENOSPC (or EDQUOT, EROFS...) at the final write: exit 2 naming the file, no temporary."""
    import errno

    import spikeport.ir.artifact as artifact

    def full(file, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(file))

    monkeypatch.setattr(artifact.zipfile.ZipFile, "writestr", full)
    code, _, err, exc = run_cli(
        ["quantize", str(files.snn), "--calib", str(CALIB), "-o", str(tmp_path / "o.spk")]
    )
    assert exc is None and code == 2 and err.count("\n") == 1, err
    assert "No space left on device" in err and "o.spk" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failing_plot_leaves_no_json_behind(files, tmp_path, monkeypatch):
    import spikeport.eval.report as report

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(report, "plot_png", broken)
    args = [
        "eval",
        str(files.q),
        "--data",
        str(TEST),
        "-T",
        "1",
        "--json",
        str(tmp_path / "r.json"),
    ]
    code, _, err, exc = run_cli(args + ["--plot", str(tmp_path / "r.png")])
    assert exc is None and code == 3 and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_c_only_emit_option_is_named_as_typed(files, tmp_path):
    got, _, err, _ = run_cli(
        ["emit", str(files.qc), "--target", "nir", "--max-T", "8", "-o", str(tmp_path / "o")]
    )
    assert got == 2 and "takes no --max-T (that option is for 'c')" in err, err
