"""benchmarks/bench_bmi.py: the shards partition a suite, and the table's verdicts follow the
rule it states (seed-mean estimate; within = |ours − I| ≤ |bmi − I| + 0.05; only seeds that every
side finished)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_bmi", ROOT / "benchmarks" / "bench_bmi.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_partition_the_tasks(n: int) -> None:
    tasks = [f"t{i}" for i in range(40)]
    parts = [bench.shard(tasks, f"{k}/{n}") for k in range(n)]
    assert sorted(t for p in parts for t in p) == sorted(tasks)
    assert sum(len(p) for p in parts) == len(tasks)


@pytest.mark.parametrize("spec", ["2/2", "x/2", "1", "-1/3"])
def test_bad_shard_names_the_option(spec: str) -> None:
    with pytest.raises(SystemExit, match="--shard"):
        bench.shard(["a"], spec)


def _put(work: Path, tid: str, seed: int, side: str, estimates: dict, truth: float) -> None:
    rec = {"task": tid, "seed": seed, "side": side, "true_mi": truth, "n": 5000,
           "estimators": {k: {"estimate": v, "seconds": 1.0 + seed, "cpu_seconds": 1.0,
                              "validation_best": v} for k, v in estimates.items()}}
    bench._write(bench.result_path(work, tid, seed, side), rec)


def test_verdicts_use_seed_means_over_common_seeds(tmp_path: Path) -> None:
    truth = 1.0
    names = ("dv", "infonce", "nwj", "ksg")
    # bmi: seeds 0, 1 with dv 0.9, 0.7 -> mean 0.8, error 0.2
    _put(tmp_path, "a", 0, "bmi", dict.fromkeys(names, 0.9), truth)
    _put(tmp_path, "a", 1, "bmi", dict.fromkeys(names, 0.7), truth)
    # ours: seeds 0, 1, 2; seed 2 has no bmi partner and must be ignored
    _put(tmp_path, "a", 0, "ours", {"dv": 0.76, "infonce": 0.5, "nwj": None, "ksg": 1.0}, truth)
    _put(tmp_path, "a", 1, "ours", {"dv": 0.76, "infonce": 0.5, "nwj": 0.8, "ksg": 1.0}, truth)
    _put(tmp_path, "a", 2, "ours", dict.fromkeys(names, -50.0), truth)
    # bmi fails on task b (None), ours gives a number
    _put(tmp_path, "b", 0, "bmi", {"dv": None, "infonce": 0.1, "nwj": 0.1, "ksg": 0.1}, 0.2)
    _put(tmp_path, "b", 0, "ours", dict.fromkeys(names, 0.15), 0.2)
    records = bench.load(tmp_path, ["a", "b", "missing"])
    assert set(records) == {"a", "b"}
    assert records["a"]["seeds"] == [0, 1]
    s = bench.summarise(records)
    a = s["per_task"]["a"]
    assert a["bmi"]["dv"]["estimate"] == pytest.approx(0.8)
    assert a["ours"]["dv"]["error"] == pytest.approx(0.24)
    assert a["ours"]["dv"]["within"] is True  # 0.24 <= 0.2 + 0.05
    assert a["ours"]["infonce"]["within"] is False  # 0.5 > 0.25
    assert a["ours"]["nwj"]["estimate"] is None and a["ours"]["nwj"]["within"] is False
    assert a["ours"]["dv"]["seconds"] == pytest.approx(1.5)  # seeds 0 and 1 only
    b = s["per_task"]["b"]
    assert b["bmi"]["dv"]["error"] is None and b["ours"]["dv"]["within"] is True
    assert s["summary"]["ours"]["dv"]["within"] == 2
    assert s["summary"]["ours"]["infonce"]["within"] == 1
    assert s["summary"]["ours"]["nwj"]["within"] == 1
    assert s["summary"]["bmi"]["dv"]["median_seconds"] == pytest.approx(1.25)  # [1.5, 1.0]


def test_table_writes_json_and_markdown(tmp_path: Path) -> None:
    names = ("dv", "infonce", "nwj", "ksg")
    for side in ("bmi", "ours", "rank"):
        _put(tmp_path, "1v1-normal-0.75", 0, side, dict.fromkeys(names, 0.4), 0.41)
    out = tmp_path / "bmi.json"
    text = bench.table(tmp_path, "first", out)
    assert "| 1v1-normal-0.75 | 0.410 | 1 | dv |" in text
    assert "rank: within / tasks" in text
    data = json.loads(out.read_text())
    assert data["summary"]["summary"]["rank"]["ksg"]["within"] == 1


def test_diffusion_mi_side_is_tabled_without_a_bmi_verdict(tmp_path: Path) -> None:
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    _put(tmp_path, tid, 0, "bmi", {"dv": 0.5, "infonce": 0.7, "nwj": None, "ksg": 0.9}, 1.0)
    _put(tmp_path, tid, 0, "ours", dict.fromkeys(names, 0.9), 1.0)
    _put(tmp_path, tid, 0, "dmi", {"minde": 1.1, "mmg": None}, 1.0)
    s = bench.summarise(bench.load(tmp_path, [tid]))
    cell = s["per_task"][tid]["dmi"]
    assert cell["minde"]["error"] == pytest.approx(0.1) and "within" not in cell["minde"]
    assert s["summary"]["dmi"]["mmg"]["failed"] == 1
    text = bench.table(tmp_path, "first", tmp_path / "b.json")
    # bmi's best neural error is InfoNCE's 0.3 (NWJ failed)
    assert f"| {tid} | 1.000 | 1.100 (0.100), 1.000 s | error (error), 1.000 s | 0.300 |" in text


def test_a_side_on_fewer_seeds_does_not_cut_the_comparison(tmp_path: Path) -> None:
    """diffusion-mi ran on seed 0 only: bmi and ours keep their common seeds 0 and 1, and the dmi
    column is its seed-0 value, with its own seed count."""
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    for seed, v in ((0, 0.9), (1, 0.7)):
        _put(tmp_path, tid, seed, "bmi", dict.fromkeys(names, v), 1.0)
        _put(tmp_path, tid, seed, "ours", dict.fromkeys(names, v + 0.1), 1.0)
    _put(tmp_path, tid, 0, "dmi", {"minde": 1.1, "mmg": 0.6}, 1.0)
    records = bench.load(tmp_path, [tid])
    assert records[tid]["seeds"] == [0, 1]
    s = bench.summarise(records)["per_task"][tid]
    assert s["bmi"]["dv"]["estimate"] == pytest.approx(0.8) and s["bmi"]["dv"]["n_seeds"] == 2
    assert s["ours"]["dv"]["estimate"] == pytest.approx(0.9)
    assert s["dmi"]["minde"]["estimate"] == pytest.approx(1.1) and s["dmi"]["minde"]["n_seeds"] == 1


def test_table_reads_only_the_seeds_asked_for(tmp_path: Path) -> None:
    """`table --seeds 0` compares seed 0 even where seed 1 has finished too (the committed
    one-seed file stays reproducible); `--seeds 0 1` averages both."""
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    for seed, v in ((0, 0.9), (1, 0.7)):
        for side in ("bmi", "ours"):
            _put(tmp_path, tid, seed, side, dict.fromkeys(names, v), 1.0)
    assert bench.load(tmp_path, [tid], seeds=[0])[tid]["seeds"] == [0]
    both = bench.summarise(bench.load(tmp_path, [tid], seeds=[0, 1]))
    assert both["per_task"][tid]["ours"]["dv"]["estimate"] == pytest.approx(0.8)
    assert bench.load(tmp_path, [tid])[tid]["seeds"] == [0, 1]  # no filter: every seed
    text = bench.table(tmp_path, "first", tmp_path / "one.json", seeds=[0])
    assert "| 1v1-normal-0.75 | 1.000 | 1 | dv |" in text


def test_seed_spread_and_per_seed_verdicts(tmp_path: Path) -> None:
    """Beside the seed-mean verdict, each cell carries the seeds' sd (ddof 1, as bmi reports
    mean ± std) and the summary counts, seed by seed, the tasks within bmi's error + 0.05 on that
    seed's own pair of estimates."""
    names = ("dv", "infonce", "nwj", "ksg")
    # task a, I = 1: bmi 0.9 / 0.7; ours 0.8 / 0.9 -> seed 0 out (0.2 > 0.15), seed 1 in
    # seed means: bmi 0.8 (0.2), ours 0.85 (0.15) -> within
    for seed, b, o in ((0, 0.9, 0.8), (1, 0.7, 0.9)):
        _put(tmp_path, "a", seed, "bmi", dict.fromkeys(names, b), 1.0)
        _put(tmp_path, "a", seed, "ours", dict.fromkeys(names, o), 1.0)
    # task b, I = 0, seed 0 only: within on seed 0; ours fails nwj there
    _put(tmp_path, "b", 0, "bmi", dict.fromkeys(names, 0.3), 0.0)
    _put(tmp_path, "b", 0, "ours", {"dv": 0.1, "infonce": 0.1, "nwj": None, "ksg": 0.1}, 0.0)
    s = bench.summarise(bench.load(tmp_path, ["a", "b"]))
    a = s["per_task"]["a"]
    assert a["ours"]["dv"]["sd"] == pytest.approx(0.1 / 2**0.5 * 1.0)  # |0.8 - 0.9| / sqrt 2
    assert a["bmi"]["dv"]["sd"] == pytest.approx(0.2 / 2**0.5)
    assert s["per_task"]["b"]["ours"]["dv"]["sd"] is None  # one seed: no spread
    assert a["ours"]["dv"]["within"] is True
    by_seed = s["summary"]["ours"]["dv"]["within_by_seed"]
    assert by_seed == {"0": [1, 2], "1": [1, 1]}  # [within, tasks] on each seed
    assert s["summary"]["ours"]["nwj"]["within_by_seed"] == {"0": [0, 2], "1": [1, 1]}
    assert "within_by_seed" not in s["summary"]["bmi"]["dv"]


