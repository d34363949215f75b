"""Quantization that meets the task's quality bar, or says why it could not.

A quantizer's default can wreck a model (onnxruntime's static INT8 on BERT keeps cosine 0.35 of the FP32
embeddings). So a quantize step does not ship what the tool made blindly: it scores the result on the
task's **tuning data** (the calibration split, never the test split) against the FP32 parent on the
format's own runtime, holds it to the recipe's gates for quantized models, and when it misses them tries
the tool's own other options (``QuantizeConfig.alternatives``: operator types, per-channel weights,
calibration method, layers kept in float), cheapest change first. The first that meets the bar is
shipped; if none does, the best is, and the report's gate says so. Every attempt, its options and its
figures are recorded in the manifest (``quantization.search``), and the run's notes name the rejected ones.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.configs import QuantizeConfig
from edgepipe.errors import EdgepipeError, InputError, first_line

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.stage import StageContext
    from edgepipe.store import Parents, StageOutput

# At most this many configurations per quantize step (each is a quantization and a scoring).
MAX_ATTEMPTS = 12
THREADS = 2

Quantize = Callable[["Parents", Any, Path, "StageContext"], "StageOutput"]


def changes(requested: QuantizeConfig, candidate: QuantizeConfig) -> dict[str, Any]:
    """The options a candidate sets differently from the requested configuration."""
    a, b = requested.model_dump(mode="json"), candidate.model_dump(mode="json")
    return {k: v for k, v in b.items() if a.get(k) != v}


def score(path: Path, fmt: str, precision: str, ctx: StageContext, parent: Artifact) -> dict[str, Any]:
    """The task's metrics and parity of the model file at ``path`` on the format's default runtime, on the
    tuning data, against the FP32 parent's outputs there; and its gate failures."""
    from edgepipe.benchmarks.harness import Evaluation, evaluate
    from edgepipe.results import ArtifactRef, ResultRow
    from edgepipe.runtimes import default_runtime, get_runtime

    data, reference, reference_metrics = ctx.tuning(parent)
    runtime = default_runtime(fmt)
    with get_runtime(runtime).load(path, threads=THREADS) as session:
        metrics, parity, breakdown, nonfinite = evaluate(session, Evaluation(type(ctx.task), data, reference))
    ref = ArtifactRef(name=path.parent.name, format=fmt, precision=precision, path=None, size_bytes=None, sha256=None)
    row = ResultRow(
        artifact=ref,
        runtime=runtime,
        device="cpu",
        threads=THREADS,
        batch_size=None,
        status="ok",
        metrics=metrics,
        parity=parity,
        breakdown=breakdown,
    )
    failures = [f"{nonfinite} NaN or Inf output values"] if nonfinite else []
    if ctx.gates is not None:
        failures += type(ctx.task).gate_failures(row, ctx.gates, reference_metrics)
    return {"metrics": metrics, "parity": parity, "breakdown": breakdown, "failures": failures}


def _rank(attempt: dict[str, Any], ctx: StageContext) -> tuple[float, ...]:
    """Order of attempts when none meets the bar: fewest gate failures, then the task's first metric."""
    measure = type(ctx.task).metrics[0]
    value = attempt.get("metrics", {}).get(measure.name)
    if value is None or value != value:
        return (len(attempt.get("failures", [])) or 1e9, float("inf"))
    return (len(attempt["failures"]), -value if measure.higher_is_better else value)


def quantize_to_bar(
    quantize: Quantize, parents: Parents, config: QuantizeConfig, out_dir: Path, ctx: StageContext
) -> StageOutput:
    """Run ``quantize`` with ``config``, first sweeping its calibration when asked
    (``compress.calibration_sweep``); then see ``_to_bar``."""
    sweep: dict[str, Any] | None = None
    if config.sweep is not None:
        from edgepipe.compress.calibration_sweep import run_sweep

        sweep = run_sweep(quantize, parents, config, out_dir, ctx)
    output = _to_bar(quantize, parents, config, out_dir, ctx)
    if sweep is not None:
        output.quantization = {**(output.quantization or {}), "calibration_sweep": sweep}
    return output


