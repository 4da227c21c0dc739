"""Shared fixtures: simulated hosts and config files."""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path
from typing import Callable, Dict

import pytest

from sriov_node.host import Host
from tests.helpers import open_host
from sriov_node.sim.build import create_host


# ---------------------------------------------------------------------------------------------
# Two workers (scripts/test: pytest-xdist, --dist loadfile): each test file is one unit of work, so
# its module and session fixtures (a built package, a booted lab guest) are made once. Files run in
# collection order (--no-loadscope-reorder): the lab tier, the longest, starts first, on both
# workers, and the unit tests fill in around it. No two lab files share a guest (tests/lab/conftest.py).

LAB_TIMINGS: Dict[str, float] = {}  # the workers' lab wall times, for the summary


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    LAB_TIMINGS.update(getattr(node, "workeroutput", {}).get("lab_timings", {}))


def pytest_terminal_summary(terminalreporter):
    lab = sys.modules.get("tests.lab.conftest")  # one process: the lab's own; else what the workers sent
    timings = {**LAB_TIMINGS, **(lab.TIMINGS if lab is not None else {})}
    if timings:
        terminalreporter.write_line(
            "kernel lab wall time: " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))


@pytest.fixture(autouse=True)
def _signal_state():
    """A test running the CLI in-process (main(), typer's runner) leaves its signal handlers and, once
    a report is decided, SIGINT and SIGTERM blocked: put both back, or every later test's children
    would inherit the blocked mask (a mask survives exec)."""
    watched = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    handlers = {sig: signal.getsignal(sig) for sig in watched}
    yield
    signals = sys.modules.get("sriov_node.cli.signals")
    if signals is not None:
        signals.reset()
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Host]:
    """make_host(("x710", 2, None), ..., iommu=True, bios_sriov=True, mmio=True) -> Host."""
    counter = [0]

    def _make(*nics, **kwargs) -> Host:
        counter[0] += 1
        root = tmp_path / f"host{counter[0]}"
        create_host(str(root), nics or (("x710", 2, None),), **kwargs)
        return open_host(str(root))

    return _make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], str]:
    counter = [0]

    def _write(text: str) -> str:
        counter[0] += 1
        path = tmp_path / f"config{counter[0]}.toml"
        path.write_text(textwrap.dedent(text))
        return str(path)

    return _write
