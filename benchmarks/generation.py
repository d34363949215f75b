"""Tokens per second of a causal language model: prompt processing and greedy generation at batch 1.

A runtime with its own KV cache (llama.cpp) decodes through ``LanguageModelSession.generate``. Any other
session whose input is token ids and whose output is logits generates by re-running the whole sequence
for every new token ("recompute"): the cost of that artifact as it ships, without cache inputs, and the
row says which method it measured.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepipe.benchmarks.stats import latency_stats
from edgepipe.errors import InputError
from edgepipe.results import GenerationStats, LatencyStats
from edgepipe.runtimes import Generation, LanguageModelSession, Session

if TYPE_CHECKING:
    from edgepipe.benchmarks.harness import Evaluation


def recompute_generate(session: Session, prompt: list[int], max_new_tokens: int) -> Generation:
    """Greedy decoding by re-running ``session`` on the whole sequence for each new token."""
    spec = session.inputs[0]
    dtype = np.dtype(spec.dtype) if spec.dtype in np.sctypeDict else np.dtype(np.int64)

    def last_logits(ids: list[int]) -> np.ndarray:
        out = session.run({spec.name: np.asarray([ids], dtype=dtype)})[0]
        return np.asarray(session.outputs[0].to_float(out))[0, -1]

    t0 = time.perf_counter()
    logits = last_logits(prompt)
    prompt_ms = (time.perf_counter() - t0) * 1e3
    tokens: list[int] = []
    token_ms: list[float] = []
    for _ in range(max_new_tokens):
        t0 = time.perf_counter()
        token = int(np.argmax(logits))
        tokens.append(token)
        logits = last_logits([*prompt, *tokens])
        token_ms.append((time.perf_counter() - t0) * 1e3)
    return Generation(tokens, len(prompt), prompt_ms, token_ms)


def generate(session: Session, prompt: list[int], max_new_tokens: int) -> tuple[Generation, str]:
    """One greedy generation and the method used ("kv-cache" or "recompute")."""
    if isinstance(session, LanguageModelSession):
        return session.generate(prompt, max_new_tokens), "kv-cache"
    return recompute_generate(session, prompt, max_new_tokens), "recompute"


def generation_stats(session: Session, prompt: list[int], new_tokens: int, runs: int) -> GenerationStats:
    """``runs`` timed generations after one untimed one; garbage collection off while timing."""
    method = generate(session, prompt, new_tokens)[1]
    prompt_ms: list[float] = []
    token_ms: list[float] = []
    gc_was_on = gc.isenabled()
    gc.disable()
    try:
        for _ in range(max(runs, 1)):
            g = generate(session, prompt, new_tokens)[0]
            prompt_ms.append(g.prompt_ms)
            token_ms += g.token_ms
    finally:
        if gc_was_on:
            gc.enable()
    p = LatencyStats.model_validate(latency_stats(prompt_ms))
    t = LatencyStats.model_validate(latency_stats(token_ms))
    return GenerationStats(
        method=method,
        prompt_tokens=len(prompt),
        new_tokens=new_tokens,
        prompt_ms=p,
        token_ms=t,
        prompt_tokens_per_s=len(prompt) / p.median * 1e3,
        generation_tokens_per_s=1e3 / t.median,
    )


@dataclass
class GenerationPoint:
    """What to generate from: a prompt of token ids (None: ``synthetic_tokens`` random ids of the model's
    vocabulary, for a bare file), how many new tokens, how many timed runs."""

    prompt: list[int] | None = None
    new_tokens: int = 32
    runs: int = 5
    synthetic_tokens: int = 64


def prompt_for(session: Session, point: GenerationPoint, seed: int) -> tuple[list[int], int] | None:
    """The prompt of ``point`` for ``session`` and how many tokens to generate after it; None when the
    session is no language model to generate with. A synthetic prompt and its new tokens fit the context."""
    if point.prompt is not None:
        return point.prompt, point.new_tokens
    if not isinstance(session, LanguageModelSession):
        return None
    new_tokens = min(point.new_tokens, session.context_length // 2)
    length = min(point.synthetic_tokens, session.context_length - new_tokens)
    rng = np.random.default_rng(seed)
    return [int(t) for t in rng.integers(0, session.vocab_size, length)], new_tokens


def read_text(path: str | Path) -> str:
    """A UTF-8 text file for perplexity; InputError naming the file when it is unreadable, not UTF-8 or empty."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"--text: {p}: cannot read it ({e.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"--text: {p}: not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})") from None
    if not text.strip():
        raise InputError(f"--text: {p}: the file is empty")
    return text


def text_evaluation(session: Session, text: str, length: int | None = None, max_windows: int = 64) -> Evaluation:
    """Perplexity of a language model with its own tokenizer on ``text``: consecutive, non-overlapping
    windows of ``length`` tokens (default: the context, at most 512), every token after the first scored."""
    from edgepipe.benchmarks.harness import Evaluation
    from edgepipe.tasks import EvalSet
    from edgepipe.tasks.language_modeling import LanguageModelingTask
    from edgepipe.text import lm_windows

    if not isinstance(session, LanguageModelSession):
        raise InputError("--text: perplexity needs a language model that carries its tokenizer (a GGUF file)")
    ids = np.asarray(session.tokenize(text), dtype=np.int64)
    length = min(length or 512, session.context_length, len(ids) - 1)
    if length < 2:
        raise InputError(f"--text: the text is only {len(ids)} token(s): too short for perplexity")
    windows = lm_windows(ids, length, None)[:max_windows]
    name = session.inputs[0].name
    data = EvalSet(
        [{name: windows[:, :-1]}],
        [np.ascontiguousarray(windows[:, 1:])],
        [f"{len(windows)} windows of {length} tokens"],
    )
    return Evaluation(LanguageModelingTask, data)
