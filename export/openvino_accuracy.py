"""NNCF's ``quantize_with_accuracy_control`` for a quantize entry with a quality budget (``max_quality_drop``):
validated on the task's tuning data with the task's own first metric."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepipe.export.openvino import NncfQuant, advanced
from edgepipe.stage import StageContext


def accuracy_controlled(
    nncf: Any, parent: Any, items: list[Any], config: NncfQuant, max_drop: float, ctx: StageContext
) -> Any:
    """``nncf.quantize_with_accuracy_control``: NNCF quantizes, then ranks the quantized layers by what each
    costs and returns them to float, worst first, until the task's first metric on the tuning data (the
    calibration split, against the FP32 parent) is within ``max_drop`` of the FP32 model's."""
    from edgepipe.runtimes.openvino_runtime import read_model
    from edgepipe.tasks import EvalSet

    data, reference, _ = ctx.tuning(parent)
    task = type(ctx.task)
    metric = task.metrics[0].name

    def validate(compiled: Any, indexed: Any) -> tuple[float, None]:
        # NNCF passes the validation items (or a subset of them while it ranks): score those batches only.
        picked = list(indexed)
        outputs = [np.asarray(compiled(feeds)[compiled.output(0)]) for _, feeds in picked]
        subset = EvalSet(
            [data.batches[i] for i, _ in picked],
            [data.targets[i] for i, _ in picked],
            [data.groups[i] for i, _ in picked] if data.groups else [],
            data.options,
        )
        return float(task.quality(outputs, subset, [reference[i] for i, _ in picked])[0][metric]), None

    scope = config.ignored_scope
    return nncf.quantize_with_accuracy_control(
        read_model(parent.model_file),
        nncf.Dataset(items),
        nncf.Dataset(list(enumerate(data.batches)), lambda item: item[1]),
        validate,
        max_drop=max_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        preset=nncf.QuantizationPreset(config.preset),
        target_device=nncf.TargetDevice.CPU,
        subset_size=len(items),
        fast_bias_correction=config.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER if config.model_type == "transformer" else None,
        ignored_scope=nncf.IgnoredScope(names=scope.names, types=scope.types, patterns=scope.patterns)
        if scope
        else None,
        advanced_quantization_parameters=advanced(nncf, config),
    )
