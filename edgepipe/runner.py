"""The runner: recipe -> task data -> torch model (source + stages) -> exports -> PTQ variants ->
benchmarks -> gates -> results.{json,md,csv}.

Building goes through the artifact store (``edgepipe.chain``), so a re-run skips every verified step.
Benchmarks always run again: they are measurements. The API prints nothing unless given a ``log``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepipe.artifact import Artifact
from edgepipe.benchmarks.explain import explain_rows
from edgepipe.chain import Targets, Unsupported, build_checkpoints, build_targets, check_tools
from edgepipe.compress.report import quantization_notes
from edgepipe.environment import describe_environment, package_version
from edgepipe.errors import InputError
from edgepipe.files import sha256_json
from edgepipe.formats import FORMATS
from edgepipe.gates import check_gates
from edgepipe.progress import Progress, no_progress
from edgepipe.recipe import Recipe, load_recipe
from edgepipe.results import RESULTS_SCHEMA_VERSION, ArtifactRef, ResultRow, failed_row
from edgepipe.stage import Log, StageContext, silent
from edgepipe.store import ArtifactStore
from edgepipe.tasks import EvalSet, Task, build_task
from edgepipe.tasks.base import load_outputs, save_outputs


@dataclass
class RunResult:
    results: dict[str, Any]
    rows: list[ResultRow]
    out_dir: Path
    paths: dict[str, Path]
    gate_failures: list[str]
    # Set when no artifact could be checked at all (every runtime unavailable): the run proves nothing.
    unchecked: str | None = None


def reference_outputs(
    model: Artifact, data: EvalSet, data_dir: Path, threads: int, force: bool = False
) -> tuple[Path, list[Any]]:
    """The torch model's outputs on the evaluation data, saved once per (model as built, data, torch)."""
    from edgepipe.benchmarks.harness import for_session
    from edgepipe.runtimes import get_runtime

    key = sha256_json([model.manifest.lineage.cache_key, model.sha256, data.sha256(), package_version("torch")])
    path = data_dir / f"reference-{key[:16]}.npz"
    try:
        outputs = load_outputs(path)
        if not force and len(outputs) == len(data.batches):
            return path, outputs
    except (OSError, ValueError, KeyError):
        pass
    with get_runtime("torch").load(model.model_file, threads=threads) as session:
        outputs = [session.run(for_session(session, b)[0])[0] for b in data.batches]
    save_outputs(path, outputs)
    return path, outputs


def _points(recipe: Recipe, task: Task, pre: Any, data_dir: Path) -> list[dict[str, Any]]:
    """Every (threads, batch, sequence length) combination, with real test data saved for each shape."""
    b = recipe.benchmark
    lengths: list[int | None] = list(b.sequence_lengths) if b.sequence_lengths else task.sequence_lengths()
    feeds: dict[tuple[int, int | None], str] = {}
    points = []
    for threads, batch, length in itertools.product(b.threads, b.batch_size, lengths):
        if (batch, length) not in feeds:
            batches = task.timing_feeds(pre, batch, length)
            if not batches:
                raise InputError(f"benchmark.batch_size: {batch} is more than the task's test data holds")
            data = EvalSet(batches, [None] * len(batches))
            feeds[(batch, length)] = str(data.save(data_dir / f"timing-{data.sha256()[:12]}.npz"))
        points.append(
            {"threads": threads, "batch_size": batch, "sequence_length": length, "feeds": feeds[(batch, length)]}
        )
    return points


def _generation(recipe: Recipe, task: Task, pre: Any) -> dict[str, Any] | None:
    """A language model's generation benchmark: a held-out prompt, checked against the model's context."""
    g = recipe.benchmark.generation
    prompt = task.generation_prompt(pre, g.prompt_tokens)
    if prompt is None:
        return None
    if pre.max_length is not None and g.prompt_tokens + g.new_tokens > pre.max_length:
        raise InputError(
            f"benchmark.generation: {g.prompt_tokens} prompt + {g.new_tokens} new tokens exceed "
            f"the model's maximum length {pre.max_length}"
        )
    return {"prompt": prompt, "new_tokens": g.new_tokens, "runs": g.runs}


