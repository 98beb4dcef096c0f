"""File helpers shared by every stage: output paths checked before any work, atomic writes whose
temporaries never outlive a signal, and zip / .npy containers read with every size checked
before anything is inflated or allocated.

One place for each rule:
- `check_output_file` / `check_output_dir`: an output path can be written (run them when the
  arguments are parsed, before any work).
- `atomic_outputs` / `atomic_output` / `temp_dir_beside`: temporaries beside the final path,
  renamed onto it only when everything succeeded; modes follow the umask; SIGINT / SIGTERM
  (see `remove_temporaries`) leave nothing behind.
- `read_npz` / `zip_member`: .npz files and zip members, refused by name when malformed,
  encrypted, of an unknown compression, or larger than declared or allowed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import signal
import stat
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np

from spikeport.errors import BadInput

PathLike = str | os.PathLike[str]

NAME_MAX = 255  # bytes in one path component (ext4, xfs, apfs, ntfs)
# Caps on what a container may declare: a zip bomb is refused before it is inflated.
MAX_ARRAY_BYTES = 8 << 30  # one array, and all arrays of one .npz together
MAX_SUSPICIOUS_RATIO = 200  # declared size / compressed size above this, beyond SUSPICIOUS_BYTES
SUSPICIOUS_BYTES = 64 << 20
ZIP_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


# ------------------------------------------------------------------------------ input paths


def existing_file(path: PathLike, what: str = "file") -> Path:
    """Return `path` as a Path, or raise BadInput when it is not an existing file."""
    p = Path(path)
    if not str(path):
        raise BadInput(f"{what} path is empty")
    if not p.is_file():
        raise BadInput(f"{what} '{p}' does not exist" if not p.exists() else f"'{p}' is not a file")
    return p


# ------------------------------------------------------------------------------ output paths


def _name_checks(path: PathLike, what: str) -> Path:
    text = os.fspath(path)
    if not text.strip():
        raise BadInput(f"{what} path is empty")
    p = Path(text)
    for part in p.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise BadInput(f"{what} '{text[:60]}...': a name is longer than {NAME_MAX} bytes")
    return p


def _probe_parent(p: Path, what: str) -> None:
    """The nearest existing folder above `p` must be a folder this process can create files in
    (tried for real: permissions, read-only file systems and ACLs all show)."""
    anc = p.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise BadInput(f"{what} '{p}': '{anc}' is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".spikeport-probe.", dir=anc)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise BadInput(f"{what} '{p}': cannot write in '{anc}' ({e.strerror})") from None


def check_output_file(path: PathLike, what: str = "output") -> Path:
    """Refuse, before any work starts, an output file that cannot be written: '', '.', a
    directory, a special file, a name too long, a parent that is not a writable directory."""
    p = _name_checks(path, what)
    text = os.fspath(path)
    if text.endswith(("/", os.sep)) or p.name in ("", ".", "..") or p.is_dir():
        raise BadInput(f"{what} '{text}' is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise BadInput(f"{what} '{text}' exists and is not a regular file")
    _probe_parent(p, what)
    return p


def check_output_dir(path: PathLike, what: str = "output directory") -> Path:
    """Refuse an output directory that cannot be created or replaced (its contents are the
    writer's business: see spikeport.targets.emit)."""
    p = _name_checks(path, what)
    try:  # one look: a directory another writer replaces may be absent for a moment
        not_a_dir = not stat.S_ISDIR(p.stat().st_mode)
    except FileNotFoundError:
        not_a_dir = False
    if not_a_dir:
        raise BadInput(f"{what} '{p}' exists and is not a directory")
    if p.resolve() == Path.cwd().resolve() or p.resolve().parent == p.resolve():
        raise BadInput(f"{what} '{p}' is the current or root directory; name a new directory")
    _probe_parent(p.resolve(), what)
    return p


# ------------------------------------------------------------------------------ temporaries

_LIVE: set[str] = set()  # temporaries of this process that are not yet renamed or removed
_SIGNALS = (signal.SIGINT, signal.SIGTERM) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT / SIGTERM over a few statements, so that a temporary is created and
    registered (or renamed and forgotten) as one step."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(
        signal, "pthread_sigmask"
    ):  # other threads get no signals; Windows has no signal mask
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def remove_temporaries() -> None:
    """Remove every temporary this process still holds (the CLI calls it on a signal)."""
    with _signals_held():
        for path in list(_LIVE):
            _remove(path)
            _LIVE.discard(path)


def _temp_name(final: Path) -> str:
    return f".{final.name[:64]}."


@contextlib.contextmanager
def _environment_errors(finals: Sequence[Path]) -> Iterator[None]:
    """A full disk, a quota, a read-only file system while writing `finals`: BadInput naming
    them (the machine's fault, not spikeport's), raised after the temporaries are gone."""
    try:
        yield
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        names = ", ".join(f"'{f}'" for f in finals)
        raise BadInput(f"could not write {names}: {e.strerror}") from None


@contextlib.contextmanager
def atomic_outputs(paths: Sequence[PathLike]) -> Iterator[list[Path]]:
    """Yield one temporary path beside each of `paths`; rename them onto `paths` only if the
    block succeeds. A failure, Ctrl-C or SIGTERM leaves no half-written file and no temporary;
    a file's mode follows the umask (not mkstemp's 0600)."""
    finals = [Path(p) for p in paths]
    tmps: list[str] = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            with _signals_held():
                fd, tmp = tempfile.mkstemp(
                    prefix=_temp_name(final), suffix=".tmp", dir=final.parent
                )
                _LIVE.add(tmp)
                tmps.append(tmp)
            os.close(fd)
        with _environment_errors(finals):
            yield [Path(t) for t in tmps]
            mode = 0o666 & ~_umask()
            for tmp, final in zip(tmps, finals, strict=True):
                os.chmod(tmp, mode)
                with _signals_held():
                    os.replace(tmp, final)
                    _LIVE.discard(tmp)
    finally:
        with _signals_held():
            for tmp in tmps:
                if tmp in _LIVE:
                    _remove(tmp)
                    _LIVE.discard(tmp)


