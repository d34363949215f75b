"""TFLite Micro on the host (the ``tflite-micro`` package): runs a .tflite under the real TFLM interpreter
and its reference kernels, to measure the tensor arena a microcontroller needs and to produce the golden
vectors of an embedded bundle. Its latency on x86 is not an MCU's latency; it is used for correctness,
operator support and memory only.

TFLM runs in a child process (``python -m edgepipe.export.tflite_micro``): it can crash on a model it does
not take (a segmentation fault on a multi-signature model was seen), and that must cost a bundle, not the run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.errors import UnsupportedModel, first_line
from edgepipe.files import atomic_write_text
from edgepipe.store import StageOutput

_ARENA_LINE = re.compile(r"Arena allocation total (\d+) bytes")


def _interpreter(path: Path, arena_size: int | None) -> Any:
    from tflite_micro.python.tflite_micro import runtime

    from edgepipe.capture import captured_output

    error: Exception | None = None
    with captured_output() as said:
        try:
            interpreter = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
        except Exception as e:  # TFLM says what it cannot run (hybrid models, missing operators) in its log
            error = e
    if error is None:
        return interpreter
    # The log is complete only after the capture ends; its first line says why.
    raise UnsupportedModel(f"{path}: TFLite Micro cannot run this model: {_reason(said.text) or first_line(error)}")


def _reason(log: str) -> str | None:
    """TFLM's first line that says what is wrong (it prints allocation reports and node lines too)."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(("[RecordingMicroAllocator]", "Node "))]
    return next(iter(useful or lines), None)


def arena_bytes(path: Path) -> int:
    """The tensor arena TFLite Micro allocates for this model: its RecordingMicroAllocator's total, which
    it only prints (captured here at the file-descriptor level)."""
    from edgepipe.capture import captured_output

    interpreter = _interpreter(path, None)
    with captured_output() as said:
        interpreter.print_allocations()
    found = _ARENA_LINE.search(said.text)
    if not found:
        raise UnsupportedModel(f"{path}: TFLite Micro reported no arena size ({_reason(said.text)})")
    return int(found.group(1))


def run(path: Path, inputs: list[np.ndarray], outputs: int, arena_size: int | None = None) -> list[np.ndarray]:
    """One inference under TFLite Micro (in an arena of ``arena_size`` bytes, or its default)."""
    interpreter = _interpreter(path, arena_size)
    for i, x in enumerate(inputs):
        interpreter.set_input(np.ascontiguousarray(x), i)
    try:
        interpreter.invoke()
    except Exception as e:  # an operator failing at run time (TFLM's reference kernels)
        raise UnsupportedModel(f"{path}: TFLite Micro failed to run it: {first_line(e)}") from None
    return [np.array(interpreter.get_output(i)) for i in range(outputs)]


def measure(path: Path, inputs: list[np.ndarray], outputs: int, timeout_s: float = 600) -> tuple[int, list[np.ndarray]]:
    """(arena bytes, outputs on ``inputs`` in an arena of exactly that size), from TFLM in a child process."""
    from edgepipe.files import load_arrays, save_arrays

    with tempfile.TemporaryDirectory(prefix="edgepipe-tflm-") as tmp:
        folder = Path(tmp)
        save_arrays(folder / "inputs.npz", {f"i{k}": x for k, x in enumerate(inputs)})
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "edgepipe.export.tflite_micro", str(path), tmp, str(outputs)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            raise UnsupportedModel(f"{path}: TFLite Micro did not finish within {timeout_s:.0f} s") from None
        result_file = folder / "result.json"
        if not result_file.is_file():
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            raise UnsupportedModel(f"{path}: TFLite Micro crashed on this model ({how})")
        result = json.loads(result_file.read_text())
        if "unsupported" in result:
            raise UnsupportedModel(result["unsupported"])
        arrays = load_arrays(folder / "outputs.npz")
        return int(result["arena_bytes"]), [arrays[f"o{k}"] for k in range(outputs)]


def _child(path: Path, folder: Path, outputs: int) -> None:
    from edgepipe.files import load_arrays, save_arrays

    arrays = load_arrays(folder / "inputs.npz")
    try:
        arena = arena_bytes(path)
        result = run(path, [arrays[f"i{k}"] for k in range(len(arrays))], outputs, arena_size=arena)
    except UnsupportedModel as e:
        atomic_write_text(folder / "result.json", json.dumps({"unsupported": str(e)}))
        return
    save_arrays(folder / "outputs.npz", {f"o{k}": x for k, x in enumerate(result)})
    atomic_write_text(folder / "result.json", json.dumps({"arena_bytes": arena}))


def bundle_stage(parent: Any, out_dir: Path, ctx: Any) -> StageOutput:
    """A TFLite artifact's embedded bundle, with golden vectors from the task's first test example."""
    from edgepipe.benchmarks.harness import for_session
    from edgepipe.runtimes import get_runtime

    with get_runtime("litert").load(parent.model_file) as session:
        first = ctx.task.eval_set(ctx.preprocessor(parent)).batches[0]
        feeds = for_session(session, {k: v[:1] for k, v in first.items()})[0]
    info = make_bundle(parent.model_file, out_dir, [feeds[s.name] for s in session.inputs], parent.manifest)
    return StageOutput(
        format="tflm-bundle",
        precision=parent.manifest.precision,
        primary="model_data.cc",
        inputs=parent.manifest.inputs,
        outputs=parent.manifest.outputs,
        model={"bundle": info, "summary": f"TFLite Micro arena {info['arena_bytes']:,} bytes"},
        preprocessing={},
    )


