"""Stage kinds and what every stage gets besides its parents and its config.

Every stage has one verb, ``apply(parents, config, out_dir, ctx) -> StageOutput``: ``parents`` maps a
role to an artifact ("model" is the one being transformed; a distilled student also has a "teacher").
A recipe's chain is: one **source** (where the torch model comes from) -> any number of torch-side
**stages** -> per target an **export** -> its **quantize** variants. Sources and torch-side stages are
registered here by name; export formats and their quantizers in ``edgepipe.export.BACKENDS``.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepipe.configs import Section
from edgepipe.progress import Progress, no_progress
from edgepipe.tensors import Feeds

if TYPE_CHECKING:
    from edgepipe.artifact import Artifact
    from edgepipe.store import Parents, StageOutput
    from edgepipe.tasks import EvalSet, Preprocessor, Task

Log = Callable[[str], None]


def silent(_: str) -> None:
    """The default log: the API prints nothing unless asked."""


@dataclass(frozen=True)
class StageKind:
    """A registered stage: its config class, its verb, and what keys its cache besides config and parents."""

    config: str  # "module:Class", importable without torch (recipes validate without it)
    apply: str  # "module:function", (parents, config, out_dir, ctx) -> StageOutput
    tools: tuple[str, ...]  # distributions whose versions key the cache
    code: tuple[str, ...]  # modules whose code keys the cache

    def config_class(self) -> type[Section]:
        module, _, name = self.config.partition(":")
        found: type[Section] = getattr(importlib.import_module(module), name)
        return found

    def verb(self) -> Callable[[Parents, Any, Path, StageContext], StageOutput]:
        module, _, name = self.apply.partition(":")
        found: Callable[[Parents, Any, Path, StageContext], StageOutput] = getattr(
            importlib.import_module(module), name
        )
        return found


_TORCH = ("edgepipe", "torch", "numpy", "safetensors")
_MODEL_CODE = (
    "edgepipe.models",
    "edgepipe.store",
    "edgepipe.artifact",
    "edgepipe.files",
    "edgepipe.stage",
    "edgepipe.chain",
)

SOURCES: dict[str, StageKind] = {
    "train": StageKind(
        "edgepipe.models.train:TrainSource",
        "edgepipe.models.train:train_source",
        (*_TORCH, "scikit-learn", "tokenizers"),
        (*_MODEL_CODE, "edgepipe.models.train", "edgepipe.text"),
    ),
    "huggingface": StageKind(
        "edgepipe.models.huggingface:HuggingFaceSource",
        "edgepipe.models.huggingface:load_huggingface",
        (*_TORCH, "transformers", "tokenizers"),
        (*_MODEL_CODE, "edgepipe.models.huggingface"),
    ),
    "module": StageKind(
        "edgepipe.models.user_module:ModuleSource",
        "edgepipe.models.user_module:load_module_source",
        _TORCH,
        (*_MODEL_CODE, "edgepipe.models.user_module"),
    ),
}


def _compression(name: str, config: str, tools: tuple[str, ...] = ()) -> StageKind:
    module = f"edgepipe.compress.{name}"
    return StageKind(
        f"{module}:{config}",
        f"{module}:{name}_stage",
        (*_TORCH, *tools),
        (*_MODEL_CODE, "edgepipe.models.train", "edgepipe.compress.common", module),
    )


# Torch-side stages between the source and the exports: more training, and compression in torch.
STAGES: dict[str, StageKind] = {
    "finetune": StageKind(
        "edgepipe.models.train:Finetune",
        "edgepipe.models.train:finetune_stage",
        _TORCH,
        (*_MODEL_CODE, "edgepipe.models.train"),
    ),
    "prune": _compression("prune", "Prune", ("torch-pruning", "onnx", "onnxruntime")),
    "sparsify": _compression("sparsify", "Sparsify"),
    "distill": _compression("distill", "Distill"),
    "qat": _compression("qat", "Qat"),
}


@dataclass
class StageContext:
    """The run's task, seed and log, the recipe's folder, and per-run caches of loaded models."""

    task: Task
    seed: int
    base_dir: Path = Path()
    log: Log = silent
    gates: Section | None = None  # the recipe's gates: the bar a quantize step's result is held to
    progress: Progress = no_progress  # long loops (training steps) draw a bar with it on a terminal
    _modules: dict[str, Any] = field(default_factory=dict, repr=False)
    _preprocessors: dict[str, Preprocessor] = field(default_factory=dict, repr=False)
    _tuning: dict[str, tuple[EvalSet, list[np.ndarray], dict[str, float]]] = field(default_factory=dict, repr=False)

    def resolve(self, path: str | Path) -> Path:
        """A path from the recipe: relative ones start at the recipe's folder."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def torch_module(self, artifact: Artifact) -> Any:
        """A fresh copy of a torch artifact's module (loaded once per run): a stage may mutate it."""
        if artifact.sha256 not in self._modules:
            from edgepipe.models import load_torch_model

            self._modules[artifact.sha256] = load_torch_model(artifact)
        return copy.deepcopy(self._modules[artifact.sha256])

    def preprocessor(self, artifact: Artifact) -> Preprocessor:
        """How the task's data become this artifact's feeds: its inputs, its tokenizer, its maximum length."""
        if artifact.sha256 not in self._preprocessors:
            from edgepipe.tasks import Preprocessor

            block = artifact.manifest.preprocessing
            tokenizer = None
            if name := block.get("tokenizer", {}).get("file"):
                from edgepipe.text import Tokenizer

                tokenizer = Tokenizer.from_file(artifact.file(name))
            self._preprocessors[artifact.sha256] = Preprocessor(
                artifact.manifest.inputs, tokenizer, block.get("max_length"), block.get("pooling", {}).get("mode")
            )
        return self._preprocessors[artifact.sha256]

    def example_feeds(self, artifact: Artifact, n: int = 2) -> Feeds:
        """``n`` calibration examples for ``artifact``: example inputs for tracing exporters."""
        return self.task.example_feeds(self.preprocessor(artifact), n)

    def calibration_feeds(
        self, artifact: Artifact, batch_size: int = 1, limit: int | None = None, seed: int | None = None
    ) -> list[Feeds]:
        """The calibration split as feeds for ``artifact``: its first ``limit`` examples, or with ``seed``,
        ``limit`` examples drawn at random with that seed (a calibration sweep's point, reproducible)."""
        pre = self.preprocessor(artifact)
        if seed is None:
            return self.task.calibration_feeds(pre, batch_size, limit)
        singles = self.task.calibration_feeds(pre, 1, None)
        n = min(limit or len(singles), len(singles))
        chosen = [singles[i] for i in sorted(np.random.default_rng(seed).choice(len(singles), n, replace=False))]
        return [
            {name: np.concatenate([f[name] for f in chosen[i : i + batch_size]]) for name in chosen[0]}
            for i in range(0, n, batch_size)
        ]

    def tuning(self, artifact: Artifact) -> tuple[EvalSet, list[np.ndarray], dict[str, float]]:
        """What a quantized variant of ``artifact`` is scored on while choosing its configuration: the task's
        evaluation batches from the calibration split (never the test split), ``artifact``'s own outputs
        on them on its format's runtime, and its metrics there (the reference of a budget)."""
        if artifact.sha256 not in self._tuning:
            from edgepipe.benchmarks.harness import run_batches
            from edgepipe.runtimes import default_runtime, get_runtime
            from edgepipe.search import THREADS

            data = self.task.eval_set(self.preprocessor(artifact), split="calibration")
            with get_runtime(default_runtime(artifact.manifest.format)).load(artifact.model_file, threads=THREADS) as s:
                outputs, data = run_batches(s, data)
            metrics = type(self.task).quality(outputs, data, None)[0]
            self._tuning[artifact.sha256] = (data, outputs, metrics)
        return self._tuning[artifact.sha256]

    def forget_tuning(self) -> None:
        self._tuning.clear()
