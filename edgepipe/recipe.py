"""The recipe: one YAML file that says where the model comes from, how to change and export it, and how
to measure it.

Sections name a registered kind and that kind's own config class validates the rest: ``task.kind``
(``edgepipe.tasks``), ``source.kind`` and ``stages[].stage`` (``edgepipe.stage``), ``targets[].format``
and ``quantize[].method`` (``edgepipe.export``); ``gates`` belong to the task kind. Unknown fields are
errors that name the file and the field, e.g. ``recipe.yaml: benchmark.threads: Input should be a
valid integer (got 'two')``. Validation imports no torch and no runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    Field,
    PrivateAttr,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from edgepipe.configs import (
    Section,
    SourceConfig,
    StageConfig,
    TargetConfig,
    TaskConfig,
    pick_registered,
    validate_as,
    validation_message,
)
from edgepipe.errors import InputError, first_line
from edgepipe.formats import FORMATS

# Beyond this a runtime spends its time creating threads (onnxruntime hangs at 100000).
MAX_THREADS = 256


def _as_list(v: Any) -> Any:
    return [v] if isinstance(v, int) and not isinstance(v, bool) else v


class GenerationConfig(Section):
    """Language models: tokens/s of the prompt (held-out text) and of greedy generation at batch 1."""

    prompt_tokens: int = Field(64, ge=1, description="tokens of held-out text in the prompt")
    new_tokens: int = Field(32, ge=1, description="tokens generated after it, one at a time")
    runs: int = Field(5, ge=1, description="timed generations (after one untimed)")


class BenchmarkConfig(Section):
    """What to measure. ``threads``, ``batch_size`` and ``sequence_lengths`` may be lists: every
    combination is a benchmark point and a row of its own."""

    threads: list[int] = Field([2], min_length=1)
    batch_size: list[int] = Field([1], min_length=1)
    sequence_lengths: list[int] | None = Field(None, min_length=1, description="text tasks; default: the task's")
    warmup: int | Literal["auto"] = Field(
        "auto", description="untimed calls before timing, or auto: until the running median settles"
    )
    runs: int = Field(300, ge=5, description="timed calls per process")
    max_seconds: float = Field(30.0, gt=0, description="per benchmark point; stops early after this much timing")
    processes: int = Field(3, ge=1, le=100, description="fresh processes per artifact at least, run in turn")
    max_processes: int = Field(10, ge=1, le=100, description="more processes while an interval is too wide")
    target_half_width: float = Field(0.02, gt=0, lt=1, description="stop once every median is known to +-this")
    time_budget_s: float = Field(60.0, gt=0, description="no new round of processes after this many seconds")
    devices: list[str] = ["cpu"]
    reference: bool = Field(True, description="also benchmark the torch model itself")
    explain: bool = Field(
        True, description="explain every quantized or reduced-precision row operator by operator (edgepipe explain)"
    )
    # Extra runtimes per format beyond the format's default one, e.g. {"onnx": ["onnxruntime", "openvino"]}.
    runtimes: dict[str, list[str]] = {}
    # Reduced-precision inference of the FP32 files per runtime, each a row of its own, e.g.
    # {"openvino": ["bf16"]}: where the runtime reports back another precision than asked (OpenVINO runs
    # f32 on CPUs without AVX-512), the row says unavailable.
    inference_precisions: dict[str, list[str]] = {}
    timeout_s: float = Field(600, gt=0, description="per artifact benchmark process")
    generation: GenerationConfig = GenerationConfig()
    memory_budget_mb: float | None = Field(
        None, gt=0, description="recommend the best-scoring artifact whose file fits in this many MB"
    )

    _lists = field_validator("threads", "batch_size", "sequence_lengths", mode="before")(_as_list)

    @field_validator("warmup", mode="before")
    @classmethod
    def _warmup(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v >= 0):
            return v
        raise ValueError(f"must be a count of calls (0 or more) or auto, got {v!r}")

    @model_validator(mode="after")
    def _process_range(self) -> BenchmarkConfig:
        if self.max_processes < self.processes:
            raise ValueError(f"max_processes: {self.max_processes} is fewer than processes ({self.processes})")
        return self

    @field_validator("threads")
    @classmethod
    def _thread_range(cls, v: list[int]) -> list[int]:
        if bad := [t for t in v if not 1 <= t <= MAX_THREADS]:
            raise ValueError(f"thread counts go from 1 to {MAX_THREADS}, got {bad[0]}")
        return list(dict.fromkeys(v))

    @field_validator("batch_size", "sequence_lengths")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (bad := [n for n in v if n < 1]):
            raise ValueError(f"must be >= 1, got {bad[0]}")
        return None if v is None else list(dict.fromkeys(v))

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        from edgepipe.runtimes import RUNTIMES, runtime_class

        for fmt, names in v.items():
            if fmt not in FORMATS:
                raise ValueError(f"{fmt}: unknown format (known: {', '.join(FORMATS)})")
            for name in names:
                if name not in RUNTIMES:
                    raise ValueError(f"{fmt}: unknown runtime '{name}' (known: {', '.join(RUNTIMES)})")
                if fmt not in runtime_class(name).formats:
                    raise ValueError(f"{fmt}: runtime '{name}' cannot run {fmt} models")
        return v

    @field_validator("inference_precisions")
    @classmethod
    def _known_precisions(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        from edgepipe.runtimes import RUNTIMES, runtime_class

        for name, precisions in v.items():
            if name not in RUNTIMES:
                raise ValueError(f"{name}: unknown runtime (known: {', '.join(RUNTIMES)})")
            offered = runtime_class(name).inference_precisions
            for p in precisions:
                if p not in offered:
                    said = ", ".join(offered) if offered else "none"
                    raise ValueError(f"{name}: runtime '{name}' has no inference precision '{p}' (offers: {said})")
        return v


def _default_task() -> TaskConfig:
    from edgepipe.tasks import DEFAULT_KIND, task_class

    return task_class(DEFAULT_KIND).Config.model_validate({})


def _default_source() -> SourceConfig:
    from edgepipe.stage import SOURCES

    source: SourceConfig = SOURCES["train"].config_class()()  # type: ignore[assignment]
    return source


class Recipe(Section):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    task: SerializeAsAny[TaskConfig] = Field(default_factory=_default_task)
    source: SerializeAsAny[SourceConfig] = Field(default_factory=_default_source)
    stages: list[SerializeAsAny[StageConfig]] = []
    targets: list[SerializeAsAny[TargetConfig]] = []
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: SerializeAsAny[Section] = Field(default_factory=Section, validate_default=True)
    output_dir: str | None = Field(None, description="default: runs/<name>, relative to the working directory")

    # The recipe file's folder: relative paths in sources (a module file, weights) start there.
    _base_dir: Path = PrivateAttr(default_factory=Path)

    @field_validator("task", mode="before")
    @classmethod
    def _task_kind(cls, v: Any) -> TaskConfig:
        from edgepipe.tasks import DEFAULT_KIND, TASK_KINDS, task_class

        if isinstance(v, TaskConfig):
            return v
        kind = pick_registered(v, "kind", TASK_KINDS, "task kind", DEFAULT_KIND)
        return validate_as(task_class(kind).Config, v)

    @field_validator("source", mode="before")
    @classmethod
    def _source_kind(cls, v: Any) -> SourceConfig:
        from edgepipe.stage import SOURCES

        if isinstance(v, SourceConfig):
            return v
        kind = pick_registered(v, "kind", SOURCES, "model source")
        return validate_as(SOURCES[kind].config_class(), v)  # type: ignore[return-value]

    @field_validator("stages", mode="before")
    @classmethod
    def _stage_kinds(cls, v: Any) -> Any:
        from edgepipe.stage import STAGES

        if not isinstance(v, list):
            return v
        out = []
        for i, entry in enumerate(v):
            if isinstance(entry, StageConfig):
                out.append(entry)
                continue
            try:
                name = pick_registered(entry, "stage", STAGES, "stage")
            except ValueError as e:
                raise ValueError(f"{i}.{e}") from None
            out.append(validate_as(STAGES[name].config_class(), entry, str(i)))  # type: ignore[arg-type]
        return out

    @field_validator("targets", mode="before")
    @classmethod
    def _target_formats(cls, v: Any) -> Any:
        from edgepipe.export import BACKENDS, target_class

        if not isinstance(v, list):
            return v
        out = []
        for i, entry in enumerate(v):
            if isinstance(entry, TargetConfig):
                out.append(entry)
                continue
            try:
                fmt = entry.get("format") if isinstance(entry, dict) else None
                if isinstance(fmt, str) and fmt in FORMATS and fmt not in BACKENDS:
                    raise ValueError(
                        f"format: '{entry['format']}' is not an export target (targets: {', '.join(BACKENDS)})"
                    )
                fmt = pick_registered(entry, "format", BACKENDS, "format")
            except ValueError as e:
                raise ValueError(f"{i}.{e}") from None
            out.append(validate_as(target_class(fmt), entry, str(i)))
        formats = [t.format for t in out]
        if dup := next((f for f in formats if formats.count(f) > 1), None):
            raise ValueError(f"format '{dup}' appears twice: list its quantize variants under one target")
        return out

    @field_validator("gates", mode="before")
    @classmethod
    def _task_gates(cls, v: Any, info: ValidationInfo) -> Section:
        from edgepipe.tasks import task_class

        task = info.data.get("task")
        if task is None:  # the task failed validation; that error is the one reported
            return Section()
        if isinstance(v, Section):
            v = v.model_dump()
        gates: Section = validate_as(task_class(task.kind).Gates, {} if v is None else v)
        return gates

    @model_validator(mode="after")
    def _sections_fit_each_other(self) -> Recipe:
        from edgepipe.tasks import task_class

        if self.source.tasks is not None and self.task.kind not in self.source.tasks:
            serves = ", ".join(self.source.tasks)
            raise ValueError(f"source.kind: a {self.source.kind} model serves {serves} tasks, not {self.task.kind}")
        for i, target in enumerate(self.targets):
            if target.tasks is not None and self.task.kind not in target.tasks:
                serves = ", ".join(target.tasks)
                raise ValueError(f"targets.{i}.format: {target.format} holds {serves} models, not {self.task.kind}")
        if self.benchmark.sequence_lengths and not hasattr(self.task, "sequence_lengths"):
            raise ValueError(f"benchmark.sequence_lengths: the {self.task.kind} task has no sequences")
        if not task_class(self.task.kind).trainable:
            if self.source.kind == "train":
                raise ValueError(
                    f"source.kind: the {self.task.kind} task has no training data; load a pretrained model"
                )
            if (trains := next((i for i, s in enumerate(self.stages) if s.trains), None)) is not None:
                raise ValueError(f"stages.{trains}.stage: the {self.task.kind} task has no training data to train on")
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir


def format_validation_error(source: str, err: ValidationError) -> str:
    """One line: ``source: field.path: message (got value)``, plus a count of further errors."""
    return f"{source}: {validation_message(err)}"


def _hint(data: dict[str, Any]) -> str | None:
    """A pointer for recipes written for edgepipe 0.1, whose model section became ``source``."""
    if "model" in data or "train" in data:
        return "model/train: these sections became `source: {kind: train, family: ..., params: ..., epochs: ...}`"
    return None


def parse_recipe(data: Any, source: str = "<recipe>", base_dir: Path | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    if hint := _hint(data):
        raise InputError(f"{source}: {hint}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise InputError(format_validation_error(source, e)) from None
    recipe._base_dir = base_dir or Path()
    if recipe.source.kind == "train":  # the family checks its own params and the task kinds it serves
        from edgepipe.models import validate_params

        try:
            validate_params(recipe.source.family, recipe.source.params, recipe.task.kind)  # type: ignore[attr-defined]
        except InputError as e:
            raise InputError(f"{source}: {e}") from None
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Raises :class:`InputError` naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise InputError(f"{p}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read recipe ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise InputError(f"{p}: invalid YAML{where}: {problem}") from None
    return parse_recipe(data, str(p), p.parent)
