"""The ``deadline`` of the align stage's public entry points (mi_bounds.lm.grid, .stages).

The rule: a grid setting starts only if ``now + longest setting so far <= deadline`` (so none
starts after the deadline), in the order of the grid; a config without a grid is started only
before the deadline. The settings' work is replaced by a stub that advances a fake clock, so
the schedule is checked exactly, without training anything.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mi_bounds.lm import grid, stages


class _Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def monotonic(self) -> float:
        return self.t


def _grid(monkeypatch, durations: dict[str, float], start: float = 0.0):
    """A fake grid run whose settings take ``durations`` seconds on a fake clock."""
    clock = _Clock(start)
    logs: list[str] = []
    run = SimpleNamespace(log=logs.append, config=SimpleNamespace(grid=tuple(durations)))

    def fake_align(sub, *, stop_after=None, shared=()):
        clock.t += durations[sub]
        return [{"setting": sub, "ended_at": clock.t}]

    monkeypatch.setattr(grid, "time", clock)
    monkeypatch.setattr(grid, "grid_runs", lambda r: [(name, name) for name in durations])
    monkeypatch.setattr(grid, "run_align", fake_align)
    monkeypatch.setattr(grid, "shared_align_dirs", lambda settings, name: [])
    return run, clock, logs


@pytest.mark.parametrize(("durations", "deadline", "ran"), [
    # no deadline: every setting, in order
    ({"a": 10.0, "b": 10.0, "c": 10.0}, None, ["a", "b", "c"]),
    # c would start at 20 and, at the longest duration so far (10), end at 30 > 25
    ({"a": 10.0, "b": 10.0, "c": 10.0}, 25.0, ["a", "b"]),
    # exactly at the deadline still fits
    ({"a": 10.0, "b": 10.0, "c": 10.0}, 30.0, ["a", "b", "c"]),
    # the longest setting so far (10), not the last one (2), predicts c: 12 + 10 > 21
    ({"a": 10.0, "b": 2.0, "c": 1.0}, 21.0, ["a", "b"]),
    # past the deadline at the start: nothing starts
    ({"a": 10.0, "b": 10.0}, -1.0, []),
    # the first setting starts at any deadline not yet passed (nothing predicts it)
    ({"a": 50.0, "b": 1.0}, 5.0, ["a"]),
])
def test_grid_starts_a_setting_only_if_the_longest_so_far_fits(monkeypatch, durations,
                                                                 deadline, ran):
    run, clock, logs = _grid(monkeypatch, durations)
    results = grid.run_grid_align(run, deadline=deadline)
    assert [r["setting"] for r in results] == ran
    assert clock.t == sum(durations[s] for s in ran)
    skipped = [s for s in durations if s not in ran]
    assert [m.split()[1] for m in logs if "not started" in m] == skipped


def test_stages_passes_the_deadline_to_the_grid(monkeypatch):
    run, _, _ = _grid(monkeypatch, {"a": 10.0, "b": 10.0}, start=100.0)
    assert [r["setting"] for r in stages.run_align(run, deadline=115.0)] == ["a"]


def test_a_config_without_a_grid_starts_only_before_the_deadline(monkeypatch):
    clock = _Clock(10.0)
    calls = []
    monkeypatch.setattr(stages, "time", clock)
    monkeypatch.setattr(stages.align, "run_align",
                        lambda r, *, stop_after=None: calls.append(r) or [{"ok": True}])
    logs: list[str] = []
    run = SimpleNamespace(log=logs.append, config=SimpleNamespace(grid=()))
    assert stages.run_align(run, deadline=10.0) == [] and not calls
    assert "past the deadline" in logs[0]
    assert stages.run_align(run, deadline=10.5) == [{"ok": True}] and calls == [run]
    assert stages.run_align(run) == [{"ok": True}]