def test_table_prints_the_per_seed_range(tmp_path: Path) -> None:
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    for seed, b, o in ((0, 0.9, 0.8), (1, 0.7, 0.9)):  # ours out on seed 0, in on seed 1
        _put(tmp_path, tid, seed, "bmi", dict.fromkeys(names, b), 1.0)
        _put(tmp_path, tid, seed, "ours", dict.fromkeys(names, o), 1.0)
    text = bench.table(tmp_path, "first", tmp_path / "t.json")
    assert "| dv | 1.500 | 1 / 1 (one seed: 0–1), 1.500 |" in text


def test_error_table_bolds_what_is_not_within(tmp_path: Path) -> None:
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    _put(tmp_path, tid, 0, "bmi", {"dv": 0.9, "infonce": 0.9, "nwj": None, "ksg": 1.0}, 1.0)
    _put(tmp_path, tid, 0, "ours", dict.fromkeys(names, 0.5), 1.0)
    _put(tmp_path, tid, 0, "rank", {"dv": 0.86, "infonce": 0.8, "nwj": 0.7, "ksg": None}, 1.0)
    text = bench.table(tmp_path, "first", tmp_path / "e.json")
    # dv: 0.14 <= 0.1 + 0.05 within; infonce 0.2 > 0.15 out; bmi's nwj failed; rank's ksg failed
    assert (f"| {tid} | 1.000 | 1 | 0.10 / 0.14 | 0.10 / **0.20** | error / 0.30 | "
            "0.00 / **error** |") in text
    assert "| task | I | seeds | dv: bmi / rank |" in text


