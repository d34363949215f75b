"""`edgepipe verify` finds every way an artifact can be damaged, and says nothing against a sound one."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.fixture
def run_dir(tmp_path, exported, torch_artifact):
    """A copy of a run's store: the tiny recipe's torch, ONNX and OpenVINO artifacts (the originals are shared)."""
    store = tmp_path / "run" / "artifacts"
    for art in (torch_artifact, exported[("onnx", "fp32")], exported[("openvino", "fp32")]):
        shutil.copytree(art.path, store / art.path.name)
    return tmp_path / "run"


def _folder(run_dir, prefix):
    return next((run_dir / "artifacts").glob(f"{prefix}-*"))


def test_a_sound_run_verifies(cli_run, capsys, run_dir):
    code, err = cli_run(["verify", str(run_dir)])
    assert code == 0, err
    code, _ = cli_run(["verify", str(_folder(run_dir, "onnx-fp32"))])
    assert code == 0


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncate", "model.onnx: .* bytes, the manifest says .* \\(truncated or changed\\)"),
        ("flip", "model.onnx: sha256 differs from the manifest's \\(modified\\)"),
        ("delete", "model.onnx: missing"),
        ("extra", "stray.bin: not in the manifest"),
        ("manifest", "manifest.json: not a valid edgepipe manifest"),
        ("unreadable", "does not read as onnx"),
    ],
)
def test_each_damage_is_found_and_named(cli_run, run_dir, damage, expected):
    import re

    from edgepipe.files import content_sha256, sha256_file

    folder = _folder(run_dir, "onnx-fp32")
    model = folder / "model.onnx"
    data = model.read_bytes()
    if damage == "truncate":
        model.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        model.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    elif damage == "delete":
        model.unlink()
    elif damage == "extra":
        (folder / "stray.bin").write_bytes(b"x")
    elif damage == "manifest":
        (folder / "manifest.json").write_text("{not json")
    else:  # garbage that still matches the manifest: a manifest rewritten around a broken file
        model.write_bytes(b"\x00garbage" * 10)
        manifest = json.loads((folder / "manifest.json").read_text())
        entry = next(f for f in manifest["files"] if f["path"] == "model.onnx")
        entry.update(size_bytes=model.stat().st_size, sha256=sha256_file(model))
        files = [
            (f["path"], f["sha256"])
            for f in manifest["files"]
            if f["path"] not in manifest["preprocessing"].get("files", [])
        ]
        manifest.update(sha256=content_sha256(files), size_bytes=sum(f["size_bytes"] for f in manifest["files"]))
        (folder / "manifest.json").write_text(json.dumps(manifest))
    code, err = cli_run(["verify", str(run_dir)])
    assert code == 2 and err.startswith(f"edgepipe: error: {run_dir}: 1 artifact(s) fail verification"), err
    assert re.search(expected, err), err


def test_a_manifest_whose_own_hash_or_size_lies_is_found(cli_run, run_dir):
    folder = _folder(run_dir, "onnx-fp32")
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "sha256": "0" * 64}))
    code, err = cli_run(["verify", str(folder)])
    assert code == 2 and "its sha256 is not the hash of its model files" in err, err
    (folder / "manifest.json").write_text(json.dumps({**manifest, "size_bytes": 1}))
    code, err = cli_run(["verify", str(folder)])
    assert code == 2 and "its size_bytes is not the sum of its files" in err, err


def test_partial_builds_are_listed_not_failed(capsys, run_dir):
    from edgepipe.cli import main

    (run_dir / "artifacts" / ".tmp-onnx-fp32-abc").mkdir()
    half = run_dir / "artifacts" / ".old-onnx-fp32-abc-1-ff"  # one --force was replacing, half removed
    shutil.copytree(_folder(run_dir, "onnx-fp32"), half)
    (half / "model.onnx").unlink()
    capsys.readouterr()
    assert main(["verify", str(run_dir), "--json"]) == 0
    findings = json.loads(capsys.readouterr().out)
    assert [f["partial"] for f in findings].count(True) == 2 and all(f["ok"] for f in findings)
    assert {f["format"] for f in findings if not f["partial"]} == {"torch", "onnx", "openvino"}


def test_not_a_run(cli_run, tmp_path):
    code, err = cli_run(["verify", str(tmp_path / "nothing")])
    assert code == 2 and "no such file or folder" in err
    (tmp_path / "empty").mkdir()
    code, err = cli_run(["verify", str(tmp_path / "empty")])
    assert code == 2 and "holds no artifact folders" in err
