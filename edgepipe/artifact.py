"""Artifacts: a folder holding model files plus ``manifest.json`` that says what they are and where they
came from. Reading and verifying them is here; building them (atomically, cached by key) is in
``edgepipe.store``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from edgepipe.errors import InputError
from edgepipe.files import content_sha256, sha256_file
from edgepipe.formats import MANIFEST_NAME
from edgepipe.tensors import TensorSpec

# 2: several parents in lineage, a preprocessing block, torch models described by a module spec.
SCHEMA_VERSION = 2


def _inside_folder(name: str) -> str:
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ValueError(f"'{name}' must be a relative path inside the artifact folder")
    return name


RelativePath = Annotated[str, AfterValidator(_inside_folder)]


class FileEntry(BaseModel):
    path: RelativePath
    size_bytes: int
    sha256: str


class Parent(BaseModel):
    """An artifact a stage read: ``role`` is "model" for the one it transformed, others name their part
    (e.g. "teacher" for distillation)."""

    role: str
    sha256: str
    path: str | None = None


class Lineage(BaseModel):
    stage: str
    config: dict[str, Any]
    # The primary parent ("model" role), kept at the top for readers of schema 1.
    parent_sha256: str | None = None
    parent_path: str | None = None
    parents: list[Parent] = []
    cache_key: str


class Manifest(BaseModel):
    """What an artifact is and where it came from. Unknown keys from newer versions are kept."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    name: str
    format: str
    precision: str
    primary: RelativePath
    files: list[FileEntry]
    sha256: str
    size_bytes: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    task: dict[str, Any] = {}
    # What an app must do around the model: tokenizer file and its settings, pooling, maximum length.
    # ``files`` lists the files of this block that travel with every derived artifact.
    preprocessing: dict[str, Any] = {}
    model: dict[str, Any] = {}
    quantization: dict[str, Any] | None = None
    lineage: Lineage
    tools: dict[str, str] = {}
    seed: int | None = None
    created_at: str

    @model_validator(mode="after")
    def _paths_are_listed(self) -> Manifest:
        listed = {f.path for f in self.files}
        if self.primary not in listed:
            raise ValueError(f"primary '{self.primary}' is not among its files")
        for extra in self.preprocessing.get("files", []):
            if _inside_folder(extra) not in listed:
                raise ValueError(f"preprocessing file '{extra}' is not among its files")
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

    def file(self, name: str) -> Path:
        """A file of this artifact by its manifest path."""
        return self.path / _inside_folder(name)


def artifact_sha256(entries: list[FileEntry], preprocessing: dict[str, Any]) -> str:
    """An artifact's identity: the hash of its model files (a tokenizer travelling beside them is not the
    model; an artifact of preprocessing files only counts them all)."""
    model = [e for e in entries if e.path not in preprocessing.get("files", [])] or entries
    return content_sha256([(e.path, e.sha256) for e in model])


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


def load_artifact(folder: str | Path) -> Artifact:
    """Open an artifact folder, checking every file against its manifest."""
    folder = Path(folder)
    artifact = verify(folder)
    if artifact is None:
        read_manifest(folder)  # raises a precise error when the manifest itself is the problem
        raise InputError(f"{folder}: files do not match the manifest's sha256 (modified or truncated)")
    return artifact


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
