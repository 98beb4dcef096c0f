"""Run every zoo model (benchmarks/zoo/work/models/manifest.json, made by build.py) through
spikeport's CLI and write benchmarks/zoo/RESULTS.md and results.json.

Per model, each in a subprocess under one time budget: an ANN-view check (the imported graph's
ANN mode against onnxruntime / LiteRT on the test inputs), then `spikeport convert
--no-t-aware`, `quantize --target sim`, `eval -T 4,8 --onnx|--tflite --json`. Run with .venv's
python; the spikeport imported is the one on PYTHONPATH (this checkout; `make zoo` sets
nothing else).

The zoo asks whether a model goes through at all, so it converts with percentile thresholds:
T-aware conversion (the default, `--t-aware` here) searches every neuron's threshold for T and
took 2 to 9 minutes a model on 2 shared cores (resnet10t 125 s, resnet18 246 s, resnet50
526 s, all passing), which made the whole zoo several hours.

    python benchmarks/zoo/run.py [--only NAME ... [--update]] [--budget 600] [--jobs 2]
                                 [--t-aware [--search quick]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.special import softmax

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
MODELS = HERE / "work" / "models"
RUNS = HERE / "work" / "runs"
STAGES = ("import", "convert", "quantize", "eval")
N_ANN = 8  # test samples in the ANN-view check
MIN_EACH = 10.0  # seconds every model keeps from the --total budget
SPIKEPORT = [sys.executable, "-m", "spikeport"]


@dataclass
class Row:
    model: str
    source: str
    exporter: str
    stage: str = "-"  # the furthest stage that succeeded
    result: str = "fail"  # pass: convert + quantize + eval all succeeded
    ann_rel_diff: float | None = None  # max |ANN view - reference| / max |reference|
    ann_ok: bool = False  # every output within 1e-4 of its range (or 1e-6 absolute)
    ref_noise: float | None = None  # how far the reference moves for 1-ulp input changes
    agree_t4: float | None = None  # eval's agreement with the source model at T = 4
    agree_t8: float | None = None
    cos_t8: float | None = None  # eval's cosine to the source model's output at T = 8
    refusal: str = ""  # the first failing stage's `error:` line, TRACEBACK or TIMEOUT
    seconds: float = 0.0
    labels: int = 0  # distinct labels in the test file: 1 means agreement is trivially 100 %
    measured: str = ""  # when this row was run (UTC): an --update run re-measures some rows


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    """The first `error:` line verbatim, else TRACEBACK when a traceback appeared."""
    if "Traceback" in proc.stderr:
        return "TRACEBACK"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    return lines[0] if lines else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"


def _run(cmd: list[str], deadline: float) -> subprocess.CompletedProcess[str] | None:
    """None when the model's time budget ran out."""
    left = deadline - time.time()
    if left <= 0:
        return None
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=left, env=_env(), cwd=REPO
        )
    except subprocess.TimeoutExpired:
        return None


def ann_check(name: str) -> None:
    """In a subprocess: import the model, run the ANN view on N_ANN test inputs, print the max
    relative difference to the reference runtime over every output (TFLite: the first)."""
    from spikeport.convert import import_model
    from spikeport.convert.pipeline import sample_shapes
    from spikeport.data import load_data
    from spikeport.errors import SpikeportError
    from spikeport.sim import simulate

    entry = _manifest()[name]
    path = MODELS / entry["file"]
    try:
        graph = import_model(path, data_shapes=sample_shapes(MODELS / entry["calib"]))
    except SpikeportError as e:  # one line, as the CLI prints it
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    x = load_data(MODELS / entry["test"], graph.inputs).x
    x = {k: v[:N_ANN] for k, v in x.items()} if isinstance(x, dict) else x[:N_ANN]
    refs = _reference(path, x)
    # the reference's own rounding: how far its outputs move when the float inputs move by one
    # float32 ulp (a deep float32 network can amplify its rounding past 1e-4 of an output)
    moved = _reference(path, _ulp_moved(x))
    noise = max(_rel(a, b) for a, b in zip(refs, moved, strict=True))
    out = simulate(graph, x, 1, "ann").outputs
    diffs, within = [], []
    for k, ref in enumerate(refs[: len(graph.outputs)]):
        ours = out[graph.outputs[k]][0]
        if graph.outputs[k] in graph.meta["source"].get("dropped_softmax", []):
            ours = softmax(ours, axis=-1)  # import dropped it, said so: put it back to compare
        if ours.shape != ref.shape:
            raise SystemExit(f"error: output {k} has shape {ours.shape}, reference {ref.shape}")
        diffs.append(_rel(ours, ref))
        # the family tests' rule: within 1e-4 of the output's range, or 1e-6 absolute (an
        # output that is ~0 everywhere, e.g. a detector's probabilities on synthetic images)
        within.append(bool(np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max() + 1e-6))
    print(json.dumps({"rel_diff": max(diffs), "within": all(within), "ref_noise": noise}))


