"""Config base classes and their validation messages.

Every stage, tool and task kind owns one config class, registered by name; a recipe names the kind (a
task ``kind``, a source ``kind``, a ``stage``, a target ``format``, a quantize ``method``) and the
registered class validates the rest. Unknown fields are errors that name the file and the field:
``recipe.yaml: targets.0.quantize.0.preset: unknown field for onnx 'static' (got 'mixed')``.

Nothing here imports torch or any runtime: a recipe validates on a machine without them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

C = TypeVar("C", bound=BaseModel)


class Section(BaseModel):
    """A recipe section: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid")


class TaskConfig(Section):
    """Base of every task kind's config (``edgepipe.tasks``)."""

    kind: str


class SourceConfig(Section):
    """Base of every model source's config: where the torch model comes from (``edgepipe.stage``)."""

    kind: str
    tasks: ClassVar[tuple[str, ...] | None] = None  # the task kinds it can serve (None: any)

    def identity(self, base_dir: Path, task: Any) -> dict[str, Any]:
        """What keys this source's cache besides tool versions: its config and the task it serves. A
        source that reads files keys on their content instead of their path, so a moved folder is still
        a cache hit and an edited file is not."""
        return {"config": self.model_dump(mode="json"), "task": task.describe()}


class StageConfig(Section):
    """Base of every torch-side stage's config (finetune, and the compression stages)."""

    stage: str
    trains: ClassVar[bool] = False  # it trains on the task's data (so the task must have training data)
    # A compression stage names the models it makes ("pruned"): their exports are called so, and the
    # recipe's source model is exported too, as the dense baseline they are compared with.
    tag: ClassVar[str | None] = None
    # Its INT8 files face the post-training INT8 files of the model it started from (QAT).
    faces_ptq: ClassVar[bool] = False
    export: bool = Field(
        False,
        description="also export this stage's model to every target (with its quantize variants) and benchmark it",
    )

    def extra_sources(self) -> dict[str, SourceConfig | str]:
        """Other models this stage reads besides the one it transforms, by role (a teacher): a source config,
        or "source" for the recipe's own source model."""
        return {}


class CalibrationSweep(Section):
    """Quality against calibration size and method, each point over several seeds (``compress.calibration_sweep``):
    every point is a full quantization with that many samples drawn at random with that seed."""

    samples: list[int] = Field(
        [8, 32, 128, 512], min_length=1, description="calibration sizes; larger than the split: skipped"
    )
    methods: list[str] | None = Field(None, min_length=1, description="default: every method the tool has")
    seeds: int = Field(3, ge=1, le=20, description="random subsets per size and method")
    tolerance: float | None = Field(
        None,
        gt=0,
        description="stable: seeds' spread and gap to the largest size within this (drop unit)",
    )

    @field_validator("samples")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError("must be positive sample counts")
        return sorted(set(v))


class QuantizeConfig(Section):
    """Base of every post-training quantizer's config. Subclasses name the tool's own options, and the
    alternatives to try when this configuration misses the task's quality gates (``edgepipe.search``)."""

    method: str
    search: bool = Field(
        True, description="when the result misses the task's gates, try the tool's other options (edgepipe.search)"
    )
    max_quality_drop: float | None = Field(
        None,
        ge=0,
        description="a quality budget in the task's drop unit (accuracy points, cosine, relative perplexity): "
        "the fastest measured configuration within it on the tuning data ships",
    )
    # The calibration methods a sweep can try with this tool (empty: it takes no calibration sweep).
    sweep_methods: ClassVar[tuple[str, ...]] = ()

    def sweep_point(self, method: str, samples: int, seed: int) -> QuantizeConfig:
        """This configuration calibrated with ``method`` on ``samples`` examples drawn with ``seed``."""
        raise NotImplementedError(f"{type(self).__name__} takes no calibration sweep")

    def alternatives(self, parent: Any, ctx: Any, blame: Any = None) -> Iterator[QuantizeConfig]:
        """Other configurations of the same tool to try, in order, when this one misses the bar: each a
        copy of this config with some of the tool's options changed. A generator: whatever it needs to
        rank (a model's layers) is computed only when the requested configuration has failed. Given this
        configuration's ``blame`` (``edgepipe.blame.Blame``), the fixes it proposes."""
        return iter(())

    def blame(self, parent: Any, quantized: Path, ctx: Any) -> Any:
        """Which of this configuration's quantizers cost the quality of its result ``quantized``, against the
        FP32 ``parent`` on calibration data (``edgepipe.blame.Blame``); None for a tool that cannot say."""
        return None

    def faster(self) -> Iterator[QuantizeConfig]:
        """Configurations of the same tool that may run faster than this one (a quality budget's search tries
        them when this one is within the budget)."""
        return iter(())

    def has_alternatives(self) -> bool:
        """Whether this tool offers any (a quantizer without them is checked only by the report's gates)."""
        return type(self).alternatives is not QuantizeConfig.alternatives

    @property
    def precision(self) -> str:
        """What the variant's artifacts are called: "int8", "int4", "fp16", "q4_k_m", ..."""
        return "int8"

    @property
    def sweep(self) -> CalibrationSweep | None:
        return getattr(self, "calibration_sweep", None)

    def variant_name(self, fmt: str) -> str:
        """Readable and distinct per entry, e.g. ``onnx-int8-static`` or ``openvino-int8-static-mixed``."""
        method = [] if self.method == self.precision else [self.method]  # "tflite-fp16", not "tflite-fp16-fp16"
        as_is = [] if self.search else ["as-is"]  # the tool's result unchecked, beside a searched one
        budget = [] if self.max_quality_drop is None else [f"within-{self.max_quality_drop:g}"]
        return "-".join([fmt, self.precision, *method, *self.name_parts(), *budget, *as_is])

    def name_parts(self) -> list[str]:
        """Short words for each option that differs from its default."""
        return []


