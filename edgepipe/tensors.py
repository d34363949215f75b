"""Named tensors: the input/output specs every artifact records, and feed dicts keyed by input name."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from edgepipe.errors import InputError

# Named model inputs for one call: {input name: array}.
Feeds = dict[str, np.ndarray]


class TensorSpec(BaseModel):
    """A named input or output. Dimensions are ints, or strings for symbolic (dynamic) ones."""

    model_config = ConfigDict(extra="allow")

    name: str
    shape: list[int | str]
    dtype: str
    # Affine quantization of the tensor itself, when its dtype is an integer type (e.g. full-integer
    # TFLite): {"scale": [...], "zero_point": [...], "axis": int | None}.
    quantization: dict[str, Any] | None = None
    # Inclusive [low, high] of meaningful values of an integer input: token ids inside the vocabulary,
    # an attention mask's 0/1. Synthetic benchmark inputs are drawn from it.
    value_range: list[int] | None = None

    def _affine(self) -> tuple[float, int] | None:
        q = self.quantization
        if not q or np.dtype(self.dtype).kind not in "iu":
            return None
        scale, zero_point = np.ravel(q["scale"]), np.ravel(q["zero_point"])
        if scale.size != 1:
            raise InputError(f"tensor '{self.name}': per-channel quantized model inputs/outputs are not supported")
        return float(scale[0]), int(zero_point[0])

    def to_model(self, data: np.ndarray) -> np.ndarray:
        """Float data as this tensor takes it: quantized with its scale and zero point for an
        integer tensor of a full-integer model, unchanged otherwise."""
        affine = self._affine()
        if affine is None or data.dtype.kind != "f":
            return data
        scale, zero_point = affine
        info = np.iinfo(np.dtype(self.dtype))
        return np.clip(np.round(data / scale) + zero_point, info.min, info.max).astype(self.dtype)

    def to_float(self, data: np.ndarray) -> np.ndarray:
        """This tensor's values as float32 (dequantized when it is a quantized integer tensor)."""
        affine = self._affine()
        if affine is None or data.dtype.kind not in "iu":
            return data
        scale, zero_point = affine
        return ((data.astype(np.float32) - zero_point) * scale).astype(np.float32)

    @property
    def symbolic_dims(self) -> dict[int, str]:
        """{axis: name} of the dimensions left dynamic ('?' where the file gives no name)."""
        return {
            i: str(d) if isinstance(d, str) else "?" for i, d in enumerate(self.shape) if isinstance(d, str) or d < 0
        }


def input_role(name: str) -> str:
    """What an integer input of a text model holds, by its name: "mask" (attention mask, 1 = attend),
    "token_type" (segment ids), "position" (position ids) or "ids" (token ids). The one place that reads
    meaning from names: feeds made from real text and synthetic inputs both ask it."""
    lowered = name.lower()
    if "mask" in lowered:
        return "mask"
    if "type" in lowered or "segment" in lowered:
        return "token_type"
    if "position" in lowered:
        return "position"
    return "ids"


def with_ranges(specs: list[TensorSpec], known: list[TensorSpec]) -> list[TensorSpec]:
    """``specs`` read from an exported file, given the value ranges ``known`` records for the same names
    (a file format has nowhere to keep that token ids stop at the vocabulary size)."""
    ranges = {s.name: s.value_range for s in known if s.value_range is not None}
    return [s.model_copy(update={"value_range": ranges.get(s.name, s.value_range)}) for s in specs]
