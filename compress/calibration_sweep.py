"""How much calibration data a static quantization needs, and with which calibration method.

A quantize entry's ``calibration_sweep`` quantizes the model once per calibration method, sample count and
seed: every point is a full quantization calibrated on ``samples`` examples drawn at random with that seed
(``QuantizeConfig.sweep_point``), scored like a search attempt (``edgepipe.search.score``) on the task's
**tuning data** (the calibration split, never the test split) against the FP32 parent on the format's own
runtime. Its quality drop is in the task's own unit (``Task.quality_drop``: accuracy points, cosine,
relative perplexity).

Several seeds per size say how much the result depends on *which* examples were drawn, which a single
run cannot tell apart from the effect of *how many*. The recommendation is "the smallest stable set"
(``recommend``): per method, the smallest size whose spread over the seeds is within the tolerance and
whose mean drop is within the tolerance of the largest size's; across methods, the lowest mean drop.

The sweep only measures and recommends: the step still ships what its own configuration makes, and the
figures go to the manifest (``quantization.calibration_sweep``), the run's notes (``sweep_notes``) and the
HTML report's plot.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepipe.configs import CalibrationSweep, QuantizeConfig
from edgepipe.errors import EdgepipeError, InputError, first_line

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.search import Quantize
    from edgepipe.stage import StageContext
    from edgepipe.store import Parents

# A quality difference too small to be anything but float noise (accuracy points computed as 100 * (a - b)).
_EPSILON = 1e-9
# The tolerance when a recipe gives none, in the task kind's drop unit: half an accuracy point on a small
# split is one or two examples; 0.002 cosine and 1% perplexity are what the kinds' own gates call noise.
DEFAULT_TOLERANCE = {"classification": 0.5, "embedding": 0.002, "language-modeling": 0.01}
# Other task kinds: 1% of the FP32 parent's first metric (its drop taken as relative when it has no unit).
RELATIVE_TOLERANCE = 0.01


def run_sweep(
    quantize: Quantize, parents: Parents, config: QuantizeConfig, out_dir: Path, ctx: StageContext
) -> dict[str, Any]:
    """Quantize ``parents["model"]`` at every point of ``config.sweep`` (method x size x seed) in folders
    under ``out_dir`` that are removed afterwards, score each on the tuning data, and return the record
    stored as the manifest's ``quantization.calibration_sweep`` (see the module docstring)."""
    sweep = config.sweep
    if sweep is None:
        raise ValueError("run_sweep needs a config with a calibration_sweep")
    parent = parents["model"]
    methods = sweep_methods(config, sweep, parent.manifest.format)
    split = len(ctx.calibration_feeds(parent, 1))
    sizes = [n for n in sweep.samples if n <= split]
    skipped = [{"samples": n, "why": f"the calibration split has {split}"} for n in sweep.samples if n > split]
    seeds = [ctx.seed + i for i in range(sweep.seeds)]
    reference_metrics = ctx.tuning(parent)[2]
    measure = type(ctx.task).metrics[0]
    unit, tolerance = _unit_and_tolerance(ctx, sweep, reference_metrics.get(measure.name))
    grid = [(m, n, s) for m in methods for n in sizes for s in seeds]
    step = f"[sweep] {config.variant_name(parent.manifest.format)}"
    points: list[dict[str, Any]] = []
    errors: list[Exception] = []
    for k, (method, n, seed) in enumerate(grid):
        ctx.progress(step, k, len(grid))
        found, error = _point(quantize, parents, config.sweep_point(method, n, seed), out_dir / f".sweep-{k}", ctx)
        points.append({"method": method, "samples": n, "seed": seed, **_figures(found, reference_metrics, ctx)})
        if error is not None:
            errors.append(error)
        ctx.log(f"[sweep] {_said_point(points[-1], unit, tolerance, ctx)}")
    ctx.progress(step, len(grid), len(grid))
    if errors and len(errors) == len(grid):  # nothing measured: the tool's failure is the step's
        raise errors[0]
    summary = summarize(points)
    return {
        "metric": measure.name,
        "reference": reference_metrics.get(measure.name),
        "drop_unit": unit,
        "tolerance": tolerance,
        "calibration_split": split,
        "seeds": seeds,
        "points": points,
        "summary": summary,
        "recommended": recommend(summary, tolerance, unit),
        "skipped": skipped,
    }