def _to_bar(
    quantize: Quantize, parents: Parents, config: QuantizeConfig, out_dir: Path, ctx: StageContext
) -> StageOutput:
    """Run ``quantize`` with ``config``; when its result misses the task's gates (or its quality budget), the
    tool's alternatives: for a tool that can blame its result (``QuantizeConfig.blame``), the fixes that
    blame proposes, each re-measured and blamed again when it still misses; else the requested
    configuration's alternatives in turn. With a budget (``max_quality_drop``) the search goes on past the
    first configuration within it, also trying the tool's faster options, and ships the fastest measured
    one within the budget (``edgepipe.budget``). The shipped files end up in ``out_dir``; the tries' folders
    are removed."""
    if not searched(config, ctx):
        # Nothing to choose between (no gates, search off, or a tool with no other options): the report's
        # gates, measured on the test split, judge the one result.
        return quantize(parents, config, out_dir, ctx)
    parent = parents["model"]
    try:
        ctx.tuning(parent)
    except InputError as e:  # e.g. a calibration split too short for the evaluation's lengths
        return _unsearched(quantize(parents, config, out_dir, ctx), str(e))
    budget = config.max_quality_drop
    attempts: list[dict[str, Any]] = []
    outputs: list[StageOutput | None] = []
    met: list[int] = []
    # Where the next candidates come from: the fixes or faster options of earlier attempts, latest first.
    # Alternatives are made only when needed: ranking a model's layers takes time.
    sources: list[Iterator[QuantizeConfig]] = []
    tried: list[dict[str, Any]] = []
    for i in range(MAX_ATTEMPTS):
        try:
            candidate = config if i == 0 else _next(sources, tried)
        except Exception as e:  # ranking the layers failed: the attempts so far stand
            attempts[-1]["failures"].append(f"no further alternatives: {_said(e)}")
            break
        if candidate is None:
            break
        tried.append(candidate.model_dump(mode="json"))
        work = out_dir / f".try-{i}"
        work.mkdir()
        t0 = time.perf_counter()
        attempt: dict[str, Any] = {"changes": changes(config, candidate)}
        try:
            output: StageOutput | None = quantize(parents, candidate, work, ctx)
        except Exception as e:  # the requested configuration's failure is the step's; an alternative's is not
            if i == 0:
                raise
            output, attempt["failures"] = None, [f"failed: {_said(e)}"]
        if output is not None:
            try:
                attempt |= score(work / output.primary, output.format, output.precision, ctx, parent)
            except Exception as e:
                if i == 0:  # the model is made but cannot be scored here: ship it, its row will say why
                    _move(work, out_dir)
                    return _unsearched(output, f"scoring failed: {_said(e)}")
                output, attempt["failures"] = None, [f"scoring failed: {_said(e)}"]
            else:
                attempt["failures"] += _over_budget(attempt, budget, ctx, ctx.tuning(parent)[2])
        attempt["seconds"] = round(time.perf_counter() - t0, 1)
        attempts.append(attempt)
        outputs.append(output)
        label = "requested" if i == 0 else f"alternative {i} ({_describe(attempt['changes'])})"
        verdict = "meets the bar" if not attempt["failures"] else "; ".join(attempt["failures"][:2])
        ctx.log(f"[search] {label}: {verdict}")
        if not attempt["failures"]:
            met.append(i)
            if budget is None:
                break
            sources.append(candidate.faster())
        elif output is not None and not met:  # within a budget already: only faster options are tried
            _push_fixes(sources, candidate, parent, work / output.primary, attempt, ctx, first=i == 0)
        _keep_on_disk(out_dir, attempts, outputs, met, ctx)
    chosen = _choose(out_dir, attempts, outputs, met, budget, parent, ctx)
    shipped = outputs[chosen]
    assert shipped is not None
    _move(out_dir / f".try-{chosen}", out_dir)
    for i in range(len(attempts)):
        shutil.rmtree(out_dir / f".try-{i}", ignore_errors=True)
    data, _, reference_metrics = ctx.tuning(parent)
    shipped.quantization = {
        **(shipped.quantization or {}),
        "search": {
            "met_bar": bool(met),
            "chosen": chosen,
            "bar": bar(ctx.gates) if ctx.gates is not None else None,
            "max_quality_drop": budget,
            "drop_unit": type(ctx.task).drop_unit if budget is not None else None,
            "tuning_data": {"split": "calibration", "batches": len(data.batches), "reference": "fp32 parent"},
            "reference_metrics": reference_metrics,
            "attempts": attempts,
        },
    }
    return shipped


