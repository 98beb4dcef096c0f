"""Where a benchmark's numbers come from: the spikeport checkout (commit, and whether its
package differs from it) and the machine (CPU, threads, library versions). Every script in
benchmarks/ that writes a results JSON records both, so a number can be traced to the code
and the hardware that produced it.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

import spikeport
from spikeport.sim import native


def checkout() -> dict[str, Any]:
    """The spikeport the run imported: its folder and the commit of the checkout that holds
    it (a run of these scripts against another worktree's package, by PYTHONPATH, records
    that worktree's commit, not this one's)."""
    folder = Path(spikeport.__file__).parent
    git = ["git", "-C", str(folder)]
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "."], capture_output=True)
    return {
        "path": str(folder),
        "commit": head.stdout.strip() or None,
        "spikeport_modified": bool(dirty.stdout.strip()),
    }


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 and AMX: throughput ratios moved by a
    third between two 2-core machines."""
    name, flags = native.cpu_info()
    extras = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags]
    return f"{name} ({', '.join(extras) or 'no AVX2'})"


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The machine and the software the numbers were measured with (threads as set now)."""
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "simulator_loops": native.status(),  # C kernels, or the torch loops and why
        "python": platform.python_version(),
        **{p: _version(p) for p in ("numpy", "torch", "onnxruntime")},
    }


def record() -> dict[str, Any]:
    """Both, plus the load average: other work on the machine slows timings."""
    return {"spikeport": checkout(), "machine": machine(), "load_average": os.getloadavg()}
