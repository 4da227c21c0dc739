"""Helpers the tests import: the console script and the simulated kernel's write log."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import List, Optional

from sriov_node.host import Host
from sriov_node.sim.kernel import SimKernel

CLI = shutil.which("sriov-node", path=os.path.dirname(sys.executable)) or "sriov-node"


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


def open_host(root: str) -> Host:
    """The host at `root`, opened as the program opens it (sriov_node.cli.root.open_root): the
    simulated kernel for a `sim create` tree, else the host layer's live kernel or captured tree."""
    from sriov_node.cli.root import open_root

    return open_root(root)
