"""``edgepipe report``: the HTML page of one run, checked for structure and in a real headless Chromium.

Chromium (150 here) prints every console message of a page, whatever its level, to stderr as
``[pid:tid:time:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)`` (older versions:
``CONSOLE(<line>)``) when started with ``--enable-logging=stderr --v=0``: console.error, uncaught
exceptions and Content-Security-Policy refusals alike, with no level to tell them from console.log. The
report logs nothing, so any console line is a failure; a page with deliberate errors checks that the
detector sees them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgepipe.benchmarks.html_report import pareto_front, render_html, write_report
from edgepipe.errors import InputError, UnavailableError

pytest.importorskip("matplotlib")

EVIL = "<script>alert(1)</script>"
CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\] (.*)$")


def _latency(samples: list[float], medians: list[float]) -> dict[str, Any]:
    a = np.asarray(samples)
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    lo, hi = min(medians), max(medians)
    return {
        "n": len(a), "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "median": float(med),
        "p90": float(np.percentile(a, 90)), "p99": float(np.percentile(a, 99)), "max": float(a.max()),
        "iqr": float(q3 - q1), "ci95": [lo, hi], "processes": len(medians), "process_medians": medians,
        "process_spread": (hi - lo) / float(med), "ci_basis": "processes", "warmup_runs": 12,
    }  # fmt: skip


def _row(name: str, runtime: str, precision: str, ms: float, accuracy: float, size: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    medians = [ms * f for f in (0.97, 1.0, 1.04)]
    samples = [float(x) for m in medians for x in m * rng.lognormal(0, 0.08, 40)]
    return {
        "name": name,
        "artifact": {"name": name, "format": "onnx", "precision": precision, "path": f"artifacts/{name}",
                     "size_bytes": size, "sha256": f"{seed:064x}", "parent_sha256": None, "parameters": 100_000},
        "runtime": runtime, "runtime_version": "1.0", "device": "cpu", "threads": 2, "batch_size": 1,
        "status": "ok", "task": "classification", "latency_ms": _latency(samples, medians), "samples_ms": samples,
        "throughput_per_s": 1000 / ms, "cold_start_ms": 300.0, "metrics": {"accuracy": accuracy},
        "parity": {"top1_agreement": 1.0, "max_abs_diff": 1e-5},
    }  # fmt: skip


def schema5() -> dict[str, Any]:
    """Two runtimes, an FP32 and an INT8 row on each (the INT8 rows compared with ci95), one failed row."""
    rows = [
        _row("onnx-fp32", "onnxruntime", "fp32", 1.4, 0.997, 4_600_000, 1),
        _row(EVIL, "onnxruntime", "int8", 0.43, 0.994, 1_180_000, 2),
        _row("openvino-fp32", "openvino", "fp32", 1.2, 0.997, 4_610_000, 3),
        _row("openvino-int8", "openvino", "int8", 0.26, 0.996, 1_200_000, 4),
    ]
    for int8, fp32, ratio in ((1, 0, 3.26), (3, 2, 4.6)):
        rows[int8]["vs_fp32"] = {"baseline": f"{rows[fp32]['name']}@{rows[fp32]['runtime']}", "ratio": ratio,
                                 "significant": True, "size_ratio": 0.26, "ci95": [ratio * 0.9, ratio * 1.1],
                                 "accuracy_delta": -0.001}  # fmt: skip
    rows.append(
        {"name": "tflite-int8", "artifact": {"name": "tflite-int8", "format": "tflite", "precision": "int8",
         "path": "artifacts/tflite-int8", "size_bytes": 1_100_000, "sha256": "f" * 64}, "runtime": "litert",
         "device": "cpu", "threads": 2, "batch_size": 1, "status": "failed", "error": "RuntimeError: <bad> & worse"}
    )  # fmt: skip
    return {
        "schema_version": 5,
        "run_id": "20261201T032643-abc123",
        "recipe": {"name": "quickstart", "config": {}, "sha256": "0" * 64},
        "task": {"kind": "classification", "name": "digits", "reference_metrics": {"accuracy": 0.997},
                 "metrics": [{"name": "accuracy", "higher_is_better": True}],
                 "parity": [{"name": "top1_agreement", "higher_is_better": True}]},
        "environment": {"timestamp": "2026-12-01T03:26:43+00:00", "os": "Linux 6.18", "python": "3.11.7",
                        "cpu": {"model": "Intel(R) Xeon(R) Processor", "arch": "x86_64", "logical_cores": 2,
                                "flags": ["avx2", "avx512_vnni"]}, "packages": {"onnxruntime": "1.32.0"}},
        "notes": ["onnx int8 vs fp32: 3.26x faster & smaller"],
        "results": rows,
        "wall_seconds": 12.5,
        "checkpoints": [],
    }  # fmt: skip


def with_sweep(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the runner's ``quantization`` blocks: one artifact's with a calibration sweep (two
    methods, three sizes, three seeds; percentile never settles), one without."""
    from edgepipe.compress.calibration_sweep import recommend, summarize

    drops = {("minmax", 8): [0.0, 1.7, 0.6], ("minmax", 32): [0.3, 0.0, 0.3], ("minmax", 128): [0.0, 0.3, 0.0],
             ("percentile", 8): [2.0, 0.0, 1.0], ("percentile", 32): [1.3, 0.0, 0.3],
             ("percentile", 128): [0.0, 1.0, 0.3]}  # fmt: skip
    points = [
        {"method": m, "samples": n, "seed": seed, "metric": 0.997 - d / 100, "drop": d, "seconds": 0.4}
        for (m, n), ds in drops.items()
        for seed, d in enumerate(ds)
    ]
    summary = summarize(points)
    sweep = {"metric": "accuracy", "drop_unit": "accuracy points", "tolerance": 0.5, "seeds": [0, 1, 2],
             "points": points, "summary": summary, "recommended": recommend(summary, 0.5, "accuracy points"),
             "skipped": [{"samples": 512, "why": "the calibration split has 300"}]}  # fmt: skip
    blocks = {EVIL: {"tool": "onnxruntime", "calibration_sweep": sweep}, "openvino-int8": {"tool": "nncf"}}
    return {**results, "quantization": blocks}


