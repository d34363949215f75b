"""Image classification: top-1 accuracy on the test split; parity is logit difference and top-1
agreement with the reference. Data: scikit-learn's offline digits (8x8, upsampled)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from edgepipe.configs import Section, TaskConfig
from edgepipe.files import load_arrays, save_arrays, sha256_arrays, sha256_json
from edgepipe.tasks.base import EvalSet, Measure, ModelIO, Preprocessor, Task, above, below
from edgepipe.tensors import Feeds, TensorSpec

if TYPE_CHECKING:
    import torch

    from edgepipe.results import ResultRow
    from edgepipe.text import Tokenizer

DIGITS_SAMPLES = 1797  # sklearn.datasets.load_digits
EVAL_BATCH = 64


class ClassificationConfig(TaskConfig):
    """``digits`` is scikit-learn's offline 8x8 digits, scaled to [0, 1] and upsampled (nearest)."""

    kind: Literal["classification"] = "classification"
    dataset: Literal["digits"] = "digits"
    image_size: int = Field(32, ge=8, le=128)
    test_size: int = Field(360, ge=10)
    calibration_size: int = Field(300, ge=10, description="at least one sample per class (stratified)")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> ClassificationConfig:
        if self.test_size + self.calibration_size > DIGITS_SAMPLES - 100:
            raise ValueError(
                f"test_size + calibration_size must leave at least 100 of the {DIGITS_SAMPLES} samples for training"
            )
        return self


class ClassificationGates(Section):
    fp32_min_top1_agreement: float = Field(1.0, ge=0, le=1)
    fp32_max_abs_diff: float = Field(1e-3, ge=0)
    quantized_min_top1_agreement: float = Field(0.95, ge=0, le=1)
    quantized_max_accuracy_drop: float = Field(0.01, ge=0, le=1)


def _scores(outputs: list[np.ndarray], labels: list[np.ndarray], _: Any = None) -> dict[str, float]:
    return {"accuracy": float(np.mean(np.concatenate(outputs).argmax(-1) == np.concatenate(labels)))}


def _parity(outputs: list[np.ndarray], reference: list[np.ndarray], _: Any = None) -> dict[str, float]:
    out, ref = np.concatenate(outputs).astype(np.float64), np.concatenate(reference).astype(np.float64)
    diff = np.abs(out - ref)
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(out.argmax(-1) == ref.argmax(-1))),
    }


