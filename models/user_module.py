"""The ``module`` source: a user's own torch module, from a Python file that defines the class, plus
safetensors weights. The file is copied into the artifact, so the artifact rebuilds on its own.

Loading imports the user's file, which runs its code: that is what bringing one's own module means (it
is the user's code, not a downloaded pickle). Weights are only ever read from safetensors.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from edgepipe.configs import SourceConfig
from edgepipe.errors import InputError, first_line
from edgepipe.files import sha256_file
from edgepipe.store import Parents, StageOutput

if TYPE_CHECKING:
    import torch

    from edgepipe.stage import StageContext

MODULE_FILE = "module.py"


class ModuleSource(SourceConfig):
    """``file`` defines ``class_name`` (a torch.nn.Module built with ``kwargs``); ``weights`` is a
    safetensors file for it (none: the module's own initialisation, e.g. to train it in a stage)."""

    kind: Literal["module"] = "module"
    # Built to the task's own inputs and outputs; an embedding task has none of its own (it scores an encoder).
    tasks: ClassVar[tuple[str, ...] | None] = ("classification", "language-modeling")
    file: str = Field(description="a Python file, relative to the recipe's folder")
    class_name: str = Field(alias="class", pattern=r"^[A-Za-z_]\w*$")
    kwargs: dict[str, Any] = {}
    weights: str | None = Field(None, description="a .safetensors file, relative to the recipe's folder")
    tokenizer: str | None = Field(None, description="text tasks: the model's tokenizer.json")

    model_config = {"extra": "forbid", "populate_by_name": True, "serialize_by_alias": True}

    def identity(self, base_dir: Path, task: Any) -> dict[str, Any]:
        def content(path: str | None) -> str | None:
            if path is None:
                return None
            p = _resolve(path, base_dir, {self.file: "file", self.weights: "weights"}.get(path, "tokenizer"))
            return sha256_file(p)

        return {
            "file": content(self.file),
            "class": self.class_name,
            "kwargs": self.kwargs,
            "weights": content(self.weights),
            "tokenizer": content(self.tokenizer),
            "task": task.describe(),
        }


def _resolve(path: str, base_dir: Path, field: str) -> Path:
    p = Path(path).expanduser()
    p = p if p.is_absolute() else base_dir / p
    if not p.is_file():
        raise InputError(f"source.{field}: {p}: no such file")
    return p


def build_from_spec(spec: dict[str, Any], folder: Path) -> torch.nn.Module:
    """Import the module file kept in the artifact and build its class with the recorded kwargs."""
    return _build(folder / spec["file"], spec, folder / spec["file"])


def _build(path: Path, spec: dict[str, Any], shown: Path) -> torch.nn.Module:
    """``spec``'s class from the file at ``path``; errors name ``shown`` (the user's own file)."""
    from torch import nn

    name = "edgepipe_user_" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    if name not in sys.modules:
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise InputError(f"{path}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:  # the user's file failed to import: say where, in one line
            raise InputError(f"{shown}: importing it failed: {type(e).__name__}: {first_line(e)}") from None
        sys.modules[name] = module
    cls = getattr(sys.modules[name], spec["class"], None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        what = "no class" if cls is None else "no torch.nn.Module subclass"
        raise InputError(f"{shown}: {what} named '{spec['class']}' (source.class)")
    try:
        built: nn.Module = cls(**spec["kwargs"])
    except Exception as e:  # the user's constructor refused these kwargs (TypeError, ValueError, assert, ...)
        raise InputError(
            f"source.kwargs: {spec['class']}({', '.join(spec['kwargs'])}) failed: {first_line(e)}"
        ) from None
    return built


def _check_outputs(model: torch.nn.Module, feeds: dict[str, Any], io: Any, origin: Path) -> None:
    """The module's outputs on example inputs must have the task's output shapes (symbolic dims aside)."""
    import torch

    with torch.inference_mode():
        try:
            out = model.eval()(*(torch.from_numpy(feeds[s.name]) for s in io.inputs))
        except Exception as e:  # the user's forward failed on the task's inputs
            shapes = {k: list(v.shape) for k, v in feeds.items()}
            raise InputError(f"{origin}: forward failed on the task's inputs {shapes}: {first_line(e)}") from None
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for spec, tensor in zip(io.outputs, outs, strict=False):
        want = spec.shape
        got = list(tensor.shape)
        if len(want) != len(got) or any(isinstance(w, int) and w != g for w, g in zip(want, got, strict=True)):
            raise InputError(f"{origin}: output '{spec.name}' has shape {got}, the task needs {want}")


def load_module_source(parents: Parents, config: ModuleSource, out: Path, ctx: StageContext) -> StageOutput:
    """Build the user's class, load its weights strictly, check its outputs fit the task, save."""
    from edgepipe.models import io_spec, load_weights, save_torch_model
    from edgepipe.models.train import seed_everything
    from edgepipe.tasks import Preprocessor

    origin = _resolve(config.file, ctx.base_dir, "file")
    shutil.copyfile(origin, out / MODULE_FILE)
    tokenizer, preprocessing = None, dict[str, Any]()
    if config.tokenizer is not None:
        from edgepipe.text import Tokenizer

        shutil.copyfile(_resolve(config.tokenizer, ctx.base_dir, "tokenizer"), out / "tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(out / "tokenizer.json")
        except Exception as e:  # the tokenizers library's own parse error
            raise InputError(f"source.tokenizer: {config.tokenizer}: not a tokenizer.json ({first_line(e)})") from None
        preprocessing = {"files": ["tokenizer.json"], "tokenizer": {"file": "tokenizer.json", "kind": tokenizer.kind}}
    io = ctx.task.model_io(tokenizer)
    spec = {
        "builder": "module",
        "file": MODULE_FILE,
        "class": config.class_name,
        "kwargs": config.kwargs,
        "io": io_spec(io),
        "files": [MODULE_FILE],
    }
    seed_everything(ctx.seed)  # a module without weights starts from its own (seeded) initialisation
    model = _build(out / MODULE_FILE, spec, origin)
    if config.weights is not None:
        load_weights(model, _resolve(config.weights, ctx.base_dir, "weights"))
    _check_outputs(model, ctx.task.example_feeds(Preprocessor(io.inputs, tokenizer, io.max_length), 2), io, origin)
    spec = save_torch_model(model, spec, out)
    ctx.log(f"[module] {config.class_name}: {spec['parameters']:,} parameters from {origin}")
    return StageOutput(
        format="torch",
        precision="fp32",
        primary="model.safetensors",
        inputs=io.inputs,
        outputs=io.outputs,
        model=spec,
        preprocessing=preprocessing,
    )
