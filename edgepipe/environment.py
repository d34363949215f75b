"""What machine and software a result was measured on. Every result records it."""

from __future__ import annotations

import os
import platform
import socket
from datetime import datetime, timezone
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

# ISA features that decide INT8/bf16 speed on x86 and Arm; the full flag list is long and mostly noise.
_RELEVANT_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
    "asimd",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
)

TRACKED_PACKAGES = (
    "edgepipe",
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxscript",
    "openvino",
    "nncf",
    "scikit-learn",
    "ai-edge-litert",
    "litert-torch",
    "gguf",
    "llama-cpp-python",
)


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the named distributions (absent ones are left out)."""
    found = {n: package_version(n) for n in names}
    return {n: v for n, v in found.items() if v}


def code_fingerprint(*modules: str) -> str:
    """Short hash of the code of the named modules (a package counts with every module in it): part of a
    stage's cache key, so editing the code that builds an artifact invalidates it even when edgepipe's
    version number did not change. Comments, docstrings and formatting do not count (the hash is over
    the syntax tree)."""
    import ast
    import hashlib
    import importlib.util

    files: list[Path] = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            continue
        if spec.submodule_search_locations:
            files += sorted(p for loc in spec.submodule_search_locations for p in Path(loc).rglob("*.py"))
        elif spec.origin.endswith(".py"):
            files.append(Path(spec.origin))
    h = hashlib.sha256()
    for path in dict.fromkeys(files):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            first = body[0] if isinstance(body, list) and body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined,index]
        h.update(ast.dump(tree).encode())
    return h.hexdigest()[:16]


def _cpuinfo_blocks() -> list[dict[str, str]]:
    """/proc/cpuinfo as one dict per logical CPU (empty where there is no such file)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    blocks = []
    for chunk in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        if fields:
            blocks.append(fields)
    return blocks


@cache
def cpu_description() -> dict[str, Any]:
    blocks = _cpuinfo_blocks()
    first = blocks[0] if blocks else {}
    flags = set((first.get("flags") or first.get("Features") or "").split())
    cores = {(b["physical id"], b["core id"]) for b in blocks if "physical id" in b and "core id" in b}
    return {
        "model": first.get("model name") or first.get("Hardware") or platform.processor() or platform.machine(),
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "physical_cores": len(cores) or None,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": sorted(f for f in _RELEVANT_FLAGS if f in flags),
    }


def memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe_environment() -> dict[str, Any]:
    """The environment block of results.json: machine, OS, Python and library versions."""
    return {
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "memory_total_mb": memory_total_mb(),
        "packages": package_versions(),
        "env": {
            k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_CORETYPE") if k in os.environ
        },
    }
