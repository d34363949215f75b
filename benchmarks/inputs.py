"""Synthetic inputs for a model benchmarked without data: every named input gets values with meaning
(token ids inside the vocabulary, attention masks of ones, token types of zeros), and dynamic dimensions
get the batch size, a sequence length, or 1, as their names say."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepipe.errors import InputError
from edgepipe.tensors import Feeds, TensorSpec, input_role

DEFAULT_SEQUENCE_LENGTH = 32
# Words in a dynamic dimension's name that mark it as a sequence length.
_SEQUENCE_WORDS = ("seq", "len", "token", "time", "step", "position")


def _is_sequence(spec: TensorSpec, axis: int, name: str) -> bool:
    if any(w in name.lower() for w in _SEQUENCE_WORDS):
        return True
    # Unnamed ('?'): the second axis of a 2-D integer input (ids, masks) is a sequence.
    return name == "?" and axis == 1 and len(spec.shape) == 2 and np.dtype(spec.dtype).kind in "iu"


def concrete_shape(spec: TensorSpec, batch: int, sequence_length: int | None) -> tuple[tuple[int, ...], list[str]]:
    """The shape to feed ``spec``, and the choices made for its dynamic dimensions."""
    shape, notes = [], []
    for axis, dim in enumerate(spec.shape):
        if isinstance(dim, int) and dim >= 0:
            shape.append(dim)
            continue
        name = str(dim)
        if axis == 0:
            value = batch
        elif _is_sequence(spec, axis, name):
            value = sequence_length or DEFAULT_SEQUENCE_LENGTH
        else:
            value = 1
        shape.append(value)
        label = name if name != "?" else ("batch" if axis == 0 else f"{spec.name}[{axis}]")
        notes.append(f"{label}={value}")
    return tuple(shape), notes


def _integers(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> tuple[np.ndarray, str]:
    # By role first: a real input is unpadded (mask of ones) with one segment (token types of zeros).
    role = input_role(spec.name)
    if role == "mask":
        return np.ones(shape), "ones"
    if role == "token_type":
        return np.zeros(shape), "zeros"
    if role == "position" and len(shape) >= 2:
        return np.broadcast_to(np.arange(shape[-1]), shape), "positions"
    if spec.value_range is not None:
        lo, hi = spec.value_range
        return rng.integers(lo, hi + 1, size=shape), f"values in [{lo}, {hi}]"
    return rng.integers(0, 100, size=shape), "values in [0, 99] (range unknown)"


def synthetic_feeds(
    inputs: list[TensorSpec], batch: int, sequence_length: int | None = None, seed: int = 0
) -> tuple[Feeds, str]:
    """Feeds for every input and a one-line description of what they hold (recorded in the results row)."""
    rng = np.random.default_rng(seed)
    feeds: Feeds = {}
    what: list[str] = []
    dims: list[str] = []
    for spec in inputs:
        shape, notes = concrete_shape(spec, batch, sequence_length)
        dims += [n for n in notes if n not in dims]
        try:
            dtype = np.dtype(spec.dtype)
        except TypeError:
            raise InputError(f"input '{spec.name}': cannot make synthetic data of dtype {spec.dtype}") from None
        values: Any
        if dtype.kind == "f":
            values, kind = rng.standard_normal(shape), "normal"
        elif dtype.kind in "iu" and spec.quantization:
            info = np.iinfo(dtype)
            values, kind = rng.integers(info.min, info.max + 1, size=shape), "uniform over the type"
        elif dtype.kind in "iu":
            values, kind = _integers(spec, shape, rng)
        elif dtype.kind == "b":
            values, kind = np.ones(shape), "true"
        else:
            raise InputError(f"input '{spec.name}': cannot make synthetic data of dtype {spec.dtype}")
        feeds[spec.name] = np.ascontiguousarray(values, dtype=dtype)
        what.append(f"{spec.name} {kind}")
    shape_note = f"; dims {', '.join(dims)}" if dims else ""
    return feeds, f"synthetic (seed {seed}): {', '.join(what)}{shape_note}"