def _digits(
    config: ClassificationConfig, seed: int, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """The 8x8 digits (pixel values 0-16), their labels and the stratified split's indices, made with
    scikit-learn and kept in ``cache_dir``: importing scikit-learn takes ~3 s, most of a cached run's own time.
    The split is keyed by everything it depends on, scikit-learn's version included."""
    from edgepipe.environment import package_version

    key = sha256_json([seed, config.test_size, config.calibration_size, package_version("scikit-learn")])
    path = cache_dir / f"digits-{key[:12]}.npz" if cache_dir else None
    if path is not None and path.is_file():
        try:
            saved = load_arrays(path)
            return saved["pixels"], saved["labels"], {k: saved[k] for k in ("train", "calibration", "test")}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache file is made again
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    y = digits.target.astype(np.int64)
    # Splitting the indices gives exactly the split of the arrays themselves (same shuffle, same strata).
    rest, test = train_test_split(np.arange(len(y)), test_size=config.test_size, random_state=seed, stratify=y)
    train, cal = train_test_split(rest, test_size=config.calibration_size, random_state=seed, stratify=y[rest])
    pixels = digits.images.astype(np.uint8)
    parts = {"train": train, "calibration": cal, "test": test}
    if path is not None:
        save_arrays(path, {"pixels": pixels, "labels": y, **parts})
    return pixels, y, parts


class ClassificationTask(Task):
    kind = "classification"
    Config = ClassificationConfig
    Gates = ClassificationGates
    unit = "images"
    metrics = (Measure("accuracy", "accuracy", True),)
    drop_unit = "accuracy points"
    parity_measures = (
        Measure("top1_agreement", "top-1 agree", True),
        Measure("max_abs_diff", "max abs diff", False, ".2e"),
    )

    def __init__(self, config: ClassificationConfig, seed: int, cache_dir: Path | None = None):
        super().__init__(config, seed, cache_dir)
        pixels, y, parts = _digits(config, seed, cache_dir)
        size = config.image_size
        index = (np.arange(size) * 8) // size  # nearest-neighbour upsampling, reproducible on any device
        images = (pixels.astype(np.float32) / 16.0)[:, index][:, :, index]
        x = np.ascontiguousarray(images.reshape(-1, 1, size, size), dtype=np.float32)
        self.splits = {name: (x[idx], y[idx]) for name, idx in parts.items()}
        self.labels = [str(i) for i in range(10)]
        self.image_shape = [1, size, size]

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v[1]) for k, v in self.splits.items()}

    def data_sha256(self) -> str:
        return sha256_arrays([a for split in self.splits.values() for a in split])

    def describe(self) -> dict[str, Any]:
        size = self.image_shape[-1]
        return {
            **super().describe(),
            "labels": self.labels,
            "preprocessing": {
                "source": "sklearn.datasets.load_digits",
                "layout": "NCHW",
                "scale": 1 / 16,
                "resize": {"from": [8, 8], "to": [size, size], "method": "nearest"},
            },
        }

    def model_io(self, tokenizer: Tokenizer | None) -> ModelIO:
        return ModelIO(
            inputs=[TensorSpec(name="input", shape=["batch", *self.image_shape], dtype="float32")],
            outputs=[TensorSpec(name="logits", shape=["batch", len(self.labels)], dtype="float32")],
            num_classes=len(self.labels),
        )

    def _feeds(self, pre: Preprocessor, x: np.ndarray) -> Feeds:
        return {pre.inputs[0].name: np.ascontiguousarray(x)}

    def calibration_feeds(self, pre: Preprocessor, batch_size: int = 1, limit: int | None = None) -> list[Feeds]:
        x = self.splits["calibration"][0][:limit]
        return [self._feeds(pre, x[i : i + batch_size]) for i in range(0, len(x), batch_size)]

    def eval_set(self, pre: Preprocessor, split: str = "test") -> EvalSet:
        x, y = self.splits[split]
        starts = range(0, len(x), EVAL_BATCH)
        return EvalSet(
            [self._feeds(pre, x[i : i + EVAL_BATCH]) for i in starts],
            [y[i : i + EVAL_BATCH] for i in starts],
            [split] * len(starts),
        )

    def timing_feeds(self, pre: Preprocessor, batch_size: int, sequence_length: int | None) -> list[Feeds]:
        x = self.splits["test"][0]
        starts = range(0, len(x) - batch_size + 1, batch_size)[:64]
        return [self._feeds(pre, x[i : i + batch_size]) for i in starts]

    def training_batches(
        self, pre: Preprocessor, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[Feeds, np.ndarray]]:
        x, y = self.splits["train"]
        order = rng.permutation(len(x))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            yield self._feeds(pre, x[idx]), y[idx]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output, target)

    @classmethod
    def quality(
        cls, outputs: list[np.ndarray], data: EvalSet, reference: list[np.ndarray] | None
    ) -> tuple[dict[str, float], dict[str, float] | None, dict[str, dict[str, float]]]:
        labels = [t for t in data.targets if t is not None]
        metrics = _scores(outputs, labels) if len(labels) == len(outputs) else {}
        parity = _parity(outputs, reference) if reference is not None else None
        return metrics, parity, {}

    @classmethod
    def quality_drop(cls, metrics: dict[str, float], reference_metrics: dict[str, float]) -> float | None:
        ref, acc = reference_metrics.get("accuracy"), metrics.get("accuracy")
        return None if ref is None or acc is None else 100 * (ref - acc)

    @classmethod
    def metric_budget(cls, max_quality_drop: float) -> float | None:
        return max_quality_drop / 100

    @classmethod
    def gate_failures(
        cls, row: ResultRow, gates: ClassificationGates, reference_metrics: dict[str, float]
    ) -> list[str]:
        par = row.parity or {}
        if row.artifact.precision == "fp32":
            return [
                *below(par.get("top1_agreement"), gates.fp32_min_top1_agreement, "top-1 agreement"),
                *above(par.get("max_abs_diff"), gates.fp32_max_abs_diff, "max abs diff", ".3g"),
            ]
        ref, acc = reference_metrics.get("accuracy"), row.metrics.get("accuracy")
        drop = None if ref is None or acc is None else ref - acc
        return [
            *below(par.get("top1_agreement"), gates.quantized_min_top1_agreement, "top-1 agreement"),
            *above(drop, gates.quantized_max_accuracy_drop, "accuracy drop"),
        ]