def _next(sources: list[Iterator[QuantizeConfig]], tried: list[dict[str, Any]]) -> QuantizeConfig | None:
    """The next configuration not tried yet, from the latest source that still has one."""
    while sources:
        for candidate in sources[-1]:
            if candidate.model_dump(mode="json") not in tried:
                return candidate
        sources.pop()
    return None


def _push_fixes(
    sources: list[Iterator[QuantizeConfig]],
    candidate: QuantizeConfig,
    parent: Artifact,
    model: Path,
    attempt: dict[str, Any],
    ctx: StageContext,
    first: bool,
) -> None:
    """After a miss: the fixes the attempt's blame proposes, where the tool blames (``edgepipe.blame``);
    else, after the requested configuration's miss only, its alternatives."""
    from edgepipe.blame import summary as blame_summary

    blamed = None
    try:
        blamed = candidate.blame(parent, model, ctx)
    except Exception as e:  # a blame that fails leaves the tool's plain alternatives
        attempt["failures"].append(f"blame failed: {_said(e)}")
    if blamed is not None:
        attempt["blame"] = blamed.record()
        ctx.log(f"[search] {blame_summary('blame', attempt['blame'])}")
        sources.append(candidate.alternatives(parent, ctx, blamed))
    elif first:
        sources.append(candidate.alternatives(parent, ctx))


def _over_budget(
    attempt: dict[str, Any], budget: float | None, ctx: StageContext, reference: dict[str, float]
) -> list[str]:
    """The budget's failure, with the drop recorded in the attempt."""
    if budget is None:
        return []
    drop = type(ctx.task).quality_drop(attempt.get("metrics", {}), reference)
    attempt["drop"] = None if drop is None else round(drop, 6)
    if drop is None:
        return [f"no {type(ctx.task).drop_unit} drop to hold to the budget"]
    return [] if drop <= budget else [f"drop {drop:.4g} {type(ctx.task).drop_unit} > budget {budget:g}"]


def _keep_on_disk(
    out_dir: Path, attempts: list[dict[str, Any]], outputs: list[StageOutput | None], met: list[int], ctx: StageContext
) -> None:
    """Only the best miss so far and the attempts that meet the bar stay on disk (a model copy per attempt
    adds up for a transformer)."""
    best = _best(attempts, outputs, ctx)
    for j, kept in enumerate(outputs):
        if kept is not None and j != best and j not in met:
            shutil.rmtree(out_dir / f".try-{j}", ignore_errors=True)
            outputs[j] = None


def _choose(
    out_dir: Path,
    attempts: list[dict[str, Any]],
    outputs: list[StageOutput | None],
    met: list[int],
    budget: float | None,
    parent: Artifact,
    ctx: StageContext,
) -> int:
    """The attempt to ship: the first that met the bar; with a budget, the fastest measured of those that
    met it (``edgepipe.budget``); with none met, the best."""
    if not met:
        return _best(attempts, outputs, ctx)
    if budget is None or len(met) == 1:
        return met[0]
    from edgepipe.budget import fastest

    paths = {i: out_dir / f".try-{i}" / o.primary for i in met if (o := outputs[i]) is not None}
    return fastest(paths, attempts, parent, ctx)


