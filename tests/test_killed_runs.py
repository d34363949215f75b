"""A run killed with SIGKILL (its whole process group) at three moments, during training, the exports and
the benchmarks, is run again in the same folder: nothing partial is reused, the store verifies, and the
results equal those of a run never interrupted. (benchmarks/kill_goals.py does twenty kills and prints them.)"""

from __future__ import annotations

import pytest
import yaml

from edgepipe.benchmarks.kill_goals import RECIPE, fingerprint, run_to_end, trial

pytestmark = pytest.mark.slow


def test_a_killed_run_reruns_to_the_same_results(tmp_path):
    recipe = tmp_path / "killed.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    took, reference = run_to_end(recipe, tmp_path / "uninterrupted")
    expected = fingerprint(reference)
    assert len(expected) == 5 and all(v["status"] == "ok" for v in expected.values())
    for i, fraction in enumerate((0.15, 0.5, 0.85)):  # training, exports, benchmarks (roughly)
        got = trial(recipe, tmp_path / f"kill-{i}", took * fraction, expected)
        assert got["store_verifies"] and got["corrupt_reused"] == 0, got
        assert got["identical"], got
