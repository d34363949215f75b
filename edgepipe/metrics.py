"""Task metrics and parity measures, shared by training, the pipeline and the benchmark workers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(np.mean(outputs.argmax(axis=-1) == labels))}


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], dict[str, float]]] = {"accuracy": top1_accuracy}


def parity(outputs: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely outputs follow the reference: max/mean abs diff and top-1 agreement."""
    if outputs.shape != reference.shape:
        raise ValueError(f"output shape {outputs.shape} differs from the reference {reference.shape}")
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(outputs.argmax(axis=-1) == reference.argmax(axis=-1))),
    }
