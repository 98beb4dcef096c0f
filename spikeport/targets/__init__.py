"""Targets are plug-ins: each subpackage registers a `Target` (its profile, emit, verify).

Shared here, so no target re-implements it: the capability check before anything is written,
the atomic output directory, and the manifest that tells `verify` which target wrote it.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import json
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spikeport import __version__
from spikeport.errors import BadInput, CapabilityExceeded
from spikeport.fileio import check_output_dir, signals_held, temp_dir_beside
from spikeport.ir.artifact import fingerprint
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
    profile = profile.for_graph(graph)  # the limits of the neuron kind the graph runs
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


def check_emit_dir(outdir: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a directory `emit` may not replace: one that cannot be created,
    or an existing non-empty directory that holds no manifest of spikeport's (emit never
    deletes what it did not write)."""
    out = check_output_dir(outdir)
    # Another emit into the same directory may move it aside and its own output in between
    # two looks here (_replace_dir): a directory that vanishes or is another one (another
    # inode) by the end of the look is looked at again. Only one that stays put, without a
    # manifest, is refused (emit renames a directory into place with its manifest written).
    for _ in range(5):
        try:
            looked_at = out.stat().st_ino if out.is_dir() else None
            if looked_at is None or not any(out.iterdir()):
                return out
            read_manifest(out)
            return out
        except FileNotFoundError:
            continue
        except BadInput:
            try:
                if out.stat().st_ino != looked_at:
                    continue
            except FileNotFoundError:
                continue
            raise BadInput(
                f"output directory '{out}' is not empty and was not written by `spikeport emit` "
                f"(no valid {MANIFEST}); give a new or empty directory"
            ) from None
    return out


# emit's keyword options whose command-line flag is not the keyword itself
EMIT_FLAGS = {"max_timesteps": "max-T"}


def emit(
    graph: Graph, target_name: str, outdir: str | os.PathLike[str], **options: Any
) -> dict[str, Any]:
    """Check, then write the target into a new directory beside `outdir` and rename it into
    place (a failure leaves `outdir` untouched; see check_emit_dir for what is replaced).
    `options` (those not None) go to the target's emit, which must take them: the C target's
    `board` (a memory profile it checks the model against) and `kernels`."""
    target = get_target(target_name)
    given = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(target.emit).parameters
    for key in given:
        if key not in accepted:
            flag = EMIT_FLAGS.get(key, key.replace("_", "-"))
            raise BadInput(f"target '{target_name}' takes no --{flag} (that option is for 'c')")
    out = check_emit_dir(outdir)
    check_fits(graph, target.profile)
    with temp_dir_beside(out) as tmp:
        summary = target.emit(graph, tmp, **given)
        manifest = {
            "target": target.name,
            "spikeport_version": __version__,
            "source": graph.meta.get("source", {}),
            "graph_sha256": fingerprint(graph),
            "summary": summary,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _replace_dir(tmp, out)
    return manifest


def _replace_dir(new: Path, final: Path) -> None:
    """Rename `new` onto `final`, moving an existing `final` aside first (it is removed after).
    When another process renames its own output there in between, it is moved aside too: of
    concurrent emits into one directory, the last one wins and none fails."""
    for attempt in range(5):
        with temp_dir_beside(final) as aside:
            try:
                with signals_held():  # no signal between the two renames
                    if final.exists():
                        try:
                            os.rename(final, aside / "old")
                        except FileNotFoundError:  # another writer moved it first
                            pass
                    os.rename(new, final)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST) or attempt == 4:
                    raise BadInput(
                        f"output directory '{final}' keeps being replaced by another process"
                    ) from None


def read_manifest(outdir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest `emit` wrote in `outdir`, checked: a JSON object naming a known target."""
    path = Path(outdir) / MANIFEST
    if not Path(outdir).is_dir():
        raise BadInput(f"'{outdir}' is not a directory written by `spikeport emit`")
    if not path.is_file():
        raise BadInput(
            f"'{outdir}' holds no {MANIFEST}: not a directory written by `spikeport emit`"
        )
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError, OSError) as e:
        raise BadInput(f"{path}: unreadable ({str(e).splitlines()[0] if str(e) else e})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("target"), str):
        raise BadInput(f"{path}: not a spikeport manifest (a JSON object naming its target)")
    discover()
    if manifest["target"] not in TARGETS:
        raise BadInput(f"{path}: unknown target '{manifest['target']}'")
    return manifest


def check_emitted_from(
    graph: Graph, outdir: str | os.PathLike[str], manifest: dict[str, Any]
) -> None:
    """Refuse a directory emitted from another graph than `graph` (its manifest says which)."""
    want = manifest.get("graph_sha256")
    if want is not None:
        same = want == fingerprint(graph)
    else:  # written before manifests held the graph's hash: compare the source model
        source = manifest.get("source")
        same = not source or source == graph.meta.get("source", {})
    if not same:
        raise BadInput(
            f"'{outdir}' was emitted from another graph than this one; emit this graph again "
            "or verify with the .spk it came from"
        )


def verify(
    graph: Graph,
    outdir: str | os.PathLike[str],
    x: np.ndarray,
    T: int,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run what `emit` wrote on `x` for T steps; compare every step with the simulator."""
    manifest = read_manifest(outdir)
    target = get_target(manifest["target"])
    check_emitted_from(graph, outdir, manifest)
    check_fits(graph, target.profile)
    if not 1 <= T <= graph.meta["quantization"]["max_timesteps"]:
        raise BadInput(f"-T {T} is outside 1..{graph.meta['quantization']['max_timesteps']}")
    return target.verify(graph, Path(outdir), x, T=T, progress=progress)
