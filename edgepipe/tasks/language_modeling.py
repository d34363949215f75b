"""Causal language modeling: held-out perplexity, and against the reference model the KL divergence of
the next-token distribution, top-1 token agreement and the largest logit difference.

Data: Python's own standard library (``edgepipe.text``: documentation and pure-Python sources), split by
document so held-out text is never trained on. Evaluation windows are unpadded, at every one of
``sequence_lengths``; the same windows and the same reference serve every format.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
    above,
    below,
    by_group,
    sequence_lengths_rule,
    token_feeds,
)
from edgepipe.tensors import Feeds, TensorSpec

if TYPE_CHECKING:
    import torch

    from edgepipe.results import ResultRow
    from edgepipe.text import Tokenizer


class LanguageModelingConfig(TaskConfig):
    kind: Literal["language-modeling"] = "language-modeling"
    dataset: Literal["stdlib-text"] = "stdlib-text"
    # "docs": pydoc's English documentation topics; "python": sources of pure-Python stdlib modules.
    sources: list[Literal["docs", "python"]] = Field(["docs", "python"], min_length=1)
    context_length: int = Field(128, ge=8, le=8192, description="training and calibration window")
    sequence_lengths: list[int] = Field([32, 128], description="evaluation and default benchmark lengths")
    eval_windows: int = Field(8, ge=1, le=1000, description="held-out windows per sequence length")
    calibration_windows: int = Field(32, ge=1, le=10000)
    test_fraction: float = Field(0.05, gt=0, lt=0.5)
    calibration_fraction: float = Field(0.05, gt=0, lt=0.5)

    @field_validator("sequence_lengths")
    @classmethod
    def _lengths(cls, v: list[int]) -> list[int]:
        return sequence_lengths_rule(v, minimum=2)


class LanguageModelingGates(Section):
    fp32_max_abs_diff: float = Field(1e-3, ge=0, description="largest logit difference of an FP32 export")
    fp32_min_top1_agreement: float = Field(0.999, ge=0, le=1)
    quantized_max_kld: float = Field(0.05, ge=0)
    quantized_max_perplexity_ratio: float = Field(1.05, ge=1)
    quantized_min_top1_agreement: float = Field(0.8, ge=0, le=1)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _scores(outputs: list[np.ndarray], targets: list[np.ndarray], _: Any = None) -> dict[str, float]:
    nll, count = 0.0, 0
    for logits, target in zip(outputs, targets, strict=True):
        logp = _log_softmax(logits)
        nll -= float(np.take_along_axis(logp, target[..., None], -1).sum())
        count += target.size
    return {"perplexity": float(np.exp(nll / count))}


def _parity(outputs: list[np.ndarray], reference: list[np.ndarray], _: Any = None) -> dict[str, float]:
    kld, agree, count = 0.0, 0, 0
    diffs = []
    for out, ref in zip(outputs, reference, strict=True):
        logp, logq = _log_softmax(ref), _log_softmax(out)
        kld += float((np.exp(logp) * (logp - logq)).sum())
        agree += int((out.argmax(-1) == ref.argmax(-1)).sum())
        diffs.append(np.abs(out.astype(np.float64) - ref).max())
        count += out.shape[0] * out.shape[1]
    # np.max, not max(): a NaN anywhere must stay NaN (Python's max would skip it).
    return {"kld": kld / count, "top1_agreement": agree / count, "max_abs_diff": float(np.max(diffs))}


class LanguageModelingTask(Task):
    kind = "language-modeling"
    Config = LanguageModelingConfig
    Gates = LanguageModelingGates
    unit = "documents"
    metrics = (Measure("perplexity", "perplexity", False, ".3f"),)
    drop_unit = "relative perplexity"  # 0.02: perplexity 2% above the FP32 parent's

    @classmethod
    def quality_drop(cls, metrics: dict[str, float], reference_metrics: dict[str, float]) -> float | None:
        ref, ppl = reference_metrics.get("perplexity"), metrics.get("perplexity")
        return None if not ref or ppl is None else ppl / ref - 1

    parity_measures = (
        Measure("kld", "KLD", False, ".2e"),
        Measure("top1_agreement", "top-1 agree", True),
        Measure("max_abs_diff", "max abs diff", False, ".2e"),
    )
    needs_tokenizer = True
    # Measured on lm-tiny (a 4x smaller student, one epoch): T=1 lowered its perplexity from 59.8 to 51.2,
    # T=2 raised it to 82 and T=4 to 141: a softened vocabulary-wide distribution teaches noise.
    distillation_temperature = 1.0

    def __init__(self, config: LanguageModelingConfig, seed: int, cache_dir: Path | None = None):
        super().__init__(config, seed, cache_dir)
        from edgepipe.text import split_documents, stdlib_documents

        prefixes = tuple({"docs": "topics/", "python": "source/"}[s] for s in config.sources)
        docs = [d for d in stdlib_documents() if d[0].startswith(prefixes)]
        self.documents = split_documents(docs, seed, config.test_fraction, config.calibration_fraction)
        self.config: LanguageModelingConfig = config
        self._streams: dict[tuple[str, str], np.ndarray] = {}

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.documents.items()}

    def data_sha256(self) -> str:
        return sha256_json({k: [list(d) for d in v] for k, v in self.documents.items()})

    def train_tokenizer(self, vocab_size: int) -> Tokenizer:
        from edgepipe.text import train_byte_bpe

        return train_byte_bpe((text for _, text in self.documents["train"]), vocab_size)

    def model_io(self, tokenizer: Tokenizer | None) -> ModelIO:
        if tokenizer is None:
            raise InputError("task kind 'language-modeling' needs a tokenizer")
        vocab = tokenizer.vocab_size
        return ModelIO(
            inputs=[
                TensorSpec(name="input_ids", shape=["batch", "sequence"], dtype="int64", value_range=[0, vocab - 1])
            ],
            outputs=[TensorSpec(name="logits", shape=["batch", "sequence", vocab], dtype="float32")],
            vocab_size=vocab,
            max_length=self.config.context_length,
        )

    def _stream(self, pre: Preprocessor, split: str) -> np.ndarray:
        """All of a split's documents as one token stream (documents joined by a blank line)."""
        if pre.tokenizer is None:
            raise InputError(
                "task kind 'language-modeling' needs the model's tokenizer (tokenizer.json beside the model)"
            )
        key = (pre.tokenizer.sha256, split)
        if key not in self._streams:
            text = "\n\n".join(t for _, t in self.documents[split])
            self._streams[key] = np.asarray(pre.tokenizer.encode(text), dtype=np.int64)
        return self._streams[key]

    def _windows(self, pre: Preprocessor, split: str, length: int, count: int | None) -> np.ndarray:
        """(n, length + 1) consecutive, non-overlapping windows: inputs and their next-token targets."""
        if pre.max_length is not None and length > pre.max_length:
            raise InputError(f"task.sequence_lengths: {length} is longer than the model's maximum {pre.max_length}")
        from edgepipe.text import lm_windows

        windows = lm_windows(self._stream(pre, split), length, count)
        if len(windows) == 0 or (count is not None and len(windows) < count):
            raise InputError(f"task: the {split} split is too short for {count} windows of {length} tokens")
        return windows

    def calibration_feeds(self, pre: Preprocessor, batch_size: int = 1, limit: int | None = None) -> list[Feeds]:
        n = min(limit or self.config.calibration_windows, self.config.calibration_windows)
        w = self._windows(pre, "calibration", self.config.context_length, n)[:, :-1]
        return [token_feeds(pre.inputs, w[i : i + batch_size]) for i in range(0, n, batch_size)]

    def example_feeds(self, pre: Preprocessor, n: int = 2) -> Feeds:
        return token_feeds(
            pre.inputs, self._windows(pre, "calibration", min(16, self.config.context_length), n)[:, :-1]
        )

    def eval_set(self, pre: Preprocessor, split: str = "test") -> EvalSet:
        batches: list[Feeds] = []
        targets: list[np.ndarray | None] = []
        groups: list[str] = []
        for length in self.config.sequence_lengths:
            w = self._windows(pre, split, length, self.config.eval_windows)
            batches.append(token_feeds(pre.inputs, w[:, :-1]))
            targets.append(np.ascontiguousarray(w[:, 1:]))
            groups.append(f"length {length}")
        return EvalSet(batches, targets, groups)

    def timing_feeds(self, pre: Preprocessor, batch_size: int, sequence_length: int | None) -> list[Feeds]:
        length = sequence_length or self.config.context_length
        self._windows(pre, "test", length, batch_size)  # raises when there are too few
        w = self._windows(pre, "test", length, None)[:, :-1]
        return [token_feeds(pre.inputs, w[i : i + batch_size]) for i in range(0, len(w) - batch_size + 1, batch_size)][
            :8
        ]

    def generation_prompt(self, pre: Preprocessor, n: int) -> list[int] | None:
        stream = self._stream(pre, "test")
        if len(stream) < n:
            raise InputError(f"benchmark.generation.prompt_tokens: the test split holds only {len(stream)} tokens")
        return [int(t) for t in stream[:n]]

    def sequence_lengths(self) -> list[int | None]:
        return list(self.config.sequence_lengths)

    def training_batches(
        self, pre: Preprocessor, batch_size: int, rng: np.random.Generator
    ) -> Iterator[tuple[Feeds, np.ndarray]]:
        stream, length = self._stream(pre, "train"), self.config.context_length
        # A fresh random offset each epoch, so window boundaries move between epochs.
        offset = int(rng.integers(0, length))
        from edgepipe.text import lm_windows

        windows = lm_windows(stream[offset:], length)
        order = rng.permutation(len(windows))
        for i in range(0, len(order), batch_size):
            w = windows[order[i : i + batch_size]]
            yield token_feeds(pre.inputs, w[:, :-1]), np.ascontiguousarray(w[:, 1:])

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))

    @classmethod
    def quality(
        cls, outputs: list[np.ndarray], data: EvalSet, reference: list[np.ndarray] | None
    ) -> tuple[dict[str, float], dict[str, float] | None, dict[str, dict[str, float]]]:
        targets = [t for t in data.targets if t is not None]
        metrics = _scores(outputs, targets)
        parity = _parity(outputs, reference) if reference is not None else None

        def group(outs: list[np.ndarray], tgts: list[np.ndarray], refs: Any, batches: Any = None) -> dict[str, float]:
            return {**_scores(outs, tgts), **(_parity(outs, refs) if reference is not None else {})}

        return metrics, parity, by_group(data, group, outputs, targets, reference if reference is not None else outputs)

    @classmethod
    def gate_failures(
        cls, row: ResultRow, gates: LanguageModelingGates, reference_metrics: dict[str, float]
    ) -> list[str]:
        failures: list[str] = []
        # Overall, and at each length on its own: a length that breaks is not averaged away by the others.
        for where, par in [("", row.parity or {}), *((f" at {g}", v) for g, v in row.breakdown.items())]:
            if row.artifact.precision == "fp32":
                failures += above(par.get("max_abs_diff"), gates.fp32_max_abs_diff, f"max abs diff{where}", ".3g")
                failures += below(par.get("top1_agreement"), gates.fp32_min_top1_agreement, f"top-1 agreement{where}")
            else:
                failures += above(par.get("kld"), gates.quantized_max_kld, f"KLD{where}", ".4f")
                failures += below(
                    par.get("top1_agreement"), gates.quantized_min_top1_agreement, f"top-1 agreement{where}"
                )
        if row.artifact.precision != "fp32":
            ref, ppl = reference_metrics.get("perplexity"), row.metrics.get("perplexity")
            ratio = None if ref is None or ppl is None else ppl / ref
            failures += above(ratio, gates.quantized_max_perplexity_ratio, "perplexity ratio")
        return failures
