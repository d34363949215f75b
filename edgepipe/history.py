"""Run history: every run's ``results.json`` in one SQLite file, and a comparison of two runs.

One run's table says how its artifacts compare with each other; the history says how this run compares
with last week's. Each run is stored whole (``runs.results``, so ``load_run`` returns exactly what was
recorded) and row by row (``rows``, the fields a query filters on). The file is the standard library's
``sqlite3``, in WAL mode with a 30 s busy timeout, each record one ``BEGIN IMMEDIATE`` transaction: two
runs that finish at once take turns. Nothing heavy is imported: the statistics (scipy) only to compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepipe.errors import InputError, first_line

SCHEMA_VERSION = 1  # in PRAGMA user_version
# Quality: a task metric is worse when it moved the wrong way by more than 0.005 absolute (a metric whose
# values are both in [0, 1]: accuracy, cosine, agreement) or 0.5% relative (anything else: perplexity).
QUALITY_TOLERANCE = 0.005
_SETUP = ("device", "threads", "batch_size", "sequence_length")
KEY_PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert", "llama-cpp-python")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, recipe TEXT, timestamp TEXT, cpu_model TEXT, cpu_flags TEXT, packages TEXT,
  run_dir TEXT, wall_seconds REAL, schema_version INTEGER, results TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
  run_id TEXT NOT NULL, idx INTEGER NOT NULL, label TEXT, name TEXT, format TEXT, precision TEXT, sha256 TEXT,
  runtime TEXT, device TEXT, threads INTEGER, batch_size INTEGER, sequence_length INTEGER, status TEXT,
  median REAL, ci_low REAL, ci_high REAL, processes INTEGER, process_medians TEXT, metrics TEXT, row TEXT,
  PRIMARY KEY (run_id, idx));
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (timestamp);
CREATE INDEX IF NOT EXISTS rows_by_label ON rows (label, device);
"""


def default_db_path() -> Path:
    """``$EDGEPIPE_DB``, else ``$XDG_DATA_HOME/edgepipe/results.sqlite``, else ``~/.local/share/...``."""
    if os.environ.get("EDGEPIPE_DB"):
        return Path(os.environ["EDGEPIPE_DB"]).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "edgepipe" / "results.sqlite"


@contextlib.contextmanager
def _open(db: Path | None, write: bool) -> Iterator[sqlite3.Connection | None]:
    """A connection to an edgepipe results database (None: reading one that does not exist yet). Every
    SQLite or file error is an InputError in one line that names the file."""
    path = Path(db) if db is not None else default_db_path()
    if not write and not path.exists():
        yield None
        return
    try:
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)
    except (OSError, sqlite3.Error) as e:
        raise InputError(f"cannot open the results database {path}: {first_line(e)}") from None
    try:
        if write:
            conn.execute("PRAGMA journal_mode=WAL")  # readers do not wait for a writer
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")  # check and create in one snapshot
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise InputError(f"{path} was written by a newer edgepipe (results database schema {version})")
        if version == 0 and tables:
            raise InputError(f"{path} is a SQLite database, but not edgepipe's results database")
        if write and version == 0:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
        yield conn if tables or write else None
    except sqlite3.DatabaseError as e:
        what = "is not a SQLite database" if "not a database" in str(e) else "cannot be used"
        raise InputError(f"the results database {path} {what}: {first_line(e)}") from None
    finally:
        conn.close()


def _run_id(results: dict[str, Any]) -> str:
    """The run's own ``run_id``; for an older file, a stable one: its time, recipe and content hash."""
    if results.get("run_id"):
        return str(results["run_id"])
    stamp = re.sub(r"[^0-9T]", "", str(results.get("environment", {}).get("timestamp") or ""))[:15] or "undated"
    recipe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(results.get("recipe", {}).get("name") or "run"))
    digest = hashlib.sha256(json.dumps(results, sort_keys=True).encode()).hexdigest()
    return f"{stamp}-{recipe}-{digest[:10]}"


def _row_name(row: dict[str, Any]) -> str:
    """``ResultRow.label`` without its runtime: the row's name, else its artifact's, else format/precision."""
    a = row.get("artifact") or {}
    return str(row.get("name") or a.get("name") or f"{a.get('format')}/{a.get('precision') or '?'}")