def sweep_methods(config: QuantizeConfig, sweep: CalibrationSweep, fmt: str = "") -> list[str]:
    """The methods to sweep: the recipe's, each one the tool has, or all of the tool's."""
    known = list(type(config).sweep_methods)
    tool = f"{fmt} {config.method}".strip()
    if not known:
        raise InputError(f"calibration_sweep: {tool} quantization takes no calibration sweep")
    for method in sweep.methods or []:
        if method not in known:
            raise InputError(
                f"calibration_sweep.methods: unknown calibration method {method!r} for {tool} "
                f"(known: {', '.join(known)})"
            )
    return list(dict.fromkeys(sweep.methods)) if sweep.methods else known


def default_tolerance(kind: str, reference: float | None = None) -> float:
    """The stability tolerance of a task kind, in its drop unit (``DEFAULT_TOLERANCE``); another kind's is
    1% of the FP32 parent's first metric ``reference`` (1% itself without one)."""
    kind = kind.replace("_", "-")
    if kind in DEFAULT_TOLERANCE:
        return DEFAULT_TOLERANCE[kind]
    if reference is None or not math.isfinite(reference) or reference == 0:
        return RELATIVE_TOLERANCE
    return RELATIVE_TOLERANCE * abs(reference)


def _unit_and_tolerance(ctx: StageContext, sweep: CalibrationSweep, reference: float | None) -> tuple[str, float]:
    """The drop unit and the tolerance in it: the recipe's, or the task kind's default. A task without a
    drop unit of its own is measured in relative change of its first metric, held to 1%."""
    task = type(ctx.task)
    if task.drop_unit:
        unit, tolerance = task.drop_unit, default_tolerance(task.kind, reference)
    else:
        unit, tolerance = f"relative {task.metrics[0].name}", RELATIVE_TOLERANCE
    return unit, sweep.tolerance if sweep.tolerance is not None else tolerance


def _figures(found: dict[str, Any], reference: dict[str, float], ctx: StageContext) -> dict[str, Any]:
    """A point's record from what ``_point`` found: the task's first metric, its drop from the parent and
    the parity with it (finer than the metric's steps: one flipped example moves accuracy by 1/split);
    or the error."""
    if "error" in found:
        return {"error": found["error"], "seconds": found["seconds"]}
    measure = type(ctx.task).metrics[0]
    value = found["metrics"].get(measure.name)
    drop = _drop(ctx, value, reference, measure.name, measure.higher_is_better)
    return {"metric": value, "drop": drop, "parity": found["parity"], "seconds": found["seconds"]}


def _drop(
    ctx: StageContext, value: float | None, reference: dict[str, float], name: str, higher_is_better: bool
) -> float | None:
    """The point's quality drop from the FP32 parent (positive: worse), rounded past float noise: the
    task's own (``quality_drop``), or the relative change of its first metric where it has none."""
    drop = type(ctx.task).quality_drop({} if value is None else {name: value}, reference)
    ref = reference.get(name)
    if drop is None and value is not None and ref:
        drop = (ref - value if higher_is_better else value - ref) / abs(ref)
    return None if drop is None or not math.isfinite(drop) else round(drop, 9)


def _point(
    quantize: Quantize, parents: Parents, config: QuantizeConfig, work: Path, ctx: StageContext
) -> tuple[dict[str, Any], Exception | None]:
    """One quantization at ``config`` in ``work`` (removed afterwards, also on error) and its scores:
    ({"metrics", "parity", "seconds"}, None), or ({"error", "seconds"}, the exception) when it failed."""
    from edgepipe.search import score

    parent: Artifact = parents["model"]
    shutil.rmtree(work, ignore_errors=True)  # a killed run's leftover
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        output = quantize(parents, config, work, ctx)
        scored = score(work / output.primary, output.format, output.precision, ctx, parent)
        found: dict[str, Any] = {"metrics": scored["metrics"], "parity": scored["parity"]}
        error: Exception | None = None
    except Exception as e:  # one failed point does not lose the others
        found, error = {"error": _said(e)}, e
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**found, "seconds": round(time.perf_counter() - t0, 2)}, error


