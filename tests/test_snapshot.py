"""experiments/snapshot.py: what a run-directory snapshot keeps and what it leaves out."""

from __future__ import annotations

import pytest

from experiments.snapshot import snapshot


def test_snapshot_keeps_results_and_leaves_models_checkpoints_links_and_locks(tmp_path):
    run = tmp_path / "run"
    files = {
        "config.json": "{}", "run.log": "log\n", "sample/data.json": "{}",
        "base/result.json": "{}", "base/model/model.safetensors": "w",
        "grid/a/align/reference.pt": "r", "grid/a/align/step0.json": "{}",
        "grid/a/align/dpo-seed0/result.json": "{}", "grid/a/align/dpo-seed1/ckpt.pt": "c",
        ".mi-bounds.lock": "", "grid/a/align/big.pt": "x" * (2 << 20),
    }
    for name, text in files.items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(text)
    (run / "grid" / "a" / "sample").symlink_to(run / "sample")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale.json").write_text("{}")
    got = {p.relative_to(tmp_path / "old").as_posix() for p in snapshot(run, tmp_path / "old")}
    assert got == {"config.json", "run.log", "sample/data.json", "grid/a/align/reference.pt",
                   "grid/a/align/step0.json", "grid/a/align/dpo-seed0/result.json"}
    assert not (tmp_path / "old" / "stale.json").exists()  # DEST is replaced, not merged
    with pytest.raises(ValueError, match="run_dir"):
        snapshot(tmp_path / "missing", tmp_path / "x")
