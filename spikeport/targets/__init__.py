"""Targets are plug-ins: each subpackage registers a `Target` (its profile, emit, verify).

Shared here, so no target re-implements it: the capability check before anything is written,
the atomic output directory, and the manifest that tells `verify` which target wrote it.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikeport import __version__
from spikeport.errors import BadInput, CapabilityExceeded
from spikeport.ir.graph import Graph
from spikeport.quantize.profiles import Profile, check_capabilities, register_profile
from spikeport.quantize.ranges import prove_ranges
from spikeport.sim.arith import int_limit

MANIFEST = "spikeport-target.json"

# emit(graph, tmpdir) writes the target's files and returns a summary for the manifest.
Emitter = Callable[[Graph, Path], dict[str, Any]]
# verify(graph, outdir, x, T=, progress=) runs the emitted target on float inputs x and raises
# CheckFailed on the first mismatch; returns a summary.
Verifier = Callable[..., dict[str, Any]]


@dataclass(frozen=True)
class Target:
    name: str
    profile: Profile
    emit: Emitter
    verify: Verifier
    description: str = ""


TARGETS: dict[str, Target] = {}


def register_target(target: Target) -> Target:
    TARGETS[target.name] = target
    register_profile(target.profile)
    return target


def discover() -> dict[str, Target]:
    """Import every target subpackage once so it registers itself."""
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")
    return TARGETS


def get_target(name: str) -> Target:
    discover()
    if name not in TARGETS:
        raise BadInput(f"unknown target '{name}'; known: {', '.join(sorted(TARGETS))}")
    return TARGETS[name]


def check_fits(graph: Graph, profile: Profile) -> None:
    """Refuse, naming the node, a graph whose integers or ops the target cannot hold."""
    if graph.stage != "int":
        raise BadInput(
            f"emit needs a quantized graph (stage 'int'), got '{graph.stage}': "
            f"run `spikeport quantize --target {profile.name}` first"
        )
    check_capabilities(graph, profile)
    widths = {
        "weight_q": profile.weight_bits,
        "bias_q": profile.bias_bits,
        "threshold_q": profile.state_bits,
        "mult_q": profile.mult_bits,
    }
    for n in graph.nodes:
        for pname, bits in widths.items():
            arr = n.params.get(pname)
            if arr is not None and np.abs(arr.astype(np.int64)).max(initial=0) > int_limit(bits):
                raise CapabilityExceeded(
                    f"node '{n.name}' ({n.op}): {pname} needs more than the "
                    f"{bits} bits target '{profile.name}' allows"
                )
    # Re-prove against the target's own state width: a graph quantized for a wider profile,
    # or edited by hand, is refused here rather than overflowing on the device.
    prove_ranges(
        graph,
        graph.meta["quantization"]["max_timesteps"],
        profile.state_bits,
        f" on target '{profile.name}'",
    )


def emit(graph: Graph, target_name: str, outdir: str | os.PathLike[str]) -> dict[str, Any]:
    """Check, then write the target into `outdir` atomically (a failure leaves it untouched)."""
    target = get_target(target_name)
    check_fits(graph, target.profile)
    out = Path(outdir)
    if out.exists() and not out.is_dir():
        raise BadInput(f"output '{out}' exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        summary = target.emit(graph, tmp)
        manifest = {
            "target": target.name,
            "spikeport_version": __version__,
            "source": graph.meta.get("source", {}),
            "summary": summary,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _replace_dir(new: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(outdir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(outdir) / MANIFEST
    if not path.is_file():
        raise BadInput(
            f"'{outdir}' holds no {MANIFEST}: not a directory written by `spikeport emit`"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: unreadable ({e})") from None


def verify(
    graph: Graph,
    outdir: str | os.PathLike[str],
    x: np.ndarray,
    T: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run what `emit` wrote on `x` for T steps; compare every step with the simulator."""
    target = get_target(read_manifest(outdir)["target"])
    check_fits(graph, target.profile)
    if not 1 <= T <= graph.meta["quantization"]["max_timesteps"]:
        raise BadInput(f"-T {T} is outside 1..{graph.meta['quantization']['max_timesteps']}")
    return target.verify(graph, Path(outdir), x, T=T, progress=progress)
