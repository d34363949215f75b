"""Knowledge distillation: a student learns from a teacher's outputs as well as from the task's labels.

The loss is ``alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * task loss`` over the last axis of
the first output (a classifier's logits, or a language model's next-token logits at every position), and
optionally a feature term: the student's activations at one layer, through a learned linear map, matched
to the teacher's at another (mean squared error). The student is the model so far; the teacher is another
source (trained or loaded) or the recipe's own source model (``teacher: source``). Lineage names both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, SerializeAsAny, field_validator

from edgepipe.configs import Section, SourceConfig, StageConfig, pick_registered, validate_as
from edgepipe.errors import InputError
from edgepipe.models.train import Optimization
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    import torch

    from edgepipe.stage import StageContext
    from edgepipe.tasks import Task


class HiddenMatch(Section):
    """Match the student's activations at one layer to the teacher's at another (same positions)."""

    student: str = Field(description="module name in the student")
    teacher: str = Field(description="module name in the teacher")
    weight: float = Field(1.0, gt=0, description="weight of the feature term in the loss")


class Distill(StageConfig, Optimization):
    """Train the model so far (the student) on the teacher's outputs mixed with the task's loss."""

    stage: Literal["distill"] = "distill"
    trains: ClassVar[bool] = True
    tag: ClassVar[str | None] = "distilled"
    teacher: SerializeAsAny[SourceConfig] | Literal["source"] = Field(
        description="a model source (any source kind), or 'source': the recipe's own source model"
    )
    temperature: float | None = Field(
        None, gt=0, description="softens both distributions (default: the task kind's, 4 or 1 for next tokens)"
    )
    alpha: float = Field(0.7, ge=0, le=1, description="weight of the distillation term (1 - alpha: the task loss)")
    hidden: HiddenMatch | None = None

    @field_validator("teacher", mode="before")
    @classmethod
    def _teacher_source(cls, v: Any) -> Any:
        from edgepipe.stage import SOURCES

        if v == "source" or isinstance(v, SourceConfig):
            return v
        kind = pick_registered(v, "kind", SOURCES, "model source")
        return validate_as(SOURCES[kind].config_class(), v)

    def extra_sources(self) -> dict[str, SourceConfig | str]:
        return {"teacher": self.teacher}


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, task: Task, temperature: float, alpha: float
) -> torch.Tensor:
    """Hinton et al.'s loss: the softened teacher-student KL (times T^2, so its gradients keep their
    scale) mixed with the task's own loss on the labels."""
    import torch.nn.functional as F

    t = temperature
    s_log = F.log_softmax(student.reshape(-1, student.shape[-1]) / t, dim=-1)
    t_log = F.log_softmax(teacher.reshape(-1, teacher.shape[-1]).detach() / t, dim=-1)
    kd = F.kl_div(s_log, t_log, log_target=True, reduction="batchmean") * t * t
    return alpha * kd + (1 - alpha) * task.loss(student, target)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    """Feature maps (N, C, H, W) as (N, H, W, C): the map between student and teacher is over channels."""
    return x.movedim(1, -1) if x.dim() == 4 else x


def _same_tokenizer(student: Any, teacher: Any) -> None:
    """A text student and its teacher must read the same tokens, or their next-token logits disagree."""
    files = [a.manifest.preprocessing.get("tokenizer", {}).get("file") for a in (student, teacher)]
    if any(files) and (not all(files) or student.file(files[0]).read_bytes() != teacher.file(files[1]).read_bytes()):
        raise InputError("distill.teacher: the teacher's tokenizer differs from the student's (they must match)")


def distill_stage(parents: Parents, config: Distill, out: Path, ctx: StageContext) -> StageOutput:
    import numpy as np
    import torch

    from edgepipe.compress.common import example_args, named_layers
    from edgepipe.models import copy_spec_files, derived_output, save_torch_model
    from edgepipe.models.train import first_output, train, training_summary

    student_art, teacher_art = parents["model"], parents["teacher"]
    _same_tokenizer(student_art, teacher_art)
    copy_spec_files(student_art, out)
    student, teacher = ctx.torch_module(student_art), ctx.torch_module(teacher_art).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    names = [s.name for s in student_art.manifest.inputs]
    temperature = config.temperature or ctx.task.distillation_temperature
    args = example_args(ctx, student_art, 2)
    with torch.no_grad():
        s_out, t_out = (first_output(m.eval()(*args)) for m in (student, teacher))
    if s_out.shape[-1] != t_out.shape[-1]:
        raise InputError(
            f"distill.teacher: the teacher predicts over {t_out.shape[-1]} values, the student over {s_out.shape[-1]}"
        )
    features: dict[str, torch.Tensor] = {}
    project = None
    if config.hidden:
        (s_layer,) = named_layers(student, [config.hidden.student], "distill.hidden.student")
        (t_layer,) = named_layers(teacher, [config.hidden.teacher], "distill.hidden.teacher")
        s_layer.register_forward_hook(
            lambda _m, _i, o: features.__setitem__("student", _channels_last(first_output(o)))
        )
        t_layer.register_forward_hook(
            lambda _m, _i, o: features.__setitem__("teacher", _channels_last(first_output(o)))
        )
        with torch.no_grad():
            student(*args), teacher(*args)
        s_f, t_f = features["student"], features["teacher"]
        if s_f.shape[:-1] != t_f.shape[:-1]:
            raise InputError(
                f"distill.hidden: the student's '{config.hidden.student}' gives {tuple(s_f.shape)} "
                f"and the teacher's '{config.hidden.teacher}' {tuple(t_f.shape)}: only the channels may differ"
            )
        project = torch.nn.Linear(s_f.shape[-1], t_f.shape[-1])
        student.add_module("_distill_projection", project)  # trained with the student, dropped before saving

    def objective(out: torch.Tensor, target: torch.Tensor, feeds: dict[str, np.ndarray]) -> torch.Tensor:
        with torch.no_grad():
            t = first_output(teacher(*(torch.from_numpy(feeds[n]) for n in names)))
        loss = distillation_loss(out, t, target, ctx.task, temperature, config.alpha)
        if project is not None and config.hidden:
            loss = loss + config.hidden.weight * torch.nn.functional.mse_loss(
                project(features["student"]), features["teacher"]
            )
        return loss

    history = train(student, ctx.task, ctx.preprocessor(student_art), config, ctx.seed, ctx, "distill", objective)
    if project is not None:
        del student._distill_projection
    ctx.log(f"[distill] student: {training_summary(history)}")
    teacher_params = sum(p.numel() for p in teacher.parameters())
    spec = save_torch_model(student, student_art.manifest.model, out)
    return derived_output(
        student_art,
        {
            **spec,
            "training": history,
            "distillation": {
                "teacher": teacher_art.manifest.name,
                "teacher_sha256": teacher_art.sha256,
                "teacher_parameters": teacher_params,
                "teacher_metrics": teacher_art.manifest.model.get("training", {}).get("test_metrics"),
                "temperature": temperature,
                "alpha": config.alpha,
                "hidden": config.hidden.model_dump() if config.hidden else None,
            },
        },
    )
