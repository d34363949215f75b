"""OpenVINO IR: convert from torch with ov.convert_model, quantize with NNCF."""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from edgepipe.configs import CalibrationSweep, QuantizeConfig, Section, TargetConfig, short_hash
from edgepipe.errors import converting
from edgepipe.export.openvino_inspect import quantization_summary
from edgepipe.stage import StageContext
from edgepipe.store import Parents, StageOutput
from edgepipe.tensors import TensorSpec, with_ranges

MODEL_FILE = "model.xml"


class IgnoredScope(Section):
    """Layers NNCF leaves in float (``nncf.IgnoredScope``): by node name, operator type or name pattern."""

    names: list[str] = []
    types: list[str] = []
    patterns: list[str] = []


class NncfQuant(QuantizeConfig):
    """``nncf.quantize``: static INT8, weights per channel, calibrated on the calibration split."""

    method: Literal["static"] = "static"
    # performance: symmetric activations (fastest CPU kernels); mixed: asymmetric activations.
    preset: Literal["performance", "mixed"] = "performance"
    model_type: Literal["transformer"] | None = Field(None, description="transformer: NNCF's attention-aware scheme")
    subset_size: int | None = Field(None, ge=1, description="calibration samples (default: the whole split)")
    calibration_seed: int | None = Field(
        None, description="draw subset_size samples at random with this seed (default: the split's first ones)"
    )
    # How NNCF sets activation ranges from the calibration statistics (RangeEstimatorParametersSet).
    range_estimator: Literal["default", "minmax", "mean_minmax", "percentile"] = "default"
    calibration_sweep: CalibrationSweep | None = None
    accuracy_control: bool = Field(
        True,
        description="with max_quality_drop: nncf.quantize_with_accuracy_control, which returns layers to float "
        "until the drop on the tuning data is within the budget",
    )

    sweep_methods: ClassVar[tuple[str, ...]] = ("minmax", "mean_minmax", "percentile")

    def faster(self) -> Iterator[QuantizeConfig]:
        """Every layer INT8: plain ``nncf.quantize`` without accuracy control, and without an ignored scope."""
        if self.max_quality_drop is not None and self.accuracy_control:
            yield self.model_copy(update={"accuracy_control": False})
        if self.ignored_scope is not None:
            yield self.model_copy(update={"accuracy_control": False, "ignored_scope": None})

    def sweep_point(self, method: str, samples: int, seed: int) -> QuantizeConfig:
        return self.model_copy(
            update={
                "range_estimator": method,
                "subset_size": samples,
                "calibration_seed": seed,
                "calibration_sweep": None,
            }
        )

    # Full bias correction by default: on the quickstart CNN it kept FP32 accuracy (0.9833) where the
    # fast one lost 0.8 points, at the same cost (2 s).
    fast_bias_correction: bool = False
    ignored_scope: IgnoredScope | None = None
    smooth_quant_alpha: float | None = Field(
        None, ge=0, le=1, description="SmoothQuant's alpha for matrix products (default: NNCF's own)"
    )

    def blame(self, parent: Any, quantized: Path, ctx: StageContext) -> Any:
        """Each activation FakeQuantize's cost at the output, on 8 calibration samples (``export.openvino_blame``)."""
        from edgepipe.export.openvino_blame import blame

        return blame(parent.model_file, quantized, ctx.calibration_feeds(parent, 1, 8), 64)

    def alternatives(self, parent: Any, ctx: StageContext, blame: Any = None) -> Iterator[QuantizeConfig]:
        """NNCF's transformer scheme if not asked for; the other bias correction (fast, or full: full kept
        the digits CNN's accuracy where fast lost 0.8 points, while on MiniLM fast kept cosine 0.997 where
        full gave 0.993; every layer stays INT8 either way); then the fixes this configuration's blame
        proposes (``export.openvino_blame.fixes``), or without one, the matrix products whose inputs have
        the largest outliers kept in float, 1 to 3 of them, fewest first; then the mixed preset."""
        base = self
        if self.model_type is None and _has_attention(parent.model_file):
            base = self.model_copy(update={"model_type": "transformer"})
            yield base
        yield base.model_copy(update={"fast_bias_correction": not base.fast_bias_correction})
        if blame is not None:
            from edgepipe.export.openvino_blame import fixes

            yield from fixes(self, blame)
            if base.preset == "performance":
                yield base.model_copy(update={"preset": "mixed"})
            return
        from edgepipe.export.openvino_blame import outlier_ranking

        scope = base.ignored_scope or IgnoredScope()
        ranked = [
            n for n in outlier_ranking(parent.model_file, ctx.calibration_feeds(parent, 1, 8)) if n not in scope.names
        ]

        def keeping(config: NncfQuant, k: int) -> NncfQuant:
            return config.model_copy(
                update={"ignored_scope": scope.model_copy(update={"names": [*scope.names, *ranked[:k]]})}
            )

        yield from (keeping(base, k) for k in (1, 2, 3) if k <= len(ranked))
        if base.preset == "performance":
            yield base.model_copy(update={"preset": "mixed"})

    def name_parts(self) -> list[str]:
        parts: list[str] = [] if self.preset == "performance" else [self.preset]
        if self.model_type:
            parts.append(self.model_type)
        if self.subset_size:
            parts.append(f"subset-{self.subset_size}")
        if self.calibration_seed is not None:
            parts.append(f"seed-{self.calibration_seed}")
        if self.range_estimator != "default":
            parts.append(self.range_estimator.replace("_", "-"))
        if self.calibration_sweep:
            parts.append("sweep")
        if self.max_quality_drop is not None and not self.accuracy_control:
            parts.append("no-ac")
        if self.fast_bias_correction:
            parts.append("fast-bc")
        if self.smooth_quant_alpha is not None:
            parts.append(f"sq-{self.smooth_quant_alpha:g}")
        if self.ignored_scope:
            s = self.ignored_scope
            count = len(s.names) + len(s.types) + len(s.patterns)
            parts.append(f"ignored-{count}-{short_hash(s.model_dump())}")
        return parts


