"""C target: bit-exact with the integer simulator on every model case, at every step.

Tiers: host tests need a C compiler (cc); QEMU tests need gcc-arm-none-eabi, newlib and
qemu-system-arm (installed by `make test` as root). Missing tools make those tests skip, with
the reason, never pass.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
import subprocess

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spikeport.cli.main import main
from spikeport.errors import BadInput, CapabilityExceeded, CheckFailed
from spikeport.ir import save
from spikeport.quantize import Profile, quantize
from spikeport.targets import TARGETS, emit, get_target, verify
from spikeport.targets.c import boards, c_inputs, check_one_batch
from spikeport.targets.c.flash import flash_qemu
from spikeport.targets.c.run import run_host
from spikeport.targets.compare import random_inputs, reference

HAS_CC = shutil.which("cc") is not None and shutil.which("make") is not None
HAS_ARM = all(shutil.which(t) for t in ("arm-none-eabi-gcc", "qemu-system-arm"))
needs_cc = pytest.mark.skipif(not HAS_CC, reason="no host C compiler (cc) / make")
needs_qemu = pytest.mark.skipif(not HAS_ARM, reason="gcc-arm-none-eabi / qemu-system-arm missing")

BATCH, EXAMPLES_PER_MODEL = 20, 50  # 50 hypothesis batches of 20 = 1,000 inputs per model


@pytest.fixture(scope="module")
def emitted(cases, tmp_path_factory):
    root = tmp_path_factory.mktemp("c")
    out = {}
    for name, case in cases.items():
        emit(case.int, "c", root / name)
        out[name] = (case, root / name)
    return out


def codes_to_x(case, codes: np.ndarray) -> np.ndarray:
    """Float inputs that encode to exactly these int8 codes."""
    return (
        codes.reshape((len(codes),) + case.int.input.shape) * case.int.scales[case.int.input.name]
    )


@needs_cc
@pytest.mark.parametrize(
    "name", ["digits_cnn", "digits_mlp", "residual", "concat_pool", "wide_mlp"]
)
def test_host_bit_exact_on_random_inputs(emitted, name):
    """1,000 random int8 inputs per model (hypothesis), T = 8: spikes of every layer and the
    output accumulators equal the simulator's at every step."""
    check_random_batches(*emitted[name])


