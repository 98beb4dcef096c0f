"""Native kernels: the fast simulator's hottest elementwise loops, fused in C (csrc/): the IF
neuron on running sums (if_levels.c, for fast.IntIF), the integer add (weighted_add.c, for
fast's "add") and the expectation-compensated GELU, softmax and LayerNorm (seq_steps.c, for
fast_seq); and the T-aware search's rate code (rate_code.c, for convert.tune.rate_code).

A loop over T steps of whole-tensor torch ops passes over memory several times a step (the
IF neuron: seven). The C version makes one pass, block by block, with the same floating-point
operations in the same type, so its results are the torch loop's bit for bit (tests/
test_sim_fast.py checks both against each other and the reference). It is compiled on first use with
the machine's C compiler (-O3 -march=native, no fast-math, no FMA contraction: FLAGS) into a
per-user cache, keyed by the source, the flags, the compiler and the CPU, and loaded with
ctypes. ctypes releases the GIL during a call, so the work splits over torch's thread count.

Without a C compiler the torch loops run: the same results, slower. `status()` says which, and
the benchmarks record it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

CSRC = Path(__file__).parent / "csrc"
SOURCES = sorted(CSRC.glob("*.c"))  # compiled together; the headers they include are hashed
HASHED = sorted(CSRC.glob("*.[ch]"))
BLOCK = 1024  # csrc/blocks.h's: threads split a step at multiples of it
# no fast-math and no FMA contraction: the torch loops' operations, each rounded as they are;
# -fno-trapping-math only lets floor vectorise (a vector round), no value changes
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-trapping-math", "-shared", "-fPIC"]
# IF rules (csrc/if_levels.c)
UNSIGNED, SIGNED, BIPOLAR = 0, 1, 2
# below this many elements a step, one thread: a thread's start costs more than it saves
MIN_SPLIT = 1 << 15

ENABLED = True  # tests switch it off to run the torch loops
_why_not = ""


def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and feature flags (Linux's /proc/cpuinfo; elsewhere the platform's
    processor string and no flags): what -march=native compiles for."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor(), frozenset()
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor())  # fmt: skip
    return name, frozenset(next((ln for ln in lines if ln.startswith("flags")), "").split()[2:])


def _cache_dirs() -> list[Path]:
    """Where the compiled kernels go: the user's cache, else (a read-only home) the
    temporary directory."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    user = os.getuid() if hasattr(os, "getuid") else os.getlogin()  # not on Windows
    temp = Path(tempfile.gettempdir()) / f"spikeport-native-{user}"
    return [Path(base) / "spikeport" / "native", temp]


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built once per source, compiler and CPU; None where no C compiler
    builds them (the reason in status())."""
    global _why_not
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _why_not = "no C compiler (cc) on PATH"
        return None
    key = hashlib.sha256()
    name, flags = cpu_info()
    for part in [*(p.read_bytes() for p in HASHED), " ".join(FLAGS).encode()]:
        key.update(part)
    key.update(f"{os.path.realpath(cc)}\n{name}\n{' '.join(sorted(flags))}".encode())
    for where in _cache_dirs():
        lib = where / f"kernels-{key.hexdigest()[:16]}.so"
        try:
            if not lib.exists():
                _build(cc, lib)
            return ctypes.CDLL(str(lib))
        except subprocess.CalledProcessError as err:
            _why_not = f"the C kernels did not build: {(err.stderr or str(err)).splitlines()[0]}"
            return None
        except OSError as err:  # not writable: the next place
            _why_not = f"the C kernels could not be written or loaded: {err}"
    return None


def _build(cc: str, lib: Path) -> None:
    """Compile into a temporary file beside `lib`, then rename: concurrent processes (pytest
    workers) never load a half-written library."""
    lib.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        cmd = [cc, *FLAGS, *map(str, SOURCES), "-o", tmp, "-lm"]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def status() -> str:
    """'C kernels' where they run, else the torch loops and why."""
    if ENABLED and library() is not None:
        return "C kernels"
    return "torch loops (" + ("switched off" if not ENABLED else _why_not) + ")"


def available() -> bool:
    return ENABLED and library() is not None


_TYPES = {torch.float32: ctypes.c_float, torch.float64: ctypes.c_double}
# the input types csrc/weighted_add.c and seq_steps.c read (their `kind`)
INPUT_KINDS = {torch.float32: 0, torch.float64: 1, torch.int32: 2, torch.int64: 3}
_NAMES = {torch.float32: "if_levels_f32", torch.float64: "if_levels_f64"}


def if_levels(
    c: torch.Tensor,
    theta: torch.Tensor,
    v0: torch.Tensor,
    K: int,
    rule: int,
    n: torch.Tensor,
    fanout: torch.Tensor | None = None,
    ramp: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """csrc/if_levels.c on running sums c (T, M) (each row dense, stride 1; with `ramp`, one
    row I, the running sums t I) with theta and v0 (S,) of its type, S dividing M (repeated
    along a row): the counts into n (T, M, c's strides), and each step's events and levels
    (T,) returned; with fanout (S,) int64, each step's synaptic operations too (else None).
    The M elements split over torch's threads."""
    lib = library()
    assert lib is not None and c.dtype in _NAMES and c.stride(1) == 1
    assert n.shape[1] == c.shape[1] and n.stride(1) == 1 and n.dtype == c.dtype
    assert ramp or (n.shape == c.shape and n.stride() == c.stride())
    per_sample = [theta, v0] + ([fanout] if fanout is not None else [])
    assert all(p.dim() == 1 and p.is_contiguous() and p.shape == theta.shape for p in per_sample)
    assert theta.dtype == v0.dtype == c.dtype and c.shape[1] % len(theta) == 0
    assert fanout is None or fanout.dtype == torch.int64
    T, M = n.shape
    fn = getattr(lib, _NAMES[c.dtype])
    real = _TYPES[c.dtype]
    parts = _split(M)
    events, levels, sops = (np.zeros((len(parts), T), np.int64) for _ in range(3))

    def run(j: int) -> None:
        m0, m1 = parts[j]
        fn(
            ctypes.c_void_p(c.data_ptr()), ctypes.c_int(ramp), ctypes.c_void_p(n.data_ptr()),
            ctypes.c_int64(T), ctypes.c_int64(n.stride(0)), ctypes.c_int64(m0),
            ctypes.c_int64(m1), ctypes.c_void_p(theta.data_ptr()),
            ctypes.c_void_p(v0.data_ptr()), ctypes.c_int64(len(theta)), real(K), ctypes.c_int(rule),
            events[j].ctypes.data_as(ctypes.c_void_p), levels[j].ctypes.data_as(ctypes.c_void_p),
            ctypes.c_void_p(fanout.data_ptr() if fanout is not None else None),
            sops[j].ctypes.data_as(ctypes.c_void_p),
        )  # fmt: skip

    _each(run, len(parts))
    return events.sum(axis=0), levels.sum(axis=0), sops.sum(axis=0) if fanout is not None else None


def weighted_add(
    xs: list[torch.Tensor],
    mults: list[torch.Tensor],
    shift: int,
    cumulative: bool,
    out: torch.Tensor,
) -> None:
    """csrc/weighted_add.c: out (T, M) = floor(sum_i m_i x_i / 2^shift) a step, for x_i
    (T, M) of INPUT_KINDS' types with out's strides (out float or double), and multipliers
    (S,) double, S dividing M; on running sums (`cumulative`) their running sums (with a
    shift: of the floored steps' differences). The caller has proved every sum below 2^53."""
    lib = library()
    assert lib is not None and all(x.stride() == out.stride() for x in xs) and out.stride(1) == 1
    assert all(m.dtype == torch.float64 and m.is_contiguous() and m.shape == mults[0].shape
               for m in mults) and out.shape[1] % len(mults[0]) == 0  # fmt: skip
    T, M = out.shape
    k = len(xs)
    ptrs = (ctypes.c_void_p * k)(*(x.data_ptr() for x in xs))
    kinds = (ctypes.c_int32 * k)(*(INPUT_KINDS[x.dtype] for x in xs))
    ms = (ctypes.c_void_p * k)(*(m.data_ptr() for m in mults))
    parts = _split(M)

    def run(j: int) -> None:
        m0, m1 = parts[j]
        lib.weighted_add(
            ctypes.c_int64(T), ctypes.c_int64(out.stride(0)), ctypes.c_int64(m0),
            ctypes.c_int64(m1), ctypes.c_int64(k), ptrs, kinds, ms,
            ctypes.c_int64(len(mults[0])), ctypes.c_int32(shift), ctypes.c_int32(cumulative),
            ctypes.c_void_p(out.data_ptr()), ctypes.c_int32(INPUT_KINDS[out.dtype]),
        )  # fmt: skip

    _each(run, len(parts))


def ec_steps(
    name: str,
    s: torch.Tensor,
    out: torch.Tensor,
    mul: torch.Tensor,
    shift: int,
    row: int,
    *args: object,
) -> list[int]:
    """csrc/seq_steps.c's operator `name` (ec_gelu, ec_softmax, ec_layernorm) on the running
    sums s (T, ...) into out (both contiguous), with the requantizing multipliers `mul` a
    sample's worth of doubles, rows of `row` elements along the last axis, then the
    operator's own arguments (`args`: ints as int64, floats as doubles, double tensors as
    pointers; a sample's gamma and beta laid out as mul). Returns the steps (1-based) it
    could not keep exact (layernorm's check), which it left unwritten."""
    lib = library()
    assert lib is not None and s.is_contiguous() and out.is_contiguous()
    assert s.shape == out.shape and s.dtype in INPUT_KINDS and out.dtype in _TYPES
    tensors = [mul, *(a for a in args if isinstance(a, torch.Tensor))]
    assert all(p.dtype == torch.float64 and p.is_contiguous() for p in tensors)
    T, period = len(s), mul.numel()
    step = s[0].numel() if T else 0
    assert step % period == 0 and period % row == 0
    parts = _split(step, row)
    failed = np.zeros((len(parts), T), np.int32)
    scratch = [torch.empty(max(row, BLOCK), dtype=torch.float64) for _ in parts]
    fn = getattr(lib, name)
    ptr = ctypes.c_void_p

    def c_arg(a: object) -> object:
        if isinstance(a, torch.Tensor):
            return ptr(a.data_ptr())
        return ctypes.c_double(a) if isinstance(a, float) else ctypes.c_int64(a)  # type: ignore[arg-type]

    def run(j: int) -> None:
        m0, m1 = parts[j]
        head = [ptr(s.data_ptr()), ctypes.c_int(INPUT_KINDS[s.dtype]), ptr(out.data_ptr()),
                ctypes.c_int(INPUT_KINDS[out.dtype]), ctypes.c_int64(T), ctypes.c_int64(step),
                ctypes.c_int64(m0), ctypes.c_int64(m1), ptr(mul.data_ptr()),
                ctypes.c_int64(period), ctypes.c_int32(shift)]  # fmt: skip
        tail = [ptr(scratch[j].data_ptr())]
        if name == "ec_layernorm":
            tail.append(failed[j].ctypes.data_as(ptr))
        fn(*head, *[c_arg(a) for a in args], *tail)

    _each(run, len(parts))
    return [t + 1 for t in np.flatnonzero(failed.any(axis=0))]


def rate_code(currents: np.ndarray, theta: np.ndarray, bipolar: bool) -> np.ndarray:
    """csrc/rate_code.c: the mean output over T steps (C, M) of binary IF neurons with
    thresholds `theta` (C,) driven by `currents` (T, C, M), both float64 and contiguous;
    convert.tune.rate_code's numpy loop, bit for bit. The C * M elements split over torch's
    threads."""
    lib = library()
    assert lib is not None and currents.ndim == 3 and currents.dtype == np.float64
    assert currents.flags.c_contiguous and theta.shape == (currents.shape[1],)
    assert theta.dtype == np.float64 and theta.flags.c_contiguous
    T, C, M = currents.shape
    out = np.empty((C, M))
    parts = _split(C * M)
    ptr = ctypes.c_void_p

    def run(j: int) -> None:
        m0, m1 = parts[j]
        lib.rate_code_f64(
            ptr(currents.ctypes.data), ptr(out.ctypes.data), ctypes.c_int64(T),
            ctypes.c_int64(C * M), ctypes.c_int64(m0), ctypes.c_int64(m1),
            ptr(theta.ctypes.data), ctypes.c_int64(M), ctypes.c_int(bipolar),
        )  # fmt: skip

    _each(run, len(parts))
    return out


def _split(m: int, unit: int = BLOCK) -> list[tuple[int, int]]:
    """[0, m) in one range per torch thread (one where m is small), at multiples of `unit`
    (the kernels' block, or a row)."""
    threads = max(1, min(torch.get_num_threads(), m // MIN_SPLIT))
    size = -(-m // threads)
    size = -(-size // unit) * unit
    return [(a, min(a + size, m)) for a in range(0, m, size)] or [(0, 0)]


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="spikeport-native")


def _each(run, count: int) -> None:  # noqa: ANN001
    if count == 1:
        run(0)
        return
    list(_pool(count).map(run, range(count)))
