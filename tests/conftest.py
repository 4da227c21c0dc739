"""Shared fixtures: simulated hosts, config files, and the console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Callable, List, Optional

import pytest

from sriov_node.host import Host
from sriov_node.sim.build import create_host
from sriov_node.sim.kernel import SimKernel

CLI = shutil.which("sriov-node", path=os.path.dirname(sys.executable)) or "sriov-node"


@pytest.fixture
def make_host(tmp_path: Path) -> Callable[..., Host]:
    """make_host(("x710", 2, None), ..., iommu=True, bios_sriov=True, mmio=True) -> Host."""
    counter = [0]

    def _make(*nics, **kwargs) -> Host:
        counter[0] += 1
        root = tmp_path / f"host{counter[0]}"
        create_host(str(root), nics or (("x710", 2, None),), **kwargs)
        return Host(str(root))

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


def sim_writes(host: Host) -> List[tuple]:
    """Every write the simulated kernel received (path, value, result)."""
    return SimKernel(host.root).write_log()


def run_cli(*args: str, root: Optional[str] = None, config: Optional[str] = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script, as a user would."""
    argv = [CLI]
    if root is not None:
        argv += ["--root", root]
    if config is not None:
        argv += ["--config", config]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    return subprocess.run(argv + list(args), capture_output=True, text=True, timeout=timeout, env=env)