def check_random_batches(case, outdir, also=None, steps=(8,)) -> None:
    """EXAMPLES_PER_MODEL hypothesis batches of BATCH random int8 inputs, each T of `steps`, on
    the host build; `also(x)` sees every batch after its check."""
    size = int(np.prod(case.int.input.shape))

    @settings(
        max_examples=EXAMPLES_PER_MODEL,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(arrays(np.int64, (BATCH, size), elements=st.integers(-127, 127)))
    def check(codes):
        x = codes_to_x(case, codes)
        for T in steps:
            check_one_batch(case.int, outdir, x, T, run_host)
        if also is not None:
            also(x)

    check()


# Graded spikes (spike_bits b, convert --spike-bits): every fixture with its own b, signed
# neurons in digits_cnn and wide_mlp, a bipolar neuron in bipolar_mlp. 1,000 random inputs each.
SIGNED = ("digits_cnn", "wide_mlp")
GRADED_BITS = {
    "digits_cnn": 2,
    "digits_mlp": 3,
    "residual": 4,
    "concat_pool": 2,
    "wide_mlp": 3,
    "bipolar_mlp": 2,
}


@pytest.fixture(scope="module")
def graded_emitted(cases, tmp_path_factory):
    from fixture_models import bipolar_mlp

    from spikeport.convert import convert
    from spikeport.quantize import get_profile

    root = tmp_path_factory.mktemp("c_graded")
    model, x = bipolar_mlp()
    onnx.save(model, root / "bipolar_mlp.onnx")
    np.savez(root / "bipolar_mlp_calib.npz", x=x)
    out = {}
    for name, bits in GRADED_BITS.items():
        src = (root / "bipolar_mlp.onnx", root / "bipolar_mlp_calib.npz")
        if name in cases:
            src = (cases[name].onnx, cases[name].calib)
        snn = convert(*src, signed=name in SIGNED, spike_bits=bits)
        q = quantize(snn, np.load(src[1])["x"], get_profile("c"), max_timesteps=8)
        emit(q, "c", root / name)
        case = dataclasses.replace(cases["digits_mlp"], name=name, snn=snn, int=q)
        out[name] = (case, root / name)
    return out


@needs_cc
@pytest.mark.parametrize("name", sorted(GRADED_BITS))
def test_host_bit_exact_with_graded_spikes(graded_emitted, name):
    """1,000 random int8 inputs per model (hypothesis), T = 8, graded neurons: every layer's
    counts and the output accumulators equal the simulator's at every step; the counts do
    go past +-1, and below 0 in digits_cnn (signed: its second conv's neurons take counts back)
    and bipolar_mlp."""
    case, outdir = graded_emitted[name]
    assert "#define SPK_GRADED 1" in (outdir / "model.h").read_text()
    seen: list[int] = []

    def extremes(x: np.ndarray) -> None:
        for spikes in reference(case.int, x, 8)[1].values():
            seen.extend((int(spikes.min()), int(spikes.max())))

    check_random_batches(case, outdir, extremes)
    assert max(seen) > 1
    if name in ("digits_cnn", "bipolar_mlp"):
        assert min(seen) < 0


@needs_qemu
def test_cortex_m3_under_qemu_is_bit_exact_with_graded_spikes(graded_emitted):
    _, outdir = graded_emitted["digits_cnn"]
    report = flash_qemu(outdir, None, 20, 8, count=False)
    assert report["bit_exact"]


def test_spikes_wider_than_int8_are_refused(cases, tmp_path):
    from spikeport.convert.balance import grade_neurons

    snn = grade_neurons(copy.deepcopy(cases["digits_mlp"].snn), 8)
    q = quantize(snn, np.load(cases["digits_mlp"].calib)["x"], Profile("sim"))
    _refused(q, tmp_path, "spike_bits 8: target 'c' carries spikes of at most 7 bits")


@needs_cc
def test_host_bit_exact_on_test_data(emitted):
    case, outdir = emitted["digits_cnn"]
    assert verify(case.int, outdir, case.test_x, T=8)["samples"] == len(case.test_x)


def test_emitted_c_is_integer_only_and_self_contained(emitted):
    for _, outdir in emitted.values():
        src = (outdir / "model.c").read_text() + (outdir / "model.h").read_text()
        src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)  # comments may name what code avoids
        assert not re.search(r"\b(float|double|malloc|printf)\b", src)
        assert set(re.findall(r"#include <([^>]+)>", src)) <= {"stdint.h", "string.h"}
        assert "static const int8_t w_" in src


@needs_cc
def test_corrupted_weight_is_caught(emitted, tmp_path):
    case, outdir = emitted["digits_cnn"]
    bad = tmp_path / "bad"
    shutil.copytree(outdir, bad)
    src = (bad / "model.c").read_text()
    first = re.search(r"static const int8_t w_3\[\d+\] = \{\n    (-?\d+)", src)
    flipped = str(int(first.group(1)) + 1)
    (bad / "model.c").write_text(src[: first.start(1)] + flipped + src[first.end(1) :])
    with pytest.raises(CheckFailed, match="differs from the simulator at step .* layer "):
        verify(case.int, bad, case.test_x[:64], T=8)
    save(case.int, tmp_path / "m.spk")
    res = CliRunner().invoke(
        main, ["verify", str(tmp_path / "m.spk"), str(bad), "--data", str(case.calib), "-n", "64"]
    )
    assert res.exit_code == 1 and "differs from the simulator" in res.stderr


