"""One run as one self-contained HTML page (``edgepipe report RUN``): the results table, four plots, a plot
per calibration sweep and the notes, rendered from ``results.json`` alone.

Nothing is measured here. The page loads nothing from anywhere: the plots are PNGs in ``data:`` URLs, the
style and the one script are inline, and a Content-Security-Policy forbids everything else, so it opens
the same from a mail attachment as from the run folder. The script counts the plots that decoded into
``body[data-plots-rendered]``, which a headless browser can read back (tests/test_html_report.py).
Older files (no ``samples_ms``, no ratio intervals) give a page without the plots they lack data for,
each replaced by a line saying why.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgepipe.benchmarks.html_explain import explain_section
from edgepipe.benchmarks.html_page import CSP, HOW_TO_READ, SCRIPT, STYLE
from edgepipe.benchmarks.report import columns
from edgepipe.errors import InputError, UnavailableError
from edgepipe.files import atomic_write_text
from edgepipe.results import Comparison, ResultRow
from edgepipe.tasks import Task, task_class

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# A figure, its alt text and its caption; or, as a plain string, why the plot is left out.
Plot = tuple["Figure", str, str]


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the (latency, metric) points that no other point beats, in order of latency: each is
    strictly better in the metric than every faster point."""
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -sign * points[i][1]))
    front: list[int] = []
    for i in order:
        if not front or sign * points[i][1] > sign * points[front[-1]][1]:
            front.append(i)
    return front


def _rows(results: dict[str, Any]) -> list[ResultRow]:
    rows = []
    for i, d in enumerate(results.get("results") or []):
        if not isinstance(d, dict):
            raise InputError(f"results[{i}]: not an object")
        d = dict(d)
        for key in ("metrics", "parity"):  # a NaN metric is written as null
            if isinstance(d.get(key), dict):
                d[key] = {k: v for k, v in d[key].items() if v is not None}
        try:
            rows.append(ResultRow.model_validate(d))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InputError(f"results[{i}].{where}: {err['msg']}") from None
    return rows


def _name(r: ResultRow) -> str:
    return r.name or r.artifact.name or f"{r.artifact.format}/{r.artifact.precision or '?'}"


def _setup(r: ResultRow) -> str:
    """The benchmark point: threads, and batch and length where set."""
    parts = [f"{r.threads or 'auto'} threads"]
    if r.batch_size not in (None, 1):
        parts.append(f"batch {r.batch_size}")
    if r.sequence_length is not None:
        parts.append(f"length {r.sequence_length}")
    return ", ".join(parts)


def _where(r: ResultRow, among: list[ResultRow]) -> str:
    """`` (2 threads, length 32)`` when ``among`` were measured at several points, else nothing."""
    return f" ({_setup(r)})" if len({_setup(o) for o in among}) > 1 else ""


def _log_if_wide(ax: Any, xs: list[float]) -> bool:
    """A log x axis when the values span more than 20x."""
    wide = min(xs) > 0 and max(xs) / min(xs) > 20
    if wide:
        ax.set_xscale("log")
    return wide


def _t(s: str) -> str:
    """Text for matplotlib: a ``$`` in a name would start mathtext."""
    return s.replace("$", r"\$")


def _figure(height: float) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, height), dpi=100)
    fig.add_subplot()
    return fig


