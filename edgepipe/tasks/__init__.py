"""Task kinds, registered by name: each owns its data, feeds, metrics, parity measures and gates.

A recipe's ``task: {kind: ..., ...}`` is validated by the kind's own ``Config``; its ``gates`` by the
kind's ``Gates``. Adding a kind: a ``Task`` subclass in a module here and one line in ``TASK_KINDS``;
the template tests in ``tests/test_tasks.py`` then cover it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from edgepipe.configs import TaskConfig
from edgepipe.errors import InputError
from edgepipe.tasks.base import EvalSet, Measure, ModelIO, Preprocessor, Task

# kind -> "module:class"
TASK_KINDS: dict[str, str] = {
    "classification": "edgepipe.tasks.classification:ClassificationTask",
    "embedding": "edgepipe.tasks.embedding:EmbeddingTask",
    "language-modeling": "edgepipe.tasks.language_modeling:LanguageModelingTask",
}
DEFAULT_KIND = "classification"


def task_class(kind: str) -> type[Task]:
    if kind not in TASK_KINDS:
        raise InputError(f"task.kind: unknown task kind '{kind}' (known: {', '.join(TASK_KINDS)})")
    module, _, name = TASK_KINDS[kind].partition(":")
    found: type[Task] = getattr(importlib.import_module(module), name)
    return found


def build_task(config: TaskConfig, seed: int, cache_dir: Path | None = None) -> Task:
    """The task a recipe's ``task`` section describes, with its data loaded (offline); ``cache_dir`` may
    keep what is slow to make again."""
    return task_class(config.kind)(config, seed, cache_dir)


__all__ = [
    "DEFAULT_KIND",
    "TASK_KINDS",
    "EvalSet",
    "Measure",
    "ModelIO",
    "Preprocessor",
    "Task",
    "build_task",
    "task_class",
]