class TargetConfig(Section):
    """Base of every format's target (``export.<format>.Target``): the format's export options, and
    ``quantize`` entries that each add a variant made by one of the format's quantizers."""

    format: str
    quantize: list[SerializeAsAny[QuantizeConfig]] = []

    quantizers: ClassVar[dict[str, type[QuantizeConfig]]] = {}  # method -> config class
    default_method: ClassVar[str | None] = None
    # The task kinds whose models the format holds (None: any), checked when a recipe is validated.
    tasks: ClassVar[tuple[str, ...] | None] = None

    def post_stages(self) -> list[str]:
        """Steps that follow each of this target's artifacts (the format module's ``post_stage`` makes them),
        e.g. an embedded bundle."""
        return []

    @field_validator("quantize", mode="before")
    @classmethod
    def _quantizer_configs(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        fmt = str(cls.model_fields["format"].default)
        out: list[QuantizeConfig] = []
        for i, entry in enumerate(v):
            if isinstance(entry, QuantizeConfig):
                out.append(entry)
                continue
            if not cls.quantizers:
                raise ValueError(f"{i}: format '{fmt}' has no quantizer yet")
            try:
                method = pick_registered(entry, "method", cls.quantizers, f"{fmt} quantize method", cls.default_method)
            except ValueError as e:
                raise ValueError(f"{i}.{e}") from None
            out.append(validate_as(cls.quantizers[method], entry, str(i)))
        names = [q.variant_name(fmt) for q in out]
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(f"{i}: makes the same variant as quantize.{names.index(name)} ('{name}')")
        return out


def short_hash(value: Any) -> str:
    """Four hex digits of a value's JSON: tells apart variant names that differ only in a list."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:4]


def validation_message(err: ValidationError, prefix: tuple[str | int, ...] = ()) -> str:
    """One line for the first error: ``field.path: message (got value)``, plus a count of further errors."""
    first = err.errors()[0]
    # A key with a line break or other unprintable text is shown quoted: the message stays one line.
    loc = ".".join(_shown(p) for p in (*prefix, *first["loc"])) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    if first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        sub, sep, rest = msg.partition(": ")
        if sep and re.fullmatch(r"\w+(\.\w+)*", sub):  # "quantize.0.method: ..." names a sub-field
            loc, msg = (f"{loc}.{sub}" if loc != "(top level)" else sub), rest
    got = first.get("input")
    quiet = ("missing", "extra_forbidden", "value_error")
    shown = "" if first["type"] in quiet or isinstance(got, (dict, list)) else f" (got {got!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{loc}: {msg}{shown}{more}"


def _shown(part: str | int) -> str:
    text = str(part)
    return text if text and text.isprintable() and text.strip() == text else repr(text)


def validate_as(cls: type[C], data: Any, where: str = "") -> C:
    """Validate ``data`` as ``cls`` inside a pydantic validator: a failure becomes a ValueError whose
    message starts with the sub-field path, which ``validation_message`` folds into the location."""
    if isinstance(data, cls):
        return data
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        message = validation_message(e).removeprefix("(top level): ")  # a whole-section rule: no sub-field
        raise ValueError(f"{where}.{message}" if where else message) from None


def pick_registered(data: Any, key: str, registry: Mapping[str, Any], what: str, default: str | None = None) -> str:
    """The registered name a config mapping selects with ``key`` (e.g. a source's ``kind``)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"must be a mapping with a '{key}' field, got {type(data).__name__}")
    name = data.get(key, default)
    if name is None:
        raise ValueError(f"{key}: Field required (one of: {', '.join(registry)})")
    if not isinstance(name, str) or name not in registry:
        shown = f"'{name}'" if isinstance(name, str) else f"a {type(name).__name__}"
        raise ValueError(f"{key}: unknown {what} {shown} (known: {', '.join(registry)})")
    return name
