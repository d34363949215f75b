"""Hashing and atomic file writes: readers see either the old content or the complete new one."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_arrays(arrays: Iterable[np.ndarray]) -> str:
    """One hash over arrays' dtypes, shapes and bytes, in order."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def content_sha256(entries: list[tuple[str, str]]) -> str:
    """One hash for a multi-file model (e.g. .xml + .bin): over sorted (path, file hash) pairs; a one-file
    model is identified by its file's own hash."""
    if len(entries) == 1:
        return entries[0][1]
    return sha256_json(sorted([list(e) for e in entries]))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def shareable_dir(path: Path) -> None:
    """mkdtemp makes folders 0700; artifacts and results are meant to be shared like any other file."""
    path.chmod(0o777 & ~_umask())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either the old content or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def save_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Arrays by name as one .npz, written atomically; read back with ``np.load(path, allow_pickle=False)``."""
    buf = io.BytesIO()
    # np.require keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d).
    np.savez(buf, allow_pickle=False, **{k: np.require(v, requirements="C") for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """What ``save_arrays`` wrote (never unpickles: object arrays are refused)."""
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
