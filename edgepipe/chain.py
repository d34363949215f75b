"""Walking a recipe's chain through the store: source -> torch-side stages -> exports -> quantize variants.

Each step is a registered stage kind run through ``ArtifactStore.build``, so a re-run skips every step
whose (stage, config, parents, tool versions, code) already has a verified artifact.
"""

from __future__ import annotations

import importlib.util
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from edgepipe.artifact import Artifact
from edgepipe.configs import QuantizeConfig, SourceConfig
from edgepipe.environment import code_fingerprint, package_versions
from edgepipe.errors import EdgepipeError, UnavailableError, UnsupportedModel, first_line, root_cause
from edgepipe.recipe import Recipe
from edgepipe.search import bar, quantize_to_bar, searched
from edgepipe.stage import SOURCES, STAGES, StageContext, StageKind
from edgepipe.store import ArtifactStore, Parents, StageOutput

# Distributions whose import name is not their name with "-" as "_".
_MODULE_OF = {"scikit-learn": "sklearn", "llama-cpp-python": "llama_cpp"}


def _missing(distributions: tuple[str, ...]) -> str | None:
    for dist in distributions:
        if importlib.util.find_spec(_MODULE_OF.get(dist, dist.replace("-", "_"))) is None:
            return dist
    return None


def check_tools(recipe: Recipe) -> None:
    """Fail before any work, not after training, when a step's package is not installed (exit 3)."""
    from edgepipe.export import BACKENDS

    needs: list[tuple[str, tuple[str, ...]]] = [(f"source '{recipe.source.kind}'", SOURCES[recipe.source.kind].tools)]
    needs += [(f"stage '{s.stage}'", STAGES[s.stage].tools) for s in recipe.stages]
    for target in recipe.targets:
        entry = BACKENDS[target.format]
        needs.append(
            (f"target '{target.format}'", (*entry.export_tools, *(entry.quantize_tools if target.quantize else ())))
        )
    for what, tools in needs:
        if missing := _missing(tools):
            raise UnavailableError(
                f"{what} needs the package '{missing}', which is not installed (pip install 'edgepipe[all]')"
            )


def _counted(output: StageOutput, source: Artifact) -> StageOutput:
    """An export's manifest keeps the source model's parameter count (bits per weight of every format)."""
    if "parameters" in source.manifest.model:
        output.model.setdefault("parameters", source.manifest.model["parameters"])
    return output


def _bar(config: QuantizeConfig, ctx: StageContext) -> dict[str, Any] | None:
    """The gates a quantize step's search holds its result to (part of its cache key)."""
    return bar(ctx.gates) if searched(config, ctx) else None


