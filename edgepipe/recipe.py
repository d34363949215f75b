"""The recipe: one YAML file that says what to train, how to compress and export it, and how to measure.

Every section is a pydantic model with ``extra="forbid"``: a misspelt or wrong-typed field is an error
that names the file and the field, e.g. ``recipe.yaml: benchmark.threads: Input should be a valid
integer (got 'two')``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgepipe.errors import InputError, first_line
from edgepipe.formats import FORMATS

DIGITS_SAMPLES = 1797  # sklearn.datasets.load_digits
# Beyond this a runtime spends its time creating threads (onnxruntime hangs at 100000).
MAX_THREADS = 256


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaskConfig(Section):
    """The dataset and metric. ``digits`` is scikit-learn's offline 8x8 digits, upsampled."""

    name: Literal["digits"] = "digits"
    image_size: int = Field(32, ge=8, le=128)
    test_size: int = Field(360, ge=10)
    calibration_size: int = Field(300, ge=10, description="at least one sample per class (stratified)")

    @model_validator(mode="after")
    def _leaves_training_data(self) -> TaskConfig:
        if self.test_size + self.calibration_size > DIGITS_SAMPLES - 100:
            raise ValueError(
                f"test_size + calibration_size must leave at least 100 of the {DIGITS_SAMPLES} samples for training"
            )
        return self


class ModelConfig(Section):
    """A registered model family and its parameters (validated by the family)."""

    family: str = "cnn"
    params: dict[str, Any] = {}


class TrainConfig(Section):
    epochs: int = Field(5, ge=0)
    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)


class QuantizeConfig(Section):
    """Post-training quantization, done by the target format's own tool (onnxruntime, NNCF, ...)."""

    precision: Literal["int8"] = "int8"
    method: Literal["static", "dynamic"] = "static"
    per_channel: bool = True
    # None: the tool's best default. onnxruntime: uint8, which runs much faster than int8 on x86
    # (signed activations were measured up to 5x slower); NNCF chooses per layer itself.
    activation_type: Literal["uint8", "int8"] | None = None
    weight_type: Literal["int8", "uint8"] = "int8"
    calibration_samples: int | None = Field(None, ge=1, description="default: the whole calibration split")
    # 7-bit weights: onnxruntime's advice for x86 CPUs without VNNI (AVX2 only), whose u8 x s8 kernels
    # can saturate int16 intermediates. Costs a little accuracy where it is not needed.
    reduce_range: bool = False


class TargetConfig(Section):
    """An export format; FP32 is always exported, each ``quantize`` entry adds a quantized variant."""

    format: str
    quantize: list[QuantizeConfig] = []
    opset: int | None = Field(None, ge=13)
    exporter: Literal["dynamo", "torchscript"] = "dynamo"

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        from edgepipe.export import BACKENDS

        if v not in FORMATS:
            raise ValueError(f"unknown format '{v}' (known: {', '.join(FORMATS)})")
        if v not in BACKENDS:
            raise ValueError(f"format '{v}' has no exporter yet (exportable: {', '.join(BACKENDS)})")
        return v

    @model_validator(mode="after")
    def _tools_support(self) -> TargetConfig:
        from edgepipe.export import backend

        backend(self.format)[1].validate(self)  # the format's own rules, e.g. what NNCF can do
        return self


class BenchmarkConfig(Section):
    threads: int = Field(2, ge=1, le=MAX_THREADS)
    batch_size: int = Field(1, ge=1)
    warmup: int = Field(20, ge=0)
    runs: int = Field(300, ge=5)
    max_seconds: float = Field(30.0, gt=0, description="per artifact; stops early after this much timing")
    devices: list[str] = ["cpu"]
    reference: bool = Field(True, description="also benchmark the torch model itself")
    # Extra runtimes per format beyond the format's default one, e.g. {"onnx": ["onnxruntime", "openvino"]}.
    runtimes: dict[str, list[str]] = {}
    timeout_s: float = Field(600, gt=0, description="per artifact benchmark process")

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


class GatesConfig(Section):
    """Quality gates. A failed gate makes ``edgepipe run`` exit 4 after writing the results."""

    fp32_min_top1_agreement: float = Field(1.0, ge=0, le=1)
    fp32_max_abs_diff: float = Field(1e-3, ge=0)
    quantized_min_top1_agreement: float = Field(0.95, ge=0, le=1)
    quantized_max_accuracy_drop: float = Field(0.01, ge=0, le=1)


class Recipe(Section):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = 0
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    targets: list[TargetConfig] = []
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: GatesConfig = GatesConfig()
    output_dir: str | None = Field(None, description="default: runs/<name>, relative to the working directory")

    @field_validator("targets")
    @classmethod
    def _one_target_per_format(cls, v: list[TargetConfig]) -> list[TargetConfig]:
        formats = [t.format for t in v]
        if dup := next((f for f in formats if formats.count(f) > 1), None):
            raise ValueError(f"format '{dup}' appears twice: list its quantize variants under one target")
        return v


def format_validation_error(source: str, err: ValidationError, prefix: tuple[str, ...] = ()) -> str:
    """One line: ``source: field.path: message (got value)``, plus a count of further errors."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in (*prefix, *first["loc"])) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field"
    if first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
        sub, sep, rest = msg.partition(": ")
        if sep and re.fullmatch(r"[A-Za-z_][\w]*(\.\w+)*", sub):  # "quantize.0.method: ..." names a sub-field
            loc, msg = f"{loc}.{sub}", rest
    got = first.get("input")
    quiet = ("missing", "extra_forbidden", "value_error")
    shown = "" if first["type"] in quiet or isinstance(got, (dict, list)) else f" (got {got!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {msg}{shown}{more}"


def parse_recipe(data: Any, source: str = "<recipe>") -> Recipe:
    if not isinstance(data, dict):
        raise InputError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        raise InputError(format_validation_error(source, e)) from None
    from edgepipe.models import validate_model_config  # the family validates its own params

    validate_model_config(recipe.model, source)
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
    return parse_recipe(data, str(p))
