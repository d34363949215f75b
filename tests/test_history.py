"""The results store (SQLite), run history and the comparison of two runs."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepipe.errors import InputError
from edgepipe.history import (
    compare_runs,
    default_db_path,
    list_runs,
    load_run,
    record,
    render_compare,
    render_history,
)
from edgepipe.results import RESULTS_SCHEMA_VERSION, ArtifactRef, LatencyStats, ResultRow

CPU = {"model": "Intel(R) Xeon(R) Processor", "arch": "x86_64", "logical_cores": 2, "flags": ["avx2", "avx512_vnni"]}
PACKAGES = {"numpy": "2.4.6", "onnxruntime": "1.32.0", "torch": "2.13.0+cpu"}


def _row(name: str, medians: list[float] | None, accuracy: float = 0.99, **setup: Any) -> dict[str, Any]:
    """A schema 5 row measured in ``len(medians)`` processes (None: a row that failed)."""
    artifact = ArtifactRef(name=name, format="onnx", precision="int8", path=f"a/{name}", size_bytes=10, sha256="ab")
    point = {"runtime": "onnxruntime", "device": "cpu", "threads": 2, "batch_size": 1, **setup}
    if medians is None:
        return ResultRow(name=name, artifact=artifact, status="failed", error="boom", **point).to_dict()
    median, lo, hi = float(np.median(medians)), min(medians), max(medians)
    latency = LatencyStats(
        n=50 * len(medians), mean=median, std=0.1, min=lo, median=median, p90=hi, p99=hi, max=hi, iqr=0.1,
        ci95=[lo, hi] if len(medians) > 1 else None, processes=len(medians), process_medians=list(medians),
        ci_basis="processes" if len(medians) > 1 else None,
    )  # fmt: skip
    return ResultRow(
        name=name, artifact=artifact, status="ok", latency_ms=latency, samples_ms=list(medians),
        cold_start_ms=120.0, metrics={"accuracy": accuracy}, **point,
    ).to_dict()  # fmt: skip


def _results(rows: list[dict[str, Any]], run_id: str | None = "run-a", stamp: str = "2026-01-01T00:00:00+00:00",
             cpu: dict[str, Any] | None = None, packages: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    found: dict[str, Any] = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "recipe": {"name": "quickstart", "config": {"seed": 0}, "sha256": "cafe"},
        "task": {"kind": "classification", "name": "digits", "reference_metrics": {"accuracy": 0.99},
                 "metrics": [{"name": "accuracy", "higher_is_better": True}], "parity": []},
        "environment": {"timestamp": stamp, "os": "Linux", "python": "3.11.7", "cpu": cpu or CPU,
                        "packages": packages or PACKAGES},
        "notes": ["a note"],
        "results": rows,
        "wall_seconds": 12.5,
    }  # fmt: skip
    return found if run_id is None else {"run_id": run_id, **found}


def _noisy(rng: np.random.Generator, scale: float, n: int = 5, sigma: float = 0.05) -> list[float]:
    """Process medians of ``n`` fresh processes: 10 ms x ``scale`` with lognormal noise."""
    return list(10.0 * scale * np.exp(rng.normal(0, sigma, n)))


def _pair(seed: int, factor: float) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    a = _results([_row("onnx-int8", _noisy(rng, 1.0))], "a")
    b = _results([_row("onnx-int8", _noisy(rng, factor))], "b", "2026-02-01T00:00:00+00:00")
    return compare_runs(a, b)


def _one_line(error: pytest.ExceptionInfo[InputError]) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


def test_round_trip_list_and_idempotent_record(tmp_path: Path) -> None:
    db = tmp_path / "deep" / "results.sqlite"
    results = _results([_row("onnx-fp32", [2.0, 2.1, 2.2]), _row("onnx-int8", None)])
    assert record(results, tmp_path / "runs" / "quickstart", db) == "run-a"
    assert load_run("run-a", db) == results
    [run] = list_runs(db)
    assert run["run_id"] == "run-a" and run["recipe"] == "quickstart" and run["cpu"] == CPU["model"]
    assert run["packages"] == {"torch": "2.13.0+cpu", "onnxruntime": "1.32.0"}  # numpy is not a key package
    assert (run["ok"], run["failed"]) == (1, 1)
    assert run["run_dir"] == str(tmp_path / "runs" / "quickstart")
    text = render_history(list_runs(db))
    assert "run-a" in text and "1 ok, 1 not" in text

    again = {**results, "wall_seconds": 99.0, "results": results["results"][:1]}
    record(again, tmp_path, db)
    assert [r["run_id"] for r in list_runs(db)] == ["run-a"]
    assert load_run("run-a", db)["wall_seconds"] == 99.0
    with sqlite3.connect(db) as conn:  # the replaced run's old rows are gone
        assert conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1


def test_list_runs_newest_first_and_by_recipe(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    assert list_runs(db) == [] and not db.exists()  # reading does not create it
    for i, stamp in enumerate(["2026-03-01", "2026-01-01", "2026-02-01"]):
        found = _results([_row("x", [1.0, 1.1])], f"r{i}", stamp)
        found["recipe"]["name"] = "other" if i == 2 else "quickstart"
        record(found, tmp_path, db)
    assert [r["run_id"] for r in list_runs(db)] == ["r0", "r2", "r1"]
    assert [r["run_id"] for r in list_runs(db, recipe="quickstart")] == ["r0", "r1"]
    assert [r["run_id"] for r in list_runs(db, limit=1)] == ["r0"]


def test_run_without_id_gets_a_stable_one(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    older = _results([_row("x", [1.0, 1.1])], run_id=None, stamp="2026-12-01T03:26:43+00:00")
    first = record(older, tmp_path, db)
    assert first == record(older, tmp_path, db) and first.startswith("20261201T032643-quickstart-")
    assert len(list_runs(db)) == 1 and load_run(first[:20], db) == older


def test_lookup_by_prefix_path_and_errors(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    for run_id in ["20260101-aaa", "20260101-abb", "20260202-ccc"]:
        record(_results([_row("x", [1.0, 1.1])], run_id), tmp_path, db)
    assert load_run("20260202", db)["run_id"] == "20260202-ccc"
    assert load_run("20260101-ab", db)["run_id"] == "20260101-abb"
    with pytest.raises(InputError) as ambiguous:
        load_run("20260101", db)
    assert "ambiguous" in _one_line(ambiguous) and "20260101-aaa" in str(ambiguous.value)
    assert "20260101-abb" in str(ambiguous.value)
    for unknown in ["nope", "2026%", "2026010_-aaa", ""]:  # LIKE wildcards are literal
        with pytest.raises(InputError) as missing:
            load_run(unknown, db)
        assert str(db) in _one_line(missing)

    folder = tmp_path / "20260101-aaa"  # a path that exists wins over a run_id
    folder.mkdir()
    on_disk = _results([], "from-disk")
    (folder / "results.json").write_text(json.dumps(on_disk))
    assert load_run(str(folder), db) == on_disk == load_run(str(folder / "results.json"), db)
    (folder / "results.json").write_text("{not json")
    with pytest.raises(InputError) as broken:
        load_run(str(folder), db)
    assert "results.json" in _one_line(broken)


def test_planted_regression_is_flagged_and_a_small_change_is_not() -> None:
    slower = _pair(seed=7, factor=1.30)
    [pair] = slower["pairs"]
    assert pair["verdict"] == "regression"
    assert pair["ratio"] == pytest.approx(1.30, rel=0.08) and 1 < pair["ci95"][0] < pair["ratio"] < pair["ci95"][1]
    assert pair["b_median"] > pair["a_median"]  # B / A: above 1 is slower
    text = render_compare(slower)
    assert text.splitlines()[-1].startswith("1 regression: onnx-int8@onnxruntime cpu 2thr b1 x1.")

    [same] = _pair(seed=7, factor=1.01)["pairs"]
    assert same["verdict"] == "n.s." and same["ci95"][0] < 1 < same["ci95"][1]
    assert render_compare(_pair(seed=7, factor=1.01)).endswith("no regression beyond the measured noise")
    [faster] = _pair(seed=7, factor=0.70)["pairs"]
    assert faster["verdict"] == "improvement" and faster["ci95"][1] < 1


def test_regression_rule_rates_over_seeds() -> None:
    """Simulated pairs of runs (5 processes each, 5% lognormal noise between processes): a 1% change is
    called a regression in under 5% of them, a 30% one in over 95%. The rule's rate for a 1% change is
    about 3.7% (40,000 draws), so 200 draws could not tell it from 5% (seeds 0-199 happen to give 6.5%):
    the 1% case takes 2,000."""
    small = sum(_pair(seed, 1.01)["pairs"][0]["verdict"] == "regression" for seed in range(2000))
    large = sum(_pair(seed, 1.30)["pairs"][0]["verdict"] == "regression" for seed in range(200))
    assert small < 0.05 * 2000 and large > 0.95 * 200, (small, large)


def test_quality_regression_added_removed_and_other_machine() -> None:
    a = _results([_row("onnx-int8", [1.0, 1.01, 0.99]), _row("gone", [1.0, 1.1])], "a")
    b = _results(
        [_row("onnx-int8", [1.0, 1.01, 0.99], accuracy=0.95), _row("new", [1.0, 1.1])], "b",
        cpu={**CPU, "model": "AMD EPYC", "flags": ["avx2"]}, packages={**PACKAGES, "onnxruntime": "1.33.0"},
    )  # fmt: skip
    report = compare_runs(a, b)
    [pair] = report["pairs"]
    assert pair["quality"] == ["accuracy"] and pair["metric_deltas"]["accuracy"] == pytest.approx(-0.04)
    assert report["added"] == ["new@onnxruntime cpu 2thr b1"] and report["removed"] == ["gone@onnxruntime cpu 2thr b1"]
    assert not report["machine"]["same_cpu"] and report["machine"]["packages"] == {"onnxruntime": ["1.32.0", "1.33.0"]}
    text = render_compare(report)
    assert "WARNING: different machines" in text and "onnxruntime 1.32.0 -> 1.33.0" in text
    assert "1 quality regression: onnx-int8@onnxruntime accuracy" in text.splitlines()[-1]
    assert "different machines" in text.splitlines()[-1]

    within = _results([_row("onnx-int8", [1.0, 1.01, 0.99], accuracy=0.987)], "c")
    assert compare_runs(a, within)["pairs"][0]["quality"] == []
    assert compare_runs(a, within)["machine"]["same_cpu"]


def test_fallbacks_without_process_medians_and_broken_rows() -> None:
    a = _results([_row("one", [2.0]), _row("breaks", [1.0, 1.1])], "a")
    b = _results([_row("one", [3.0]), _row("breaks", None)], "b")
    b["results"][0]["latency_ms"]["process_medians"] = []  # as in a schema 4 file
    one, breaks = compare_runs(a, b)["pairs"]
    assert one["verdict"] == "no interval" and one["ratio"] == pytest.approx(1.5) and one["ci95"] is None
    assert breaks["verdict"] == "broken"
    assert "1 no longer measured: breaks@onnxruntime" in render_compare(compare_runs(a, b))


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "notes.txt"
    db.write_text("hello, this is not a database\n" * 10)
    for call in (lambda: record(_results([]), tmp_path, db), lambda: list_runs(db), lambda: load_run("x", db)):
        with pytest.raises(InputError) as error:
            call()
        assert str(db) in _one_line(error)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE runs (x)")
    with pytest.raises(InputError) as error:
        record(_results([]), tmp_path, other)
    assert str(other) in _one_line(error) and "not edgepipe" in str(error.value)


def test_a_db_path_that_cannot_be_written_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError) as error:
        record(_results([]), tmp_path, blocker / "results.sqlite")
    assert str(blocker / "results.sqlite") in _one_line(error)


def test_concurrent_writers(tmp_path: Path) -> None:
    db, failures = tmp_path / "r.sqlite", []

    def write(worker: int) -> None:
        try:
            for i in range(5):
                record(_results([_row("x", [1.0, 1.1]), _row("y", [2.0, 2.1])], f"w{worker}-{i}"), tmp_path, db)
        except Exception as e:  # pragma: no cover - the assertion below reports it
            failures.append(e)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and len(list_runs(db, limit=100)) == 20
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT COUNT(*) FROM rows").fetchone()[0] == 40


def test_default_db_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEPIPE_DB", str(tmp_path / "mine.sqlite"))
    assert default_db_path() == tmp_path / "mine.sqlite"
    monkeypatch.delenv("EDGEPIPE_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "edgepipe" / "results.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_db_path() == tmp_path / "home" / ".local" / "share" / "edgepipe" / "results.sqlite"
    monkeypatch.setenv("EDGEPIPE_DB", str(tmp_path / "env.sqlite"))
    record(_results([]), tmp_path)  # db=None: the default
    assert [r["run_id"] for r in list_runs()] == ["run-a"]
