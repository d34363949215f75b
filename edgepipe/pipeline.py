"""The runner: recipe -> task data -> trained torch model -> exports -> PTQ variants -> benchmarks -> report.

Each stage goes through the ArtifactStore, so a re-run skips every stage whose (parent, config, tool
versions) already has a verified artifact. Benchmarks always run again: they are measurements.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepipe.artifact import Artifact, ArtifactStore, StageOutput, atomic_write_bytes
from edgepipe.environment import code_fingerprint, describe_environment, package_versions
from edgepipe.errors import EdgepipeError, InputError, UnavailableError, first_line
from edgepipe.recipe import GatesConfig, QuantizeConfig, Recipe, load_recipe
from edgepipe.tasks import Task, build_task

Log = Callable[[str], None]


@dataclass
class RunResult:
    results: dict[str, Any]
    out_dir: Path
    paths: dict[str, Path]
    gate_failures: list[str]


def _save_npy(path: Path, array: np.ndarray) -> Path:
    import io

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _stage(store: ArtifactStore, log: Log, label: str, force: bool, **kwargs: Any) -> Artifact:
    t0 = time.perf_counter()
    try:
        artifact, cached = store.build(force=force, **kwargs)
    except EdgepipeError:
        raise
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if not top or importlib.util.find_spec(top) is not None:  # installed: a real failure, said below
            raise EdgepipeError(f"stage '{label}' failed: {type(e).__name__}: {first_line(e)}") from e
        raise UnavailableError(
            f"stage '{label}' needs the package '{top}', which is not installed (pip install 'edgepipe[all]')"
        ) from e
    except Exception as e:  # a library failing on this model: say which stage, keep it to one line
        raise EdgepipeError(f"stage '{label}' failed: {type(e).__name__}: {first_line(e)}") from e
    took = "cached" if cached else f"done in {time.perf_counter() - t0:.1f} s"
    log(f"[{label}] {took}: {artifact.path}")
    return artifact


def check_tools(recipe: Recipe) -> None:
    """Fail before training, not after it, when a target's exporter or quantizer is not installed."""

    from edgepipe.export import BACKENDS

    for target in recipe.targets:
        entry = BACKENDS[target.format]
        for module in (*entry.export_tools, *(entry.quantize_tools if target.quantize else ())):
            if importlib.util.find_spec(module) is None:
                raise UnavailableError(
                    f"target '{target.format}' needs the package '{module}', which is not installed "
                    "(pip install 'edgepipe[all]')"
                )


def train_stage(recipe: Recipe, task: Task, store: ArtifactStore, log: Log, force: bool) -> Artifact:
    from edgepipe.models import FAMILIES

    def build(out: Path) -> StageOutput:
        from safetensors.torch import save_file

        from edgepipe.models import get_family
        from edgepipe.models.train import seed_everything, train_classifier

        seed_everything(recipe.seed)
        input_shape = list(task.inputs[0].concrete_shape(1))
        model = get_family(recipe.model.family).build(recipe.model.params, input_shape, task.num_classes)
        history = train_classifier(model, task, recipe.train, recipe.seed)
        log(
            f"[train] {recipe.model.family}: {history['parameters']:,} parameters, "
            f"test accuracy {history['test_accuracy']:.4f} after {history['epochs']} epochs"
        )
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out / "model.safetensors"))
        info = {
            "family": recipe.model.family,
            "params": recipe.model.params,
            "input_shape": input_shape,
            "num_classes": task.num_classes,
            "training": history,
        }
        return StageOutput(
            format="torch",
            precision="fp32",
            primary="model.safetensors",
            inputs=task.inputs,
            outputs=task.outputs,
            model=info,
        )

    config = {
        "model": recipe.model.model_dump(),
        "train": recipe.train.model_dump(),
        "seed": recipe.seed,
        "data_sha256": task.data_sha256(),
    }
    return _stage(
        store,
        log,
        "train",
        force,
        name="torch-fp32",
        stage="train",
        config=config,
        parent=None,
        tools={
            **package_versions(("edgepipe", "torch", "numpy", "scikit-learn")),
            "code": code_fingerprint("edgepipe.models.train", FAMILIES[recipe.model.family]),
        },
        build=build,
        task=task.describe(),
        seed=recipe.seed,
    )