def _refused(graph, tmp_path, match, target="c"):
    out = tmp_path / "never"
    with pytest.raises(CapabilityExceeded, match=match):
        emit(graph, target, out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_weights_wider_than_the_target_are_refused(cases, tmp_path):
    case = cases["digits_mlp"]
    wide = quantize(case.snn, np.load(case.calib)["x"], Profile("w12", weight_bits=12))
    _refused(wide, tmp_path, "node 'node_linear' \\(dense\\): weight_q needs more than the 8 bits")


def test_possible_int32_overflow_is_refused(cases, tmp_path):
    case = cases["wide_mlp"]
    g = quantize(
        case.snn, np.load(case.calib)["x"], Profile("s40", state_bits=40), max_timesteps=100_000
    )
    _refused(g, tmp_path, "can reach .* beyond the 2147483647 of 32-bit state on target 'c'")


def test_unsupported_op_is_refused(cases, tmp_path, monkeypatch):
    c = get_target("c")
    narrow = dataclasses.replace(c.profile, ops=c.profile.ops - {"maxpool2d"})
    monkeypatch.setitem(TARGETS, "c", dataclasses.replace(c, profile=narrow))
    _refused(
        cases["digits_cnn"].int,
        tmp_path,
        "node 'node_max_pool2d': op 'maxpool2d' is not supported by target 'c'",
    )


@needs_qemu
@pytest.mark.parametrize(
    "name", ["digits_cnn", "digits_mlp", "residual", "concat_pool", "wide_mlp"]
)
def test_cortex_m3_under_qemu_is_bit_exact(emitted, name):
    """20 random inputs per model on an emulated Cortex-M3, every step of T = 8."""
    _, outdir = emitted[name]
    report = flash_qemu(outdir, None, 20, 8, count=False)
    assert report["bit_exact"] and report["model_o"]["flash_bytes"] > 0


@needs_qemu
def test_instruction_count_grows_with_timesteps(emitted):
    _, outdir = emitted["digits_mlp"]
    counts = [flash_qemu(outdir, None, 2, t)["instructions_per_inference"] for t in (2, 4)]
    assert 0 < counts[0] < counts[1] < 3 * counts[0]


def test_flash_without_a_probe_is_one_line_and_exit_2(emitted):
    _, outdir = emitted["digits_mlp"]
    res = CliRunner().invoke(main, ["flash", str(outdir), "--board", "stm32f429zi"])
    assert res.exit_code == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "no debug probe" in res.stderr or "pyOCD is not installed" in res.stderr


@needs_cc
@pytest.mark.parametrize("kernels", ["events", "reference"])
@pytest.mark.parametrize(
    "name", ["digits_cnn", "digits_mlp", "residual", "concat_pool", "wide_mlp", "bipolar_mlp"]
)
def test_fast_kernels_equal_the_reference_loops(cases, graded_emitted, tmp_path, name, kernels):
    """Every synaptic layer that reads spikes forced event-driven (signed, graded and bipolar
    spikes included), or every layer on the reference loops: bit-exact with the simulator on
    200 random inputs, T = 8; the default build's choice is covered by the tests above."""
    if name in cases:
        case = cases[name]
    else:
        case = graded_emitted[name][0]
    manifest = emit(case.int, "c", tmp_path / "c", kernels=kernels)
    chosen = {k["kernel"] for k in manifest["summary"]["size"]["kernels"].values()}
    assert ("events" in chosen) == (kernels == "events")
    verify(case.int, tmp_path / "c", random_inputs(case.int, 200, seed=5), T=8)


@needs_cc
def test_default_kernels_follow_the_recorded_activity(cases, tmp_path):
    """quantize --target c records how often each synaptic input is nonzero; emit reads it."""
    case = cases["digits_cnn"]
    q = quantize(case.snn, np.load(case.calib)["x"], get_target("c").profile, max_timesteps=8)
    activity = q.meta["quantization"]["activity"]
    assert activity and all(0 <= v <= 1 for v in activity.values())
    kernels = emit(q, "c", tmp_path / "c")["summary"]["size"]["kernels"]
    assert any(k["kernel"] == "events" and k["activity"] is not None for k in kernels.values())
    assert "events" in (tmp_path / "c" / "size_report.txt").read_text()


# -- schedules: layer-major where the graph is feed-forward, step-major otherwise --------------


def _schedule(manifest: dict) -> dict:
    return manifest["summary"]["size"]["schedule"]


def _quantized(case, max_t: int = 8):
    return quantize(case.snn, np.load(case.calib)["x"], get_target("c").profile, max_t)


@needs_cc
@pytest.mark.parametrize(
    ("name", "graded"),
    [(name, False) for name in ("digits_cnn", "digits_mlp", "wide_mlp")]
    + [(name, True) for name in ("digits_cnn", "digits_mlp", "wide_mlp", "bipolar_mlp")],
)
def test_layer_major_equals_step_major_bit_for_bit(cases, graded_emitted, tmp_path, name, graded):
    """One graph (binary, signed, graded and bipolar spikes), max-T 8, emitted layer-major (the
    default here) and step-major: on 200 random inputs the two host builds print the same
    spikes of every layer and the same accumulators at every step of T = 8 and of T = 3, and
    the layer-major one equals the simulator."""
    case = graded_emitted[name][0] if graded else cases[name]
    q = case.int if graded else _quantized(case)
    layer, step = tmp_path / "layer", tmp_path / "step"
    assert _schedule(emit(q, "c", layer)) == {"schedule": "layer-major"}
    assert _schedule(emit(q, "c", step, schedule="step"))["schedule"] == "step-major"
    assert "void spk_step(" not in (layer / "model.h").read_text()
    x = random_inputs(q, 200, seed=11)
    inputs = c_inputs(q, x)
    _, ref_spikes, ref_acc = reference(q, x, 8)
    sizes = [s.shape[-1] for s in ref_spikes.values()]
    for T in (8, 3):
        a = run_host(layer, inputs, T, sizes, ref_acc.shape[-1])
        b = run_host(step, inputs, T, sizes, ref_acc.shape[-1])
        assert np.array_equal(a.acc, b.acc)
        assert all(np.array_equal(p, s) for p, s in zip(a.spikes, b.spikes, strict=True))
    check_one_batch(q, layer, x, 8, run_host)


@pytest.mark.parametrize(
    ("name", "max_t", "why"),
    [
        ("residual", 8, "(add) has no layer-major kernel"),
        ("concat_pool", 8, "(concat) has no layer-major kernel"),
        ("wide_mlp", 64, "over 64"),  # signed spikes: 2 bits a step, 128 bits for 64 steps
        ("digits_cnn", 64, "over 64"),  # its average pool's sums of 4 spikes: 3 bits a step
        ("digits_mlp", 64, "less RAM at max-T 64"),  # 8 bytes a neuron against its int32
    ],
)
def test_schedule_falls_back_to_step_major(cases, tmp_path, name, max_t, why):
    """Graphs with an op the layer-major schedule has no kernel for, whose packed spikes would
    not fit a 64-bit word, or that would need more RAM layer-major (packed words grow with
    max-T) are emitted step-major, and the size report says why."""
    manifest = emit(_quantized(cases[name], max_t), "c", tmp_path / "c")
    schedule = _schedule(manifest)
    assert schedule["schedule"] == "step-major" and why in schedule["why"]
    assert "void spk_step(" in (tmp_path / "c" / "model.h").read_text()
    assert (
        f"Schedule: step-major ({schedule['why']})"
        in (tmp_path / "c" / "size_report.txt").read_text()
    )


@pytest.fixture(scope="module")
def layer_major_emitted(cases, tmp_path_factory):
    """The digits examples quantized with max-T 8, emitted layer-major."""
    root = tmp_path_factory.mktemp("c_layer_major")
    out = {}
    for name in ("digits_cnn", "digits_mlp"):
        q = _quantized(cases[name])
        assert _schedule(emit(q, "c", root / name))["schedule"] == "layer-major"
        out[name] = (dataclasses.replace(cases[name], int=q), root / name)
    return out


@needs_cc
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_layer_major_host_bit_exact_on_random_inputs(layer_major_emitted, name):
    """1,000 random int8 inputs (hypothesis), T = 8, layer-major build: every layer's spikes
    and the accumulators equal the simulator's at every step."""
    check_random_batches(*layer_major_emitted[name])


@needs_qemu
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_layer_major_cortex_m3_under_qemu_is_bit_exact(layer_major_emitted, name):
    _, outdir = layer_major_emitted[name]
    assert flash_qemu(outdir, None, 20, 8, count=False)["bit_exact"]


def test_emit_schedule_step_keeps_step_major(cases, tmp_path):
    spk = tmp_path / "m.spk"
    save(cases["digits_mlp"].int, spk)
    res = CliRunner().invoke(
        main, ["emit", str(spk), "--target", "c", "--schedule", "step", "-o", str(tmp_path / "o")]
    )
    assert res.exit_code == 0, res.output
    assert "B RAM, step-major" in res.output
    assert "Schedule: step-major" in (tmp_path / "o" / "size_report.txt").read_text()


RUN_BEYOND_MAX_T = """\
#include "model.h"
int main(void)
{
    static spk_input_t in;
    static int32_t out[(SPK_MAX_TIMESTEPS + 1) * SPK_OUTPUT_SIZE];
    const int over = spk_run(&in, SPK_MAX_TIMESTEPS + 1, out) == -1
                     && spk_run_steps(&in, SPK_MAX_TIMESTEPS + 1, out) == -1
                     && spk_run(&in, 0, out) == -1;
    return over && spk_run_steps(&in, SPK_MAX_TIMESTEPS, out) == 0 ? 0 : 1;
}
"""


@needs_cc
@pytest.mark.parametrize("schedule", ["auto", "step"])
def test_runs_past_the_proven_max_t_are_refused_at_run_time(cases, tmp_path, schedule):
    """T is a run-time argument; the packed words (and the range proof) hold max-T steps, so
    spk_run / spk_run_steps return -1 without running for any other T."""
    q = _quantized(cases["digits_mlp"], 4)
    out = tmp_path / "c"
    emit(q, "c", out, schedule=schedule)
    (out / "main.c").write_text(RUN_BEYOND_MAX_T)
    cmd = "cc -std=c99 -Wall -Wextra -Werror -pedantic model.c main.c -o t && ./t"
    assert subprocess.run(cmd, shell=True, cwd=out).returncode == 0


def test_board_check_counts_the_layer_major_ram(cases, tmp_path, monkeypatch):
    """--board compares the board with the RAM of the plan emitted: a board between the
    layer-major and the step-major RAM of digits_cnn takes the first and refuses the second."""
    q = _quantized(cases["digits_cnn"])
    layer = emit(q, "c", tmp_path / "l")["summary"]["size"]["ram_bytes_state"]
    step = emit(q, "c", tmp_path / "s", schedule="step")["summary"]["size"]["ram_bytes_state"]
    assert 2 * layer < step
    mid = boards.Board("mid", "Cortex-M0", 1 << 20, boards.RESERVE_RAM + (layer + step) // 2, "t")
    monkeypatch.setitem(boards.BOARDS, "mid", mid)
    emit(q, "c", tmp_path / "fits", board="mid")
    with pytest.raises(CapabilityExceeded, match="bytes of RAM"):
        emit(q, "c", tmp_path / "refused", board="mid", schedule="step")


# -- emit --max-T: a firmware built for fewer steps than quantize proved -----------------------


@pytest.fixture(scope="module")
def fewer_steps_emitted(cases, tmp_path_factory):
    """The digits examples quantized with max-T 16, emitted for 8 steps (emit --max-T 8)."""
    root = tmp_path_factory.mktemp("c_fewer_steps")
    out = {}
    for name in ("digits_cnn", "digits_mlp"):
        q = _quantized(cases[name], 16)
        size = emit(q, "c", root / name, max_timesteps=8)["summary"]["size"]
        assert size["schedule"] == {"schedule": "layer-major"}
        assert (size["max_timesteps"], size["proven_max_timesteps"]) == (8, 16)
        out[name] = (dataclasses.replace(cases[name], int=q), root / name)
    return out


@needs_cc
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_fewer_steps_than_proven_host_bit_exact_on_random_inputs(fewer_steps_emitted, name):
    """1,000 random int8 inputs (hypothesis) on a build for 8 of the 16 proven steps: every
    layer's spikes and the accumulators equal the simulator's at every step of T = 8 and of
    T = 3."""
    check_random_batches(*fewer_steps_emitted[name], steps=(8, 3))


@needs_qemu
def test_fewer_steps_than_proven_cortex_m3_under_qemu_is_bit_exact(fewer_steps_emitted):
    _, outdir = fewer_steps_emitted["digits_cnn"]
    assert flash_qemu(outdir, None, 20, 8, count=False)["bit_exact"]


def test_fewer_steps_size_the_firmware(cases, fewer_steps_emitted, tmp_path):
    """The build for 8 steps says so (model.h, size report, README) and needs less RAM than
    the one for the proven 16, which is what emit writes by default (the same model.c)."""
    case, outdir = fewer_steps_emitted["digits_cnn"]
    assert "#define SPK_MAX_TIMESTEPS 8\n" in (outdir / "model.h").read_text()
    assert "Built for T <= 8 " in (outdir / "size_report.txt").read_text()
    assert "at most **8 timesteps**" in (outdir / "README.md").read_text()
    full = emit(case.int, "c", tmp_path / "16", max_timesteps=16)["summary"]["size"]
    default = emit(case.int, "c", tmp_path / "default")["summary"]["size"]
    assert full == default and full["max_timesteps"] == 16
    same = [(tmp_path / d / "model.c").read_text() for d in ("16", "default")]
    assert same[0] == same[1]
    eight = json.loads((outdir / "size_report.json").read_text())
    assert eight["ram_bytes_state"] < full["ram_bytes_state"]


@needs_cc
def test_fewer_steps_keep_layer_major_past_64_bits(cases, tmp_path):
    """digits_cnn at max-T 64 needs 64 x 3 bits a pooled element and runs step-major (above);
    emitted for 21 steps (63 bits) it runs layer-major, bit-exact at T = 21."""
    q = _quantized(cases["digits_cnn"], 64)
    assert _schedule(emit(q, "c", tmp_path / "c", max_timesteps=21)) == {"schedule": "layer-major"}
    verify(q, tmp_path / "c", random_inputs(q, 100, seed=3), T=21)


@needs_cc
@pytest.mark.parametrize("schedule", ["auto", "step"])
def test_runs_past_the_emitted_max_t_are_refused_at_run_time(cases, tmp_path, schedule):
    """Emitted for 3 of the 4 proven steps, spk_run / spk_run_steps return -1 for T = 4."""
    q = _quantized(cases["digits_mlp"], 4)
    out = tmp_path / "c"
    emit(q, "c", out, schedule=schedule, max_timesteps=3)
    assert "#define SPK_MAX_TIMESTEPS 3\n" in (out / "model.h").read_text()
    (out / "main.c").write_text(RUN_BEYOND_MAX_T)
    cmd = "cc -std=c99 -Wall -Wextra -Werror -pedantic model.c main.c -o t && ./t"
    assert subprocess.run(cmd, shell=True, cwd=out).returncode == 0


def test_verify_and_flash_refuse_more_steps_than_emitted(fewer_steps_emitted, tmp_path):
    """-T past the emitted 8 steps (within the proven 16) is refused, not clamped: one error
    line, exit 2, before anything runs."""
    case, outdir = fewer_steps_emitted["digits_mlp"]
    with pytest.raises(BadInput, match="-T 9 is more than the 8 steps .* emitted for"):
        verify(case.int, outdir, case.test_x[:4], T=9)
    with pytest.raises(BadInput, match="-T 9 is more than the 8 steps"):
        flash_qemu(outdir, None, 2, 9, count=False)
    spk = tmp_path / "m.spk"
    save(case.int, spk)
    for args in (
        ["verify", str(spk), str(outdir), "--data", str(case.calib), "-T", "9"],
        ["flash", str(outdir), "--board", "qemu-mps2-an385", "-T", "9"],
    ):
        res = CliRunner().invoke(main, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1, res.output
        assert lines[0].startswith("error: -T 9 is more than the 8 steps")
        assert "running" not in res.stdout


def test_emit_max_t_above_the_proven_one_is_refused(cases, tmp_path):
    """A firmware may run fewer steps than quantize proved, never more: refused before anything
    is written, one error line, exit 2."""
    q = _quantized(cases["digits_mlp"], 4)
    with pytest.raises(BadInput, match="--max-T 5 is outside 1..4"):
        emit(q, "c", tmp_path / "never", max_timesteps=5)
    assert list(tmp_path.iterdir()) == []
    spk = tmp_path / "m.spk"
    save(q, spk)
    for steps in ("5", "0"):
        args = ["emit", str(spk), "--target", "c", "--max-T", steps, "-o", str(tmp_path / "o")]
        res = CliRunner().invoke(main, args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.spk"]