def _write(tmp_path: Path, results: dict[str, Any]) -> Path:
    (tmp_path / "results.json").write_text(json.dumps(results))
    return write_report(tmp_path)


def test_report_structure(tmp_path: Path) -> None:
    results = schema5()
    path = _write(tmp_path, results)
    assert path == tmp_path / "report.html"
    page = path.read_text()
    imgs = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+" alt="([^"]+)">', page)
    assert len(imgs) == 4 == page.count("<img") == page.count("<figcaption>")
    tbody = page.split("<tbody>")[1].split("</tbody>")[0]
    assert tbody.count("<tr") == len(results["results"])
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;bad&gt; &amp; worse" in page and "3.26x faster &amp; smaller" in page
    assert page.count("<script") == 1  # ours, and nothing loaded from elsewhere
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "20261201T032643-abc123" in page and "avx512_vnni" in page
    assert "not drawn" not in page


def test_old_results_leave_out_what_they_lack(tmp_path: Path) -> None:
    """A schema-4 file (no samples, no ratio intervals) still renders; the missing plot says why."""
    results = schema5()
    results["schema_version"] = 4
    del results["run_id"]
    for row in results["results"]:
        row.pop("samples_ms", None)
        for key in ("processes", "process_medians", "process_spread", "ci_basis", "warmup_runs"):
            row.get("latency_ms", {}).pop(key, None)
        if row.get("vs_fp32"):
            del row["vs_fp32"]["ci95"]
    page = render_html(results)
    assert page.count("<img") == 3
    assert "Latency distributions</b>: not drawn, no row has samples_ms" in page


def test_unknown_task_kind_keeps_the_table(tmp_path: Path) -> None:
    results = schema5()
    results["task"]["kind"] = "from-the-future"
    assert render_html(results).count("<img") == 4


def test_pareto_front_respects_direction() -> None:
    pts = [(1.0, 0.90), (2.0, 0.95), (3.0, 0.93), (0.5, 0.80), (2.5, 0.99)]
    assert pareto_front(pts, higher_is_better=True) == [3, 0, 1, 4]
    assert pareto_front(pts, higher_is_better=False) == [3]
    assert pareto_front([(1.0, 5.0), (1.0, 4.0), (2.0, 3.0)], higher_is_better=False) == [1, 2]


def test_bad_results_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text('{"results": [')
    with pytest.raises(InputError, match=rf"{re.escape(str(tmp_path / 'results.json'))}: not valid JSON"):
        write_report(tmp_path)
    with pytest.raises(InputError, match=r"nowhere[/\\]results.json: no such file"):
        write_report(tmp_path / "nowhere")
    broken = schema5()
    broken["results"][2]["status"] = "great"
    (tmp_path / "results.json").write_text(json.dumps(broken))
    with pytest.raises(InputError, match=r"results.json: results\[2\]\.status: "):
        write_report(tmp_path / "results.json")
    assert not (tmp_path / "report.html").exists()


def test_without_matplotlib_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(UnavailableError, match="pip install matplotlib"):
        render_html(schema5())


def _chromium(page: Path, profile: Path) -> tuple[str, list[str]]:
    """The DOM after load (5 s of virtual time) and every console message the page produced."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        pytest.skip("chromium not installed (Debian: apt install chromium)")
    args = ["--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", "--enable-logging=stderr"]
    args += ["--v=0", "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60, check=True)
    console = [m.group(1) for line in done.stderr.splitlines() if (m := CONSOLE.search(line))]
    return done.stdout, console


def _rendered(dom: str) -> tuple[int, int]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    got = dict(re.findall(r'data-plots-(rendered|total)="(\d+)"', body.group(1)))
    assert set(got) == {"rendered", "total"}, f"the report's script did not run: {body.group(0)}"
    return int(got["rendered"]), int(got["total"])


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    page = _write(tmp_path, schema5())
    dom, console = _chromium(page, tmp_path / "profile")
    assert console == []
    assert _rendered(dom) == (4, 4)


def test_a_calibration_sweep_gets_its_plot(tmp_path: Path) -> None:
    results = with_sweep(schema5())
    assert results["quantization"][EVIL]["calibration_sweep"]["recommended"]["samples"] == 32
    page = render_html(results)
    section = page.split("<h2>Calibration sweeps</h2>")[1].split("<h2>")[0]
    assert section.count("<img") == 1 and page.count("<img") == 5 and "not drawn" not in page
    assert "Calibration sweep: &lt;script&gt;" in section and EVIL not in page
    assert "minmax with 32 samples is the smallest stable set" in section
    # an old file (no quantization key) or blocks without a sweep: no section
    assert "Calibration sweeps" not in render_html(schema5())
    assert "Calibration sweeps" not in render_html({**schema5(), "quantization": {"x": {"tool": "nncf"}}})
    # a sweep that measured nothing says so instead of a plot
    empty = {**schema5(), "quantization": {"x": {"calibration_sweep": {"points": [], "summary": []}}}}
    assert "Calibration sweep: x</b>: not drawn, no size and method of the sweep was measured" in render_html(empty)
    dom, console = _chromium(_write(tmp_path, results), tmp_path / "profile")
    assert console == []
    assert _rendered(dom) == (5, 5)


def test_chromium_check_catches_errors_and_broken_images(tmp_path: Path) -> None:
    """The browser check can fail: console errors, uncaught exceptions, blocked loads and an image that
    does not decode are all seen."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!doctype html><html><head><meta http-equiv="Content-Security-Policy" content="img-src data:"></head>'
        '<body><script>console.error("deliberate");</script><script>notDefined();</script>'
        '<img src="http://example.invalid/x.png"></body></html>'
    )
    _, console = _chromium(bad, tmp_path / "profile")
    assert any('"deliberate"' in c for c in console), console
    assert any("Uncaught ReferenceError: notDefined" in c for c in console), console
    assert any("Content Security Policy" in c for c in console), console
    page = render_html(schema5())
    first = re.search(r"base64,([A-Za-z0-9+/=]{40})", page)
    assert first
    broken = tmp_path / "broken.html"
    broken.write_text(page.replace(first.group(1), "A" * 40, 1))
    dom, console = _chromium(broken, tmp_path / "profile")
    assert _rendered(dom) == (3, 4)
