"""What every stage gets besides its parent artifact and its config: the task's data and the seed.

Stages share one signature, ``(parent: Artifact, config, out_dir: Path, ctx: StageContext) -> StageOutput``,
so exporters, quantizers and (next) torch-side compression plug into the runner the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.tasks import Task


@dataclass
class StageContext:
    task: Task
    seed: int
    _modules: dict[str, Any] = field(default_factory=dict, repr=False)

    def torch_module(self, artifact: Artifact) -> Any:
        """A fresh copy of a torch artifact's module (loaded once per run): a stage may mutate it."""
        if artifact.sha256 not in self._modules:
            from edgepipe.models import load_torch_model

            self._modules[artifact.sha256] = load_torch_model(artifact.manifest.model, artifact.model_file)
        return copy.deepcopy(self._modules[artifact.sha256])

    def example_inputs(self, n: int = 2) -> dict[str, np.ndarray]:
        """``n`` calibration samples by input name: example inputs for tracing exporters."""
        return {k: np.ascontiguousarray(v[:n]) for k, v in self.task.feeds(self.task.calibration).items()}

    def calibration_batches(self, batch_size: int = 1, limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """The calibration split (its first ``limit`` samples) as feed dicts of ``batch_size``."""
        feeds = self.task.feeds(self.task.calibration)
        total = len(self.task.calibration) if limit is None else min(limit, len(self.task.calibration))
        return [
            {k: np.ascontiguousarray(v[i : min(i + batch_size, total)]) for k, v in feeds.items()}
            for i in range(0, total, batch_size)
        ]
