"""Every output goes through here: a reader sees the old file or the whole new one, never half of
one; a directory appears complete or not at all; one process at a time writes an output; a full
disk ends in one line naming the path, with nothing half-written left behind."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .errors import MTZError

# EFBIG: what a write past RLIMIT_FSIZE (ulimit -f) returns, the same situation for the user
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(path: str | os.PathLike, exc: BaseException | None = None) -> MTZError:
    """The one line a full disk (or file-size limit) ends with; raise it ``from exc``."""
    return MTZError(f"disk full while writing {path}: free some space or choose another --out")


def partial_dir(out: str | os.PathLike) -> Path:
    """The sibling directory an output directory is built in before it is renamed into place."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def check_output(out: str | os.PathLike, directory: bool, overwrite: bool = True) -> Path:
    """Refuse an output path that is the wrong kind of thing, or that exists when it may not be replaced."""
    out = Path(out)
    if out.exists():
        if directory and not out.is_dir():
            raise MTZError(f"{out} exists and is not a directory: give a directory for --out")
        if not directory and out.is_dir():
            raise MTZError(f"{out} is a directory: give a file name for --out")
        if not overwrite:
            raise MTZError(f"{out} exists: pass --overwrite or choose another --out")
    return out


def write_atomic(path: str | os.PathLike, data) -> Path:
    """Write to a temporary file in the same directory, then rename it into place. ``data``: bytes,
    str, or a function that writes to the open binary file (large outputs, never held whole)."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            if callable(payload):
                payload(f)
            else:
                f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; keep the usual permissions
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from exc
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    return write_atomic(path, json.dumps(obj, indent=1) + "\n")


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    # streamed to the file: two VGG-16's weights assembled in memory first cost 2-3× their size
    return write_atomic(path, lambda f: np.savez(f, **arrays))


def publish_dir(partial: Path, final: Path, overwrite: bool) -> None:
    """Rename a finished temporary directory into place (replacing ``final`` only if asked)."""
    if final.exists():
        check_output(final, directory=True, overwrite=overwrite)
        trash = final.with_name(final.name + ".old")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(final, trash)
        os.replace(partial, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, final)


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def lock_path(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".lock")


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "?"
    except OSError:
        return "?"


def _acquire(path: Path, out: Path) -> int:
    """An open descriptor holding the exclusive lock on ``path``, which still names the locked file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MTZError(f"another mtz-mobile process (pid {_holder(path)}) is writing {out}: "
                           "wait for it to finish or choose another --out") from None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # the holder we waited on removed the file as it let go: lock the new one instead
        os.close(fd)


@contextlib.contextmanager
def output_lock(out: str | os.PathLike):
    """Hold ``<out>.lock`` (beside ``out``, which may not exist yet) while writing ``out``; a second
    process asking for the same output is refused at once with the holder's pid."""
    out = Path(out)
    path = lock_path(out)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, out)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from exc
        raise
    try:
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(path, exc) from exc
            raise
        yield path
    finally:
        # unlink before unlocking: a process that opened the old file sees it gone and retries
        path.unlink(missing_ok=True)
        os.close(fd)
