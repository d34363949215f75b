"""Concurrent runs in one folder, with real processes: two recipes at once, and one recipe run while the
same recipe runs with --force. Both finish, the store verifies, nothing partial is left, and the metrics
are those of a run alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import TINY_RECIPE

pytestmark = pytest.mark.slow


def _recipe(tmp_path, name, **change):
    data = {**TINY_RECIPE, "name": name, **change}
    data["targets"] = [{"format": "onnx", "quantize": [{"method": "static"}]}]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _start(recipe, out, *flags):
    env = {k: v for k, v in os.environ.items() if k != "EDGEPIPE_DEBUG"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgepipe.cli", "run", str(recipe), "--out", str(out), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    return out


def _metrics(results):
    return {(r["name"], r["runtime"]): r["metrics"] for r in results["results"]}


def test_two_recipes_and_a_forced_rerun_share_one_folder(tmp_path):
    shared = tmp_path / "shared"
    a, b = _recipe(tmp_path, "a"), _recipe(tmp_path, "b", seed=1)
    first = [_start(a, shared), _start(b, shared)]
    tables = [_finish(p) for p in first]
    assert all("onnx-int8-static" in t for t in tables)
    alone = json.loads((shared / "results.json").read_text())  # one of the two, whole (written atomically)
    assert alone["recipe"]["name"] in ("a", "b")

    # The same recipe again, twice at once, one with --force: it rebuilds while the other reads.
    again = [_start(a, shared), _start(a, shared, "--force")]
    for p in again:
        _finish(p)
    results = json.loads((shared / "results.json").read_text())
    assert results["recipe"]["name"] == "a"
    solo = tmp_path / "solo"
    _finish(_start(a, solo))
    expected = json.loads((solo / "results.json").read_text())
    assert _metrics(results) == _metrics(expected)  # deterministic training and exports: same figures

    verify = subprocess.run(
        [sys.executable, "-m", "edgepipe.cli", "verify", str(shared)], capture_output=True, text=True
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    store = shared / "artifacts"
    assert not list(store.glob(".tmp-*")) and not list(store.glob(".old-*"))
    assert len({p.name.rsplit("-", 1)[0] for p in store.iterdir()}) == 3  # torch, onnx fp32, int8 per seed