def searched(config: QuantizeConfig, ctx: StageContext) -> bool:
    """Whether a quantize step is held to the bar: search on, gates or a budget given, and a tool with
    alternatives."""
    held = ctx.gates is not None or config.max_quality_drop is not None
    return config.search and held and config.has_alternatives()


def bar(gates: Any) -> dict[str, Any]:
    """The gates a quantized model is held to (an FP32 model's parity gates are not its bar)."""
    return {k: v for k, v in gates.model_dump(mode="json").items() if not k.startswith("fp32_")}


def _best(attempts: list[dict[str, Any]], outputs: list[StageOutput | None], ctx: StageContext) -> int:
    return min((i for i, o in enumerate(outputs) if o is not None), key=lambda i: _rank(attempts[i], ctx))


def _move(source: Path, target: Path) -> None:
    for f in source.iterdir():
        f.rename(target / f.name)
    source.rmdir()


def _unsearched(output: StageOutput, why: str) -> StageOutput:
    output.quantization = {**(output.quantization or {}), "search": {"skipped": why}}
    return output


def _said(e: Exception) -> str:
    return first_line(e) if isinstance(e, EdgepipeError) else f"{type(e).__name__}: {first_line(e, 160)}"


def rank_by_outliers(activations: Iterator[dict[str, np.ndarray]], inputs_of: dict[str, str]) -> list[str]:
    """Compute nodes ranked most outlier-prone first: by the crest factor, max |x| / rms(x), of the
    activation each takes (``inputs_of``: node -> its input's name in the ``activations`` of each sample),
    averaged over the samples. A quantized tensor shares one scale across its range, so its noise
    relative to its signal grows with that ratio (the FFN output projections of BERT come first)."""
    crest: dict[str, list[float]] = {t: [] for t in set(inputs_of.values())}
    for values in activations:
        for t in crest:
            x = np.asarray(values[t], dtype=np.float64)
            crest[t].append(float(np.abs(x).max() / max(np.sqrt(np.mean(x * x)), 1e-12)))
    score = {node: float(np.mean(crest[t])) for node, t in inputs_of.items()}
    score = {node: v if v == v else float("inf") for node, v in score.items()}  # NaN/Inf activations first
    return sorted(score, key=lambda node: -score[node])


def summary(name: str, quantization: dict[str, Any] | None, measure: str | None = None) -> str | None:
    """One note for a run's report: what the search rejected, with ``measure`` (the task's first metric)
    of each attempt, and what it shipped."""
    search = (quantization or {}).get("search")
    if not search or len(search.get("attempts", [])) < 2 or search.get("max_quality_drop") is not None:
        return None  # a budget's search has its own note (edgepipe.budget.summary)

    def said(attempt: dict[str, Any]) -> str:
        value = attempt.get("metrics", {}).get(measure) if measure else None
        figure = f" {measure} {value:.4f}" if isinstance(value, float) else ""
        return f"{_describe(attempt['changes']) or 'as requested'}{figure}"

    chosen = search["attempts"][search["chosen"]]
    rejected = "; ".join(said(a) for i, a in enumerate(search["attempts"]) if i != search["chosen"])
    first = "; ".join(search["attempts"][0]["failures"][:2])
    head = f"{name}: the requested configuration missed the bar on the tuning data ({first})"
    if search["met_bar"]:
        return f"{head}; shipped {said(chosen)}, which meets it; rejected: {rejected}"
    tried = len(search["attempts"])
    return f"{head}; no configuration of {tried} met it: shipped the best, {said(chosen)}; rejected: {rejected}"


def _describe(changed: dict[str, Any]) -> str:
    """``key=value`` for each changed option, long lists as their length."""

    def short(v: Any) -> str:
        if isinstance(v, list) and len(v) > 3:
            return f"[{len(v)} items]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k}: {short(x)}" for k, x in v.items() if x) + "}"
        return str(v)

    return ", ".join(f"{k}={short(v)}" for k, v in changed.items())
