"""``edgepipe verify``: re-check a run folder, its artifacts folder or one artifact: every manifest parses,
every file is there with its size and sha256, no file is there that the manifest does not list, and the
model still reads with its format's own library (safetensors, onnx, openvino, the TFLite schema, gguf-py).
Partial builds a killed run left behind are listed: runs never read them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgepipe.artifact import artifact_sha256, read_manifest
from edgepipe.errors import InputError, first_line
from edgepipe.files import sha256_file
from edgepipe.formats import MANIFEST_NAME


@dataclass
class Finding:
    """One artifact folder: what it is and every problem found (none: it verifies)."""

    path: str
    name: str | None = None
    format: str | None = None
    precision: str | None = None
    problems: list[str] = field(default_factory=list)
    partial: bool = False  # a .tmp-* or .old-* folder: a build not finished, or one --force is replacing

    @property
    def ok(self) -> bool:
        return not self.problems


def _readable(model_file: Path, fmt: str) -> str | None:
    """None if the format's own reader takes the model file, else why not."""
    try:
        if fmt == "torch":
            from safetensors import safe_open

            with safe_open(str(model_file), framework="numpy") as f:
                list(f.keys())
        else:
            from edgepipe.inspection import inspect_model

            inspect_model(model_file)
    except InputError as e:
        return str(e)
    except Exception as e:  # a reader's own exception type on a damaged file
        return f"{model_file.name}: unreadable ({type(e).__name__}: {first_line(e)})"
    return None


def check_artifact(folder: Path) -> Finding:
    """Everything wrong with one artifact folder."""
    try:
        manifest = read_manifest(folder)
    except InputError as e:
        return Finding(str(folder), problems=[str(e)])
    found = Finding(str(folder), manifest.name, manifest.format, manifest.precision)
    listed = {entry.path for entry in manifest.files}
    for entry in manifest.files:
        f = folder / entry.path
        if not f.is_file():
            found.problems.append(f"{entry.path}: missing")
        elif (size := f.stat().st_size) != entry.size_bytes:
            found.problems.append(
                f"{entry.path}: {size} bytes, the manifest says {entry.size_bytes} (truncated or changed)"
            )
        elif sha256_file(f) != entry.sha256:
            found.problems.append(f"{entry.path}: sha256 differs from the manifest's (modified)")
    extra = sorted(
        str(f.relative_to(folder))
        for f in folder.rglob("*")
        if f.is_file() and f.name != MANIFEST_NAME and str(f.relative_to(folder)) not in listed
    )
    found.problems += [f"{name}: not in the manifest" for name in extra]
    if not found.problems:  # the manifest's own identity: what results rows and children's lineage cite
        if artifact_sha256(manifest.files, manifest.preprocessing) != manifest.sha256:
            found.problems.append("manifest.json: its sha256 is not the hash of its model files")
        if sum(e.size_bytes for e in manifest.files) != manifest.size_bytes:
            found.problems.append("manifest.json: its size_bytes is not the sum of its files")
    if not found.problems and (reason := _readable(folder / manifest.primary, manifest.format)):
        found.problems.append(f"does not read as {manifest.format}: {reason}")
    return found


def verify_path(path: str | Path) -> list[Finding]:
    """Findings for an artifact folder, a store (``artifacts/``) or a run folder holding one."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if (p / MANIFEST_NAME).is_file():
        return [check_artifact(p)]
    if not p.is_dir():
        raise InputError(f"{p}: not a folder (verify takes a run folder, its artifacts folder or an artifact folder)")
    store = p / "artifacts" if (p / "artifacts").is_dir() else p
    findings = []
    for folder in sorted(d for d in store.iterdir() if d.is_dir()):
        if folder.name.startswith((".tmp-", ".old-")):  # a build not finished, or one --force is replacing
            findings.append(Finding(str(folder), partial=True))
        elif (folder / MANIFEST_NAME).is_file() or (store.name == "artifacts" and any(folder.iterdir())):
            findings.append(check_artifact(folder))  # in a store, a folder without its manifest is damaged
    if not findings:
        raise InputError(f"{p}: holds no artifact folders")
    return findings