def record(results: dict[str, Any], run_dir: Path, db: Path | None = None) -> str:
    """Store one run and its rows; return its run_id. Recording a run_id again replaces that run."""
    run_id = _run_id(results)
    env = results.get("environment") or {}
    cpu = env.get("cpu") or {}
    recipe = (results.get("recipe") or {}).get("name")
    flags, packages = json.dumps(cpu.get("flags") or []), json.dumps(env.get("packages") or {})
    where = str(Path(run_dir).absolute())  # the history outlives the working directory it was run from
    run_values = (run_id, recipe, env.get("timestamp"), cpu.get("model"), flags, packages, where,
                  results.get("wall_seconds"), results.get("schema_version"), json.dumps(results))  # fmt: skip
    rows = []
    for i, r in enumerate(results.get("results") or []):
        a, lat, name = r.get("artifact") or {}, r.get("latency_ms") or {}, _row_name(r)
        rows.append((
            run_id, i, f"{name}@{r.get('runtime')}", name, *(a.get(k) for k in ("format", "precision", "sha256")),
            *(r.get(k) for k in ("runtime", *_SETUP, "status")), lat.get("median"),
            *(lat.get("ci95") or [None, None]), lat.get("processes"),
            *map(json.dumps, (lat.get("process_medians") or [], r.get("metrics") or {}, r)),
        ))  # fmt: skip
    with _open(db, write=True) as conn:
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")  # all or nothing: closing without COMMIT rolls back
        conn.execute("DELETE FROM rows WHERE run_id = ?", (run_id,))
        conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))
        conn.execute(f"INSERT INTO runs VALUES ({', '.join('?' * len(run_values))})", run_values)
        conn.executemany(f"INSERT INTO rows VALUES ({', '.join('?' * 20)})", rows)
        conn.execute("COMMIT")
    return run_id


def list_runs(db: Path | None = None, limit: int = 20, recipe: str | None = None) -> list[dict[str, Any]]:
    """The latest runs, newest first: run_id, recipe, timestamp, cpu, key package versions, rows that are
    ok and that are not (failed, unavailable, unsupported), run_dir."""
    query = (  # newest first; runs with the same timestamp: the last recorded first
        "SELECT r.run_id, recipe, timestamp, cpu_model, packages, run_dir,"
        " (SELECT COUNT(*) FROM rows w WHERE w.run_id = r.run_id AND w.status = 'ok'),"
        " (SELECT COUNT(*) FROM rows w WHERE w.run_id = r.run_id AND w.status != 'ok')"
        " FROM runs r WHERE ? IS NULL OR recipe = ? ORDER BY timestamp DESC, r.rowid DESC LIMIT ?"
    )
    with _open(db, write=False) as conn:
        found = [] if conn is None else conn.execute(query, (recipe, recipe, limit)).fetchall()
    out = []
    for *head, packages, run_dir, ok, failed in found:
        versions = json.loads(packages or "{}")
        key = {p: versions[p] for p in KEY_PACKAGES if versions.get(p)}
        out.append({**dict(zip(("run_id", "recipe", "timestamp", "cpu"), head, strict=True)), "packages": key,
                    "ok": ok, "failed": failed, "run_dir": run_dir})  # fmt: skip
    return out


def load_run(ref: str, db: Path | None = None) -> dict[str, Any]:
    """A run's results: ``ref`` is a run folder or results.json (a path that exists wins), a run_id, or a
    prefix of exactly one run_id."""
    path = Path(ref)
    if ref and path.exists():
        file = path / "results.json" if path.is_dir() else path
        try:
            found = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read results from {file}: {first_line(e)}") from None
        if not isinstance(found, dict):
            raise InputError(f"{file} is not a results.json (not a JSON object)")
        return found
    where = Path(db) if db is not None else default_db_path()
    with _open(db, write=False) as conn:
        like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = "SELECT run_id, results FROM runs WHERE run_id = ? OR run_id LIKE ? ESCAPE '\\' ORDER BY run_id"
        hits = [] if conn is None or not ref else conn.execute(query, (ref, like)).fetchall()
    exact = [h for h in hits if h[0] == ref]
    if exact or len(hits) == 1:
        return dict(json.loads((exact or hits)[0][1]))
    if hits:
        names = ", ".join(h[0] for h in hits[:10]) + (f", ... ({len(hits)} in all)" if len(hits) > 10 else "")
        raise InputError(f"run {ref!r} is ambiguous in {where}: {names}")
    raise InputError(f"no run {ref!r}: not a run folder or results.json, nor a run_id in {where}")


