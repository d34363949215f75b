"""The results contract, typed: one ``ResultRow`` per (artifact, runtime, device, benchmark point), and the
``results.json`` document that holds them. Every rendering (table, Markdown, CSV) is made from these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# 2: ``task`` block; rows gain task, sequence_length, breakdown and nonfinite_outputs; ci95 is null when
# there are too few runs for a 95% interval; status "unsupported" rows have no file.
# 3: rows of language models gain ``generation`` (prompt and generation tokens/s); artifacts gain
# ``parameters`` (for bits per weight); ``recommendation`` at the top level (memory budget).
# 4: rows gain ``vs_dense`` (a compressed model's file against the dense source model's FP32 export on the
# same runtime); the top level gains ``checkpoints`` (the torch models a recipe exported, with what each
# compression stage did).
# 5: latency is measured in several fresh processes, interleaved across artifacts: ``latency_ms`` gains
# ``processes``, ``process_medians``, ``process_spread``, ``ci_basis`` and ``warmup_runs``, and its ``ci95``
# is built from the process medians; comparisons gain the ratio's own ``ci95``; rows gain ``samples_ms``,
# ``cold_start_ms`` and a measured ``throughput_per_s``; the top level gains ``run_id``.
RESULTS_SCHEMA_VERSION = 5


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArtifactRef(_Strict):
    """The model file a row measured: identified by sha256, paired with its parents by lineage."""

    name: str | None = None
    format: str
    precision: str | None = None
    path: str | None  # None for a step that could not be made (status "unsupported")
    size_bytes: int | None
    sha256: str | None
    parent_sha256: str | None = None
    parameters: int | None = None  # weights of the model it holds (from the source model)

    @property
    def bits_per_weight(self) -> float | None:
        """File bits per model weight, the same measure for every format (metadata and graph included)."""
        return None if not (self.size_bytes and self.parameters) else 8 * self.size_bytes / self.parameters


class LatencyStats(_Strict):
    """Per-call latency in ms, pooled over every timed run of every process (``n`` runs in ``processes``
    fresh processes). ``ci95`` is a 95% interval of the median: with two or more processes
    (``ci_basis`` "processes") a t interval of the process medians on a log scale, the variation that moves
    a figure from one run to the next; with one process (``ci_basis`` "runs") the distribution-free
    interval of that process's runs, which says nothing about the next process. None when too few runs
    or processes make one."""

    n: int
    mean: float
    std: float
    min: float
    median: float
    p90: float
    p99: float
    max: float
    iqr: float
    ci95: list[float] | None
    processes: int = 1
    process_medians: list[float] = []
    process_spread: float | None = None  # (max - min) / median of the process medians
    ci_basis: Literal["processes", "runs"] | None = None
    warmup_runs: int | None = None  # untimed calls before the running median settled (first process)


class Comparison(BaseModel):
    """A row against a baseline row measured with the same runtime, device, threads and shape (its FP32
    parent, or the dense model's FP32 export): ``ratio`` = baseline median / this median (> 1: faster);
    ``<metric>_delta`` per task metric."""

    model_config = ConfigDict(extra="allow")

    baseline: str
    ratio: float
    significant: bool  # the ratio's 95% interval excludes 1
    size_ratio: float
    ci95: list[float] | None = None  # of ``ratio``: from paired process medians (A B A B ...), else None


class GenerationStats(_Strict):
    """Speed of a causal language model at batch 1: the prompt in one call, then greedy decoding one token at
    a time. ``method`` "kv-cache": the runtime keeps its own cache (llama.cpp); "recompute": the model has
    no cache inputs, so each new token re-runs the whole sequence (what that artifact costs as shipped)."""

    method: Literal["kv-cache", "recompute"]
    prompt_tokens: int
    new_tokens: int
    prompt_ms: LatencyStats  # per prompt
    token_ms: LatencyStats  # per generated token, one sample per token over all runs
    prompt_tokens_per_s: float  # prompt_tokens / median prompt_ms
    generation_tokens_per_s: float  # 1000 / median token_ms


class GateResult(_Strict):
    passed: bool
    failures: list[str]


class ResultRow(_Strict):
    name: str | None = None
    artifact: ArtifactRef
    runtime: str
    runtime_version: str | None = None
    device: str
    threads: int | None
    batch_size: int | None
    sequence_length: int | None = None
    # ok; failed (the runtime failed on this model); unavailable (runtime or device missing); unsupported
    # (the format's tool cannot make this artifact from this model: nothing to measure, the run goes on).
    status: Literal["ok", "failed", "unavailable", "unsupported"]
    error: str | None = None
    task: str | None = None  # the task kind whose metrics these are
    inputs: list[dict[str, Any]] = []
    input_source: str | None = None
    load_ms: float | None = None
    first_run_ms: float | None = None
    latency_ms: LatencyStats | None = None
    samples_ms: list[float] = []  # every timed run of every process, in order, for distributions
    throughput_per_s: float | None = None  # items (batch x runs) per second of the timed loops' wall time
    cold_start_ms: float | None = None  # a fresh process: start, imports, load, first run (first process)
    peak_rss_mb: float | None = None
    metrics: dict[str, float] = {}
    parity: dict[str, float] | None = None
    breakdown: dict[str, dict[str, float]] = {}  # metrics and parity per evaluation group (e.g. length)
    nonfinite_outputs: int | None = None  # NaN or Inf values in the evaluated outputs
    generation: GenerationStats | None = None  # language models: tokens/s (first row of each thread count)
    vs_fp32: Comparison | None = None
    vs_dense: Comparison | None = None  # a compressed model's row against the dense model's FP32 file
    gates: GateResult | None = None
    session: dict[str, Any] = {}

    @property
    def label(self) -> str:
        """``<artifact name>@<runtime>``; a bare file without a name is ``<format>/<precision>@<runtime>``."""
        a = self.artifact
        return f"{self.name or a.name or f'{a.format}/{a.precision or chr(63)}'}@{self.runtime}"

    def same_setup(self, other: ResultRow) -> bool:
        return (self.runtime, self.device, self.threads, self.batch_size, self.sequence_length) == (
            other.runtime,
            other.device,
            other.threads,
            other.batch_size,
            other.sequence_length,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def failed_row(
    artifact: ArtifactRef,
    runtime: str,
    device: str,
    status: Literal["failed", "unavailable", "unsupported"],
    error: str,
    **point: Any,
) -> ResultRow:
    """A row for a benchmark that could not run: ``status`` "unavailable" (runtime or device missing) or
    "failed" (the runtime failed on this model)."""
    return ResultRow(
        artifact=artifact,
        runtime=runtime,
        device=device,
        threads=point.get("threads"),
        batch_size=point.get("batch_size"),
        sequence_length=point.get("sequence_length"),
        status=status,
        error=error,
    )
