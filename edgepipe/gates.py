"""Quality gates over a run's rows: the task kind's own checks, plus what holds for every kind.

A row whose benchmark failed fails its gate; a row with NaN or Inf outputs fails whatever its metrics
say; a row whose runtime is unavailable is not checked (and a run where nothing could be checked says so:
see ``RunResult.unchecked``). Every threshold comparison is written so that NaN fails it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edgepipe.results import GateResult, ResultRow
from edgepipe.tasks import Task


@dataclass
class GateReport:
    failures: list[str]
    checked: int  # rows that had gates to pass or fail
    needed: int  # rows that should have been checked (every row but the torch reference)


def check_gates(
    rows: list[ResultRow],
    task: type[Task],
    gates: Any,
    reference_metrics: dict[str, float],
    per_artifact: Mapping[str, dict[str, float]] | None = None,
) -> GateReport:
    """Check every row; each checked row gets ``gates: {passed, failures}``.

    ``reference_metrics`` are the torch model's own, computed from its saved outputs, so budgets hold
    whether or not the torch model was benchmarked. ``per_artifact`` gives other references by artifact
    sha256: a recipe with compression stages exports several torch models, and each file is held to the
    one it was exported from.
    """
    failures: list[str] = []
    checked = needed = 0
    for row in rows:
        if row.artifact.format != "torch":
            needed += 1
        mine: list[str] = []
        if row.status == "failed":
            mine.append(f"benchmark failed: {row.error}")
        elif row.status != "ok" or row.parity is None or row.artifact.format == "torch":
            continue
        else:
            if row.nonfinite_outputs:
                mine.append(f"{row.nonfinite_outputs} NaN or Inf output values")
            own = (per_artifact or {}).get(row.artifact.sha256 or "", reference_metrics)
            mine += task.gate_failures(row, gates, own)
        checked += 1
        row.gates = GateResult(passed=not mine, failures=mine)
        failures += [f"{row.label}: {f}" for f in mine]
    # Quality is scored once per artifact and runtime and shared by its benchmark points: say it once.
    return GateReport(list(dict.fromkeys(failures)), checked, needed)