def _metric_plot(rows: list[ResultRow], metric: dict[str, Any], pareto: bool) -> Plot | str:
    """The first metric against median latency (``pareto``: front per runtime and setup) or file size."""
    name, hib = metric["name"], bool(metric.get("higher_is_better", True))
    xkey = "median latency" if pareto else "file size"
    pts: list[tuple[ResultRow, float, float]] = []
    for r in rows:
        x = (r.latency_ms.median if r.latency_ms else None) if pareto else r.artifact.size_bytes
        if r.status == "ok" and name in r.metrics and x:
            pts.append((r, x if pareto else x / 1e6, r.metrics[name]))
    if not pts:
        return f"no ok row has both a {xkey} and {name}"
    among = [r for r, _, _ in pts]
    groups: dict[str, list[tuple[ResultRow, float, float]]] = {}
    for p in pts:
        groups.setdefault(p[0].runtime + (_where(p[0], among) if pareto else ""), []).append(p)
    fig = _figure(5)
    ax = fig.axes[0]
    for k, (series, ps) in enumerate(sorted(groups.items())):
        color = f"C{k % 10}"
        xy = [(x, y) for _, x, y in ps]
        front = pareto_front(xy, hib) if pareto else []
        ax.scatter([x for x, _ in xy], [y for _, y in xy], s=40, facecolors="none", edgecolors=color, label=series)
        if front:
            ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "o-", color=color, ms=6)
        for r, x, y in ps:
            label = _name(r) + ("" if pareto else _where(r, among))
            ax.annotate(_t(label), (x, y), xytext=(4, 4), textcoords="offset points", fontsize=7, color=color)
    _log_if_wide(ax, [x for _, x, _ in pts])
    ax.set_xlabel("median latency per call (ms)" if pareto else "file size (MB)")
    ax.set_ylabel(_t(f"{name} ({'higher' if hib else 'lower'} is better)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if pareto:
        alt = f"Scatter of {name} against median latency per runtime, with the Pareto-optimal points joined"
        cap = (
            f"{name} vs median latency. Filled and joined: the Pareto front of each runtime"
            + (" and setup" if len({_setup(r) for r in among}) > 1 else "")
            + f" (no other point is both faster and {'higher' if hib else 'lower'}); hollow: dominated."
        )
    else:
        alt = f"Scatter of {name} against file size, one point per row"
        cap = f"{name} vs file size (the model file and everything that travels with it)."
    return fig, alt, cap


def _distributions(rows: list[ResultRow]) -> Plot | str:
    """A horizontal box of every timed run per row, with the per-process medians as dots."""
    rs = [r for r in rows if r.status == "ok" and r.samples_ms]
    if not rs:
        return "no row has samples_ms (results.json before schema 5 keeps only summary statistics)"
    import matplotlib

    fig = _figure(1.2 + 0.45 * len(rs))
    ax = fig.axes[0]
    old = tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) < (3, 10)
    orient: dict[str, Any] = {"vert": False} if old else {"orientation": "horizontal"}
    ax.boxplot([r.samples_ms for r in rs], widths=0.6, flierprops={"markersize": 2, "alpha": 0.4}, **orient)
    for y, r in enumerate(rs, start=1):
        meds = r.latency_ms.process_medians if r.latency_ms else []
        ax.scatter(meds, [y] * len(meds), s=18, color="C3", zorder=3, label="process median" if y == 1 else None)
    ax.set_yticks(range(1, len(rs) + 1), [_t(r.label + _where(r, rs)) for r in rs], fontsize=8)
    ax.invert_yaxis()
    wide = _log_if_wide(ax, [min(min(r.samples_ms) for r in rs), max(max(r.samples_ms) for r in rs)])
    ax.set_xlabel("latency per call (ms)" + (", log scale" if wide else ""))
    ax.grid(axis="x", alpha=0.3)
    if any(r.latency_ms and r.latency_ms.process_medians for r in rs):
        ax.legend(fontsize=8, loc="lower right")
    alt = "Box plots of every timed run's latency per row, with each fresh process's median as a dot"
    cap = (
        "Latency of every timed run (all processes pooled): box = quartiles, whiskers 1.5 IQR, faint points "
        "beyond; red dots: the median of each fresh process, whose spread is what the intervals are built from."
    )
    return fig, alt, cap


def _ratios(rows: list[ResultRow]) -> Plot | str:
    """Each speed-up (vs fp32, vs the dense model) as a point with its 95% interval, against 1.0."""
    items: list[tuple[str, Comparison]] = []
    for r in rows:
        for what, vs in (("fp32", r.vs_fp32), ("dense fp32", r.vs_dense)):
            if vs is not None:
                said = ("" if vs.significant else " (n.s.)") + ("" if vs.ci95 else " (no interval)")
                items.append((f"{r.label}{_where(r, rows)} vs {what}{said}", vs))
    if not items:
        return "no row has a comparison (vs_fp32 or vs_dense)"
    fig = _figure(1.2 + 0.4 * len(items))
    ax = fig.axes[0]
    for y, (_, vs) in enumerate(items):
        color = "C0" if vs.significant else "C7"
        if vs.ci95:
            err = [[vs.ratio - vs.ci95[0]], [vs.ci95[1] - vs.ratio]]
            ax.errorbar(vs.ratio, y, xerr=err, fmt="o", color=color, capsize=3)
        else:
            ax.plot(vs.ratio, y, "D", color=color, mfc="none")
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_yticks(range(len(items)), [_t(label) for label, _ in items], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up: baseline median / this median (> 1: faster)")
    ax.grid(axis="x", alpha=0.3)
    alt = "Speed-up of each compared row over its baseline, as points with 95% interval bars and a line at 1"
    cap = (
        "Speed-ups with their 95% intervals (paired across processes); dashed line: no change. Grey: not "
        "significant (the interval includes 1). Hollow diamonds: no interval recorded."
    )
    return fig, alt, cap


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v


def _sweep_rows(sweep: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The measured rows of a calibration sweep's summary per method, by size (malformed rows left out)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in sweep.get("summary") or []:
        if isinstance(r, dict) and _number(r.get("mean_drop")) and isinstance(r.get("samples"), int) and r["samples"]:
            out.setdefault(str(r.get("method")), []).append(r)
    return {m: sorted(rs, key=lambda r: r["samples"]) for m, rs in out.items()}


def _sweep_plot(name: str, sweep: dict[str, Any]) -> Plot | str:
    """A calibration sweep (``compress.calibration_sweep``): the mean quality drop against calibration
    size per method (log x), min..max over the seeds as bars and a band, the recommended point starred,
    the tolerance dashed. Methods are nudged apart along x so that equal figures do not hide each other."""
    methods = _sweep_rows(sweep)
    if not methods:
        return "no size and method of the sweep was measured"
    fig = _figure(4.5)
    ax = fig.axes[0]
    nudge = {m: 1.05 ** (k - (len(methods) - 1) / 2) for k, m in enumerate(methods)}
    for k, (method, rs) in enumerate(methods.items()):
        xs = [r["samples"] * nudge[method] for r in rs]
        mean = [r["mean_drop"] for r in rs]
        lo = [r["min_drop"] if _number(r.get("min_drop")) else r["mean_drop"] for r in rs]
        hi = [r["max_drop"] if _number(r.get("max_drop")) else r["mean_drop"] for r in rs]
        err = [[max(0.0, mean[i] - lo[i]) for i in range(len(rs))], [max(0.0, hi[i] - mean[i]) for i in range(len(rs))]]
        color = f"C{k % 10}"
        ax.errorbar(xs, mean, yerr=err, fmt="o-", color=color, capsize=3, ms=5, label=_t(method))
        ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)
    rec = sweep.get("recommended")
    if isinstance(rec, dict) and rec.get("method") in methods:
        at = [r for r in methods[rec["method"]] if r["samples"] == rec.get("samples")]
        if at:
            label = f"recommended: {rec['method']}, {at[0]['samples']} samples"
            x, y = at[0]["samples"] * nudge[rec["method"]], at[0]["mean_drop"]
            ax.scatter([x], [y], marker="*", s=300, color="gold", edgecolors="k", zorder=5, label=_t(label))
    unit = str(sweep.get("drop_unit") or "drop")
    tolerance: Any = sweep.get("tolerance")
    if _number(tolerance):
        ax.axhline(tolerance, color="0.35", lw=1, ls="--", label=_t(f"tolerance {tolerance:g} {unit}"))
    ax.axhline(0, color="k", lw=0.6)
    sizes = sorted({r["samples"] for rs in methods.values() for r in rs})
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlim(min(sizes) / 1.5, max(sizes) * 1.5)
    metric = str(sweep.get("metric") or "quality")
    ax.set_xlabel("calibration samples (log scale)")
    ax.set_ylabel(_t(f"{metric} drop vs FP32 ({unit})"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    seeds = len(sweep.get("seeds") or []) or "several"
    alt = f"Mean {metric} drop of {name} against calibration size per calibration method, with min to max over seeds"
    why = rec.get("why", "") if isinstance(rec, dict) else "No recommendation: nothing was measured."
    cap = (
        f"Drop in {metric} from the FP32 parent ({unit}, > 0: worse) on the tuning data (the calibration split, "
        f"not the test split), mean over {seeds} random calibration subsets per point; bars and band: min..max "
        f"over those seeds; dashed: the tolerance; star: the recommended point (the smallest stable set). {why}"
    )
    return fig, alt, cap


def _sweeps(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(artifact name, calibration sweep) of every artifact whose quantization block has one (results
    documents before sweeps have no ``quantization`` key)."""
    blocks = results.get("quantization")
    if not isinstance(blocks, dict):
        return []
    return [
        (str(name), block["calibration_sweep"])
        for name, block in blocks.items()
        if isinstance(block, dict) and isinstance(block.get("calibration_sweep"), dict)
    ]


def _img(plot: Plot | str, title: str) -> str:
    if isinstance(plot, str):
        return f'<p class="missing"><b>{html.escape(title)}</b>: not drawn, {html.escape(plot)}.</p>'
    fig, alt, cap = plot
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
        f"<figcaption><b>{html.escape(title)}.</b> {html.escape(cap)}</figcaption></figure>"
    )


def _machine(results: dict[str, Any], rows: list[ResultRow]) -> str:
    env = results.get("environment") or {}
    cpu = env.get("cpu") or {}
    threads = sorted({str(r.threads or "auto") for r in rows})
    packages = ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items())
    return (
        f"{cpu.get('model', '?')} ({cpu.get('arch', '?')}), {cpu.get('logical_cores', '?')} logical cores; "
        f"flags: {' '.join(cpu.get('flags') or []) or 'none of note'}; threads: {', '.join(threads) or '?'}. "
        f"{env.get('os', '?')}, Python {env.get('python', '?')}; {packages}. Measured {env.get('timestamp', '?')}"
        + (f", {results['wall_seconds']:.0f} s in all." if results.get("wall_seconds") else ".")
    )


def render_html(results: dict[str, Any]) -> str:
    """The page for one ``results.json`` document (any schema version from 2). Raises InputError for a row
    that is not a result row, UnavailableError without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise UnavailableError("edgepipe report draws its plots with matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    rows = _rows(results)
    task = results.get("task") or {}
    task_cls: type[Task] | None
    try:
        task_cls = task_class(task.get("kind", ""))
    except Exception:  # an unknown kind (a newer edgepipe's file): the table keeps its common columns
        task_cls = None
    metric = (task.get("metrics") or [None])[0]
    cols: list[tuple[str, Callable[[ResultRow], str]]] = columns(rows, task_cls)
    recipe = (results.get("recipe") or {}).get("name") or "?"
    run_id = results.get("run_id") or f"no run id (schema {results.get('schema_version', '?')})"
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h, _ in cols)
    body = "".join(
        f'<tr class="{e(r.status)}"'
        + (f' title="{e(r.error)}">' if r.error else ">")
        + "".join(f"<td>{e(str(cell(r)))}</td>" for _, cell in cols)
        + "</tr>"
        for r in rows
    )
    no_metric, m = "the task names no metric", metric["name"] if metric else "metric"
    plots = [
        (_metric_plot(rows, metric, pareto=True) if metric else no_metric, f"{m.capitalize()} vs latency"),
        (_metric_plot(rows, metric, pareto=False) if metric else no_metric, f"File size vs {m}"),
        (_distributions(rows), "Latency distributions"),
        (_ratios(rows), "Speed-ups"),
    ]
    sweeps = [(_sweep_plot(name, sweep), f"Calibration sweep: {name}") for name, sweep in _sweeps(results)]
    notes = "".join(f"<li>{e(str(n))}</li>" for n in results.get("notes") or [])
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
            f"<title>edgepipe report: {e(recipe)} ({e(run_id)})</title>",
            f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>",
            f"<h1>edgepipe report: {e(recipe)}</h1>",
            f"<p>Run <code>{e(run_id)}</code>; task {e(task.get('kind', '?'))} ({e(task.get('name') or '?')}).</p>",
            f'<p class="machine">{e(_machine(results, rows))}</p>',
            f"<h2>Results</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
            "<h2>Plots</h2>",
            *(_img(p, title) for p, title in plots),
            *(["<h2>Calibration sweeps</h2>", *(_img(p, title) for p, title in sweeps)] if sweeps else []),
            explain_section(results),
            *([f"<h2>Notes</h2><ul>{notes}</ul>"] if notes else []),
            f"<h2>How to read this</h2><p>{HOW_TO_READ}</p>",
            "</body></html>",
            "",
        ]
    )


def write_report(run: Path, out: Path | None = None) -> Path:
    """Render ``run``'s results.json (``run`` is a run folder or the file itself) to ``out`` (default:
    ``report.html`` beside results.json), atomically; return the path written."""
    path = run if run.is_file() or run.suffix == ".json" else run / "results.json"
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (is {run} a run folder?)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot be read ({err})") from None
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    if not isinstance(results, dict) or not isinstance(results.get("results"), list):
        raise InputError(f"{path}: not a results document (no 'results' list)")
    try:
        page = render_html(results)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
    target = out or path.parent / "report.html"
    atomic_write_text(target, page)
    return target
