"""Sentence embeddings: the pooled output of a text encoder, scored against the reference model's
embeddings of the same passages (cosine mean and worst, nearest-neighbour agreement).

Data: paragraphs of Python's own documentation (``pydoc_data.topics``), tokenized by the model's
tokenizer and cut to exactly each of ``sequence_lengths`` tokens: every evaluation input is
unpadded, and quality is checked at every length, not at one padded length.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from edgepipe.configs import Section, TaskConfig
from edgepipe.errors import InputError
from edgepipe.files import sha256_json
from edgepipe.tasks.base import (
    EvalSet,
    Measure,
    ModelIO,
    Preprocessor,
    Task,
    attention_mask,
    below,
    by_group,
    sequence_lengths_rule,
    token_feeds,
)
from edgepipe.tensors import Feeds

if TYPE_CHECKING:
    import torch

    from edgepipe.results import ResultRow
    from edgepipe.text import Tokenizer

EVAL_BATCH = 16


class EmbeddingConfig(TaskConfig):
    kind: Literal["embedding"] = "embedding"
    dataset: Literal["stdlib-docs"] = "stdlib-docs"
    sequence_lengths: list[int] = Field([16, 32, 128], description="evaluation and default benchmark lengths")
    eval_per_length: int = Field(32, ge=2, le=1000)
    calibration_size: int = Field(100, ge=1, le=2000)
    calibration_length: int = Field(128, ge=4)
    pooling: Literal["mean", "cls"] | None = Field(None, description="default: the model's own, else mean")

    @field_validator("sequence_lengths")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        return sequence_lengths_rule(v, minimum=4)


class EmbeddingGates(Section):
    fp32_min_cosine: float = Field(0.9999, ge=-1, le=1, description="worst cosine of an FP32 export")
    quantized_min_cosine_mean: float = Field(0.99, ge=-1, le=1)
    quantized_min_cosine_worst: float = Field(0.95, ge=-1, le=1)


def pool(hidden: np.ndarray, batch: Feeds, mode: str) -> np.ndarray:
    """(n, length, dim) hidden states -> (n, dim) embeddings: mean over the attention mask, or the first token."""
    hidden = hidden.astype(np.float64)
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask(batch, hidden.shape)[..., None]
    return (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _nearest(emb: np.ndarray) -> np.ndarray:
    sim = _unit(emb) @ _unit(emb).T
    np.fill_diagonal(sim, -np.inf)
    return sim.argmax(1)


def paragraphs(text: str) -> list[str]:
    return [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) >= 20]


class EmbeddingTask(Task):
    kind = "embedding"
    Config = EmbeddingConfig
    Gates = EmbeddingGates
    metrics = (
        Measure("cosine_mean", "cosine mean", True, ".5f"),
        Measure("cosine_worst", "cosine worst", True, ".5f"),
        Measure("nn_agreement", "NN agree", True),
    )
    parity_measures = (Measure("max_abs_diff", "max abs diff", False, ".2e"),)
    needs_tokenizer = True
    trainable = False
    unit = "documents"  # each gives many passages at each length
    drop_unit = "cosine"  # 1 - mean cosine to the FP32 parent's embeddings

    @classmethod
    def quality_drop(cls, metrics: dict[str, float], reference_metrics: dict[str, float]) -> float | None:
        # The parent's own cosine to itself is 1 (the tuning reference is its outputs).
        cos = metrics.get("cosine_mean")
        return None if cos is None else reference_metrics.get("cosine_mean", 1.0) - cos

    @classmethod
    def metric_budget(cls, max_quality_drop: float) -> float | None:
        return max_quality_drop

    def __init__(self, config: EmbeddingConfig, seed: int, cache_dir: Path | None = None):
        super().__init__(config, seed, cache_dir)
        from edgepipe.text import split_documents, stdlib_documents

        docs = [d for d in stdlib_documents() if d[0].startswith("topics/")]
        # No training: the documents are shared between the calibration and test splits only.
        parts = split_documents(docs, seed, test_fraction=0.45, calibration_fraction=0.45)
        self.documents = {"calibration": parts["calibration"] + parts["train"], "test": parts["test"]}
        self.config: EmbeddingConfig = config
        self._cache: dict[tuple[str, str, int], np.ndarray] = {}

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.documents.items()}

    def data_sha256(self) -> str:
        return sha256_json({k: [list(d) for d in v] for k, v in self.documents.items()})

    def model_io(self, tokenizer: Tokenizer | None) -> ModelIO:
        raise InputError(
            "task kind 'embedding' has no model of its own: load a pretrained encoder (source kind huggingface)"
        )

    def _examples(self, pre: Preprocessor, split: str, length: int, count: int) -> np.ndarray:
        """(count, length) token ids: passages from ``split`` cut to exactly ``length`` tokens, specials included."""
        if pre.tokenizer is None:
            raise InputError("task kind 'embedding' needs the model's tokenizer (tokenizer.json beside the model)")
        if pre.max_length is not None and length > pre.max_length:
            raise InputError(f"task.sequence_lengths: {length} is longer than the model's maximum {pre.max_length}")
        key = (pre.tokenizer.sha256, split, length)
        if key not in self._cache:
            rows: list[list[int]] = []
            for _, text in self.documents[split]:
                paras = paragraphs(text)
                for k in range(len(paras)):
                    passage = " ".join(paras[k : k + 1 + length // 8])
                    ids = pre.tokenizer.encode_with_special(passage, max_length=length)
                    if len(ids) == length:
                        rows.append(ids)
            self._cache[key] = np.array(rows, dtype=np.int64).reshape(-1, length)
        found = self._cache[key]
        if len(found) < count:
            raise InputError(
                f"task: the {split} split has only {len(found)} passages of {length} tokens, {count} asked"
            )
        return found[:count]

    def calibration_feeds(self, pre: Preprocessor, batch_size: int = 1, limit: int | None = None) -> list[Feeds]:
        n = min(limit or self.config.calibration_size, self.config.calibration_size)
        ids = self._examples(pre, "calibration", self.config.calibration_length, n)
        return [token_feeds(pre.inputs, ids[i : i + batch_size]) for i in range(0, n, batch_size)]

    def example_feeds(self, pre: Preprocessor, n: int = 2) -> Feeds:
        return token_feeds(pre.inputs, self._examples(pre, "calibration", min(self.config.sequence_lengths), n))

    def eval_set(self, pre: Preprocessor, split: str = "test") -> EvalSet:
        batches: list[Feeds] = []
        groups: list[str] = []
        for length in self.config.sequence_lengths:
            ids = self._examples(pre, split, length, self.config.eval_per_length)
            for i in range(0, len(ids), EVAL_BATCH):
                batches.append(token_feeds(pre.inputs, ids[i : i + EVAL_BATCH]))
                groups.append(f"length {length}")
        pooling = self.config.pooling or (pre.pooling if pre.pooling in ("mean", "cls") else "mean")
        return EvalSet(batches, [None] * len(batches), groups, {"pooling": pooling})

    def timing_feeds(self, pre: Preprocessor, batch_size: int, sequence_length: int | None) -> list[Feeds]:
        length = sequence_length or max(self.config.sequence_lengths)
        self._examples(pre, "test", length, batch_size)  # raises when there are too few
        ids = self._cache[(pre.tokenizer.sha256 if pre.tokenizer else "", "test", length)]
        return [
            token_feeds(pre.inputs, ids[i : i + batch_size]) for i in range(0, len(ids) - batch_size + 1, batch_size)
        ][:8]

    def sequence_lengths(self) -> list[int | None]:
        return list(self.config.sequence_lengths)

    def training_batches(
        self, pre: Preprocessor, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[Feeds, np.ndarray]]:
        raise InputError("task kind 'embedding' has no training data")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise InputError("task kind 'embedding' has no training loss")

    @classmethod
    def quality(
        cls, outputs: list[np.ndarray], data: EvalSet, reference: list[np.ndarray] | None
    ) -> tuple[dict[str, float], dict[str, float] | None, dict[str, dict[str, float]]]:
        if reference is None:
            return {}, None, {}

        def score(outs: list[np.ndarray], refs: list[np.ndarray], batches: list[Feeds]) -> dict[str, float]:
            # Pooling as the task says; a model that pools itself (2-D output) is taken as it is.
            mode = str(data.options.get("pooling", "mean"))
            emb = np.concatenate([pool(o, b, mode) if o.ndim == 3 else o for o, b in zip(outs, batches, strict=True)])
            ref = np.concatenate([pool(r, b, mode) if r.ndim == 3 else r for r, b in zip(refs, batches, strict=True)])
            cos = (_unit(emb) * _unit(ref)).sum(-1)
            return {
                "cosine_mean": float(cos.mean()),
                "cosine_worst": float(cos.min()),
                "nn_agreement": float(np.mean(_nearest(emb) == _nearest(ref))) if len(emb) > 2 else 1.0,
            }

        diff = np.concatenate(
            [np.abs(o.astype(np.float64) - r).ravel() for o, r in zip(outputs, reference, strict=True)]
        )
        metrics = score(outputs, reference, data.batches)
        return (
            metrics,
            {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean())},
            by_group(data, score, outputs, reference),
        )

    @classmethod
    def gate_failures(cls, row: ResultRow, gates: EmbeddingGates, reference_metrics: dict[str, float]) -> list[str]:
        m = row.metrics
        if row.artifact.precision == "fp32":
            return below(m.get("cosine_worst"), gates.fp32_min_cosine, "worst cosine", ".6f")
        failures = below(m.get("cosine_worst"), gates.quantized_min_cosine_worst, "worst cosine")
        # The mean overall, and at each length on its own: one length that breaks is not averaged away.
        for where, g in [("", m), *((f" at {k}", v) for k, v in row.breakdown.items())]:
            failures += below(g.get("cosine_mean"), gates.quantized_min_cosine_mean, f"mean cosine{where}")
        return failures