def export_stages(
    recipe: Recipe, task: Task, torch_artifact: Artifact, store: ArtifactStore, log: Log, force: bool
) -> list[Artifact]:
    """Each target's FP32 export of the torch artifact, followed by its quantized variants."""
    from edgepipe.export import backend
    from edgepipe.stage import StageContext

    ctx = StageContext(task=task, seed=recipe.seed)
    artifacts: list[Artifact] = []
    for target in recipe.targets:
        entry, module = backend(target.format)
        code = code_fingerprint(*entry.code)
        # The export depends on the model's architecture and I/O specs, not only on its weights' hash.
        config = {
            **target.model_dump(exclude={"quantize"}),
            "source_model": {k: v for k, v in torch_artifact.manifest.model.items() if k != "training"},
            "inputs": [s.model_dump() for s in torch_artifact.manifest.inputs],
            "outputs": [s.model_dump() for s in torch_artifact.manifest.outputs],
        }
        fp32 = _stage(
            store,
            log,
            f"export {target.format}",
            force,
            name=f"{target.format}-fp32",
            stage="export",
            config=config,
            parent=torch_artifact,
            tools={**package_versions(("edgepipe", *entry.export_tools)), "code": code},
            build=lambda out, m=module, t=target: m.export(torch_artifact, t, out, ctx),
            seed=recipe.seed,
        )
        artifacts.append(fp32)
        for q in target.quantize:
            name = variant_name(target.format, q)
            artifacts.append(
                _stage(
                    store,
                    log,
                    f"quantize {name}",
                    force,
                    name=name,
                    stage="quantize",
                    config={**q.model_dump(), "calibration_sha256": task.calibration.sha256()},
                    parent=fp32,
                    tools={**package_versions(("edgepipe", *entry.quantize_tools)), "code": code},
                    build=lambda out, m=module, q=q, p=fp32: m.quantize(p, q, out, ctx),
                    seed=recipe.seed,
                )
            )
    return artifacts


def variant_name(fmt: str, q: QuantizeConfig) -> str:
    """Readable and distinct per quantize entry, e.g. ``onnx-int8-static`` or ``onnx-int8-dynamic-per-tensor``."""
    parts = [fmt, q.precision, q.method]
    if not q.per_channel:
        parts.append("per-tensor")
    if q.activation_type:
        parts.append(f"act-{q.activation_type}")
    if q.weight_type != "int8":
        parts.append(f"weight-{q.weight_type}")
    if q.reduce_range:
        parts.append("reduce-range")
    if q.calibration_samples:
        parts.append(f"cal-{q.calibration_samples}")
    return "-".join(parts)


def reference_outputs(torch_artifact: Artifact, task: Task, data_dir: Path, threads: int) -> Path:
    """The torch model's outputs on the test split, saved once per (model, test split) pair."""
    path = data_dir / f"reference-{torch_artifact.sha256[:12]}-{task.test.sha256()[:12]}.npy"
    try:
        if np.load(path, allow_pickle=False).shape == (len(task.test), *task.outputs[0].concrete_shape()[1:]):
            return path
    except (OSError, ValueError):
        pass
    from edgepipe.benchmarks.harness import EvalData
    from edgepipe.runtimes import get_runtime

    data = EvalData(task.feeds(task.test))
    with get_runtime("torch").load(torch_artifact.model_file, threads=threads) as session:
        outputs = [session.run(data.feeds_for(session, i, i + 256))[0] for i in range(0, len(data), 256)]
    return _save_npy(path, np.concatenate(outputs))


def _jobs(recipe: Recipe, artifacts: list[Artifact], eval_spec: dict[str, Any]) -> list[dict[str, Any]]:
    from edgepipe.runtimes import default_runtime

    b = recipe.benchmark
    jobs = []
    for art in artifacts:
        m = art.manifest
        runtimes = [default_runtime(m.format), *b.runtimes.get(m.format, [])]
        for runtime in dict.fromkeys(runtimes):
            for device in b.devices:
                jobs.append(
                    {
                        "path": str(art.model_file),
                        "runtime": runtime,
                        "device": device,
                        "threads": b.threads,
                        "batch_size": b.batch_size,
                        "warmup": b.warmup,
                        "runs": b.runs,
                        "max_seconds": b.max_seconds,
                        "seed": recipe.seed,
                        "eval": eval_spec,
                        "artifact": {
                            "name": m.name,
                            "format": m.format,
                            "precision": m.precision,
                            "path": str(art.path),
                            "size_bytes": m.size_bytes,
                            "sha256": m.sha256,
                            "parent_sha256": m.lineage.parent_sha256,
                        },
                    }
                )
    return jobs