def _jobs(
    recipe: Recipe,
    artifacts: list[Artifact],
    points: list[dict[str, Any]],
    evaluations: dict[str, dict[str, Any]],
    generation: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """One benchmark job per (artifact, runtime, inference precision, device); ``evaluations`` gives each
    artifact (by sha256) the task data and the reference outputs of the torch model it was exported from."""
    from edgepipe.benchmarks.model_file import describe_file
    from edgepipe.runtimes import default_runtime

    b = recipe.benchmark
    jobs = []
    for art in artifacts:
        m = art.manifest
        ref = describe_file(art.model_file, m.format, m)  # the store verified it: its manifest is the truth
        for runtime in dict.fromkeys([default_runtime(m.format), *b.runtimes.get(m.format, [])]):
            # An FP32 file also runs at each lower inference precision asked of this runtime: a row each,
            # compared with the same file at FP32 (its "parent").
            lower = b.inference_precisions.get(runtime, []) if m.precision == "fp32" else []
            for precision, device in itertools.product([None, *lower], b.devices):
                artifact = {**ref.model_dump(), "parent_sha256": m.lineage.parent_sha256}
                if precision:
                    artifact |= {"name": f"{m.name}:{precision}", "precision": precision, "parent_sha256": art.sha256}
                jobs.append(
                    {
                        "path": str(art.model_file),
                        "runtime": runtime,
                        "device": device,
                        "points": points,
                        "warmup": b.warmup,
                        "runs": b.runs,
                        "max_seconds": b.max_seconds,
                        "seed": recipe.seed,
                        "eval": evaluations[art.sha256],
                        "generation": generation,
                        "options": {"inference_precision": precision} if precision else None,
                        "artifact": artifact,
                    }
                )
    return jobs


def _ran_at(row: ResultRow, job: dict[str, Any]) -> ResultRow:
    """A reduced-precision row whose runtime fell back (a CPU without bf16 runs f32) is not a result."""
    asked = (job.get("options") or {}).get("inference_precision")
    got = row.session.get("inference_precision")
    if row.status == "ok" and asked and got and got != asked:
        said = f"asked for {asked} inference, the runtime ran {got} (this CPU lacks it)"
        point = {"threads": row.threads, "batch_size": row.batch_size, "sequence_length": row.sequence_length}
        unavailable = failed_row(row.artifact, row.runtime, row.device, "unavailable", said, **point)
        unavailable.session = row.session
        return unavailable
    return row


def _unsupported_row(step: Unsupported, recipe: Recipe) -> ResultRow:
    from edgepipe.runtimes import default_runtime

    ref = ArtifactRef(
        name=step.name, format=step.format, precision=step.precision, path=None, size_bytes=None, sha256=None
    )
    row = failed_row(ref, default_runtime(step.format), recipe.benchmark.devices[0], "unsupported", step.reason)
    row.name = step.name
    return row


def _summary(artifact: Artifact) -> str:
    """What a derived artifact (a bundle) says of itself in its manifest, for the notes."""
    said = artifact.manifest.model.get("summary")
    return f" ({said})" if said else ""


def run_id(name: str, timestamp: str) -> str:
    """``20261201T033512-quickstart-1a2b3c``: sortable by time, readable, unique (a random tail)."""
    import secrets

    stamp = "".join(c for c in timestamp[:19] if c.isalnum())
    return f"{stamp}-{name}-{secrets.token_hex(3)}"


def _record(document: dict[str, Any], out: Path, db: Path | None) -> str:
    """Put the run in the results store; a store that cannot be written is said, not fatal (results.json
    stands on its own)."""
    from edgepipe.errors import EdgepipeError
    from edgepipe.history import default_db_path, record

    where = db or default_db_path()
    try:
        record(document, out, where)
    except EdgepipeError as e:
        return f"results store: not recorded: {e}"
    return f"recorded as {document['run_id']} in {where} (edgepipe history, edgepipe compare)"


def run_recipe(
    recipe: Recipe | str | Path,
    out_dir: str | Path | None = None,
    force: bool = False,
    log: Log | None = None,
    progress: Progress | None = None,
    db: Path | None = None,
) -> RunResult:
    """Run a recipe end to end and write results.json / .md / .csv into the run folder, and record the run
    in the results store (``db``, default ``edgepipe.history.default_db_path()``) for ``edgepipe history``
    and ``edgepipe compare``. ``progress`` draws long steps (``edgepipe.progress.Console``).

    Gate failures do not raise: they are in ``RunResult.gate_failures`` (the CLI exits 4 on them), and a
    run in which nothing could be checked says so in ``RunResult.unchecked`` (the CLI exits 3).

    >>> result = run_recipe("recipes/quickstart.yaml", log=print)   # doctest: +SKIP
    >>> result.rows[0].latency_ms.median                             # doctest: +SKIP
    """
    from edgepipe.benchmarks.repeat import Repeat, measure
    from edgepipe.benchmarks.report import add_comparisons, recommend, render_table, write_results
    from edgepipe.benchmarks.worker import run_in_subprocess
    from edgepipe.compress.report import checkpoint_summary, compression_notes, qat_notes

    log = log or silent
    started = time.perf_counter()
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir or recipe.output_dir or Path("runs") / recipe.name)
    check_tools(recipe)
    try:
        store = ArtifactStore(out / "artifacts")
    except OSError as e:
        raise InputError(f"{out}: cannot create the run folder ({e.strerror})") from None

    task = build_task(recipe.task, recipe.seed, out / "data")
    ctx = StageContext(task, recipe.seed, recipe.base_dir, log, recipe.gates, progress or no_progress)
    sizes = ", ".join(f"{k} {v}" for k, v in task.split_sizes().items())
    log(f"[data] {task.kind} on {task.name}: {sizes} {task.unit}")
    checkpoints = build_checkpoints(recipe, ctx, store, force)
    model = checkpoints[-1].model
    # Evaluation and timing data before any export: a length the model cannot take fails here.
    data_dir = out / "data"
    pre = ctx.preprocessor(model)
    data = task.eval_set(pre)
    points = _points(recipe, task, pre, data_dir)
    generation = _generation(recipe, task, pre)
    built = [(c, build_targets(recipe, ctx, c.model, store, force, c.tag)) for c in checkpoints]

    data_path = data.save(data_dir / f"eval-{data.sha256()[:12]}.npz")
    threads = recipe.benchmark.threads[0]
    evaluations: dict[str, dict[str, Any]] = {}
    references: dict[str, dict[str, float]] = {}  # each file is scored against the torch model it came from
    artifacts: list[Artifact] = []
    for c, made in built:
        reference_path, reference = reference_outputs(c.model, data, data_dir, threads, force)
        evaluation = {"task": task.kind, "data": str(data_path), "reference": str(reference_path)}
        metrics = task.quality(reference, data, None)[0]
        for a in [c.model, *made.models]:
            evaluations[a.sha256], references[a.sha256] = evaluation, metrics
        artifacts += ([c.model] if recipe.benchmark.reference else []) + made.models
    reference_metrics = references[model.sha256]
    targets = Targets(
        [a for _, t in built for a in t.models],
        [a for _, t in built for a in t.extras],
        [u for _, t in built for u in t.unsupported],
    )

    rows: list[ResultRow] = [_unsupported_row(u, recipe) for u in targets.unsupported if u.format in FORMATS]
    jobs = _jobs(recipe, artifacts, points, evaluations, generation)
    b = recipe.benchmark
    repeat = Repeat(b.processes, b.max_processes, b.target_half_width, b.time_budget_s)
    measured = measure(jobs, repeat, lambda job: run_in_subprocess(job, b.timeout_s), log, progress or no_progress)
    for job, job_rows in zip(jobs, measured, strict=True):
        for row in job_rows:
            row = _ran_at(row, job)
            row.name = job["artifact"]["name"]
            rows.append(row)

    # With compression the first checkpoint is the dense source model: what every compressed file faces.
    compressed = {a.sha256 for c, t in built if c.compressed for a in [c.model, *t.models]}
    dense = {a.sha256 for a in [built[0][0].model, *built[0][1].models]} if compressed else set()
    notes = add_comparisons(rows, type(task), dense, compressed)
    notes += [n for c in checkpoints for n in compression_notes(c)]
    notes += qat_notes(rows, checkpoints, type(task))
    first_metric = task.metrics[0].name if task.metrics else None
    quantization = {a.manifest.name: a.manifest.quantization for a in targets.models if a.manifest.quantization}
    notes += [n for name, q in quantization.items() for n in quantization_notes(name, q, first_metric)]
    explained = explain_rows(rows, log=log) if recipe.benchmark.explain else {}
    notes += [f"{label}: {e['answer']}" for label, e in explained.items() if "answer" in e]
    notes += [f"{u.name}: {u.format} unsupported: {u.reason}" for u in targets.unsupported if u.format not in FORMATS]
    notes += [f"{a.manifest.name}: {a.path}" + _summary(a) for a in targets.extras]
    report = check_gates(rows, type(task), recipe.gates, reference_metrics, references)
    notes += [f"GATE FAILED: {f}" for f in report.failures]
    recommendation = None
    if recipe.benchmark.memory_budget_mb is not None:
        recommendation, said = recommend(rows, type(task), recipe.benchmark.memory_budget_mb)
        notes.append(said)
    unchecked = None
    if report.needed and not report.checked:
        unchecked = f"no artifact could be checked: none of the {report.needed} benchmark rows could run and be scored"
        notes.append(unchecked[0].upper() + unchecked[1:])
    environment = describe_environment()
    results = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run_id": run_id(recipe.name, environment["timestamp"]),
        "recipe": {
            "name": recipe.name,
            "config": recipe.model_dump(mode="json"),
            "sha256": sha256_json(recipe.model_dump(mode="json")),
        },
        "task": {
            "kind": task.kind,
            "name": task.name,
            "reference_metrics": reference_metrics,
            "metrics": [{"name": m.name, "higher_is_better": m.higher_is_better} for m in task.metrics],
            "parity": [{"name": m.name, "higher_is_better": m.higher_is_better} for m in task.parity_measures],
        },
        "checkpoints": [checkpoint_summary(c, references[c.model.sha256]) for c in checkpoints],
        "environment": environment,
        "notes": notes,
        "quantization": quantization,
        "explain": explained,
        "recommendation": recommendation,
        "wall_seconds": round(time.perf_counter() - started, 2),
    }
    paths = write_results(results, rows, type(task), out)
    document = {**results, "results": [r.to_dict() for r in rows]}
    stored = _record(document, out, db)
    log("")
    log(render_table(rows, type(task)))
    log("")
    for n in notes:
        log(f"- {n}")
    log(f"\nwrote {paths['json']}, {paths['md'].name}, {paths['csv'].name} in {results['wall_seconds']:.1f} s")
    log(stored)
    return RunResult(document, rows, out, paths, report.failures, unchecked)
