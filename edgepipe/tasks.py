"""Tasks: a dataset with train / calibration / test splits, its input spec and its metric.

Data come from what ships offline (scikit-learn's digits); nothing is downloaded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepipe.artifact import TensorSpec
from edgepipe.metrics import METRICS
from edgepipe.recipe import TaskConfig


@dataclass(frozen=True)
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def sha256(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.x).tobytes())
        h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()


@dataclass(frozen=True)
class Task:
    name: str
    metric: str
    labels: list[str]
    train: Split
    calibration: Split
    test: Split
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocessing: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def feeds(self, split: Split) -> dict[str, np.ndarray]:
        """A split's model inputs by name (one image tensor here; token ids + mask for text tasks)."""
        return {self.inputs[0].name: split.x}

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        """Task metric from model outputs (logits) and true labels."""
        return METRICS[self.metric](outputs, labels)

    def data_sha256(self) -> str:
        return hashlib.sha256(
            "".join(s.sha256() for s in (self.train, self.calibration, self.test)).encode()
        ).hexdigest()

    def describe(self) -> dict[str, Any]:
        """The task block stored in every artifact's manifest."""
        return {
            "name": self.name,
            "metric": self.metric,
            "labels": self.labels,
            "preprocessing": self.preprocessing,
            "splits": {
                "train": len(self.train),
                "calibration": len(self.calibration),
                "test": len(self.test),
            },
            "data_sha256": self.data_sha256(),
        }


def digits_task(config: TaskConfig, seed: int) -> Task:
    """scikit-learn's 1,797 8x8 digits, scaled to [0, 1] and upsampled (nearest) to image_size."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    size = config.image_size
    index = (np.arange(size) * 8) // size  # nearest-neighbour upsampling, reproducible on any device
    images = images[:, index][:, :, index]
    x = np.ascontiguousarray(images.reshape(-1, 1, size, size), dtype=np.float32)
    y = digits.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=config.test_size, random_state=seed, stratify=y)
    x_train, x_cal, y_train, y_cal = train_test_split(
        x_rest, y_rest, test_size=config.calibration_size, random_state=seed, stratify=y_rest
    )
    return Task(
        name="digits",
        metric="accuracy",
        labels=[str(i) for i in range(10)],
        train=Split(x_train, y_train),
        calibration=Split(x_cal, y_cal),
        test=Split(x_test, y_test),
        inputs=[TensorSpec(name="input", shape=["batch", 1, size, size], dtype="float32")],
        outputs=[TensorSpec(name="logits", shape=["batch", 10], dtype="float32")],
        preprocessing={
            "source": "sklearn.datasets.load_digits",
            "layout": "NCHW",
            "scale": 1 / 16,
            "resize": {"from": [8, 8], "to": [size, size], "method": "nearest"},
        },
    )


TASKS: dict[str, Callable[[TaskConfig, int], Task]] = {"digits": digits_task}


def build_task(config: TaskConfig, seed: int) -> Task:
    return TASKS[config.name](config, seed)
