"""benchmarks/bench_coverage.py reads the replicates of the first study (no bootstrap, no
population_se) unchanged, and counts each interval's coverage over the replicates that have it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_coverage",
                                               ROOT / "benchmarks" / "bench_coverage.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_the_first_study_summarises_as_stored() -> None:
    """Every stored setting (coverage*.json) gives its stored summary again from its replicates,
    field for field; the first study's Gaussian replicates (no boot_* fields) give no bootstrap
    table; the Gaussian settings keep their keys."""
    files = sorted((ROOT / "benchmarks" / "results").glob("coverage*.json"))
    assert files
    for rec in (r for f in files for r in json.loads(f.read_text())["settings"]):
        setting = next(s for s in bench.SETTINGS.values() if bench.setting_key(s) == rec["key"])
        table = json.loads(json.dumps(bench.summarise(setting, rec["replicates"]),
                                      allow_nan=False))
        for name, row in rec["summary"].items():
            for field, value in row.items():
                assert table[name][field] == value, (rec["key"], name, field)
            if not any("boot_low" in r[name] for r in rec["replicates"]):
                assert table[name]["bootstrap"] is None


def test_bootstrap_coverage_counts_only_replicates_that_have_it() -> None:
    """Three replicates, one of them old: the jackknife counts all three, the percentile and the
    basic intervals the two new ones (worked by hand)."""
    old = {"estimate": 1.0, "stderr": 0.1, "population": 1.1, "batch": 250}  # ±1.96 se covers
    new1 = {"estimate": 1.0, "stderr": 0.01, "population": 1.1, "population_se": 0.01, "batch": 250,
            "boot_stderr": 0.1, "boot_low": 0.95, "boot_high": 1.2}  # percentile covers 1.1,
    # basic [0.8, 1.05] does not
    new2 = {"estimate": 0.5, "stderr": 0.3, "population": 0.6, "population_se": 0.03, "batch": 250,
            "boot_stderr": 0.3, "boot_low": 0.7, "boot_high": 0.9}  # percentile misses 0.6,
    # basic [0.1, 0.3] misses too
    reps = [{n: r for n in bench.ESTIMATORS} for r in (old, new1, new2)]
    setting = bench.SETTINGS["gaussian-500"]
    row = bench.summarise(setting, reps)["dv"]
    assert row["replicates"] == 3 and row["covers_population_value"] == pytest.approx(2 / 3)
    boot = row["bootstrap"]
    assert boot["replicates"] == 2
    assert boot["percentile_covers_population_value"] == 0.5
    assert boot["basic_covers_population_value"] == 0.0
    assert boot["percentile_wilson_population"] == bench.wilson(1, 2)
    assert boot["mean_stderr"] == pytest.approx(0.2)
    assert row["median_population_se"] == pytest.approx(0.02)
    assert row["median_population_se_over_stderr"] == pytest.approx(0.55)  # (1 + 0.1) / 2
    assert bench.setting_key(bench.SETTINGS["student-5000"]) == "student nu=5 d=3+3 I=1.0 n=5000"


def test_a_diverged_estimate_is_recorded_and_counted_as_not_covering(monkeypatch) -> None:
    """A critic that diverges on one replicate (Student-t, 500 rows, NWJ) gives that estimator no
    interval: the replicate is kept with the error, the other estimators are unaffected, and the
    coverage counts it as a miss (the user gets no interval)."""
    from mi_bounds.estimation.training import DivergenceError

    real = bench.estimate_mi_on_samples

    def diverge_nwj(x, y, cfg, **kw):
        if cfg.bound == "nwj":
            raise DivergenceError("the critic diverged (test)")
        return real(x, y, cfg, **kw)

    monkeypatch.setattr(bench, "estimate_mi_on_samples", diverge_nwj)
    setting = bench.SETTINGS["student-500"]
    rep = bench.replicate(setting, 0, quick=True)
    assert rep["nwj"] == {"failed": "the critic diverged (test)"}
    assert "estimate" in rep["dv"] and "estimate" in rep["infonce"]
    ok = {n: {"estimate": 1.0, "stderr": 0.1, "population": 1.0, "population_se": 0.01,
              "batch": 250, "boot_stderr": 0.1, "boot_low": 0.9, "boot_high": 1.1}
          for n in bench.ESTIMATORS}
    table = bench.summarise(setting, [ok, {**ok, "nwj": rep["nwj"]}])
    nwj = table["nwj"]
    assert nwj["replicates"] == 2 and nwj["failed"] == 1
    assert nwj["covers_population_value"] == 0.5 and nwj["covers_true_mi"] == 0.5
    assert nwj["bootstrap"]["replicates"] == 2
    assert nwj["bootstrap"]["percentile_covers_population_value"] == 0.5
    assert nwj["mean_estimate_minus_population"] == 0.0  # over the replicates with an estimate
    assert table["dv"]["failed"] == 0 and table["dv"]["covers_population_value"] == 1.0


def test_a_rank_setting_estimates_through_the_rank_map(monkeypatch) -> None:
    """The "-rank" settings run the held-out protocol with --marginals rank (the CLI's default)
    and have keys of their own; the pinned settings keep "standard" and their keys."""
    seen: list[str] = []
    real = bench.sample_config

    def spy(**kw):
        seen.append(kw["marginals"])
        return real(**kw)

    monkeypatch.setattr(bench, "sample_config", spy)
    rank = bench.SETTINGS["student-500-rank"]
    rep = bench.replicate(rank, 0, quick=True)
    assert seen == ["rank"] * len(bench.ESTIMATORS)
    seen.clear()
    std = bench.replicate(bench.SETTINGS["student-500"], 0, quick=True)
    assert seen == ["standard"] * len(bench.ESTIMATORS)
    assert rep["infonce"]["estimate"] != std["infonce"]["estimate"]  # another map, another value
    keys = [bench.setting_key(s) for s in bench.SETTINGS.values()]
    assert len(set(keys)) == len(keys)
    assert bench.setting_key(rank) == "student nu=5 d=3+3 I=1.0 n=500 marginals=rank"
    assert bench.setting_key(bench.SETTINGS["gaussian-500"]) == "gaussian d=3+3 I=1.0 n=500"


def test_the_markdown_table_reads_the_summary() -> None:
    """--table: one line per estimator with its replicates, coverage rates and Wilson intervals
    from the summary, the median and mean of estimate − I, and the runaway estimates (< −1)."""
    ok = {"estimate": 0.9, "stderr": 0.1, "population": 0.95, "population_se": 0.01,
          "batch": 250, "boot_stderr": 0.1, "boot_low": 0.8, "boot_high": 1.05}  # covers both
    bad = {**ok, "estimate": -3.0, "boot_low": -3.5, "boot_high": -2.5}  # covers neither
    reps = [{n: r for n in bench.ESTIMATORS} for r in (ok, ok, bad)]
    setting = bench.SETTINGS["gaussian-500"]
    rec = {"key": "k", "mi": 1.0, "replicates": reps, "summary": bench.summarise(setting, reps)}
    lines = bench.markdown_table(rec).splitlines()
    assert lines[0] == "k: 3 replicates" and len(lines) == 7 + 2 * len(bench.ESTIMATORS)
    second = [c.strip() for c in lines[7 + len(bench.ESTIMATORS)].strip("|").split("|")]
    # populations 0.95, 0.95, 0.95; the bad replicate (se 0.1) misses with every interval
    # z = (−0.5, −0.5, −39.5): mean −13.5, sd 22.52
    assert second == ["dv", "+0.950", "0", "66.7 / 66.7 % (3)", "0 / 0", "0 / 0", "0.100",
                      "-13.50, 22.52"]
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    lo, hi = bench.wilson(2, 3)
    two_thirds = f"66.7 % [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert cells[:8] == ["dv", "3 (0)"] + [two_thirds] * 6
    assert cells[8:] == ["-0.100", "-1.400", "1"]  # median 0.9 − 1; mean (0.9 + 0.9 − 3)/3 − 1


def test_the_t_interval_covers_where_the_normal_one_misses() -> None:
    """The CLI's jackknife interval is ``± t·se`` with t = jackknife_quantile(test rows) (2.262
    at 250 test rows: 9 degrees of freedom): a replicate 2.1 se from its target is covered by it
    and missed by ``± 1.96·se``; one 2.3 se away by neither (worked by hand); --first counts
    only the later replicates."""
    near = {"estimate": 1.0, "stderr": 0.1, "population": 1.21, "batch": 250}
    far = {**near, "population": 1.23}
    reps = [{n: r for n in bench.ESTIMATORS} for r in (near, far)]
    row = bench.summarise(bench.SETTINGS["gaussian-500"], reps)["dv"]
    assert row["covers_population_value_t"] == 0.5 and row["covers_population_value"] == 0.0
    assert row["wilson_population_t"] == bench.wilson(1, 2)
    assert row["covers_true_mi_t"] == 1.0 == row["covers_true_mi"]  # I = 1.0 = the estimate
    assert bench._t_quantile(near) == pytest.approx(2.2621571627982)


def test_table_first_summarises_the_later_replicates(tmp_path, capsys) -> None:
    """--table --first K: the tables of replicates K and later only, summarised afresh, the
    range in the title."""
    near = {"estimate": 1.0, "stderr": 0.1, "population": 1.21, "batch": 250}
    far = {**near, "population": 1.23}
    setting = bench.SETTINGS["gaussian-500"]
    reps = [{n: r for n in bench.ESTIMATORS} for r in (near, near, far)]
    rec = {"key": bench.setting_key(setting), **setting, "replicates": reps,
           "summary": bench.summarise(setting, reps)}
    out = tmp_path / "c.json"
    out.write_text(json.dumps({"settings": [rec]}))
    assert bench.main(["--table", "--first", "2", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{rec['key']}, replicates 2–2: 1 replicates"
    cells = [c.strip() for c in lines[4].strip("|").split("|")]
    assert cells[1] == "1 (0)" and cells[2].startswith("0.0 %")  # far: missed by ± t·se


def test_no_bootstrap_writes_jackknife_replicates_that_backfill_completes(tmp_path) -> None:
    """--no-bootstrap (the 5,000-row settings, where the bootstrap is most of the time) stores
    replicates without boot_* fields, whose summary has no bootstrap table; --backfill then adds
    exactly the boot_* fields a full run writes, the other numbers unchanged."""
    out = tmp_path / "cov.json"
    args = ["--quick", "--reps", "1", "--settings", "gaussian-500", "--out", str(out)]
    assert bench.main([*args, "--no-bootstrap"]) == 0
    rec = json.loads(out.read_text())["settings"][0]
    first = rec["replicates"][0]
    for name in bench.ESTIMATORS:
        assert not any(k.startswith("boot_") for k in first[name])
        assert rec["summary"][name]["bootstrap"] is None
    assert bench.main([*args, "--backfill"]) == 0
    filled = json.loads(out.read_text())["settings"][0]["replicates"][0]
    full = bench.replicate(bench.SETTINGS["gaussian-500"], 0, quick=True)
    for name in bench.ESTIMATORS:
        assert {k: v for k, v in filled[name].items() if k != "boot_seconds"} == \
            {k: v for k, v in full[name].items() if k != "boot_seconds"}
        assert first[name] == \
            {k: v for k, v in filled[name].items() if not k.startswith("boot_")}