def _worse(a: float, b: float, higher_is_better: bool) -> bool:
    """B is worse than A by more than QUALITY_TOLERANCE (see its comment)."""
    loss = (a - b) if higher_is_better else (b - a)
    bounded = 0 <= a <= 1 and 0 <= b <= 1
    return loss > (QUALITY_TOLERANCE if bounded else QUALITY_TOLERANCE * abs(a))


def _machine(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Whether the two runs ran on the same CPU (model and flags) and the same package versions."""
    ea, eb = a.get("environment") or {}, b.get("environment") or {}
    ca, cb = ea.get("cpu") or {}, eb.get("cpu") or {}
    pa, pb = ea.get("packages") or {}, eb.get("packages") or {}
    packages = {p: [pa.get(p), pb.get(p)] for p in sorted({*pa, *pb}) if pa.get(p) != pb.get(p)}
    same_cpu = ca.get("model") == cb.get("model") and sorted(ca.get("flags") or []) == sorted(cb.get("flags") or [])
    return {
        "same_cpu": same_cpu,
        "cpu": [ca.get("model"), cb.get("model")],
        "packages": packages,
        "flags_changed": sorted(set(ca.get("flags") or []) ^ set(cb.get("flags") or [])),
    }


def _verdict(ratio: float, ci: list[float] | None, min_change: float) -> str:
    """The rule of ``compare_runs`` for one ratio B / A and its interval."""
    if ci is None:
        return "no interval"
    if ci[0] > 1 and ratio > 1 + min_change:
        return "regression"
    if ci[1] < 1 and ratio < 1 / (1 + min_change):
        return "improvement"
    return "n.s."


def _identity(results: dict[str, Any]) -> dict[str, Any]:
    recipe, env = results.get("recipe") or {}, results.get("environment") or {}
    return {"run_id": _run_id(results), "recipe": recipe.get("name"), "timestamp": env.get("timestamp")}


def compare_runs(a: dict[str, Any], b: dict[str, Any], min_change: float = 0.05) -> dict[str, Any]:
    """Run B against run A, row by row (same artifact, runtime, device, threads, batch, length).

    ``ratio`` = B median / A median (> 1: B is slower), the ratio of the geometric means of the process
    medians with Welch's 95% interval on a log scale (two runs are not paired); from the medians alone,
    with no interval, when a side has fewer than two process medians. Verdict: "regression" when the whole
    interval is above 1 and the ratio above 1 + min_change; "improvement" when it is all below 1 and the
    ratio below 1 / (1 + min_change); "no interval" without one; "n.s." otherwise. A row whose latency
    went missing (ok in A, failed in B) is "broken"; a task metric worse than QUALITY_TOLERANCE is a
    quality regression."""
    from edgepipe.benchmarks.stats import ratio_interval  # scipy: only when comparing

    def keyed(results: dict[str, Any]) -> dict[tuple[Any, ...], dict[str, Any]]:
        rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for r in results.get("results") or []:
            key = (_row_name(r), r.get("runtime"), *(r.get(k) for k in _SETUP))
            rows.setdefault(key, r)
        return rows

    rows_a, rows_b = keyed(a), keyed(b)
    task = b.get("task") or a.get("task") or {}
    directions = {m["name"]: bool(m.get("higher_is_better", True)) for m in task.get("metrics") or []}
    pairs = []
    for key in [k for k in rows_a if k in rows_b]:
        ra, rb = rows_a[key], rows_b[key]
        la, lb = ra.get("latency_ms") or {}, rb.get("latency_ms") or {}
        ma, mb = ra.get("metrics") or {}, rb.get("metrics") or {}
        pair: dict[str, Any] = {
            "label": f"{key[0]}@{key[1]}", **dict(zip(_SETUP, key[2:], strict=True)), "a_median": la.get("median"),
            "b_median": lb.get("median"), "ratio": None, "ci95": None,
            "metric_deltas": {m: mb[m] - ma[m] for m in ma if mb.get(m) is not None},
            "quality": [m for m, hib in directions.items() if m in ma and m in mb and _worse(ma[m], mb[m], hib)],
        }  # fmt: skip
        if pair["a_median"] and pair["b_median"]:
            pa, pb = la.get("process_medians") or [], lb.get("process_medians") or []
            if len(pa) >= 2 and len(pb) >= 2:
                a_over_b, ci = ratio_interval(pa, pb, paired=False)  # A / B: > 1 means B is faster
                pair["ratio"], pair["ci95"] = 1 / a_over_b, None if ci is None else [1 / ci[1], 1 / ci[0]]
            else:
                pair["ratio"] = pair["b_median"] / pair["a_median"]
            pair["verdict"] = _verdict(pair["ratio"], pair["ci95"], min_change)
        else:  # not measured in one run: "broken" when only A was
            broke = bool(pair["a_median"])
            pair["verdict"] = "broken" if broke else f"{ra.get('status')} -> {rb.get('status')}"
        pairs.append(pair)
    return {
        "a": _identity(a),
        "b": _identity(b),
        "min_change": min_change,
        "machine": _machine(a, b),
        "pairs": pairs,
        "added": [f"{k[0]}@{k[1]} {_point(k[2:])}" for k in rows_b if k not in rows_a],
        "removed": [f"{k[0]}@{k[1]} {_point(k[2:])}" for k in rows_a if k not in rows_b],
    }


def _table(heads: list[str], body: list[list[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart (``render_table``'s terminal style)."""
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(heads)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(heads), "  ".join("-" * w for w in widths), *(line(r) for r in body)])