def summarize(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per method and size (in the order swept), the drop's mean, range and spread over the seeds that
    were measured."""
    groups: dict[tuple[str, int], list[float]] = {}
    for p in points:
        drops = groups.setdefault((p["method"], p["samples"]), [])
        if p.get("drop") is not None:
            drops.append(p["drop"])
    rows = []
    for (method, samples), drops in groups.items():
        row: dict[str, Any] = {"method": method, "samples": samples, "seeds": len(drops)}
        if drops:
            lo, hi = min(drops), max(drops)
            row |= {"mean_drop": round(sum(drops) / len(drops), 9), "min_drop": lo, "max_drop": hi}
            row["spread"] = round(hi - lo, 9)
        else:
            row |= {"mean_drop": None, "min_drop": None, "max_drop": None, "spread": None}
        rows.append(row)
    return rows


def stable_sizes(summary: list[dict[str, Any]], tolerance: float) -> dict[str, int | None]:
    """Per method, its smallest stable size (None: none is). A size is stable when the spread of its drop
    over the seeds is within ``tolerance`` and its mean drop is within ``tolerance`` of the mean at the
    method's largest measured size: more data would not change the result by more than the tolerance."""
    out: dict[str, int | None] = {}
    for method, rows in _by_method(summary).items():
        largest = rows[-1]["mean_drop"]
        stable = [
            r["samples"]
            for r in rows
            if r["spread"] <= tolerance + _EPSILON and abs(r["mean_drop"] - largest) <= tolerance + _EPSILON
        ]
        out[method] = min(stable) if stable else None
    return out


def recommend(summary: list[dict[str, Any]], tolerance: float, unit: str = "") -> dict[str, Any] | None:
    """The smallest stable set (``stable_sizes``) of the method whose stable set has the lowest mean drop,
    ties to fewer samples, then to the method swept first. When no method has a stable size, the largest
    size of the method with the lowest mean drop there, marked ``stable: False``. None when nothing was
    measured. ``why`` says it in one sentence with the figures."""
    methods = _by_method(summary)
    if not methods:
        return None
    per_method = stable_sizes(summary, tolerance)
    order = list(methods)
    stable_rows = [next(r for r in methods[m] if r["samples"] == n) for m, n in per_method.items() if n is not None]
    candidates = stable_rows or [rows[-1] for rows in methods.values()]
    best = min(candidates, key=lambda r: (round(r["mean_drop"], 9), r["samples"], order.index(r["method"])))
    stable = per_method[best["method"]] is not None
    return {
        "method": best["method"],
        "samples": best["samples"],
        "mean_drop": best["mean_drop"],
        "spread": best["spread"],
        "stable": stable,
        "per_method": per_method,
        "why": _why(best, methods[best["method"]][-1], candidates, tolerance, unit, stable),
    }


def _by_method(summary: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The summary's measured rows per method, by size."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in summary:
        if r.get("mean_drop") is not None and math.isfinite(r["mean_drop"]):
            out.setdefault(r["method"], []).append(r)
    return {m: sorted(rows, key=lambda r: r["samples"]) for m, rows in out.items()}


def _why(
    best: dict[str, Any],
    largest: dict[str, Any],
    candidates: list[dict[str, Any]],
    tolerance: float,
    unit: str,
    stable: bool,
) -> str:
    """One sentence: why ``best`` out of ``candidates`` (each method's stable size, or its largest), with
    its figures and ``largest`` (its method's largest size) beside them."""
    f = _figure_format(tolerance)
    tol = f"{tolerance:{f}}{f' {unit}' if unit else ''}"
    head = f"{best['method']} with {best['samples']} samples"
    others = [r for r in candidates if r is not best]
    tied = [r for r in others if round(r["mean_drop"], 9) == round(best["mean_drop"], 9)]
    if tied:
        named = ", ".join(f"{r['method']} ({r['samples']})" for r in tied)
        versus = f"; tied with {named}: fewer samples first, then the method swept first"
    elif others:
        versus = "; the others' mean drops: " + ", ".join(f"{r['method']} {r['mean_drop']:{f}}" for r in others)
    else:
        versus = ""
    if not stable:
        return (
            f"No size was stable within {tol} (seeds' spread, or gap to the largest size); {head}, the largest, "
            f"has the lowest mean drop there ({best['mean_drop']:{f}}, spread {best['spread']:{f}}){versus}."
        )
    gap = (
        "it is the largest measured"
        if best["samples"] == largest["samples"]
        else f"{largest['samples']} samples give {largest['mean_drop']:{f}}"
    )
    return (
        f"{head} is the smallest stable set: mean drop {best['mean_drop']:{f}}, spread over seeds "
        f"{best['spread']:{f}}, both within {tol} ({gap}){versus}."
    )


def _figure_format(tolerance: float) -> str:
    """Decimals that show a tenth of the tolerance: .2f for half a point, .4f for 0.002 cosine."""
    if tolerance <= 0 or not math.isfinite(tolerance):
        return ".3g"
    return f".{max(2, 1 - math.floor(math.log10(tolerance)))}f"


def _said_point(point: dict[str, Any], unit: str, tolerance: float, ctx: StageContext) -> str:
    """A log line for one point: its metric, drop and agreement with the parent."""
    head = f"{point['method']}, {point['samples']} samples, seed {point['seed']}"
    if "error" in point:
        return f"{head}: failed: {point['error']} ({point['seconds']:.1f} s)"
    task = type(ctx.task)
    figures = [_value(task.metrics[0].name, point.get("metric"))]
    if point.get("drop") is not None:
        figures.append(f"drop {point['drop']:{_figure_format(tolerance)}} {unit}")
    if task.parity_measures:
        name = task.parity_measures[0].name
        figures.append(_value(name, (point.get("parity") or {}).get(name)))
    return f"{head}: {', '.join(figures)} ({point['seconds']:.1f} s)"


def _value(name: str, value: Any) -> str:
    return f"{name} {value:.4f}" if isinstance(value, float) else f"no {name}"


def _said(e: Exception) -> str:
    return first_line(e) if isinstance(e, EdgepipeError) else f"{type(e).__name__}: {first_line(e, 160)}"


def sweep_notes(name: str, sweep: dict[str, Any]) -> list[str]:
    """One or two lines for the run's notes: what the sweep recommends and what each other method needs;
    then what was skipped or failed, if anything."""
    if not sweep.get("points") and not sweep.get("skipped"):
        return []
    tolerance = float(sweep.get("tolerance") or 0)
    f = _figure_format(tolerance)
    what = f"{name}: calibration sweep ({sweep.get('drop_unit') or 'drop'}, {len(sweep.get('seeds', []))} seeds)"
    rec = sweep.get("recommended")
    if rec is None:
        lines = [f"{what}: no point could be scored" if sweep.get("points") else f"{what}: no size was swept"]
    else:
        said = f"{rec['method']} with {rec['samples']} samples (mean drop {rec['mean_drop']:{f}}, "
        said += f"spread {rec['spread']:{f}})"
        if not rec.get("stable", True):
            said += f", though no size was stable within {tolerance:{f}}"
        rows = _by_method(sweep.get("summary", []))

        def needs(method: str, n: int | None) -> str:
            if n is None:
                return f"{method} is not stable up to {rows[method][-1]['samples']}"
            mean = next(r["mean_drop"] for r in rows[method] if r["samples"] == n)
            return f"{method} needs {n} (mean drop {mean:{f}})"

        others = [needs(m, n) for m, n in rec["per_method"].items() if m != rec["method"]]
        lines = [f"{what}: recommended {'; '.join([said, *others])}"]
    failed = [p for p in sweep.get("points", []) if "error" in p]
    extra = []
    if skipped := sweep.get("skipped"):
        extra.append(f"skipped {', '.join(str(s['samples']) for s in skipped)} samples ({skipped[0]['why']})")
    if failed:
        first = failed[0]
        extra.append(
            f"{len(failed)} of {len(sweep['points'])} points failed "
            f"(first: {first['method']}, {first['samples']} samples: {first['error']})"
        )
    if extra:
        lines.append(f"{name}: calibration sweep {'; '.join(extra)}")
    return lines