def run_stage(store: ArtifactStore, ctx: StageContext, label: str, force: bool, **kwargs: Any) -> Artifact:
    """One step through the store; a library failing on this model becomes one line naming the step."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # Exporters' and tracers' warnings are about their internals, not the user's model: whether the
            # result is right is what the parity checks against torch measure.
            warnings.simplefilter("ignore")
            artifact, cached = store.build(force=force, **kwargs)
    except EdgepipeError:
        raise
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if not top or importlib.util.find_spec(top) is not None:  # installed: a real failure, said below
            raise EdgepipeError(f"stage '{label}' failed: {type(e).__name__}: {first_line(e)}") from e
        raise UnavailableError(
            f"stage '{label}' needs the package '{top}', which is not installed (pip install 'edgepipe[all]')"
        ) from e
    except Exception as e:  # a library failing on this model: say which stage, keep it to one line
        cause = root_cause(e)
        raise EdgepipeError(f"stage '{label}' failed: {type(cause).__name__}: {first_line(cause)}") from e
    took = "cached" if cached else f"done in {time.perf_counter() - t0:.1f} s"
    ctx.log(f"[{label}] {took}: {artifact.path}")
    return artifact


def _tools(kind: StageKind) -> dict[str, str]:
    return {**package_versions(kind.tools), "code": code_fingerprint(*kind.code, "edgepipe.tasks")}


def build_source(
    config: SourceConfig, ctx: StageContext, store: ArtifactStore, force: bool, role: str = ""
) -> Artifact:
    """The torch artifact a source makes (trained here, or loaded from disk)."""
    kind = SOURCES[config.kind]
    name = f"torch-{role}" if role else "torch-fp32"
    return run_stage(
        store,
        ctx,
        f"{config.kind}{' ' + role if role else ''}",
        force,
        name=name,
        stage=f"source:{config.kind}",
        config={**config.identity(ctx.base_dir, ctx.task), "seed": ctx.seed},
        parents={},
        tools=_tools(kind),
        build=lambda out: kind.verb()({}, config, out, ctx),
        task=ctx.task.describe(),
        seed=ctx.seed,
    )


@dataclass
class Checkpoint:
    """A torch model the targets are exported from: the final model; with compression stages also the
    dense source model (the baseline every compressed model is compared with) and each stage marked
    ``export``. ``tag`` prefixes its exports' names ("" for the dense or only model)."""

    tag: str
    model: Artifact
    compressed: bool = False  # made by (or after) a compression stage
    ptq_twin: str | None = None  # QAT: the checkpoint it was trained from, whose PTQ variants it faces
    stages: list[Artifact] = field(default_factory=list)  # what each stage since the previous checkpoint made


def build_model(recipe: Recipe, ctx: StageContext, store: ArtifactStore, force: bool) -> Artifact:
    """The torch model every stage has made: the one the targets are exported from."""
    return build_checkpoints(recipe, ctx, store, force)[-1].model


def build_checkpoints(recipe: Recipe, ctx: StageContext, store: ArtifactStore, force: bool) -> list[Checkpoint]:
    """The source, then each torch-side stage in order: the torch models the targets are exported from,
    the final one last."""
    source = build_source(recipe.source, ctx, store, force)
    compressing = any(s.tag for s in recipe.stages)
    checkpoints = [Checkpoint("", source)] if compressing else []
    model, tag = source, ""
    made: list[Artifact] = []
    for i, stage in enumerate(recipe.stages):
        kind = STAGES[stage.stage]
        extra = {
            role: source if src == "source" else build_source(src, ctx, store, force, role)  # type: ignore[arg-type]
            for role, src in stage.extra_sources().items()
        }
        parents: Parents = {"model": model, **extra}
        # The checkpoint this stage starts from, if exported: a QAT model's INT8 files face its PTQ files.
        twin = next((c.tag for c in checkpoints if c.model.sha256 == model.sha256), None) if stage.faces_ptq else None
        model = run_stage(
            store,
            ctx,
            f"{stage.stage}",
            force,
            name=f"torch-{stage.stage}",
            stage=stage.stage,
            # `export` says what else is benchmarked, not what the stage makes: not part of its cache key.
            config={**stage.model_dump(mode="json", exclude={"export"}), "index": i, "task": ctx.task.describe()},
            parents=parents,
            tools=_tools(kind),
            build=lambda out, k=kind, s=stage, p=parents: k.verb()(p, s, out, ctx),
            seed=ctx.seed,
        )
        tag = stage.tag or tag
        made.append(model)
        last = i == len(recipe.stages) - 1
        if stage.export or last:
            # Without compression the final model's files keep plain names (onnx-fp32), as with no stages.
            named = compressing or not last
            checkpoints.append(
                Checkpoint(
                    _unique(tag or stage.stage, {c.tag for c in checkpoints}) if named else "",
                    model,
                    compressed=bool(tag),
                    ptq_twin=twin,
                    stages=made,
                )
            )
            made = []
    return checkpoints or [Checkpoint("", source)]


def _unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name2``, ``name3``, ... when a checkpoint already has it (two pruning stages)."""
    n = 1
    while (candidate := name if n == 1 else f"{name}{n}") in taken:
        n += 1
    return candidate


@dataclass
class Unsupported:
    """A step a format's tool could not make from this model: its row says why, and the run goes on."""

    name: str
    format: str
    precision: str
    reason: str


