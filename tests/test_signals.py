"""Signals, concurrency and file modes (issue 19): SIGINT / SIGTERM during a write leave no
temporary behind and end in one line; concurrent emits into one directory both succeed (the
last wins); outputs follow the umask. These need real processes where signals are involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from spikeport.convert import convert
from spikeport.fileio import atomic_output
from spikeport.ir import load, save
from spikeport.quantize import get_profile, quantize
from spikeport.targets import MANIFEST, emit

EX = Path(__file__).resolve().parent.parent / "examples"
ROOT = Path(__file__).resolve().parent.parent

# A CLI with one more verb that stops in the middle of writing a file and a directory.
SLOW = """
import sys, time, click
from spikeport.cli.main import main
from spikeport.fileio import atomic_output, temp_dir_beside

@main.command("slow-write")
@click.argument("out")
def slow(out):
    with temp_dir_beside(out + ".d") as d, atomic_output(out) as tmp:
        (d / "part").write_text("x")
        tmp.write_text("half")
        print("ready", flush=True)
        time.sleep(60)

main()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop("SPIKEPORT_TRACEBACK", None)
    return env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_leaves_nothing_and_one_line(tmp_path, sig):
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW, "slow-write", str(tmp_path / "out.spk")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        # a shell starts background jobs with SIGINT ignored, and Python then keeps ignoring
        # it (nohup's convention, which the CLI respects): the child gets the default back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ")
    assert sorted(os.listdir(tmp_path)) == []


def test_sigterm_at_any_moment_of_a_real_convert_leaves_no_temporary(tmp_path):
    cmd = [sys.executable, "-m", "spikeport", "convert", str(EX / "digits_cnn.onnx")]
    cmd += ["--calib", str(EX / "digits_calib.npz"), "-o", str(tmp_path / "o.spk"), "-q"]
    rng = np.random.default_rng(0)
    for delay in rng.uniform(0.2, 2.0, 6):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=_env())
        time.sleep(delay)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert "Traceback" not in err
        assert proc.returncode in (0, 130, -signal.SIGTERM), err
        left = [p for p in os.listdir(tmp_path) if p != "o.spk"]
        assert left == [], left


@pytest.fixture(scope="module")
def graph_c():
    snn = convert(EX / "digits_cnn.onnx", EX / "digits_calib.npz")
    return quantize(snn, np.load(EX / "digits_calib.npz")["x"], get_profile("c"))


def test_concurrent_emits_into_one_directory_both_succeed(graph_c, tmp_path):
    out, errors = tmp_path / "c", []

    def run() -> None:
        try:
            for _ in range(3):
                emit(graph_c, "c", out)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert (out / MANIFEST).is_file() and (out / "model.c").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # nothing aside is left


def test_emit_replaces_its_own_directory_but_never_a_users(graph_c, tmp_path):
    from spikeport.errors import BadInput

    out = tmp_path / "c"
    emit(graph_c, "c", out)
    emit(graph_c, "c", out)  # its own: replaced
    user = tmp_path / "mine"
    user.mkdir()
    (user / "thesis.tex").write_text("years of work")
    with pytest.raises(BadInput, match="not written by `spikeport emit`"):
        emit(graph_c, "c", user)
    assert (user / "thesis.tex").read_text() == "years of work"


def test_outputs_follow_the_umask(graph_c, tmp_path):
    old = os.umask(0o027)
    try:
        save(graph_c, tmp_path / "m.spk")
        emit(graph_c, "c", tmp_path / "c")
    finally:
        os.umask(old)
    assert (tmp_path / "m.spk").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o750
    assert load(tmp_path / "m.spk").stage == "int"


def test_a_failed_block_leaves_no_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
