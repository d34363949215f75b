"""Offline text for language models: a corpus that ships with CPython, and a byte-level BPE tokenizer.

Nothing here downloads anything: the corpus is Python's own English documentation (``pydoc_data``) plus
the source of a fixed list of pure-Python standard-library modules, so a pipeline can train and evaluate
a small language model on any machine. The corpus depends on the Python version (its docs and sources
change between releases); it is deterministic for a given interpreter.

Tokenizers are Hugging Face ``tokenizers`` files (tokenizer.json), wrapped so that the pipeline sees
plain token ids: no padding, no truncation and no special tokens unless asked for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

# Pure-Python, single-file modules (no frozen or tiny re-export shims such as decimal.py): prose-rich
# docstrings plus code, ~1 MB together. Fixed so that the corpus does not vary with what is installed.
STDLIB_SOURCE_MODULES: tuple[str, ...] = (
    "argparse",
    "ast",
    "bisect",
    "calendar",
    "configparser",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "difflib",
    "enum",
    "fractions",
    "functools",
    "heapq",
    "inspect",
    "pprint",
    "random",
    "shlex",
    "statistics",
    "string",
    "textwrap",
    "typing",
)


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def stdlib_documents() -> list[tuple[str, str]]:
    """(doc_id, text) pairs sorted by doc_id: every ``pydoc_data`` topic ("topics/<key>") and the source
    of each module in STDLIB_SOURCE_MODULES ("source/<module>"). Module files are read, not imported
    (importing runs code and would make the result depend on import side effects); missing or frozen
    modules are skipped."""
    from pydoc_data.topics import topics

    docs = [(f"topics/{key}", _normalise(text)) for key, text in topics.items()]
    for name in STDLIB_SOURCE_MODULES:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin is None or not origin.endswith(".py") or not Path(origin).is_file():
            continue
        docs.append((f"source/{name}", _normalise(Path(origin).read_text(encoding="utf-8"))))
    return sorted(docs)


def split_documents(
    docs: Sequence[tuple[str, str]], seed: int, test_fraction: float = 0.05, calibration_fraction: float = 0.05
) -> dict[str, list[tuple[str, str]]]:
    """Split BY DOCUMENT into "train", "calibration" and "test" (each sorted by doc_id), at least one
    document in each, so held-out text never appears in training, not even as a neighbouring window.
    Deterministic: a seeded permutation of the documents sorted by doc_id."""
    if not (0 < test_fraction < 1 and 0 < calibration_fraction < 1 and test_fraction + calibration_fraction < 1):
        raise ValueError("test_fraction and calibration_fraction must be in (0, 1) and sum to less than 1")
    ordered = sorted(docs)
    n = len(ordered)
    n_test = max(1, round(n * test_fraction))
    n_cal = max(1, round(n * calibration_fraction))
    if n - n_test - n_cal < 1:
        raise ValueError(f"{n} documents are too few to split into train, calibration and test")
    order = np.random.default_rng(seed).permutation(n)
    parts = {"test": order[:n_test], "calibration": order[n_test : n_test + n_cal], "train": order[n_test + n_cal :]}
    return {name: [ordered[i] for i in sorted(idx.tolist())] for name, idx in parts.items()}


class Tokenizer:
    """A ``tokenizers.Tokenizer`` that encodes to plain ids.

    The file as loaded is kept for ``save`` (written back unchanged, padding and truncation settings
    included); encoding uses copies with padding and truncation disabled. ``encode`` treats special-token
    strings in text as ordinary text, so corpus text such as a literal "</s>" can never inject a control
    token; ``encode_with_special`` matches special-token strings as Hugging Face ``transformers`` does,
    so its ids equal ``AutoTokenizer(text, truncation=True, max_length=...)``.
    """

    def __init__(self, tokenizer: tokenizers.Tokenizer):
        self._file = tokenizer
        self._tok = self._copy(tokenizer)  # used for everything but encode_with_special
        self._tok.encode_special_tokens = True
        self._full = self._copy(tokenizer)
        # Identity for caches of encoded text: the same tokenizer, wherever it was loaded from.
        self.sha256 = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()

    @staticmethod
    def _copy(tokenizer: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
        tok = tokenizers.Tokenizer.from_str(tokenizer.to_str())
        tok.no_padding()
        tok.no_truncation()
        return tok

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_file(str(path)))

    @classmethod
    def from_str(cls, text: str) -> Tokenizer:
        return cls(tokenizers.Tokenizer.from_str(text))

    def save(self, path: str | Path) -> None:
        self._file.save(str(path), pretty=True)

    def to_str(self) -> str:
        return str(self._file.to_str(pretty=True))

    @property
    def vocab_size(self) -> int:
        """Including added tokens: the embedding table needs a row for every id ``encode`` can produce."""
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    @property
    def kind(self) -> str:
        """The model type in lower case: "bpe", "wordpiece", "unigram" or "wordlevel"."""
        return str(json.loads(self._tok.to_str())["model"]["type"]).lower()

    def token_id(self, token: str) -> int | None:
        token_id = self._tok.token_to_id(token)
        return None if token_id is None else int(token_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``: no special tokens added, no truncation, no padding."""
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def encode_with_special(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids with the file's post-processor applied (e.g. [CLS] ... [SEP] for BERT), truncated so that the
        result, special tokens included, has at most ``max_length`` ids (the text is cut, not the specials)."""
        encoding = self._full.encode(text, add_special_tokens=False)
        if max_length is not None:
            n_special = int(self._full.num_special_tokens_to_add(is_pair=False))
            if max_length <= n_special:
                raise ValueError(f"max_length ({max_length}) leaves no room beside {n_special} special tokens")
            encoding.truncate(max_length - n_special)
        return list(self._full.post_process(encoding, add_special_tokens=True).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``, special tokens kept, so that ``decode(encode(text)) == text`` for byte-level BPE."""
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


def train_byte_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = ("<s>", "</s>")) -> Tokenizer:
    """A GPT-2-style byte-level BPE: GPT-2's pre-tokenizer regex, the 256 byte symbols as the initial
    alphabet, no normalizer. Every byte sequence is representable, so ``decode(encode(text)) == text``
    exactly for any text, and llama.cpp's "gpt2" tokenizer with pre-tokenizer "gpt-2" reproduces it.
    Special tokens get the first ids (0, 1, ...), then the bytes, then the merges. Deterministic: the
    same texts give a byte-identical tokenizer.json."""
    specials = list(special_tokens)
    minimum = 256 + len(specials)
    if vocab_size < minimum:
        raise ValueError(f"vocab_size ({vocab_size}) must be at least {minimum} (256 bytes + special tokens)")
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok)


def lm_windows(
    ids: Sequence[int] | np.ndarray, length: int, count: int | None = None, stride: int | None = None
) -> np.ndarray:
    """int64 (n, length + 1) windows of consecutive ids: inputs are ``w[:, :-1]``, next-token targets
    ``w[:, 1:]``. The default stride ``length`` makes windows share only their boundary id, so every id
    after the first is a target exactly once (what a perplexity evaluation wants). At most ``count``
    windows, taken from the start; an empty (0, length + 1) array when ``ids`` is too short."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    stride = length if stride is None else stride
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    arr = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = 0 if len(arr) < length + 1 else (len(arr) - length - 1) // stride + 1
    if count is not None:
        n = min(n, max(count, 0))
    starts = np.arange(n, dtype=np.int64) * stride
    return arr[starts[:, None] + np.arange(length + 1, dtype=np.int64)[None, :]]