def render_history(runs: list[dict[str, Any]]) -> str:
    """``list_runs`` as a terminal table."""
    if not runs:
        return "no runs recorded"
    body = [
        [r["run_id"], r["recipe"] or "", r["timestamp"] or "", r["cpu"] or "",
         ", ".join(f"{k} {v}" for k, v in r["packages"].items()), f"{r['ok']} ok, {r['failed']} not", r["run_dir"]]
        for r in runs
    ]  # fmt: skip
    return _table(["run", "recipe", "measured", "cpu", "packages", "rows", "folder"], body)


def _point(setup: tuple[Any, ...]) -> str:
    """(device, threads, batch, length) as e.g. "cpu 2thr b1 len64"."""
    device, threads, batch, length = setup
    parts = [str(device), f"{threads}thr" if threads else "", f"b{batch}" if batch else ""]
    parts.append(f"len{length}" if length else "")
    return " ".join(filter(None, parts))


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def render_compare(report: dict[str, Any]) -> str:
    """``compare_runs`` as a terminal table with the machine check above it and a one-line summary."""
    a, b, m = report["a"], report["b"], report["machine"]
    out = [f"A: {a['run_id']} ({a['timestamp']})", f"B: {b['run_id']} ({b['timestamp']})"]
    if not m["same_cpu"]:
        flags = f"; flags differ: {' '.join(m['flags_changed'])}" if m["flags_changed"] else ""
        out.append(f"WARNING: different machines: {m['cpu'][0]} vs {m['cpu'][1]}{flags}")
    if m["packages"]:
        out.append("packages changed: " + ", ".join(f"{k} {v[0]} -> {v[1]}" for k, v in m["packages"].items()))
    body = []
    for p in report["pairs"]:
        ratio = "" if p["ratio"] is None else f"x{p['ratio']:.2f}"
        if p["ci95"]:
            ratio += f" [{p['ci95'][0]:.2f}, {p['ci95'][1]:.2f}]"
        deltas = ", ".join(f"{k} {v:+.3f}" for k, v in p["metric_deltas"].items())
        verdict = p["verdict"] + ("; worse " + ", ".join(p["quality"]) if p["quality"] else "")
        setup = _point(tuple(p[k] for k in _SETUP))
        body.append([p["label"], setup, _ms(p["a_median"]), _ms(p["b_median"]), ratio, deltas, verdict])
    out += ["", _table(["artifact", "point", "A ms", "B ms", "B/A [95%]", "metric deltas", "verdict"], body), ""]
    out += [f"added in B: {x}" for x in report["added"]] + [f"removed in B: {x}" for x in report["removed"]]

    def where(p: dict[str, Any]) -> str:
        return f"{p['label']} {_point(tuple(p[k] for k in _SETUP))}"

    slow = [f"{where(p)} x{p['ratio']:.2f}" for p in report["pairs"] if p["verdict"] == "regression"]
    broken = [where(p) for p in report["pairs"] if p["verdict"] == "broken"]
    quality = dict.fromkeys(f"{p['label']} {q}" for p in report["pairs"] for q in p["quality"])
    said = [f"{len(slow)} regression{'s' * (len(slow) != 1)}: {'; '.join(slow)}"] if slow else []
    said += [f"{len(broken)} no longer measured: {'; '.join(broken)}"] if broken else []
    said += [f"{len(quality)} quality regression{'s' * (len(quality) != 1)}: {'; '.join(quality)}"] if quality else []
    out.append(". ".join(said) if said else "no regression beyond the measured noise")
    if not m["same_cpu"]:
        out[-1] += " (measured on different machines)"
    return "\n".join(out)