@contextlib.contextmanager
def atomic_output(path: PathLike) -> Iterator[Path]:
    """`atomic_outputs` for one file."""
    with atomic_outputs([path]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def temp_dir_beside(final: PathLike) -> Iterator[Path]:
    """A new, empty directory beside `final` (mode from the umask), removed on exit unless the
    block renamed it away; registered so that a signal removes it too."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    with _signals_held():
        tmp = tempfile.mkdtemp(prefix=_temp_name(final), suffix=".tmp", dir=final.parent)
        _LIVE.add(tmp)
    try:
        with _environment_errors([final]):
            os.chmod(tmp, 0o777 & ~_umask())
            yield Path(tmp)
    finally:
        with _signals_held():
            if os.path.exists(tmp):
                _remove(tmp)
            _LIVE.discard(tmp)


def forget_temporary(path: PathLike) -> None:
    """`path` (a temporary of ours) was renamed into place: it is no longer ours to remove."""
    _LIVE.discard(os.fspath(path))


def signals_held() -> contextlib.AbstractContextManager[None]:
    """Public form of the signal guard, for a rename that must not be cut in half."""
    return _signals_held()


# ------------------------------------------------------------------------------ containers


def zip_member(z: zipfile.ZipFile, name: str, where: str, limit: int) -> zipfile.ZipInfo:
    """The ZipInfo of member `name`, refused (naming `where` and the member) when missing,
    encrypted, compressed by an unknown method, or declaring more than `limit` bytes or an
    implausible compression ratio. Reading it then yields at most its declared size."""
    try:
        info = z.getinfo(name)
    except KeyError:
        raise BadInput(f"{where}: entry '{name}' is missing") from None
    if info.flag_bits & 0x1:
        raise BadInput(f"{where}: entry '{name}' is encrypted")
    if info.compress_type not in ZIP_METHODS:
        raise BadInput(
            f"{where}: entry '{name}' uses unknown compression method {info.compress_type}"
        )
    if info.file_size > limit:
        raise BadInput(
            f"{where}: entry '{name}' declares {info.file_size} bytes, more than the "
            f"{limit} allowed"
        )
    if info.file_size > SUSPICIOUS_BYTES and info.file_size > MAX_SUSPICIOUS_RATIO * max(
        info.compress_size, 1
    ):
        raise BadInput(
            f"{where}: entry '{name}' inflates {info.compress_size} bytes to {info.file_size} "
            "(a zip bomb?)"
        )
    return info


def _read_npy(f: IO[bytes], size: int, where: str, budget: int) -> np.ndarray:
    """One .npy from stream `f` holding exactly `size` bytes: header checked before allocating."""
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version} is not supported")
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise BadInput(f"{where}: not a valid .npy array ({str(e).splitlines()[0]})") from None
    if dtype.hasobject:
        raise BadInput(f"{where}: holds Python objects (pickles are never loaded)")
    count = int(np.prod(shape, dtype=object)) if shape else 1
    nbytes = count * dtype.itemsize
    if nbytes > budget:
        raise BadInput(f"{where}: declares shape {shape} ({nbytes} bytes), more than allowed")
    header = f.tell()
    if header + nbytes != size:
        raise BadInput(
            f"{where}: declares shape {shape} {dtype} ({nbytes} bytes) but holds "
            f"{size - header} bytes of data"
        )
    flat = np.empty(count, dtype)
    view = memoryview(flat.view(np.uint8) if count else bytearray())
    got = 0
    while got < nbytes:
        n = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            raise BadInput(f"{where}: data ends after {got} of {nbytes} bytes")
        got += n
    return flat.reshape(shape, order="F" if fortran else "C")


def read_npz(
    source: PathLike | IO[bytes], where: str, limit: int = MAX_ARRAY_BYTES
) -> dict[str, np.ndarray]:
    """Every array of an .npz (a zip of .npy files), checked before anything is allocated:
    member sizes and methods, each header's shape against the bytes the member holds, no
    object arrays, `limit` bytes in all. Errors are BadInput naming `where` and the key."""
    try:
        z = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        head = b""
        if not hasattr(source, "read"):
            with contextlib.suppress(OSError), open(source, "rb") as f:  # type: ignore[arg-type]
                head = f.read(6)
        if head == b"\x93NUMPY":
            raise BadInput(f"{where}: is a single .npy array, not an .npz (np.savez)") from None
        raise BadInput(f"{where}: not a readable .npz file ({e})") from None
    arrays: dict[str, np.ndarray] = {}
    budget = limit
    with z:
        for info in z.infolist():
            if info.is_dir() or not info.filename.endswith(".npy"):
                continue  # not an array (np.savez writes every array as KEY.npy)
            key = info.filename[:-4]
            what = f"{where}: key '{key}'"
            zip_member(z, info.filename, where, budget)
            try:
                with z.open(info) as f:
                    arrays[key] = _read_npy(f, info.file_size, what, budget)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as e:
                raise BadInput(f"{what}: unreadable ({e})") from None
            budget -= arrays[key].nbytes
    return arrays


# ------------------------------------------------------------------------------ misc


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# errno values that say the machine or the user's paths are at fault, not spikeport.
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.EMFILE,
        errno.ENFILE,
        errno.EIO,
    }
)