def check_gates(rows: list[dict[str, Any]], gates: GatesConfig, reference_metrics: dict[str, float]) -> list[str]:
    """Failures of the parity and accuracy gates; each checked row gets ``gates: {passed, failures}``.

    ``reference_metrics`` are the torch model's own, computed from its saved outputs, so the accuracy
    gate holds whether or not the torch model was benchmarked. Every comparison is written so that
    NaN fails it. A row whose benchmark failed (not one whose runtime is unavailable) fails too.
    """
    failures: list[str] = []
    for row in rows:
        par, a = row.get("parity"), row.get("artifact") or {}
        mine: list[str] = []
        if row.get("status") == "failed":
            mine.append(f"benchmark failed: {row.get('error')}")
        elif row.get("status") != "ok" or par is None or a.get("format") == "torch":
            continue
        elif a.get("precision") == "fp32":
            if not par["top1_agreement"] >= gates.fp32_min_top1_agreement:
                mine.append(f"top-1 agreement {par['top1_agreement']:.4f} < {gates.fp32_min_top1_agreement:g}")
            if not par["max_abs_diff"] <= gates.fp32_max_abs_diff:
                mine.append(f"max abs diff {par['max_abs_diff']:.3g} > {gates.fp32_max_abs_diff:g}")
        else:
            if not par["top1_agreement"] >= gates.quantized_min_top1_agreement:
                mine.append(f"top-1 agreement {par['top1_agreement']:.4f} < {gates.quantized_min_top1_agreement:g}")
            ref_acc, acc = reference_metrics.get("accuracy"), row.get("metrics", {}).get("accuracy")
            if ref_acc is not None and acc is not None and not ref_acc - acc <= gates.quantized_max_accuracy_drop:
                mine.append(f"accuracy drop {ref_acc - acc:.4f} > {gates.quantized_max_accuracy_drop:g}")
        row["gates"] = {"passed": not mine, "failures": mine}
        failures += [f"{a.get('format')}/{a.get('precision')}@{row['runtime']}: {f}" for f in mine]
    return failures


def run_recipe(
    recipe: Recipe | str | Path, out_dir: str | Path | None = None, force: bool = False, log: Log = print
) -> RunResult:
    """Run a recipe end to end and write results.json / .md / .csv into the run folder.

    Gate failures do not raise: they are in ``RunResult.gate_failures`` (the CLI exits 4 on them).

    >>> result = run_recipe("recipes/quickstart.yaml")          # doctest: +SKIP
    >>> result.results["results"][0]["latency_ms"]["median"]     # doctest: +SKIP
    """
    from edgepipe.benchmarks.report import (
        RESULTS_SCHEMA_VERSION,
        add_comparisons,
        render_table,
        write_results,
    )
    from edgepipe.benchmarks.worker import run_in_subprocess

    started = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir or recipe.output_dir or Path("runs") / recipe.name)
    try:
        store = ArtifactStore(out / "artifacts")
    except OSError as e:
        raise InputError(f"{out}: cannot create the run folder ({e.strerror})") from None

    check_tools(recipe)
    task = build_task(recipe.task, recipe.seed)
    log(f"[data] {task.name}: train {len(task.train)}, calibration {len(task.calibration)}, test {len(task.test)}")
    torch_artifact = train_stage(recipe, task, store, log, force)
    exported = export_stages(recipe, task, torch_artifact, store, log, force)

    data_dir = out / "data"
    reference_path = reference_outputs(torch_artifact, task, data_dir, recipe.benchmark.threads)
    eval_spec = {
        "inputs": {
            name: str(_save_npy(data_dir / f"test-{name}.npy", array)) for name, array in task.feeds(task.test).items()
        },
        "labels": str(_save_npy(data_dir / "test-labels.npy", task.test.y)),
        "reference": str(reference_path),
        "metric": task.metric,
    }
    artifacts = ([torch_artifact] if recipe.benchmark.reference else []) + exported
    rows = []
    for job in _jobs(recipe, artifacts, eval_spec):
        t0 = time.perf_counter()
        row = run_in_subprocess(job, recipe.benchmark.timeout_s)
        row["name"] = job["artifact"]["name"]
        lat = row.get("latency_ms") or {}
        status = (
            f"median {lat['median']:.3f} ms (n={lat['n']})"
            if row["status"] == "ok"
            else f"{row['status']}: {row.get('error')}"
        )
        log(f"[bench] {row['name']} on {job['runtime']}/{job['device']}: {status} [{time.perf_counter() - t0:.1f} s]")
        rows.append(row)

    notes = add_comparisons(rows)
    reference_metrics = task.evaluate(np.load(reference_path, allow_pickle=False), task.test.y)
    gate_failures = check_gates(rows, recipe.gates, reference_metrics)
    notes += [f"GATE FAILED: {f}" for f in gate_failures]
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "recipe": {"name": recipe.name, "config": recipe.model_dump(mode="json")},
        "environment": describe_environment(),
        "results": rows,
        "notes": notes,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    paths = write_results(results, out)
    log("")
    log(render_table(rows))
    log("")
    for n in notes:
        log(f"- {n}")
    log(f"\nwrote {paths['json']}, {paths['md'].name}, {paths['csv'].name} in {results['wall_seconds']:.1f} s")
    return RunResult(results, out, paths, gate_failures)