class NncfWeights(QuantizeConfig):
    """``nncf.compress_weights``: weight-only compression of the matrix products (data-free), activations
    stay float. INT4 is by groups of ``group_size`` along each row; ``ratio`` of the layers get INT4 and
    the rest, with the embedding and last layer unless ``all_layers``, INT8 (NNCF's backup)."""

    method: Literal["weights"] = "weights"
    mode: Literal["int8_asym", "int8_sym", "int4_asym", "int4_sym"] = "int8_asym"
    group_size: int = Field(128, ge=-1, description="int4: weights per scale along a row (-1: per channel)")
    ratio: float = Field(1.0, gt=0, le=1, description="int4: share of the layers in INT4, the rest INT8")
    all_layers: bool = Field(False, description="int4: the embedding and last layer in INT4 too")

    @property
    def precision(self) -> str:
        return self.mode[:4]

    def name_parts(self) -> list[str]:
        parts = [] if self.mode.endswith("asym") else ["sym"]
        if self.mode.startswith("int4"):
            parts += [f"g{self.group_size}"] if self.group_size != 128 else []
            parts += [f"r{self.ratio:g}"] if self.ratio != 1 else []
            parts += ["all"] if self.all_layers else []
        return parts


class Float16Weights(QuantizeConfig):
    """OpenVINO's own FP16 weight compression (``ov.save_model(compress_to_fp16=True)``): half the file,
    weights decompressed to the inference precision when the model is compiled."""

    method: Literal["fp16"] = "fp16"

    @property
    def precision(self) -> str:
        return "fp16"


class Target(TargetConfig):
    """OpenVINO IR export: converted from torch by OpenVINO itself, weights kept in FP32."""

    format: Literal["openvino"] = "openvino"

    quantizers: ClassVar[dict[str, type[QuantizeConfig]]] = {
        "static": NncfQuant,
        "weights": NncfWeights,
        "fp16": Float16Weights,
    }
    default_method: ClassVar[str | None] = "static"


