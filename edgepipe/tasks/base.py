"""What every task kind provides: its data splits, feeds for a model's named inputs, its metrics with
their direction, its parity measures against the reference, and its gates.

Nothing outside a task kind says "accuracy" or "perplexity": the harness, the gates, the report's
columns and the notes ask the task kind. Scoring is a classmethod over saved arrays, so a benchmark
worker in a fresh process scores without rebuilding the data.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgepipe.configs import Section, TaskConfig
from edgepipe.errors import InputError
from edgepipe.files import load_arrays, save_arrays, sha256_arrays
from edgepipe.tensors import Feeds, TensorSpec, input_role

if TYPE_CHECKING:
    import torch

    from edgepipe.results import ResultRow
    from edgepipe.text import Tokenizer


@dataclass(frozen=True)
class Measure:
    """A metric or parity measure: its key in a results row, its column header, and its direction."""

    name: str
    label: str
    higher_is_better: bool
    fmt: str = ".4f"


@dataclass(frozen=True)
class ModelIO:
    """What a model built for a task takes and gives (zoo families and users' modules are built to it)."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    num_classes: int | None = None
    vocab_size: int | None = None
    max_length: int | None = None


@dataclass
class Preprocessor:
    """How a task's data become one model's feeds: its named inputs, its tokenizer, its maximum length."""

    inputs: list[TensorSpec]
    tokenizer: Tokenizer | None = None
    max_length: int | None = None
    pooling: str | None = None  # how the model's own config pools its outputs into one vector (embeddings)


@dataclass
class EvalSet:
    """Evaluation batches (feeds keyed by input name), their targets (labels, next tokens; None where
    the task has none) and a group per batch (e.g. "length 32") for per-group figures."""

    batches: list[Feeds]
    targets: list[np.ndarray | None]
    groups: list[str] = field(default_factory=list)
    # What scoring needs beyond the arrays, e.g. the embedding task's pooling.
    options: dict[str, Any] = field(default_factory=dict)

    def sha256(self) -> str:
        arrays = [a for b in self.batches for _, a in sorted(b.items())]
        meta = np.array(json.dumps({"groups": self.groups, "options": self.options}, sort_keys=True))
        return sha256_arrays([*arrays, *(t for t in self.targets if t is not None), meta])

    def save(self, path: Path) -> Path:
        meta = {"groups": self.groups, "options": self.options, "n": len(self.batches)}
        arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta))}
        for i, (batch, target) in enumerate(zip(self.batches, self.targets, strict=True)):
            arrays.update({f"b{i}.in.{name}": a for name, a in batch.items()})
            if target is not None:
                arrays[f"b{i}.target"] = target
        return save_arrays(path, arrays)

    @classmethod
    def load(cls, path: Path) -> EvalSet:
        arrays = load_arrays(path)
        meta = json.loads(str(arrays.pop("meta").item()))
        batches: list[Feeds] = [{} for _ in range(meta["n"])]
        targets: list[np.ndarray | None] = [None] * meta["n"]
        for key, a in arrays.items():
            index, kind, *name = key.split(".", 2)
            i = int(index[1:])
            if kind == "in":
                batches[i][name[0]] = a
            else:
                targets[i] = a
        return cls(batches, targets, meta["groups"], meta["options"])


def save_outputs(path: Path, outputs: list[np.ndarray]) -> Path:
    return save_arrays(path, {f"b{i}": o for i, o in enumerate(outputs)})


def load_outputs(path: Path) -> list[np.ndarray]:
    arrays = load_arrays(path)
    return [arrays[f"b{i}"] for i in range(len(arrays))]