def _reference(path: Path, x: np.ndarray | dict) -> list[np.ndarray]:
    """Every output of the source model run by its own runtime (onnxruntime or LiteRT)."""
    if path.suffix == ".tflite":
        from spikeport.convert.litert import litert_outputs

        return litert_outputs(path, x)  # every output, (N, C, H, W) like the IR
    from spikeport.eval.evaluate import onnx_outputs

    return onnx_outputs(path, x)  # sample by sample where the file's batch is fixed at 1


def _ulp_moved(x: np.ndarray | dict) -> np.ndarray | dict:
    """The float inputs moved up or down (at random, fixed seed) by one float32 ulp."""
    rng = np.random.default_rng(0)

    def move(v: np.ndarray) -> np.ndarray:
        if not np.issubdtype(v.dtype, np.floating):
            return v
        v = v.astype(np.float32)  # and the direction too: a float64 one moves by float64's ulp
        return np.nextafter(v, np.where(rng.random(v.shape) < 0.5, -np.inf, np.inf).astype(v.dtype))

    return {k: move(v) for k, v in x.items()} if isinstance(x, dict) else move(x)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b|."""
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def run_model(entry: dict, budget: float, convert_flags: tuple[str, ...] = ()) -> Row:
    row = Row(entry["name"], entry["source"], entry["exporter"])
    row.measured = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    with np.load(MODELS / entry["test"]) as z:
        row.labels = len(np.unique(z["y"]))
    started = time.time()
    deadline = started + budget
    work = RUNS / entry["name"]
    work.mkdir(parents=True, exist_ok=True)
    model, calib, test = (str(MODELS / entry[k]) for k in ("file", "calib", "test"))
    ref_flag = "--tflite" if entry["reference"] == "tflite" else "--onnx"
    commands = {
        "import": [sys.executable, __file__, "--ann-check", entry["name"]],
        "convert": [*SPIKEPORT, "convert", model, "--calib", calib, "-o", f"{work}/a.spk", "-q",
                    *convert_flags],
        "quantize": [*SPIKEPORT, "quantize", f"{work}/a.spk", "--calib", calib, "--target", "sim",
                     "-o", f"{work}/q.spk", "-q"],
        "eval": [*SPIKEPORT, "eval", f"{work}/q.spk", "--data", test, "-T", "4,8", ref_flag, model,
                 "--json", f"{work}/r.json", "-q"],
    }  # fmt: skip
    ann_failure = ""
    for stage, cmd in commands.items():
        proc = _run(cmd, deadline)
        if proc is None or proc.returncode != 0:
            why = "TIMEOUT" if proc is None else _why(proc)
            if stage == "import":  # the CLI's convert will say it too; keep going for its line
                ann_failure = f"ANN check: {why}"
                continue
            row.refusal = why
            break
        if stage == "import":
            check = json.loads(proc.stdout.strip().splitlines()[-1])
            row.ann_rel_diff, row.ann_ok = check["rel_diff"], check["within"]
            row.ref_noise = check["ref_noise"]
        row.stage = stage
    row.refusal = row.refusal or ann_failure
    if row.stage == "eval":
        records = {r["T"]: r for r in json.loads((work / "r.json").read_text())["records"]}
        # class scores: argmax agreement with the source model; every output: cosine to it
        row.agree_t4, row.agree_t8 = (records[t].get("agreement_with_ann") for t in (4, 8))
        row.cos_t8 = records[8]["cosine_to_ann"]
        row.result = "pass"
    row.seconds = round(time.time() - started, 1)
    return row


def _manifest() -> dict[str, dict]:
    return {e["name"]: e for e in json.loads((MODELS / "manifest.json").read_text())}


def _beyond(rows: list[Row]) -> list[str]:
    """Passing models whose ANN view is beyond 1e-4 of the reference, with the reference's
    own 1-ulp sensitivity beside the difference."""
    return [
        f"{r.model} ({_fmt(r.ann_rel_diff)}; the reference moves {_fmt(r.ref_noise)} for 1-ulp "
        "input changes)"
        for r in rows
        if r.result == "pass" and not r.ann_ok
    ]


def _kind(refusal: str) -> str:
    """A refusal with node names, quoted values and numbers masked, to group alike ones."""
    return re.sub(r"\b\d+\b", "N", re.sub(r"'[^']*'|\[[^\]]*\]", "…", refusal))


def _fmt(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" if pct else f"{v:.1e}"


def write_results(rows: list[Row], unbuilt: list[dict], convert_flags: str = "") -> None:
    passed = sum(r.stage in ("quantize", "eval") for r in rows)
    total = len(rows) + len(unbuilt)
    dates = sorted({r.measured for r in rows if r.measured})
    when = (
        f"Measured {dates[0]} UTC"
        if len(dates) <= 1
        else f"Measured from {dates[0]} to {dates[-1]} UTC ({len(dates)} runs: rows re-run with "
        "`--only ... --update` after a change carry their own time in results.json)"
    )
    lines = [
        "# Model zoo results",
        "",
        f"{when} by `make zoo` against this checkout's "
        f"spikeport (columns: benchmarks/zoo/README.md), `convert {convert_flags or '-T 4'}`.",
        "",
        f"**{passed} of {total} pass convert+quantize**; {sum(r.result == 'pass' for r in rows)} "
        f"also pass eval; ANN view within 1e-4 of the reference: "
        f"{sum(r.ann_ok for r in rows)}; passing models beyond it: "
        f"{', '.join(_beyond(rows)) or 'none'}.",
        "",
        "| model | source | exporter | stage | result | ANN rel diff | reference 1-ulp | "
        "agree T=4 % | agree T=8 % | cosine T=8 | labels | first refusal | s |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        refusal = r.refusal.replace("|", "\\|")
        lines.append(
            f"| {r.model} | {r.source} | {r.exporter} | {r.stage} | {r.result} | "
            f"{_fmt(r.ann_rel_diff)} | {_fmt(r.ref_noise)} | {_fmt(r.agree_t4, True)} | "
            f"{_fmt(r.agree_t8, True)} | "
            f"{'-' if r.cos_t8 is None else f'{r.cos_t8:.3f}'} | {r.labels} | {refusal} | "
            f"{r.seconds:.0f} |"
        )
    for e in unbuilt:
        lines.append(
            f"| {e['name']} | {e['source']} | {e['exporter']} | - | not built | "
            f"{'- | ' * 7}build: {e['build_error']} | - |"
        )
    lines += [
        "",
        "## Refusals by kind (names and numbers masked)",
        "",
        "| models | refusal |",
        "|---:|---|",
    ]
    kinds = Counter(_kind(r.refusal) for r in rows if r.refusal)
    lines += [f"| {n} | {k.replace('|', chr(92) + '|')} |" for k, n in kinds.most_common()]
    (HERE / "RESULTS.md").write_text("\n".join(lines) + "\n")
    data = {
        "rows": [asdict(r) for r in rows],
        "not_built": unbuilt,
        "pass_convert_quantize": passed,
        "convert_flags": convert_flags,
    }
    (HERE / "results.json").write_text(json.dumps(data, indent=1))


def _updated(rows: list[Row], flags: tuple[str, ...]) -> tuple[list[Row], list[dict]]:
    """The last results.json with `rows` in place of theirs (same conversion flags only)."""
    last = json.loads((HERE / "results.json").read_text())
    if last.get("convert_flags", "") != " ".join(flags):
        raise SystemExit("error: --update needs the conversion flags of results.json's run")
    new = {r.model: r for r in rows}
    merged = [new.pop(d["model"], None) or Row(**d) for d in last["rows"]]
    return merged + list(new.values()), last["not_built"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only these models")
    ap.add_argument("--budget", type=float, default=600, help="seconds per model, all stages")
    ap.add_argument("--total", type=float, default=10800, help="seconds for the whole run")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="models at once")
    ap.add_argument(
        "--t-aware",
        action="store_true",
        help="convert with T-aware conversion (spikeport's default; a search per neuron: "
        "minutes per model here) instead of --no-t-aware",
    )
    ap.add_argument(
        "--search",
        choices=("full", "quick"),  # spikeport.convert.tune.SEARCHES (this process stays light)
        default="full",
        help="with --t-aware: convert's --search (quick: the search for T alone, for the "
        "models whose full search runs past the budget)",
    )
    ap.add_argument(
        "--update",
        action="store_true",
        help="with --only: replace those rows in results.json, keep the others",
    )
    ap.add_argument("--ann-check", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.ann_check:
        ann_check(a.ann_check)
        return
    entries = [e for e in _manifest().values() if not a.only or e["name"] in a.only]
    todo = [e for e in entries if "build_error" not in e]
    end = time.time() + a.total
    if a.search != "full" and not a.t_aware:
        raise SystemExit("error: --search needs --t-aware (the zoo converts --no-t-aware)")
    flags: tuple[str, ...] = () if a.t_aware else ("--no-t-aware",)
    if a.search != "full":
        flags = ("--search", a.search)

    def one(i: int, e: dict) -> Row:
        # a slow model may not eat the others' time: each later one keeps at least MIN_EACH
        left = end - time.time() - MIN_EACH * (len(todo) - i - 1) / a.jobs
        r = run_model(e, max(min(a.budget, left), MIN_EACH), flags)
        print(f"{r.model:32s} {r.stage:9s} {r.seconds:6.1f}s {r.refusal[:110]}", flush=True)
        return r

    # each model runs in subprocesses of one thread each: --jobs of them fill as many cores
    with ThreadPoolExecutor(a.jobs) as pool:
        rows = list(pool.map(one, range(len(todo)), todo))
    unbuilt = [e for e in entries if "build_error" in e]
    if a.only and not a.update:  # a partial run must not replace the full record
        print(f"{sum(r.result == 'pass' for r in rows)} of {len(rows)} pass; results.json and "
              "RESULTS.md left as they were (--update writes these rows into them)")  # fmt: skip
        return
    if a.update:  # the other models' rows from the last full run, in manifest order
        rows, unbuilt = _updated(rows, flags)
    write_results(rows, unbuilt, " ".join(flags))
    print((HERE / "RESULTS.md").read_text().splitlines()[4])


if __name__ == "__main__":
    main()