def read_io_spec(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    from edgepipe.runtimes.openvino_runtime import port_spec, read_model

    model = read_model(path)
    return (
        [port_spec(p, i, "input") for i, p in enumerate(model.inputs)],
        [port_spec(p, i, "output") for i, p in enumerate(model.outputs)],
    )


def _stable_names(model: Any) -> None:
    """OpenVINO names the model ("Model44") and the layers it creates ("Reshape_2812") from process-wide
    counters, so the same model would be saved as other bytes depending on what this process converted
    before (a rerun that finds the FP32 IR cached quantizes it with other names). Generated names are
    renumbered in graph order."""
    model.set_friendly_name("model")
    counter = 0
    for op in model.get_ordered_ops():  # the inputs' and outputs' tensor names are not friendly names
        if found := re.fullmatch(r"([A-Za-z][A-Za-z0-9]*)_\d+", op.get_friendly_name()):
            op.set_friendly_name(f"{found.group(1)}_g{counter}")
            counter += 1


def _save(model: Any, out_dir: Path, fp16: bool = False) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import openvino as ov

    _stable_names(model)
    # save_model compresses weights to FP16 unless told not to: an "FP32" IR must stay FP32.
    ov.save_model(model, str(out_dir / MODEL_FILE), compress_to_fp16=fp16)
    return read_io_spec(out_dir / MODEL_FILE)


def export(parents: Parents, config: Target, out_dir: Path, ctx: StageContext) -> StageOutput:
    """torch -> OpenVINO IR FP32 through OpenVINO's PyTorch frontend; names and dynamic dimensions
    come from the parent's input/output specs."""
    import openvino as ov
    import torch

    parent = parents["model"]
    ins, outs = parent.manifest.inputs, parent.manifest.outputs
    example = ctx.example_feeds(parent, 2)
    with converting("openvino.convert_model"):
        model = ov.convert_model(
            ctx.torch_module(parent),
            example_input=tuple(torch.from_numpy(example[s.name]).clone() for s in ins),
            input=[ov.PartialShape([d if isinstance(d, int) else -1 for d in s.shape]) for s in ins],
        )
    for port, spec in [*zip(model.inputs, ins, strict=True), *zip(model.outputs, outs, strict=True)]:
        port.get_tensor().set_names({spec.name})
    inputs, outputs = _save(model, out_dir)
    return StageOutput(
        format="openvino",
        precision="fp32",
        primary=MODEL_FILE,
        inputs=with_ranges(inputs, ins),
        outputs=outputs,
        model={"exporter": "openvino.convert_model"},
    )


def _quantize(nncf: Any, parent: Any, items: list[Any], config: NncfQuant) -> Any:
    """``nncf.quantize`` with the config's options (NNCF's own names)."""
    from edgepipe.runtimes.openvino_runtime import read_model

    scope = config.ignored_scope
    return nncf.quantize(
        read_model(parent.model_file),
        nncf.Dataset(items),
        subset_size=len(items),
        preset=nncf.QuantizationPreset(config.preset),
        target_device=nncf.TargetDevice.CPU,
        model_type=nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
        fast_bias_correction=config.fast_bias_correction,
        ignored_scope=nncf.IgnoredScope(names=scope.names, types=scope.types, patterns=scope.patterns)
        if scope
        else None,
        advanced_parameters=advanced(nncf, config),
    )


def advanced(nncf: Any, config: NncfQuant) -> Any:
    """NNCF's advanced parameters the config sets (None: all NNCF's defaults)."""
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    options: dict[str, Any] = {}
    if config.smooth_quant_alpha is not None:
        options["smooth_quant_alphas"] = nncf.AdvancedSmoothQuantParameters(matmul=config.smooth_quant_alpha)
    if config.range_estimator != "default":
        estimator = {"minmax": "MINMAX", "mean_minmax": "MEAN_MINMAX", "percentile": "MEAN_QUANTILE"}
        options["activations_range_estimator_params"] = getattr(
            RangeEstimatorParametersSet, estimator[config.range_estimator]
        )
    return nncf.AdvancedQuantizationParameters(**options) if options else None


def _compress(nncf: Any, parent: Any, config: NncfWeights) -> Any:
    """``nncf.compress_weights`` with the config's options (group size and ratio are INT4's only)."""
    from edgepipe.runtimes.openvino_runtime import read_model

    mode = nncf.CompressWeightsMode[config.mode.upper()]
    int4 = config.mode.startswith("int4")
    with converting("nncf.compress_weights"):
        return nncf.compress_weights(
            read_model(parent.model_file),
            mode=mode,
            group_size=config.group_size if int4 else None,
            ratio=config.ratio if int4 else None,
            all_layers=config.all_layers if int4 else None,
        )


def _has_attention(path: Path) -> bool:
    from edgepipe.runtimes.openvino_runtime import read_model

    return any(
        op.get_type_name() in ("Softmax", "ScaledDotProductAttention") for op in read_model(path).get_ordered_ops()
    )


def quantize(
    parents: Parents, config: NncfQuant | NncfWeights | Float16Weights, out_dir: Path, ctx: StageContext
) -> StageOutput:
    """OpenVINO IR FP32 -> INT8 with NNCF post-training quantization (static, per-channel weights),
    weight-only INT8 / INT4 with NNCF's weight compression, or FP16 weights with OpenVINO's own."""
    import nncf

    from edgepipe.runtimes.openvino_runtime import read_model

    nncf.set_log_level(logging.ERROR)
    parent = parents["model"]
    if isinstance(config, Float16Weights):
        inputs, outputs = _save(read_model(parent.model_file), out_dir, fp16=True)
        return StageOutput(
            format="openvino",
            precision="fp16",
            primary=MODEL_FILE,
            inputs=with_ranges(inputs, parent.manifest.inputs),
            outputs=outputs,
            model=parent.manifest.model,
            quantization={
                "tool": "openvino.save_model(compress_to_fp16=True)",
                "requested": config.model_dump(mode="json"),
                "precision": "fp16",
                "weight_element_types": quantization_summary(read_model(out_dir / MODEL_FILE))["weight_element_types"],
            },
        )
    if isinstance(config, NncfWeights):
        items: list[Any] = []
        with contextlib.redirect_stdout(io.StringIO()):  # NNCF draws progress bars on stdout
            quantized = _compress(nncf, parent, config)
        calibration = None
    else:
        items = ctx.calibration_feeds(parent, 1, config.subset_size, config.calibration_seed)
        calibration = {"split": "calibration", "samples": len(items), "seed": config.calibration_seed}
        controlled = config.max_quality_drop is not None and config.accuracy_control
        budget = type(ctx.task).metric_budget(config.max_quality_drop) if controlled else None  # type: ignore[arg-type]
        with contextlib.redirect_stdout(io.StringIO()):
            if budget is not None:
                from edgepipe.export.openvino_accuracy import accuracy_controlled

                quantized = accuracy_controlled(nncf, parent, items, config, budget, ctx)
                calibration["accuracy_control"] = {"max_drop": budget, "validation": "tuning data (calibration split)"}
            else:
                quantized = _quantize(nncf, parent, items, config)
    inputs, outputs = _save(quantized, out_dir)
    return StageOutput(
        format="openvino",
        precision=config.precision,
        primary=MODEL_FILE,
        inputs=with_ranges(inputs, parent.manifest.inputs),
        outputs=outputs,
        model=parent.manifest.model,
        quantization={
            "tool": "nncf.compress_weights" if isinstance(config, NncfWeights) else "nncf.quantize",
            "requested": config.model_dump(mode="json"),
            "precision": config.precision,
            "calibration": calibration,
            **quantization_summary(read_model(out_dir / MODEL_FILE)),
        },
    )
