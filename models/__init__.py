"""Model zoo: registered families, each a params schema plus a builder of a torch module.

A torch artifact stores ``{"family", "params", "input_shape", "num_classes"}`` in its manifest and
its weights as safetensors, so it is rebuilt without unpickling anything.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from edgepipe.errors import InputError

if TYPE_CHECKING:
    import torch

    from edgepipe.recipe import ModelConfig

# family name -> module that defines ``Params`` and ``build(params, input_shape, num_classes)``
FAMILIES: dict[str, str] = {"cnn": "edgepipe.models.cnn"}


@dataclass(frozen=True)
class Family:
    name: str
    params: type[BaseModel]
    module: Any

    def build(self, params: dict[str, Any], input_shape: list[int], num_classes: int) -> torch.nn.Module:
        return self.module.build(self.params.model_validate(params), input_shape, num_classes)


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise InputError(f"model.family: unknown model family '{name}' (known: {', '.join(FAMILIES)})")
    module = importlib.import_module(FAMILIES[name])
    return Family(name, module.Params, module)


def validate_model_config(config: ModelConfig, source: str) -> None:
    """Check ``model.params`` against the family's schema; errors name the file and field."""
    from edgepipe.recipe import format_validation_error

    try:
        family = get_family(config.family)
    except InputError as e:
        raise InputError(f"{source}: {e}") from None
    try:
        family.params.model_validate(config.params)
    except ValidationError as e:
        raise InputError(format_validation_error(source, e, prefix=("model", "params"))) from None


def load_torch_model(model_info: dict[str, Any], weights: Path) -> torch.nn.Module:
    """Rebuild a module from a torch artifact's manifest ``model`` block and its safetensors weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    family = get_family(model_info["family"])
    module = family.build(model_info["params"], model_info["input_shape"], model_info["num_classes"])
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise InputError(f"{weights}: not a valid safetensors file ({e})") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{weights}: weights do not fit model '{family.name}' ({str(e).splitlines()[0]})") from None
    return module.eval()
