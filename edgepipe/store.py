"""The artifact store: stages build into a temporary folder that is renamed into place only when every
file and the manifest are written, so a killed run leaves at worst a ``.tmp-*`` folder that no later run
trusts. An artifact is reused only when its manifest parses and every file's sha256 matches: that is the
cache (key = stage + config + parents' hashes + tool versions).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgepipe.artifact import SCHEMA_VERSION, Artifact, FileEntry, Lineage, Manifest, Parent, artifact_sha256, verify
from edgepipe.files import atomic_write_text, sha256_file, sha256_json, shareable_dir
from edgepipe.formats import MANIFEST_NAME
from edgepipe.tensors import TensorSpec

# {role: artifact}; the first entry is the primary parent (role "model"), whose task and preprocessing
# a derived artifact inherits.
Parents = Mapping[str, Artifact]


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
    # None: the primary parent's block, its files copied along (a tokenizer travels with every export).
    preprocessing: dict[str, Any] | None = None


_OWNER_FILE = ".owner-pid"
# A build whose owner cannot be checked from here (another machine or container sharing the folder) is
# taken for abandoned only after this long.
FOREIGN_STALE_AFTER_S = 24 * 3600


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """When the process started (clock ticks since boot, /proc/PID/stat field 22): a reused pid differs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _owner_record() -> str:
    """Who is building a temporary folder: pid, host and boot, and the process's start time."""
    pid = os.getpid()
    return json.dumps({"pid": pid, "host": socket.gethostname(), "boot": _boot_id(), "start": _start_ticks(pid)})


def _owner_alive(record: str, age_s: float) -> bool:
    """Whether the builder that wrote ``record`` may still be building. A pid is only meaningful on the
    same host and boot; there it must exist and have started when the record says (pid 1, a container's
    first process, is a builder like any other). Elsewhere, only age tells."""
    try:
        owner = json.loads(record)
        if isinstance(owner, int):  # written by an older edgepipe on this machine: a bare pid
            owner = {"pid": owner, "host": socket.gethostname(), "boot": _boot_id()}
        pid = int(owner["pid"])
    except (ValueError, TypeError, KeyError):
        return False
    if owner.get("host") != socket.gethostname() or owner.get("boot") != _boot_id():
        return age_s < FOREIGN_STALE_AFTER_S
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass
    started = _start_ticks(pid)
    return not started or not owner.get("start") or started == owner["start"]


def _primary(parents: Parents) -> Artifact | None:
    return next(iter(parents.values()), None)


def _inherit_preprocessing(parent: Artifact | None, out: StageOutput, folder: Path) -> dict[str, Any]:
    if out.preprocessing is not None:
        return out.preprocessing
    if parent is None:
        return {}
    block = parent.manifest.preprocessing
    for name in block.get("files", []):
        if not (folder / name).exists():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(parent.file(name), folder / name)
    return block


class ArtifactStore:
    """Artifacts of one run folder, keyed by (stage, config, parents, tool versions)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._clean_stale_temporaries()

    def _clean_stale_temporaries(self) -> None:
        # A killed run leaves .tmp-* folders behind. They are never read; one is removed once the
        # process that was building it (its owner file holds the pid) no longer exists.
        for tmp in [*self.root.glob(".tmp-*"), *self.root.glob(".old-*")]:
            try:
                age = time.time() - tmp.stat().st_mtime
                record = (tmp / _OWNER_FILE).read_text()
            except FileNotFoundError:  # another run just renamed or removed it, or its owner file follows
                if tmp.exists() and time.time() - tmp.stat().st_mtime >= 60:
                    shutil.rmtree(tmp, ignore_errors=True)
                continue
            except OSError:
                continue
            if not _owner_alive(record, age):
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def cache_key(
        stage: str, config: dict[str, Any], parents: Parents, tools: dict[str, str], seed: int | None = None
    ) -> str:
        """What a step's artifact depends on. A parent counts with every file it holds (a changed tokenizer
        beside the same weights is another input) and with the key it was built under (a new transformers
        or an edited wrapper rebuilds the source with identical weights, and what derives from it too)."""
        return sha256_json(
            {
                "schema": SCHEMA_VERSION,
                "stage": stage,
                "config": config,
                "parents": {
                    role: {
                        "sha256": a.sha256,
                        "built_under": a.manifest.lineage.cache_key,
                        "files": sorted((f.path, f.sha256) for f in a.manifest.files),
                    }
                    for role, a in parents.items()
                },
                "tools": tools,
                "seed": seed,
            }
        )

    def build(
        self,
        *,
        name: str,
        stage: str,
        config: dict[str, Any],
        parents: Parents,
        tools: dict[str, str],
        build: Callable[[Path], StageOutput],
        task: dict[str, Any] | None = None,
        seed: int | None = None,
        force: bool = False,
    ) -> tuple[Artifact, bool]:
        """Return ``(artifact, cached)``: a verified cached artifact, or a freshly built one."""
        key = self.cache_key(stage, config, parents, tools, seed)
        final = self.root / f"{name}-{key[:12]}"
        if not force and (cached := verify(final)) is not None:
            return cached, True

        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=self.root))
        shareable_dir(tmp)
        owner = tmp / _OWNER_FILE
        owner.write_text(_owner_record())
        primary = _primary(parents)
        try:
            out = build(tmp)
            preprocessing = _inherit_preprocessing(primary, out, tmp)
            # Every file the stage left is part of the artifact (IR .bin, external data, tokenizer).
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
                sha256=artifact_sha256(entries, preprocessing),
                size_bytes=sum(e.size_bytes for e in entries),
                inputs=out.inputs,
                outputs=out.outputs,
                task=task or (primary.manifest.task if primary else {}),
                preprocessing=preprocessing,
                model=out.model,
                quantization=out.quantization,
                lineage=Lineage(
                    stage=stage,
                    config=config,
                    parent_sha256=primary.sha256 if primary else None,
                    parent_path=primary.path.name if primary else None,
                    parents=[Parent(role=r, sha256=a.sha256, path=a.path.name) for r, a in parents.items()],
                    cache_key=key,
                ),
                tools=tools,
                seed=seed,
                created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            )
            atomic_write_text(tmp / MANIFEST_NAME, manifest.model_dump_json(indent=2))
            aside = None
            if final.exists():
                done = verify(final)
                if done is not None and (not force or done.sha256 == manifest.sha256):
                    # A concurrent run of the same stage finished first, or --force rebuilt the same
                    # bytes: keep the one in place, which another run may be reading.
                    shutil.rmtree(tmp, ignore_errors=True)
                    return done, not force
                # --force made different bytes (or the one in place is damaged): move it aside in one
                # rename (a reader holding its files keeps them), put the new one in place, drop the old.
                aside = self.root / f".old-{final.name}-{os.getpid()}-{secrets.token_hex(4)}"
                os.rename(final, aside)
            try:
                os.rename(tmp, final)
            except OSError:
                # A concurrent run of the same stage renamed its copy first: use it if it verifies.
                if (done := verify(final)) is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return done, True
            (final / _OWNER_FILE).unlink(missing_ok=True)
            if aside is not None:
                shutil.rmtree(aside, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return Artifact(final, manifest), False