class Task(ABC):
    """A task kind: one subclass per kind, registered in ``edgepipe.tasks.TASK_KINDS``."""

    kind: ClassVar[str]
    Config: ClassVar[type[TaskConfig]]
    Gates: ClassVar[type[Section]]
    metrics: ClassVar[tuple[Measure, ...]]  # row["metrics"]: the task's own quality figures
    parity_measures: ClassVar[tuple[Measure, ...]]  # row["parity"]: agreement with the reference
    needs_tokenizer: ClassVar[bool] = False
    trainable: ClassVar[bool] = True  # has training data and a loss (a zoo family can be trained on it)
    unit: ClassVar[str] = "examples"  # what ``split_sizes`` counts
    # Distillation's default softening of teacher and student outputs (Hinton et al.'s T): a few classes
    # gain from a soft T; next-token distributions over a vocabulary do not (see language_modeling.py).
    distillation_temperature: ClassVar[float] = 4.0

    def __init__(self, config: TaskConfig, seed: int, cache_dir: Path | None = None):
        """``cache_dir`` (the run's data folder) may keep what is slow to make again, keyed by what it
        depends on."""
        self.config = config
        self.seed = seed

    @property
    def name(self) -> str:
        return str(getattr(self.config, "dataset", self.kind))

    @abstractmethod
    def split_sizes(self) -> dict[str, int]:
        """Number of examples per split, in ``unit`` (images, documents)."""

    @abstractmethod
    def data_sha256(self) -> str:
        """Hash of the raw data of every split: part of the cache key of anything trained on them."""

    def describe(self) -> dict[str, Any]:
        """The task block stored in every artifact's manifest."""
        return {
            "kind": self.kind,
            "name": self.name,
            "config": self.config.model_dump(mode="json"),
            "splits": self.split_sizes(),
            "data_sha256": self.data_sha256(),
        }

    # --- what a model built here looks like, and its feeds ------------------------------------------

    @abstractmethod
    def model_io(self, tokenizer: Tokenizer | None) -> ModelIO:
        """Inputs and outputs of a model trained on this task (zoo families, users' modules)."""

    def train_tokenizer(self, vocab_size: int) -> Tokenizer:
        """A tokenizer trained on the training split (text tasks whose model is trained here)."""
        raise InputError(f"task kind '{self.kind}' has no text to train a tokenizer on")

    @abstractmethod
    def calibration_feeds(self, pre: Preprocessor, batch_size: int = 1, limit: int | None = None) -> list[Feeds]:
        """The calibration split (its first ``limit`` examples) as feeds of ``batch_size``."""

    def example_feeds(self, pre: Preprocessor, n: int = 2) -> Feeds:
        """``n`` calibration examples: example inputs for tracing exporters (n > 1 keeps batch dynamic)."""
        return self.calibration_feeds(pre, batch_size=n, limit=n)[0]

    @abstractmethod
    def eval_set(self, pre: Preprocessor, split: str = "test") -> EvalSet:
        """A split as evaluation batches, with targets: the test split for the report; the calibration
        split is the tuning data a quantize step chooses its configuration on (``edgepipe.search``)."""

    @abstractmethod
    def timing_feeds(self, pre: Preprocessor, batch_size: int, sequence_length: int | None) -> list[Feeds]:
        """Feeds of real test data at one benchmark point, cycled through while timing."""

    def generation_prompt(self, pre: Preprocessor, n: int) -> list[int] | None:
        """The first ``n`` tokens of held-out text, for a language model's tokens/s (None: not a generator)."""
        return None

    def sequence_lengths(self) -> list[int | None]:
        """The sequence lengths a benchmark measures by default ([None]: the task has none)."""
        return [None]

    # --- training -----------------------------------------------------------------------------------

    @abstractmethod
    def training_batches(
        self, pre: Preprocessor, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[Feeds, np.ndarray]]:
        """One epoch of shuffled training batches: (feeds, targets)."""

    @abstractmethod
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of a model's first output against the targets."""

    # --- quality, from saved arrays -----------------------------------------------------------------

    @classmethod
    @abstractmethod
    def quality(
        cls, outputs: list[np.ndarray], data: EvalSet, reference: list[np.ndarray] | None
    ) -> tuple[dict[str, float], dict[str, float] | None, dict[str, dict[str, float]]]:
        """(metrics, parity with the reference or None, metrics and parity per group) from the first
        output of every evaluation batch."""

    # What a quantize entry's ``max_quality_drop`` is given in (``quality_drop``'s unit).
    drop_unit: ClassVar[str] = ""

    @classmethod
    def quality_drop(cls, metrics: dict[str, float], reference_metrics: dict[str, float]) -> float | None:
        """How much worse ``metrics`` are than the FP32 parent's on the same data, in ``drop_unit``
        (accuracy points, cosine, relative perplexity). Positive is worse; None where a metric is missing."""
        return None

    @classmethod
    def metric_budget(cls, max_quality_drop: float) -> float | None:
        """A quality budget as an absolute drop of the first metric (what NNCF's accuracy control takes);
        None where the drop is not one (perplexity is relative and lower is better)."""
        return None

    @classmethod
    @abstractmethod
    def gate_failures(cls, row: ResultRow, gates: Any, reference_metrics: dict[str, float]) -> list[str]:
        """This task's quality gates on one checked row (FP32 rows are held to parity, others to a budget)."""


def by_group(data: EvalSet, score: Any, *arrays: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """``score(*arrays_of_group, batches_of_group)`` for each group of evaluation batches."""
    out: dict[str, dict[str, float]] = {}
    for group in dict.fromkeys(data.groups):
        idx = [i for i, g in enumerate(data.groups) if g == group]
        out[group] = score(*([a[i] for i in idx] for a in arrays), [data.batches[i] for i in idx])
    return out


def sequence_lengths_rule(v: list[int], minimum: int) -> list[int]:
    """Sequence lengths of a text task: at least one, each >= ``minimum``, sorted, no repeats."""
    if not v:
        raise ValueError("give at least one sequence length")
    if min(v) < minimum:
        raise ValueError(f"a sequence needs at least {minimum} tokens, got {min(v)}")
    return sorted(set(v))


def below(value: float | None, limit: float, what: str, fmt: str = ".4f") -> list[str]:
    """A failure when ``value`` is not >= ``limit`` (NaN fails; a missing value is not checked)."""
    if value is None:
        return []
    return [] if value >= limit else [f"{what} {value:{fmt}} < {limit:g}"]


def above(value: float | None, limit: float, what: str, fmt: str = ".4f") -> list[str]:
    """A failure when ``value`` is not <= ``limit`` (NaN fails; a missing value is not checked)."""
    if value is None:
        return []
    return [] if value <= limit else [f"{what} {value:{fmt}} > {limit:g}"]


def token_feeds(inputs: list[TensorSpec], ids: np.ndarray) -> Feeds:
    """Feeds for a text model from unpadded token ids (n, length): ids into the ids input, ones into an
    attention mask, zeros into token types, 0..length-1 into position ids (by input name)."""
    n, length = ids.shape
    values = {
        "mask": np.ones((n, length)),
        "token_type": np.zeros((n, length)),
        "position": np.broadcast_to(np.arange(length), (n, length)),
        "ids": ids,
    }
    return {s.name: np.ascontiguousarray(values[input_role(s.name)], dtype=np.dtype(s.dtype)) for s in inputs}


def attention_mask(batch: Feeds, shape: tuple[int, ...]) -> np.ndarray:
    """The batch's attention mask (n, length), or all ones where the model takes none."""
    mask = next((a for name, a in batch.items() if input_role(name) == "mask" and a.ndim == 2), None)
    return np.ones(shape[:2]) if mask is None else mask.astype(np.float64)
