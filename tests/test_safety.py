"""No unsafe deserialization anywhere in edgepipe: a scan of every source file's syntax tree. Checkpoints
are safetensors, arrays are read with allow_pickle=False, YAML with safe_load, Hugging Face weights with
use_safetensors=True; no pickle-family module is imported and nothing is eval'd. (A user's own module file,
named in their recipe, is imported: that is their code by design, not a file of data.)"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGES = ("edgepipe", "models", "export", "runtimes", "benchmarks")
PICKLE_FAMILY = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def _name(node: ast.AST) -> str:
    """``a.b.c`` for an attribute chain, the bare name for a name, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_name(node.value) or '(...)'}.{node.attr}"  # x().eval is a method, not eval
    return ""


def _keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every place in ``source`` that could deserialize untrusted data into code or objects."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"{where}: imports {m}" for m in modules if m.split(".")[0] in PICKLE_FAMILY]
        if not isinstance(node, ast.Call):
            continue
        func = _name(node.func)
        last = func.rsplit(".", 1)[-1]
        if func in ("eval", "exec", "compile"):
            found.append(f"{where}: {func}()")
        if func.endswith("torch.load") and _keyword(node, "weights_only") is not True:
            found.append(f"{where}: torch.load without weights_only=True")
        if func in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
            found.append(f"{where}: np.load without allow_pickle=False")
        if _keyword(node, "allow_pickle") is True and last.startswith("load"):  # writing one is no risk
            found.append(f"{where}: {func} with allow_pickle=True")
        if func in ("yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            found.append(f"{where}: {func} (use yaml.safe_load)")
        if _keyword(node, "trust_remote_code") is True:
            found.append(f"{where}: trust_remote_code=True")
        owner = func.rsplit(".", 1)[0] if "." in func else ""
        weights = last == "from_pretrained" and not any(k in owner for k in ("Config", "Tokenizer"))
        if weights and _keyword(node, "use_safetensors") is not True:
            found.append(f"{where}: {func} without use_safetensors=True")
    return found


def test_no_unsafe_deserialization_in_the_sources():
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 40
    found = [hit for p in files for hit in unsafe_calls(p.read_text(), str(p.relative_to(ROOT)))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle\n",
        "from joblib import load\n",
        "import torch\ntorch.load('m.pt')\n",
        "import torch\ntorch.load('m.pt', weights_only=False)\n",
        "import numpy as np\nnp.load('a.npy')\n",
        "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n",
        "import numpy\nnumpy.lib.npyio.load(f, allow_pickle=True)\n",
        "import yaml\nyaml.load(text)\n",
        "eval(text)\n",
        "AutoModel.from_pretrained(folder)\n",
        "AutoModel.from_pretrained(folder, trust_remote_code=True, use_safetensors=True)\n",
    ],
)
def test_the_scan_finds_each_unsafe_form(snippet):
    assert unsafe_calls(snippet), snippet


def test_the_scan_passes_the_safe_forms():
    safe = (
        "import torch, numpy as np, yaml\ntorch.load('m.pt', weights_only=True)\nnp.load('a.npy', allow_pickle=False)\n"
        "yaml.safe_load(text)\nmodel.eval()\nAutoConfig.from_pretrained(f)\n"
        "AutoModel.from_pretrained(f, use_safetensors=True)\n"
    )
    assert unsafe_calls(safe) == []
