"""Model zoo and torch artifacts.

A torch artifact is ``model.safetensors`` plus a **module spec** in its manifest's ``model`` block that
says how to rebuild the module without unpickling anything: ``builder`` "zoo" (a registered family
and its params), "huggingface" (a ``config.json`` in the artifact) or "module" (a user's Python file
in the artifact). Loading builds the module from the spec, then fits every tensor whose saved shape
differs (a pruned model keeps its smaller tensors) and loads the weights strictly, so a reshaped
model reloads exactly.

Families are registered in ``FAMILIES``; each module defines ``Params`` (pydantic), ``TASKS``,
``build(params, io)`` and ``EXAMPLE_PARAMS`` (small params for the template tests), and imports no torch,
so recipes validate without it.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from edgepipe.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgepipe.artifact import Artifact
    from edgepipe.store import StageOutput
    from edgepipe.tasks import ModelIO

# family name -> module that defines ``Params``, ``TASKS`` (the task kinds it serves), ``build(params, io)``
# and ``EXAMPLE_PARAMS``; the module imports no torch (its network lives in ``<family>_net``)
FAMILIES: dict[str, str] = {
    "cnn": "edgepipe.models.cnn",
    "llama": "edgepipe.models.llama",
    "vit": "edgepipe.models.vit",
}

# module spec "builder" -> "module:function(spec, artifact_folder) -> torch.nn.Module"
BUILDERS: dict[str, str] = {
    "zoo": "edgepipe.models:build_zoo",
    "huggingface": "edgepipe.models.huggingface:build_from_spec",
    "module": "edgepipe.models.user_module:build_from_spec",
}

WEIGHTS_FILE = "model.safetensors"

# What a stage records of itself in the ``model`` block (training history, what pruning removed, ...): a
# derived model's spec starts from its parent's without them, so each manifest says what its stage did.
STAGE_RECORDS = ("resized", "parameters", "training", "pruning", "sparsity", "distillation", "qat")


def family_module(name: str) -> Any:
    """The module of a registered family: its ``Params``, ``TASKS`` and ``build`` (torch-free to import;
    ``build`` imports the family's network)."""
    if name not in FAMILIES:
        raise InputError(f"source.family: unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    return importlib.import_module(FAMILIES[name])


def validate_params(family: str, params: dict[str, Any], task_kind: str | None = None) -> BaseModel:
    """A family's params, validated by its own schema, for a task kind it serves; errors name the field."""
    from edgepipe.configs import validation_message

    module = family_module(family)
    if task_kind is not None and task_kind not in module.TASKS:
        raise InputError(f"source.family: '{family}' serves {', '.join(module.TASKS)} tasks, not {task_kind}")
    try:
        validated: BaseModel = module.Params.model_validate(params)
    except ValidationError as e:
        raise InputError(validation_message(e, prefix=("source", "params"))) from None
    return validated


def io_spec(io: ModelIO) -> dict[str, Any]:
    """A ModelIO as JSON for a module spec."""
    data = asdict(io)
    data["inputs"] = [s.model_dump(exclude_none=True) for s in io.inputs]
    data["outputs"] = [s.model_dump(exclude_none=True) for s in io.outputs]
    return data


def io_from_spec(data: dict[str, Any]) -> ModelIO:
    from edgepipe.tasks import ModelIO
    from edgepipe.tensors import TensorSpec

    return ModelIO(
        **{
            **data,
            "inputs": [TensorSpec.model_validate(s) for s in data["inputs"]],
            "outputs": [TensorSpec.model_validate(s) for s in data["outputs"]],
        }
    )


def build_zoo(spec: dict[str, Any], folder: Path) -> torch.nn.Module:
    module = family_module(spec["family"])
    built: torch.nn.Module = module.build(validate_params(spec["family"], spec["params"]), io_from_spec(spec["io"]))
    return built


def zoo_spec(family: str, params: dict[str, Any], io: ModelIO) -> dict[str, Any]:
    return {"builder": "zoo", "family": family, "params": params, "io": io_spec(io)}


def build_module(spec: dict[str, Any], folder: Path) -> torch.nn.Module:
    """The module a spec describes, with its initial (not yet loaded) weights."""
    builder = spec.get("builder")
    if builder not in BUILDERS:
        raise InputError(f"{folder}: unknown module builder '{builder}' in the manifest (known: {', '.join(BUILDERS)})")
    module_name, _, function = BUILDERS[builder].partition(":")
    built: torch.nn.Module = getattr(importlib.import_module(module_name), function)(spec, folder)
    return built


def fit_to_state(module: torch.nn.Module, state: dict[str, torch.Tensor], names: list[str]) -> None:
    """Give the named parameters and buffers their saved shapes, and the standard layers the matching size
    attributes: a structurally pruned model has fewer channels, heads or features than its spec builds.
    Only tensors the spec lists as resized are fitted, so weights that do not fit are still refused."""
    import torch
    from torch import nn

    own = dict(module.state_dict())
    for name in names:
        saved = state.get(name)
        if saved is None or name not in own or own[name].shape == saved.shape:
            continue
        owner_name, _, attr = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        empty = torch.empty(saved.shape, dtype=saved.dtype)
        if attr in owner._parameters:
            setattr(owner, attr, nn.Parameter(empty, requires_grad=owner._parameters[attr].requires_grad))  # type: ignore[union-attr]
        else:
            owner._buffers[attr] = empty
    for owner_name in sorted({n.rpartition(".")[0] for n in names}):
        _fit_attributes(module.get_submodule(owner_name))


def _fit_attributes(sub: torch.nn.Module) -> None:
    """The size attributes of a standard layer, from its (resized) weight."""
    import torch
    from torch import nn

    weight = getattr(sub, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return
    if isinstance(sub, nn.modules.conv._ConvNd):
        if sub.groups > 1 and sub.groups == sub.in_channels == sub.out_channels:  # depthwise: one group per channel
            sub.groups = weight.shape[0]
        if sub.transposed:  # (in, out / groups, ...)
            sub.in_channels, sub.out_channels = weight.shape[0], weight.shape[1] * sub.groups
        else:  # (out, in / groups, ...)
            sub.out_channels, sub.in_channels = weight.shape[0], weight.shape[1] * sub.groups
    elif isinstance(sub, nn.Linear):
        sub.out_features, sub.in_features = weight.shape
    elif isinstance(sub, nn.modules.batchnorm._NormBase):
        sub.num_features = weight.shape[0]
    elif isinstance(sub, nn.LayerNorm):
        sub.normalized_shape = tuple(weight.shape)
    elif isinstance(sub, nn.Embedding):
        sub.num_embeddings, sub.embedding_dim = weight.shape


def load_weights(module: torch.nn.Module, path: Path, resized: list[str] | None = None) -> torch.nn.Module:
    """Load safetensors weights strictly into ``module``, after fitting the ``resized`` tensors to their
    saved shapes; tied tensors saved once by ``save_model`` count as present."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a valid safetensors file ({e})") from None
    fit_to_state(module, state, resized or [])
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise InputError(f"{path}: weights do not fit the model ({str(e).splitlines()[-1].strip()})") from None
    own = module.state_dict()
    loaded = {t.data_ptr() for name, t in own.items() if name in state}
    missing = [m for m in missing if own[m].data_ptr() not in loaded]
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InputError(f"{path}: weights do not fit the model ({what})")
    return module.eval()


def save_weights(module: torch.nn.Module, path: Path) -> int:
    """Write the module's weights as safetensors (tied tensors once); return the parameter count."""
    from safetensors.torch import save_model

    save_model(module, str(path))
    return sum(p.numel() for p in module.parameters())


def save_torch_model(module: torch.nn.Module, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write a torch artifact's weights and complete its spec: the parameter count, and the tensors whose
    shapes differ from what the spec builds (a pruning stage shrank them), which loading will fit."""
    built = build_module(spec, out).state_dict()
    spec = {k: v for k, v in spec.items() if k not in STAGE_RECORDS}
    resized = sorted(n for n, t in module.state_dict().items() if n in built and built[n].shape != t.shape)
    if resized:
        spec["resized"] = resized
    spec["parameters"] = save_weights(module, out / WEIGHTS_FILE)
    return spec


def derived_output(parent: Artifact, model: dict[str, Any]) -> StageOutput:
    """What a torch-side stage makes: a torch artifact with its parent's precision and inputs and outputs,
    and ``model``: its module spec and the stage's own record."""
    from edgepipe.store import StageOutput

    m = parent.manifest
    return StageOutput(
        format="torch", precision=m.precision, primary=WEIGHTS_FILE, inputs=m.inputs, outputs=m.outputs, model=model
    )


def copy_spec_files(parent: Artifact, out: Path) -> None:
    """Copy the files a module spec builds from (a config.json, a user's module file) into a derived
    torch artifact, so it rebuilds on its own."""
    import shutil

    for name in parent.manifest.model.get("files", []):
        shutil.copyfile(parent.file(name), out / name)


def load_torch_model(artifact: Artifact) -> torch.nn.Module:
    """Rebuild a torch artifact's module from its spec and load its weights (never unpickles)."""
    spec = artifact.manifest.model
    return load_weights(build_module(spec, artifact.path), artifact.model_file, spec.get("resized"))
