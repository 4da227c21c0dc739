"""The lab benchmark's measurer (scripts/lab/bench-guest.py): a round ends at the driver's last VF
setter call as ftrace recorded it, before the end of the look that found the state complete.

The guest part runs only in the kernel lab; these tests feed it an ftrace `trace` file as the
function tracer writes it (trace_clock mono) and looks whose answers are scripted."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

TRACE = """\
# tracer: function
#
# entries-in-buffer/entries-written: 6/6   #P:2
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
   systemd-udevd-312     [001] .....    99.900000: nsim_set_vf_vlan <-do_setlink
   systemd-udevd-312     [001] .....   100.010000: nsim_set_vf_vlan <-do_setlink
   systemd-udevd-312     [001] .....   100.011000: nsim_set_vf_trust <-do_setlink
 kworker/0:1-events-41   [000] d..1.   100.020000: nsim_set_vf_spoofchk <-do_setlink
   systemd-udevd-312     [001] .....   100.030000: nsim_set_vf_vlan <-do_setlink
   systemd-udevd-312     [001] .....   100.900000: nsim_set_vf_vlan <-do_setlink
"""


@pytest.fixture
def guest(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_guest", REPO / "scripts" / "lab" / "bench-guest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "trace").write_text(TRACE)
    monkeypatch.setattr(module, "TRACING", str(tmp_path))
    return module


class Clock:
    """The guest module's `time`, reading the given instants (the ends of the looks) in turn."""

    def __init__(self, *instants: float):
        self.instants = list(instants)

    def monotonic(self) -> float:
        return self.instants.pop(0) if len(self.instants) > 1 else self.instants[0]


def trace_of(module):
    return module.SetterTrace.__new__(module.SetterTrace)  # its files are given, not set up


def test_calls_are_the_setter_lines_in_the_window(guest):
    assert trace_of(guest).calls(100.0, 100.05) == [100.01, 100.011, 100.02, 100.03]
    assert trace_of(guest).calls(0.0, 1000.0)[0] == 99.9  # the header lines are no calls
    assert trace_of(guest).calls(101.0, 102.0) == []


def test_a_round_ends_at_the_last_call_before_the_look_that_found_the_state(guest, monkeypatch):
    answers = iter([False, True])
    monkeypatch.setattr(guest, "time", Clock(100.015, 100.05))  # the end of each look

    def wait_for(look):
        return look() or look()

    took = guest.until_set(trace_of(guest), 100.0, 3, lambda: next(answers), wait_for, "test")
    # the call at 100.9 came after the look that found the state: it is not the end
    assert took == pytest.approx(0.03)
    entry = guest.out["setter_trace"][-1]
    assert (entry["calls"], entry["looks"]) == (4, 2)


def test_a_round_is_not_timed_when_the_setters_ran_fewer_times_than_vfs(guest, monkeypatch):
    monkeypatch.setattr(guest, "time", Clock(100.05))
    # the state was there before the round: the setters did not run once per VF
    assert math.isnan(guest.until_set(trace_of(guest), 100.0, 64, lambda: True, lambda look: look(), "test"))


def test_a_round_whose_state_never_comes_is_not_timed(guest, monkeypatch):
    monkeypatch.setattr(guest, "time", Clock(100.05))
    assert math.isnan(guest.until_set(trace_of(guest), 100.0, 1, lambda: False, lambda look: look(), "test"))