@dataclass
class Targets:
    models: list[Artifact]  # exports and their quantized variants: what is benchmarked
    extras: list[Artifact]  # what follows them (embedded bundles)
    unsupported: list[Unsupported]


def build_targets(
    recipe: Recipe, ctx: StageContext, model: Artifact, store: ArtifactStore, force: bool, tag: str = ""
) -> Targets:
    """Each target's FP32 export of the torch model, its quantized variants, and the steps that follow them
    (an embedded bundle), named ``<tag>-...`` when a tag is given. A step the format's tool cannot take is
    reported, not fatal."""
    prefix = f"{tag}-" if tag else ""
    from edgepipe.export import backend

    artifacts: list[Artifact] = []
    extras: list[Artifact] = []
    unsupported: list[Unsupported] = []

    def attempt(name: str, precision: str, fmt: str, **step: Any) -> Artifact | None:
        try:
            return run_stage(store, ctx, force=force, name=name, seed=ctx.seed, **step)
        except UnsupportedModel as e:
            ctx.log(f"[{step['label']}] unsupported: {e}")
            unsupported.append(Unsupported(name, fmt, precision, str(e)))
            return None

    for target in recipe.targets:
        entry, module = backend(target.format)
        code = code_fingerprint(*entry.code)
        # The export depends on the model's architecture and I/O specs, not only on its weights' hash.
        config = {
            **target.model_dump(mode="json", exclude={"quantize"}),
            # What the module is (where a folder or file came from is not: a moved one is the same model).
            "source_model": {k: v for k, v in model.manifest.model.items() if k not in ("training", "origin")},
            "inputs": [s.model_dump() for s in model.manifest.inputs],
            "outputs": [s.model_dump() for s in model.manifest.outputs],
        }
        fp32 = attempt(
            f"{prefix}{target.format}-fp32",
            "fp32",
            target.format,
            label=f"export {prefix}{target.format}",
            stage="export",
            config=config,
            parents={"model": model},
            tools={**package_versions(("edgepipe", *entry.export_tools)), "code": code},
            build=lambda out, m=module, t=target: _counted(m.export({"model": model}, t, out, ctx), model),
        )
        if fp32 is None:
            continue
        made = [fp32]
        for q in target.quantize:
            name = prefix + q.variant_name(target.format)
            variant = attempt(
                name,
                q.precision,
                target.format,
                label=f"quantize {name}",
                stage="quantize",
                # The task's config and data decide the calibration set (its split, sizes, lengths), and
                # its gates the bar the search holds the result to.
                config={**q.model_dump(mode="json"), "task": ctx.task.describe(), "bar": _bar(q, ctx)},
                parents={"model": fp32},
                tools={**package_versions(("edgepipe", *entry.quantize_tools)), "code": code},
                build=lambda out, m=module, q=q, p=fp32: quantize_to_bar(m.quantize, {"model": p}, q, out, ctx),
            )
            made += [variant] if variant is not None else []
        artifacts += made
        ctx.forget_tuning()  # a parent's outputs on the tuning data (a language model's logits) can be large
        for step in target.post_stages():
            for parent in made:
                extra = attempt(
                    f"{parent.manifest.name}-{step}",
                    parent.manifest.precision,
                    step,
                    label=f"{step} {parent.manifest.name}",
                    stage=step,
                    config={
                        "target": target.model_dump(mode="json", exclude={"quantize"}),
                        "task": ctx.task.describe(),
                    },
                    parents={"model": parent},
                    tools={**package_versions(("edgepipe", *entry.post_tools)), "code": code},
                    build=lambda out, m=module, s=step, p=parent, t=target: m.post_stage(s, {"model": p}, t, out, ctx),
                )
                extras += [extra] if extra is not None else []
    return Targets(artifacts, extras, unsupported)
