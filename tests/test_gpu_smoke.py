"""The GPU validation script (experiments/gpu_validation.py) cannot rot: it runs here at toy size.

The slow test runs ``make gpu-smoke``'s command on the CPU and checks the archive and summary
that a GPU call would bring back; the fast ones check the guard around a failing step, the size
limit of the archive, the SmolLM2 split/join, the wheel checks and the documented commands.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from mi_bounds.decline.shape import SHAPES

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gv = _load("gpu_validation")
gg = _load("gpu_gguf")
pv = _load("gpu_provision")


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@pytest.mark.slow
def test_smoke_run_brings_back_one_archive_and_a_summary(tmp_path):
    """Every step at toy size on the CPU: exit 0, at most 8 files in OUT (the archive, the
    summary, the log), each step ok, its CUDA-only parts named, and the archive holding every
    step's JSON, the decline runs' histories, reports and shape verdicts, both benchmarks'
    outputs and the staircase runs."""
    pytest.importorskip("transformers")
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "gpu_validation.py"), "--smoke", "--device", "cpu",
         "--out", str(out), "--work", str(work)],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu-validation.tar.gz", "log.txt", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    steps = summary["steps"]
    trl_ok = importlib.util.find_spec("trl") is not None
    for name in gv.STEPS:
        want = "ok" if name != "trl" or trl_ok else "failed"
        assert steps[name]["status"] == want, (name, steps[name])
    # the CUDA-only parts are named as skipped on the CPU
    for name in ("env", "bounds") + (("trl",) if trl_ok else ()):
        assert any("CUDA-only" in s for s in steps[name]["skipped"]), steps[name]
    assert summary["archive"]["fits"] and summary["archive"]["bytes"] <= gv.ARCHIVE_LIMIT
    assert summary["unpack"].endswith("-C results/gpu-cpu")

    members = _members(out / "gpu-validation.tar.gz")
    for name in gv.STEPS:
        rec = json.loads(members[f"results/{name}.json"])
        assert rec["step"] == name and rec["seconds"] >= 0
    env = json.loads(members["results/env.json"])["result"]
    assert env["copy"]["GB_per_s"] > 0 and env["matmul"]["TFLOP_per_s"] > 0
    decline = json.loads(members["results/decline.json"])["result"]
    plan = decline["plan"]
    assert not decline["align"]["failed"] and not decline["align"]["not_started"]
    for setting in plan["settings"]:
        for loss in plan["losses"]:
            for seed in plan["seeds"]:
                run = json.loads(members[f"decline/{setting}/align_runs/{loss}-seed{seed}.json"])
                assert run["loss"] == loss and run["seed"] == seed
                assert run["history"][0]["step"] == 0 and run["shape"]["train"]["shape"]
            verdict = decline["shapes"][setting][loss]["train"]["verdict"]
            assert verdict in SHAPES  # the calibrated rule's verdicts, "inconclusive" included
        assert f"decline/{setting}/lm_table.md" in members
    for name in ("report/grid_table.md", "report/grid_report.json", "report/grid_chosen.png",
                 "config.json", "base_result.json", "sample_summary.json",
                 "sample/pairs_train.jsonl"):
        assert f"decline/{name}" in members, name
    if trl_ok:
        bench = json.loads(members["trl/bench_lm_trl.json"])
        assert bench["ours"]["pairs_per_s"] > 0 and bench["trl"]["pairs_per_s"] > 0
        assert steps["trl"]["headline"]["ratio_vs_trl"] == pytest.approx(
            bench["ratio_vs_trl"], rel=1e-5)  # the archive's JSON has 6 significant digits
    bounds = json.loads(members["results/bounds.json"])["result"]
    assert {r["K"] for r in bounds["rows"]} == {128, 256}
    assert all(r["fraction_of_copy_bandwidth"] > 0 for r in bounds["rows"])
    assert "bounds/bench_bounds.json" in members
    stair = [n for n in members if n.startswith("staircase/")]
    assert len(stair) == 4
    assert "logs/gpu-validation.txt" in members

    # --pack-only packs the same files again (what gpu_run.sh does after a timeout)
    again = subprocess.run(
        [sys.executable, str(BENCH / "gpu_validation.py"), "--pack-only", "--out",
         str(tmp_path / "again"), "--work", str(work)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stderr[-2000:]
    assert set(_members(tmp_path / "again" / "gpu-validation.tar.gz")) == set(members)


def test_a_failing_step_is_recorded_and_the_next_one_runs(tmp_path):
    ctx = gv.Context(tmp_path / "out", tmp_path / "work", "cpu", True, 60.0)

    def boom(ctx):
        raise RuntimeError("deliberate failure")

    def fine(ctx):
        return {"headline": {"x": 1}}

    def skip(ctx):
        return {"status": "skipped", "reason": "CUDA-only"}

    gv.run_steps(ctx, ["a", "b", "c"], {"a": boom, "b": fine, "c": skip})
    a = json.loads((ctx.results / "a.json").read_text())
    assert a["status"] == "failed" and "deliberate failure" in a["error"]
    assert "Traceback" in a["error"]
    assert json.loads((ctx.results / "b.json").read_text())["status"] == "ok"
    summary = gv.pack(ctx, ["a", "b", "c", "d"])
    assert summary["steps"]["a"]["error"] == "RuntimeError: deliberate failure"
    assert summary["steps"]["b"]["headline"] == {"x": 1}
    assert summary["steps"]["c"] == {"status": "skipped", "seconds": pytest.approx(
        summary["steps"]["c"]["seconds"]), "reason": "CUDA-only"}
    assert summary["steps"]["d"]["status"] == "not run"
    # a step whose JSON still says "running" was cut off by a kill
    gv.write_json(ctx.results / "b.json", {"step": "b", "status": "running"})
    assert gv.pack(ctx, ["b"])["steps"]["b"]["status"].startswith("cut off")


def test_archive_leaves_out_optional_files_past_the_limit(tmp_path):
    ctx = gv.Context(tmp_path / "out", tmp_path / "work", "cpu", True, 60.0)
    gv.write_json(ctx.results / "env.json", {"step": "env", "status": "ok", "seconds": 1.0})
    rng = __import__("random").Random(0)
    noise = bytes(rng.getrandbits(8) for _ in range(60_000))  # incompressible
    big = ctx.collected / "decline" / "sample" / "data.json"
    big.parent.mkdir(parents=True)
    big.write_bytes(noise)
    (ctx.collected / "decline" / "report").mkdir(parents=True)
    (ctx.collected / "decline" / "report" / "fig.pdf").write_bytes(noise[:30_000])
    (ctx.collected / "decline" / "report" / "grid_table.md").write_text("| table |\n")
    summary = gv.pack(ctx, ["env"], limit=50_000)
    arch = summary["archive"]
    assert arch["left_out_for_size"] == ["decline/sample/data.json"]
    assert arch["fits"] and arch["bytes"] <= 50_000
    names = set(_members(ctx.out / arch["name"]))
    assert {"decline/report/fig.pdf", "decline/report/grid_table.md", "results/env.json"} <= names
    summary = gv.pack(ctx, ["env"], limit=20_000)
    assert summary["archive"]["left_out_for_size"] == ["decline/sample/data.json",
                                                       "decline/report/fig.pdf"]


def test_gguf_halves_split_stash_and_join(tmp_path):
    src = tmp_path / "model.gguf"
    data = bytes(range(256)) * 1001
    src.write_bytes(data)
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    m = gg.split(src, repo, expected_sha256=hashlib.sha256(data).hexdigest())
    assert [p["bytes"] for p in m["parts"]] == [128_128, 128_128]
    with pytest.raises(ValueError, match="SHA-256"):
        gg.split(src, tmp_path / "other", expected_sha256="0" * 64)
    # first call: only the first half travels
    first = tmp_path / "call1"
    (first / ".gguf-1").mkdir(parents=True)
    for f in ("part", "manifest.json"):
        (first / ".gguf-1" / f).write_bytes((repo / ".gguf-1" / f).read_bytes())
    assert gg.stash(first, cache) == [1]
    with pytest.raises(ValueError, match=r"part\(s\) \[2\]"):
        gg.join(cache)
    assert not (cache / "gguf" / "model.gguf").exists()
    # second call: the other half; a corrupted part is refused
    second = tmp_path / "call2"
    (second / ".gguf-2").mkdir(parents=True)
    (second / ".gguf-2" / "manifest.json").write_bytes(
        (repo / ".gguf-2" / "manifest.json").read_bytes())
    (second / ".gguf-2" / "part").write_bytes(b"x" + (repo / ".gguf-2" / "part").read_bytes()[1:])
    with pytest.raises(ValueError, match="SHA-256"):
        gg.stash(second, cache)
    (second / ".gguf-2" / "part").write_bytes((repo / ".gguf-2" / "part").read_bytes())
    assert gg.stash(second, cache) == [2]
    final = gg.join(cache)
    assert final == cache / "gguf" / "model.gguf" and final.read_bytes() == data
    assert gg.main(["join", "--root", str(tmp_path / "none"), "--cache",
                    str(tmp_path / "empty")]) == 1


def test_requirement_check_finds_conflicts_and_unknown_versions():
    pkgs = {"trl": ("1.16.0", ["transformers>=4.56.2", "datasets>=4.7.0", "pandas>=2.1.1",
                               "peft>=0.8; extra == 'peft'", "missingpkg"])}
    rows = pv.check_requirements(pkgs, {"transformers": "4.50.0", "datasets": "5.2.0",
                                        "pandas": None})
    status = {r["requires"].split(">")[0].split("=")[0]: r["status"] for r in rows}
    assert status == {"transformers": "conflict", "datasets": "ok", "pandas": "present",
                      "missingpkg": "missing"}


def test_documented_commands_match_the_scripts():
    """The provisioning's header lists the pinned wheels and the commands that gpu_prepare.sh
    and gpu_run.sh run; the Makefile's targets call the same scripts."""
    doc = pv.__doc__
    assert " ".join(pv.WHEELS) in doc
    prepare = (BENCH / "gpu_prepare.sh").read_text()
    assert "gpu_provision.py --print-wheels" in prepare
    for flag in ("--no-deps", "--only-binary=:all:", "--python-version 3.12",
                 "--platform manylinux_2_28_x86_64", "--platform manylinux_2_17_x86_64",
                 "--platform manylinux2014_x86_64"):
        assert flag in prepare and flag in doc.replace("\\\n       ", ""), flag
    run = (BENCH / "gpu_run.sh").read_text()
    assert "command:   bash experiments/gpu_run.sh" in doc
    assert "--no-index --no-deps --no-compile --no-cache-dir --upgrade" in run
    assert "gpu_validation.py" in run and "--pack-only" in run
    assert set(gv.STEP_FUNCTIONS) == set(gv.STEPS) | set(gv.OPTIONAL_STEPS)
    makefile = (REPO / "Makefile").read_text()
    assert "gpu_validation.py --smoke" in makefile and "gpu_run.sh" in makefile


def test_bad_input_is_a_clear_error(capsys):
    assert gv.main(["--out", "x", "--steps", "env,nope"]) == 2
    assert "unknown step" in capsys.readouterr().err
    assert gv.main(["--steps", "env"]) == 2
    assert gv.main(["--out", "x", "--budget-s", "0"]) == 2