def make_bundle(path: Path, out_dir: Path, golden_inputs: list[np.ndarray], manifest: Any = None) -> dict[str, Any]:
    """Write the bundle of the .tflite at ``path`` into ``out_dir``; return what ``bundle.json`` says.

    Raises UnsupportedModel when TFLite Micro cannot run the model (no bundle is made for it).
    """
    from edgepipe.export import tflite_bundle as emit
    from edgepipe.export.tflite_inspect import summarize
    from edgepipe.files import sha256_file
    from edgepipe.runtimes import get_runtime

    summary = summarize(path)
    if summary["subgraphs"] > 1:
        raise UnsupportedModel(
            f"{path}: {summary['subgraphs']} signatures (one per sequence length); TFLite Micro runs one static shape"
        )
    if summary["hybrid"]:
        ops = ", ".join(summary["hybrid_ops"])
        raise UnsupportedModel(
            f"{path}: a hybrid model (float activations with int8 weights in {ops}): TFLite Micro does not run those"
        )
    with get_runtime("litert").load(path) as session:
        litert = session.run({s.name: x for s, x in zip(session.inputs, golden_inputs, strict=True)})
        specs_in = [s.model_dump(exclude_none=True) for s in session.inputs]
        specs_out = [s.model_dump(exclude_none=True) for s in session.outputs]
    arena, micro = measure(path, golden_inputs, len(specs_out))  # it runs in exactly the arena it reports
    diff = max(
        float(np.abs(m.astype(np.float64) - r.astype(np.float64)).max()) for m, r in zip(micro, litert, strict=True)
    )
    integer = all(np.dtype(s["dtype"]).kind in "iu" for s in specs_out)
    # TFLite Micro's reference kernels and LiteRT's differ by rounding only: 1 LSB on integer outputs, float
    # noise on float ones. More means TFLM computes something else (it runs per-channel weight-only int8
    # models wrongly, seen here off by 17 logits): no bundle is better than a wrong one.
    limit = 1.0 if integer else max(1e-4, 1e-3 * max(float(np.abs(r).max()) for r in litert))
    if not diff <= limit:
        raise UnsupportedModel(
            f"{path}: TFLite Micro's output differs from LiteRT's by {diff:.3g} (more than {limit:.3g}): "
            "its kernels do not run this model as LiteRT does"
        )
    lsb = round(diff) if integer else None
    info = {
        "name": manifest.name if manifest else path.stem,
        "model_file": path.name,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        "ops": sorted(summary["op_counts"]),
        "inputs": specs_in,
        "outputs": specs_out,
        "arena_bytes": arena,
        "preprocessing": (manifest.task.get("preprocessing") if manifest else None) or {},
        "golden_max_diff_lsb": f"{lsb} LSB" if lsb is not None else f"{diff:.3g} (float outputs)",
        "golden_max_diff_vs_litert": diff,
    }
    files = {
        **emit.model_array(path.read_bytes()),
        "op_resolver.h": emit.op_resolver(info["ops"]),
        "model_io.h": emit.model_io(specs_in, specs_out, arena),
        **emit.golden_arrays(golden_inputs, micro),
        "README.md": emit.readme(info),
        "bundle.json": json.dumps(info, indent=2) + "\n",
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(out_dir / name, text)
    return info


def bundle_file(model: str | Path, out_dir: Path) -> dict[str, Any]:
    """The bundle of any .tflite file or edgepipe TFLite artifact (``edgepipe bundle``). An artifact's golden
    input is its task's first test example; a bare file's is synthetic (seed 0)."""
    from edgepipe.artifact import load_artifact, resolve_model_path
    from edgepipe.benchmarks.harness import for_session
    from edgepipe.benchmarks.inputs import synthetic_feeds
    from edgepipe.benchmarks.model_file import manifest_of
    from edgepipe.errors import InputError
    from edgepipe.runtimes import get_runtime

    path = resolve_model_path(model)
    if path.suffix.lower() != ".tflite":
        raise InputError(f"{path}: a bundle is made from a .tflite model")
    manifest = manifest_of(path)
    with get_runtime("litert").load(path) as session:
        if manifest is not None and manifest.task.get("kind"):
            from edgepipe.stage import StageContext
            from edgepipe.tasks import build_task, task_class

            config = task_class(manifest.task["kind"]).Config.model_validate(manifest.task["config"])
            ctx = StageContext(build_task(config, manifest.seed or 0), manifest.seed or 0)
            first = ctx.task.eval_set(ctx.preprocessor(load_artifact(path.parent))).batches[0]
            feeds = for_session(session, {k: v[:1] for k, v in first.items()})[0]
        else:
            feeds, _ = synthetic_feeds(session.inputs, 1)
        golden = [feeds[s.name] for s in session.inputs]
    return make_bundle(path, out_dir, golden, manifest)


if __name__ == "__main__":
    _child(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