def test_rank_js_side_runs_the_js_trained_nwj_under_the_nwj_kind(tmp_path: Path) -> None:
    """The ``rank_js`` side compares with bmi's NWJ the NWJ value at a JS-trained critic:
    ``--bound js_nwj --marginals rank``, recorded under the kind ``nwj`` with its bound named."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1))
    y = x + 0.5 * rng.standard_normal((300, 1))
    path = bench.sample_path(tmp_path, "toy", 0)
    path.parent.mkdir(parents=True)
    np.savez(path, X=x, Y=y, true_mi=0.5 * np.log(5.0))
    bench.run_ours(tmp_path, "toy", 0, "rank_js")
    rec = json.loads(bench.result_path(tmp_path, "toy", 0, "rank_js").read_text())
    (entry,) = rec["estimators"].values()
    assert list(rec["estimators"]) == ["nwj"]
    assert entry["bound"] == "js_nwj"
    assert "--bound js_nwj" in entry["command"] and "--marginals rank" in entry["command"]
    assert np.isfinite(entry["estimate"]) and entry["exit_code"] == 0


def test_summary_over_bmi_tasks_leaves_out_the_independent_samples(tmp_path: Path) -> None:
    names = ("dv", "infonce", "nwj", "ksg")
    _put(tmp_path, "1v1-normal-0.75", 0, "bmi", dict.fromkeys(names, 0.9), 1.0)
    _put(tmp_path, "1v1-normal-0.75", 0, "rank", dict.fromkeys(names, 0.5), 1.0)  # out
    _put(tmp_path, "independent-5-5", 0, "bmi", dict.fromkeys(names, 0.3), 0.0)
    _put(tmp_path, "independent-5-5", 0, "rank", dict.fromkeys(names, 0.0), 0.0)  # within
    for tid in ("1v1-normal-0.75", "independent-5-5"):  # load() needs the default side too
        _put(tmp_path, tid, 0, "ours", dict.fromkeys(names, 0.0), 1.0 if tid[0] == "1" else 0.0)
    records = bench.load(tmp_path, ["1v1-normal-0.75", "independent-5-5"])
    text = bench.bmi_tasks_summary(records, ["rank"])
    assert "| rank | dv | 0 / 1 (0–0) | 0.500 | – | 1.00 |" in text
    assert "| bmi | dv | – / 1 | 0.100 | – | 1.00 |" in text


def test_a_longer_diffusion_mi_budget_is_its_own_column(tmp_path: Path) -> None:
    """`dmi_long` (10x the example's epochs) is tabled beside `dmi`, without a bmi verdict, and
    does not cut the compared seeds either."""
    names = ("dv", "infonce", "nwj", "ksg")
    tid = "1v1-normal-0.75"
    for seed in (0, 1):
        _put(tmp_path, tid, seed, "bmi", {"dv": 0.5, "infonce": 0.7, "nwj": 0.8, "ksg": 0.9}, 1.0)
        _put(tmp_path, tid, seed, "ours", dict.fromkeys(names, 0.9), 1.0)
    _put(tmp_path, tid, 0, "dmi", {"minde": 1.1, "mmg": 0.6}, 1.0)
    _put(tmp_path, tid, 0, "dmi_long", {"minde": 0.95, "mmg": None}, 1.0)
    records = bench.load(tmp_path, [tid])
    assert records[tid]["seeds"] == [0, 1]
    s = bench.summarise(records)
    cell = s["per_task"][tid]["dmi_long"]
    assert cell["minde"]["error"] == pytest.approx(0.05) and "within" not in cell["minde"]
    assert s["summary"]["dmi_long"]["mmg"]["failed"] == 1
    text = bench.table(tmp_path, "first", tmp_path / "b.json")
    assert "MINDE ×10 (error), s | MMG ×10 (error), s |" in text
    assert (f"| {tid} | 1.000 | 1.100 (0.100), 1.000 s | 0.600 (0.400), 1.000 s | "
            "0.950 (0.050), 1.000 s | error (error), 1.000 s | 0.200 |") in text


def test_the_diffusion_mi_budget_is_ten_times_the_example_for_dmi_long() -> None:
    assert bench.DMI_EPOCHS["dmi"] == 300 and bench.DMI_EPOCHS["dmi_long"] == 3000
    assert set(bench.EXTRA_SIDES) == {"dmi", "dmi_long"}
