"""What a model file is, before any runtime loads it: the edgepipe artifact it belongs to (its manifest,
if the files still match it), the files that travel with it, the ``artifact`` block of its results rows,
and what is known about its inputs beyond the runtime's view."""

from __future__ import annotations

from pathlib import Path

from edgepipe.artifact import Manifest, artifact_sha256, read_manifest
from edgepipe.errors import InputError
from edgepipe.files import content_sha256, sha256_file
from edgepipe.formats import MANIFEST_NAME
from edgepipe.results import ArtifactRef
from edgepipe.tensors import TensorSpec


def side_files(path: Path) -> list[Path]:
    """Files that belong to a model file: an IR's .bin, an ONNX model's conventional external data."""
    candidates = {".xml": [path.with_suffix(".bin")], ".onnx": [path.with_name(path.name + ".data")]}
    return [f for f in candidates.get(path.suffix.lower(), []) if f.is_file()]


def manifest_of(path: Path) -> Manifest | None:
    """The manifest of the edgepipe artifact this model file belongs to, if the files its manifest calls
    the model (the primary file and its side files, not a tokenizer) still have the manifest's hash."""
    if not (path.parent / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = read_manifest(path.parent)
    except InputError:
        return None
    preprocessing = manifest.preprocessing.get("files", [])
    model_files = [f for f in manifest.files if f.path not in preprocessing]
    if manifest.primary != path.name or not all((path.parent / f.path).is_file() for f in model_files):
        return None
    on_disk = [f.model_copy(update={"sha256": sha256_file(path.parent / f.path)}) for f in model_files]
    return manifest if artifact_sha256(on_disk, {}) == manifest.sha256 else None


def describe_file(path: Path, format: str, manifest: Manifest | None = None) -> ArtifactRef:
    """The ``artifact`` block of a results row for a model file: named, with its precision and parent,
    when it is the model of an edgepipe artifact folder (``manifest``, from ``manifest_of``); a bare file
    counts with its side files."""
    if manifest is not None:
        return ArtifactRef(
            name=manifest.name,
            format=format,
            precision=manifest.precision,
            path=str(path),
            size_bytes=manifest.size_bytes,
            sha256=manifest.sha256,
            parent_sha256=manifest.lineage.parent_sha256,
            parameters=manifest.model.get("parameters"),
        )
    files = [path, *side_files(path)]
    sha = content_sha256([(f.name, sha256_file(f)) for f in files])
    return ArtifactRef(format=format, path=str(path), size_bytes=sum(f.stat().st_size for f in files), sha256=sha)


def known_inputs(path: Path, manifest: Manifest | None) -> list[TensorSpec]:
    """What is known about the inputs beyond the runtime's view: value ranges from the artifact's manifest,
    or for a bare ONNX file the sizes of the embedding tables its integer inputs index."""
    if manifest is not None:
        return list(manifest.inputs)
    if path.suffix.lower() == ".onnx":
        from edgepipe.export.onnx_inspect import index_ranges

        try:
            ranges = index_ranges(path)
        except Exception:  # the runtime has already read the file; a hint we cannot get is no error
            return []
        return [TensorSpec(name=n, shape=[], dtype="int64", value_range=r) for n, r in ranges.items()]
    return []
