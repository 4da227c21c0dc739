"""The lab tier: one guest boot per scenario (tests/lab/guest.py), shared by the tests asserting on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[2]
LAB = REPO / "scripts" / "kernel-lab"
TIMINGS: Dict[str, float] = {}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)


def boot(scenario: str, script: str = "tests/lab/guest.py", **env: str) -> Dict[str, Any]:
    """Boot the lab guest once, run a scenario of `script`, return its results (or fail with the console)."""
    start = time.monotonic()
    proc = subprocess.run(
        [str(LAB), f"{sys.executable} {script} {scenario}"],
        cwd=str(REPO), capture_output=True, text=True, timeout=int(env.get("LAB_TIMEOUT", "600")) + 300,
        env={**os.environ, "LAB_TIMEOUT": "600", **env},
    )
    TIMINGS[scenario] = time.monotonic() - start
    line = next((l for l in proc.stdout.splitlines() if l.startswith("@@RESULTS ")), None)
    if line is None:
        pytest.fail(f"kernel-lab {scenario}: exit {proc.returncode}, no results\n"
                    f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}")
    return json.loads(line[len("@@RESULTS "):])


_IGB: Dict[str, Any] = {}


def need_igb() -> None:
    """Skip, saying why, where QEMU cannot emulate igb. `kernel-lab --igb` runs the lab's set-up
    first (the backports QEMU on a fresh Debian 12), then answers; asked once per process."""
    if "rc" not in _IGB:
        proc = subprocess.run([str(LAB), "--igb"], cwd=str(REPO), capture_output=True, text=True, timeout=1800)
        _IGB.update(rc=proc.returncode, out=proc.stdout.strip(), err=proc.stderr[-3000:])
    if _IGB["rc"] == 1:
        pytest.skip(f"QEMU cannot emulate igb here: {_IGB['out']}")
    assert _IGB["rc"] == 0, _IGB["err"]


@pytest.fixture(scope="session")
def iommu_on() -> Dict[str, Any]:
    return boot("iommu-on")


@pytest.fixture(scope="session")
def iommu_off() -> Dict[str, Any]:
    return boot("iommu-off", LAB_IOMMU="off")


@pytest.fixture(scope="session")
def netdevsim() -> Dict[str, Any]:
    return boot("netdevsim")


def pytest_sessionfinish(session):
    output = getattr(session.config, "workeroutput", None)  # a pytest-xdist worker: to the controller
    if output is not None:
        output["lab_timings"] = dict(TIMINGS)
