"""The artifact store: atomic builds, verified cache hits, and nothing partial trusted after a crash."""

from __future__ import annotations

import json
import os
import time

import pytest

from edgepipe.artifact import Manifest, load_artifact, verify
from edgepipe.errors import InputError
from edgepipe.store import ArtifactStore, StageOutput
from edgepipe.tensors import TensorSpec

SPEC = [TensorSpec(name="input", shape=["batch", 4], dtype="float32")]


def _builder(calls: list[int], payload: bytes = b"weights"):
    def build(out):
        calls.append(1)
        (out / "model.bin").write_bytes(payload)
        (out / "side.txt").write_text("side")
        return StageOutput(
            format="onnx",
            precision="fp32",
            primary="model.bin",
            inputs=SPEC,
            outputs=SPEC,
        )

    return build


def _build(store, calls, config=None, **kw):
    return store.build(
        name="a",
        stage="export",
        config=config or {"x": 1},
        parents={},
        tools={"t": "1"},
        build=_builder(calls, **kw.pop("builder_kw", {})),
        **kw,
    )


def test_second_build_is_a_verified_cache_hit(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    first, cached1 = _build(store, calls)
    second, cached2 = _build(store, calls)
    assert (cached1, cached2) == (False, True)
    assert calls == [1]
    assert second.path == first.path and second.sha256 == first.sha256
    assert first.manifest.size_bytes == len(b"weights") + len(b"side")


def test_config_tools_or_force_change_the_outcome(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    a, _ = _build(store, calls)
    b, cached = _build(store, calls, config={"x": 2})
    assert not cached and a.path != b.path
    _, cached = _build(store, calls, force=True)
    assert not cached and len(calls) == 3


def test_tampered_or_truncated_artifact_is_rebuilt(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    art, _ = _build(store, calls)
    (art.path / "model.bin").write_bytes(b"weigh")  # truncated by a crash or an editor
    assert verify(art.path) is None
    with pytest.raises(InputError, match="do not match"):
        load_artifact(art.path)
    again, cached = _build(store, calls)
    assert not cached and (again.path / "model.bin").read_bytes() == b"weights"


def test_failed_build_leaves_nothing_behind(tmp_path):
    store = ArtifactStore(tmp_path)

    def explode(out):
        (out / "model.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        store.build(name="a", stage="s", config={}, parents={}, tools={}, build=explode)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_leftover_is_never_trusted_and_is_cleaned_when_stale(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    key = store.cache_key("export", {"x": 1}, {}, {"t": "1"}, None)
    # What a SIGKILL mid-build leaves: a temp folder, and (worse) a final folder with no manifest.
    stale = tmp_path / ".tmp-a-xyz"
    stale.mkdir()
    (stale / "model.bin").write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    partial = tmp_path / f"a-{key[:12]}"
    partial.mkdir()
    (partial / "model.bin").write_bytes(b"partial")
    art, cached = _build(ArtifactStore(tmp_path), calls)
    assert not cached and (art.path / "model.bin").read_bytes() == b"weights"
    assert not stale.exists()


def test_manifest_round_trips_through_json_and_keeps_unknown_keys(tmp_path):
    store, calls = ArtifactStore(tmp_path), []
    art, _ = _build(store, calls)
    data = json.loads((art.path / "manifest.json").read_text())
    assert data["schema_version"] == 2 and data["lineage"]["stage"] == "export"
    data["future_field"] = {"from": "a newer edgepipe"}
    again = Manifest.model_validate(data)
    assert again.model_dump()["future_field"] == {"from": "a newer edgepipe"}


def test_corrupt_manifest_is_an_input_error_naming_the_file(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match=r"manifest\.json: not a valid edgepipe manifest"):
        load_artifact(tmp_path)


def test_synthetic_shapes_fill_batch_and_sequence_dims_and_say_so():
    from edgepipe.benchmarks.inputs import concrete_shape

    image = TensorSpec(name="x", shape=["batch", 3, "?", "width"], dtype="float32")
    with pytest.raises(InputError, match=r"input 'x' \[batch, 3, \?, width\]: dimension 2 \('\?'\) is dynamic"):
        concrete_shape(image, 4, None)  # no safe default for an image's height: never 1x1 in silence
    with pytest.raises(InputError, match="dimension 2"):  # an unnamed dimension is never fixed by name
        concrete_shape(image, 4, None, {"width": 8, "?": 5})
    assert concrete_shape(TensorSpec(name="x", shape=["batch", 3, "h", 8], dtype="float32"), 4, None, {"h": 6}) == (
        (4, 3, 6, 8),
        ["batch=4", "h=6"],
    )
    ids = TensorSpec(name="input_ids", shape=["batch", "sequence"], dtype="int64")
    assert concrete_shape(ids, 1, 16)[0] == (1, 16)
    unnamed = TensorSpec(name="input_ids", shape=["?", "?"], dtype="int64")
    assert concrete_shape(unnamed, 2, 64)[0] == (2, 64)


@pytest.mark.parametrize("bad", ["../model.onnx", "/etc/passwd", ""])
def test_manifest_paths_must_stay_inside_the_folder(tmp_path, bad):
    store, calls = ArtifactStore(tmp_path), []
    art, _ = _build(store, calls)
    data = json.loads((art.path / "manifest.json").read_text())
    data["primary"] = bad
    data["files"][0]["path"] = bad
    (art.path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match="inside the artifact folder"):
        load_artifact(art.path)


def test_tampered_artifact_folder_is_refused_before_any_runtime_sees_it(tmp_path):
    from edgepipe.benchmarks.harness import benchmark_model

    store, calls = ArtifactStore(tmp_path), []
    art, _ = _build(store, calls)
    (art.path / "model.bin").write_bytes(b"evil")
    with pytest.raises(InputError, match="do not match the manifest"):
        benchmark_model(art.path, "onnxruntime")
    with pytest.raises(InputError, match="no such file"):
        benchmark_model(tmp_path / "missing.onnx", "onnxruntime")


def test_a_temporary_of_a_live_process_is_left_alone(tmp_path):
    live = tmp_path / ".tmp-a-live"
    live.mkdir()
    (live / ".owner-pid").write_text(str(os.getpid()))
    dead = tmp_path / ".tmp-a-dead"
    dead.mkdir()
    (dead / ".owner-pid").write_text("999999999")
    ArtifactStore(tmp_path)
    assert live.exists() and not dead.exists()


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        art, _ = _build(ArtifactStore(tmp_path), [])
    finally:
        os.umask(old)
    assert art.path.stat().st_mode & 0o777 == 0o755
    assert (art.path / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert not (art.path / ".owner-pid").exists()


def test_a_parent_counts_with_every_file_and_how_it_was_built_and_the_seed_counts(tmp_path):
    """A tokenizer changed beside the same weights, or a parent rebuilt under other tools with identical
    weights, is another input: what derives from it is rebuilt."""
    store, calls = ArtifactStore(tmp_path), []
    parent, _ = _build(store, calls)
    key = store.cache_key("export", {}, {"model": parent}, {}, 0)
    assert store.cache_key("export", {}, {"model": parent}, {}, 1) != key
    moved = parent.manifest.model_copy(deep=True)
    moved.files[1].sha256 = "0" * 64  # side.txt (think tokenizer.json) changed; model.bin did not
    assert moved.sha256 == parent.sha256
    assert store.cache_key("export", {}, {"model": type(parent)(parent.path, moved)}, {}, 0) != key
    rebuilt = parent.manifest.model_copy(deep=True)
    rebuilt.lineage.cache_key = "another"
    assert store.cache_key("export", {}, {"model": type(parent)(parent.path, rebuilt)}, {}, 0) != key


def test_code_fingerprint_ignores_comments_and_docstrings_but_not_code(tmp_path, monkeypatch):
    from edgepipe.environment import code_fingerprint

    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "fp_probe.py"

    def fingerprint(src: str) -> str:
        module.write_text(src)
        return code_fingerprint("fp_probe")

    base = fingerprint('"""Doc."""\ndef f(x):\n    """Doc."""\n    return x + 1\n')
    assert fingerprint('"""Other doc."""\n# a comment\ndef f(x):\n    return x + 1  # why\n') == base
    assert fingerprint("def f(x):\n    return x + 2\n") != base


def test_a_finished_concurrent_build_is_shared_not_replaced(tmp_path, monkeypatch):
    import edgepipe.store as store_module

    store = ArtifactStore(tmp_path)
    first, _ = _build(store, [])
    real_verify = store_module.verify
    misses = [True]  # the second run's up-front cache check ran before the first run finished

    def verify_once_missing(folder):
        return None if misses and misses.pop() else real_verify(folder)

    monkeypatch.setattr(store_module, "verify", verify_once_missing)
    second, cached = _build(store, [], builder_kw={"payload": b"other"})
    assert cached and second.path == first.path
    assert (first.path / "model.bin").read_bytes() == b"weights"
    assert not list(tmp_path.glob(".tmp-*"))


def test_who_owns_a_temporary_is_told_by_pid_host_boot_and_start_time(tmp_path, monkeypatch):
    """pid 1 (a container's first process) is a builder like any other; a reused pid is not the builder;
    a builder on another machine sharing the folder is trusted until its folder is a day old."""
    import json as _json

    import edgepipe.store as s

    mine = _json.loads(s._owner_record())

    def record(**change):
        return _json.dumps({**mine, **change})

    assert s._owner_alive(record(), 0)
    if os.path.exists("/proc/1/stat"):
        assert s._owner_alive(record(pid=1, start=s._start_ticks(1)), 0)  # init is alive, and it is ours
        assert not s._owner_alive(record(pid=1, start="1" + s._start_ticks(1)), 0)  # the pid was reused
    assert not s._owner_alive(record(pid=999999999), 0)
    assert s._owner_alive(record(pid=999999999, host="elsewhere"), 3600)
    assert not s._owner_alive(record(pid=999999999, host="elsewhere"), 2 * s.FOREIGN_STALE_AFTER_S)
    assert s._owner_alive(str(os.getpid()), 0) and not s._owner_alive("garbage", 0)


def test_force_never_deletes_an_artifact_it_rebuilds_identically(tmp_path):
    """Another run may be reading the artifact in place: --force with the same bytes keeps it (same
    inode); with other bytes it swaps the folder in one rename and leaves nothing behind."""
    store = ArtifactStore(tmp_path)
    first, _ = _build(store, [])
    inode = (first.path / "model.bin").stat().st_ino
    again, cached = _build(store, [], force=True)
    assert not cached and again.path == first.path and (first.path / "model.bin").stat().st_ino == inode
    changed, _ = _build(store, [], force=True, builder_kw={"payload": b"other weights"})
    assert changed.path == first.path and (first.path / "model.bin").read_bytes() == b"other weights"
    assert not list(tmp_path.glob(".tmp-*")) and not list(tmp_path.glob(".old-*"))
