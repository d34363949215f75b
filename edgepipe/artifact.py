"""Artifacts: a folder holding model files plus ``manifest.json``, written atomically, cached by key.

A stage never modifies its input; it builds a new artifact in a temporary folder that is renamed into
place only after every file and the manifest are written, so a killed run leaves at worst a
``.tmp-*`` folder that no later run trusts. An artifact is reused only when its manifest parses and
every file's sha256 matches: that is the cache (key = parent hash + stage config + tool versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from edgepipe.errors import InputError
from edgepipe.formats import MANIFEST_NAME

SCHEMA_VERSION = 1


class TensorSpec(BaseModel):
    """A named input or output. Dimensions are ints, or strings for symbolic (dynamic) ones."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int | str]
    dtype: str
    # Affine quantization of the tensor itself, when its dtype is an integer type (e.g. full-integer
    # TFLite): {"scale": [...], "zero_point": [...], "axis": int | None}.
    quantization: dict[str, Any] | None = None

    def _affine(self) -> tuple[float, int] | None:
        q = self.quantization
        if not q or np.dtype(self.dtype).kind not in "iu":
            return None
        scale, zero_point = np.ravel(q["scale"]), np.ravel(q["zero_point"])
        if scale.size != 1:
            raise InputError(f"tensor '{self.name}': per-channel quantized model inputs/outputs are not supported")
        return float(scale[0]), int(zero_point[0])

    def to_model(self, data: np.ndarray) -> np.ndarray:
        """Float data as this tensor takes it: quantized with its scale and zero point for an
        integer tensor of a full-integer model, unchanged otherwise."""
        affine = self._affine()
        if affine is None or data.dtype.kind != "f":
            return data
        scale, zero_point = affine
        info = np.iinfo(np.dtype(self.dtype))
        return np.clip(np.round(data / scale) + zero_point, info.min, info.max).astype(self.dtype)

    def to_float(self, data: np.ndarray) -> np.ndarray:
        """This tensor's values as float32 (dequantized when it is a quantized integer tensor)."""
        affine = self._affine()
        if affine is None or data.dtype.kind not in "iu":
            return data
        scale, zero_point = affine
        return ((data.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def concrete_shape(self, batch: int = 1) -> tuple[int, ...]:
        """Shape with the first symbolic dimension set to ``batch`` and any other one to 1."""
        dims: list[int] = []
        for i, d in enumerate(self.shape):
            dims.append(d if isinstance(d, int) and d >= 0 else (batch if i == 0 else 1))
        return tuple(dims)


def _inside_folder(name: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ValueError(f"'{name}' must be a relative path inside the artifact folder")
    return name


class FileEntry(BaseModel):
    path: Annotated[str, AfterValidator(_inside_folder)]
    size_bytes: int
    sha256: str


class Lineage(BaseModel):
    stage: str
    config: dict[str, Any]
    parent_sha256: str | None = None
    parent_path: str | None = None
    cache_key: str


class Manifest(BaseModel):
    """What an artifact is and where it came from. Unknown keys from newer versions are kept."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    name: str
    format: str
    precision: str
    primary: Annotated[str, AfterValidator(_inside_folder)]
    files: list[FileEntry]
    sha256: str
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: dict[str, Any] = {}
    model: dict[str, Any] = {}
    quantization: dict[str, Any] | None = None
    lineage: Lineage
    tools: dict[str, str] = {}
    seed: int | None = None
    created_at: str

    @model_validator(mode="after")
    def _primary_is_listed(self) -> Manifest:
        if self.primary not in {f.path for f in self.files}:
            raise ValueError(f"primary '{self.primary}' is not among its files")
        return self


@dataclass
class Artifact:
    path: Path
    manifest: Manifest

    @property
    def model_file(self) -> Path:
        return self.path / self.manifest.primary

    @property
    def sha256(self) -> str:
        return self.manifest.sha256


@dataclass
class StageOutput:
    """What a stage's build function reports about the files it wrote into its folder (all of which
    belong to the artifact: a stage deletes its scratch files)."""

    format: str
    precision: str
    primary: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    quantization: dict[str, Any] | None = None
    model: dict[str, Any] = field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def content_sha256(entries: list[FileEntry]) -> str:
    """One hash for a multi-file model (e.g. .xml + .bin): over sorted (path, file hash) pairs."""
    if len(entries) == 1:
        return entries[0].sha256
    return sha256_json(sorted((e.path, e.sha256) for e in entries))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST_NAME
    try:
        return Manifest.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(
            f"{path}: not a valid edgepipe manifest ({where + ': ' if where else ''}{first['msg']})"
        ) from None
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a valid edgepipe manifest ({str(e).splitlines()[0]})") from None


def verify(folder: Path) -> Artifact | None:
    """The artifact in ``folder`` if its manifest parses and every file matches its hash, else None."""
    try:
        manifest = read_manifest(folder)
    except InputError:
        return None
    for entry in manifest.files:
        f = folder / entry.path
        if not f.is_file() or f.stat().st_size != entry.size_bytes or sha256_file(f) != entry.sha256:
            return None
    return Artifact(folder, manifest)


def resolve_model_path(path: str | Path) -> Path:
    """The model file for a path that is a model file or an edgepipe artifact folder (verified)."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST_NAME).is_file():
            raise InputError(f"{p}: folder has no {MANIFEST_NAME}; pass the model file itself")
        return load_artifact(p).model_file
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if not p.is_file():
        raise InputError(f"{p}: not a file")
    return p


def load_artifact(folder: str | Path) -> Artifact:
    """Open an artifact folder, checking every file against its manifest."""
    folder = Path(folder)
    artifact = verify(folder)
    if artifact is None:
        read_manifest(folder)  # raises a precise error when the manifest itself is the problem
        raise InputError(f"{folder}: files do not match the manifest's sha256 (modified or truncated)")
    return artifact


_OWNER_FILE = ".owner-pid"


def _alive(pid: int) -> bool:
    if pid <= 1:  # not a builder we can identify (0, negative, or a container's init)
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


class ArtifactStore:
    """Artifacts of one run folder, keyed by (parent hash, stage, config, tool versions)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_stale_temporaries()

    def _clean_stale_temporaries(self) -> None:
        # A killed run leaves .tmp-* folders behind. They are never read; one is removed once the
        # process that was building it (its owner file holds the pid) no longer exists.
        for tmp in self.root.glob(".tmp-*"):
            try:
                pid: int | None = int((tmp / _OWNER_FILE).read_text())
            except (OSError, ValueError):
                pid = None
                try:
                    if time.time() - tmp.stat().st_mtime < 60:  # just created; its owner file may follow
                        continue
                except FileNotFoundError:  # another run just renamed or removed it
                    continue
            if pid is None or not _alive(pid):
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def cache_key(stage: str, config: dict[str, Any], parent: Artifact | None, tools: dict[str, str]) -> str:
        return sha256_json(
            {
                "schema": SCHEMA_VERSION,
                "stage": stage,
                "config": config,
                "parent": parent.sha256 if parent else None,
                "tools": tools,
            }
        )

    def build(
        self,
        *,
        name: str,
        stage: str,
        config: dict[str, Any],
        parent: Artifact | None,
        tools: dict[str, str],
        build: Callable[[Path], StageOutput],
        task: dict[str, Any] | None = None,
        seed: int | None = None,
        force: bool = False,
    ) -> tuple[Artifact, bool]:
        """Return ``(artifact, cached)``: a verified cached artifact, or a freshly built one."""
        key = self.cache_key(stage, config, parent, tools)
        final = self.root / f"{name}-{key[:12]}"
        if not force and (cached := verify(final)) is not None:
            return cached, True

        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        owner = tmp / _OWNER_FILE
        owner.write_text(str(os.getpid()))
        try:
            out = build(tmp)
            # Every file the stage left is part of the artifact (IR .bin, external data, bundles).
            # The owner file stays until the rename, so no other run takes this folder for abandoned.
            names = sorted(str(f.relative_to(tmp)) for f in tmp.rglob("*") if f.is_file() and f != owner)
            entries = [
                FileEntry(path=n, size_bytes=(tmp / n).stat().st_size, sha256=sha256_file(tmp / n)) for n in names
            ]
            manifest = Manifest(
                name=name,
                format=out.format,
                precision=out.precision,
                primary=out.primary,
                files=entries,
                sha256=content_sha256(entries),
                size_bytes=sum(e.size_bytes for e in entries),
                inputs=out.inputs,
                outputs=out.outputs,
                task=task or (parent.manifest.task if parent else {}),
                model=out.model or (parent.manifest.model if parent else {}),
                quantization=out.quantization,
                lineage=Lineage(
                    stage=stage,
                    config=config,
                    parent_sha256=parent.sha256 if parent else None,
                    parent_path=parent.path.name if parent else None,
                    cache_key=key,
                ),
                tools=tools,
                seed=seed,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            atomic_write_text(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=2))
            if final.exists():
                if not force and (done := verify(final)) is not None:
                    # A concurrent run of the same stage finished first: share its artifact.
                    shutil.rmtree(tmp, ignore_errors=True)
                    return done, True
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                # A concurrent run of the same stage renamed its copy first: use it if it verifies.
                if (done := verify(final)) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return done, True
            (final / _OWNER_FILE).unlink(missing_ok=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(final, manifest), False
