"""``edgepipe explain``: why a model is (not) faster on a runtime (``edgepipe.benchmarks.explain``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgepipe.errors import InputError


def fp32_parent(model: str) -> Path | None:
    """An artifact folder's FP32 parent in the same format, found beside it in its store (None: none)."""
    from edgepipe.artifact import read_manifest

    folder = Path(model)
    if not (folder / "manifest.json").is_file():
        return None
    manifest = read_manifest(folder)
    if manifest.precision == "fp32" or not manifest.lineage.parent_sha256:
        return None
    for sibling in sorted(folder.parent.iterdir()):
        if (sibling / "manifest.json").is_file() and sibling != folder:
            try:
                other = read_manifest(sibling)
            except Exception:  # a foreign or broken folder beside it is not its parent
                continue
            if other.sha256 == manifest.lineage.parent_sha256 and other.format == manifest.format:
                return sibling / other.primary if other.precision == "fp32" else None
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    from edgepipe.artifact import resolve_model_path
    from edgepipe.benchmarks.explain import explain, render
    from edgepipe.formats import detect_format
    from edgepipe.runtimes import default_runtime

    runtime = args.runtime or default_runtime(detect_format(resolve_model_path(args.model)))
    reference = Path(args.reference) if args.reference else fp32_parent(args.model)
    if args.reference and not Path(args.reference).exists():
        raise InputError(f"--reference: {args.reference}: no such file or folder")
    options = {"xnnpack": False} if args.no_xnnpack else {}
    if args.no_xnnpack and runtime != "litert":
        raise InputError("--no-xnnpack: only the litert runtime takes it")
    result = explain(
        Path(args.model),
        runtime,
        reference,
        threads=args.threads,
        batch=args.batch_size,
        sequence_length=args.seq_len,
        calls=args.calls,
        options=options,
    )
    print(json.dumps(result.model_dump(mode="json"), indent=2) if args.json else render(result))
    return 0


def add_parser(sub: argparse._SubParsersAction, positive_int: object, threads: object) -> None:
    p = sub.add_parser(
        "explain",
        help="why a model is (not) faster: what runs in INT8, bf16 or FP32 on a runtime, where the time goes, traps",
    )
    p.add_argument("model", help="model file (.onnx, .xml, .tflite, .gguf) or edgepipe artifact folder")
    p.add_argument("--runtime", help="onnxruntime, openvino, litert or llama.cpp (default: the format's)")
    p.add_argument(
        "--reference", help="the FP32 model to compare with, on the same runtime (default: an artifact's FP32 parent)"
    )
    p.add_argument("--threads", type=threads, default=2, help="threads for the runtime (default: 2)")
    p.add_argument("--batch-size", type=positive_int, default=1, help="batch for dynamic batch dims (default: 1)")
    p.add_argument("--seq-len", type=positive_int, help="length for dynamic sequence dims (default: 32)")
    p.add_argument("--calls", type=positive_int, default=20, help="profiled calls per model (default: 20)")
    p.add_argument("--no-xnnpack", action="store_true", help="litert: the built-in kernels, without XNNPACK")
    p.add_argument("--json", action="store_true", help="print the explanation as JSON (docs/explain.md)")
    p.set_defaults(func=cmd_explain)
