"""Helpers the tests import: the console script, the simulated kernel's write log, the shared PF addresses and
configs, and one `apply()`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any, List, Optional

from sriov_node.host import Host
from sriov_node.sim.kernel import UEVENT_LOG, SimKernel

CLI = shutil.which("sriov-node", path=os.path.dirname(sys.executable)) or "sriov-node"

# The two ports of a simulated host's first NIC (`sim create` puts NIC k on bus 0x20 + 0x10*k): the
# default `make_host()` host is one X710 with these two PFs, ens1f0 and ens1f1.
PF0, PF1 = "0000:20:00.0", "0000:20:00.1"

# Both PFs of the first NIC by address: PF0 with 4 VFs, 0-1 on vfio-pci and 2-3 on the default driver;
# PF1 with 2 VFs on the default driver.
TWO_PFS = f"""
    [[pf]]
    pci = "{PF0}"
    num_vfs = 4
      [[pf.vfs]]
      range = "0-1"
      driver = "vfio-pci"
    [[pf]]
    pci = "{PF1}"
    num_vfs = 2
"""


def sim_writes(host: Host) -> List[tuple]:
    """Every write the simulated kernel received (path, value, result)."""
    return SimKernel(host.root).write_log()


def sim_digest(root: str) -> str:
    """The simulated kernel's whole state under `root`: its tree (links as links), model and write log.
    Equal before and after a command: the command wrote nothing."""
    import hashlib

    h = hashlib.sha256()
    for top in ("sys", "dev", ".sriov-node-sim.json", ".sriov-node-sim.log"):
        base = os.path.join(root, top)
        if os.path.isfile(base):
            h.update(top.encode() + open(base, "rb").read())
            continue
        for where, dirs, files in sorted(os.walk(base)):
            dirs.sort()
            for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(where, d))]):
                path = os.path.join(where, name)
                h.update(path[len(root):].encode())
                if os.path.islink(path):
                    h.update(b"->" + os.readlink(path).encode())
                else:
                    try:
                        h.update(open(path, "rb").read())
                    except OSError:
                        h.update(b"<unreadable>")
    return h.hexdigest()


def sim_uevents(host: Host) -> List[dict]:
    """Every uevent the simulated kernel has sent, oldest first (none yet: [])."""
    try:
        with open(os.path.join(host.root, UEVENT_LOG)) as fh:
            return [json.loads(line) for line in fh]
    except FileNotFoundError:
        return []


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


def apply(host: Host, path: str, **kw: Any) -> Any:
    """Converge `host` to the config file at `path` as a new `apply` run does (a fresh view of the root, the
    file read by the config loader); the engine's Report. Keyword arguments go to reconcile (only=, force=, ...)."""
    from sriov_node.config import load_config
    from sriov_node.engine.reconcile import reconcile

    return reconcile(open_host(host.root), load_config(path), **kw)


class _Counted:
    """One capability of a host whose every call (but path building) is logged in `calls`."""

    def __init__(self, inner: Any, name: str, calls: List[str]):
        self._inner, self._name, self._calls = inner, name, calls

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr.startswith("_") or attr == "path" or not callable(value):
            return value

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._calls.append(f"{self._name}.{attr}")
            return value(*args, **kwargs)

        return counted


def count_host_calls(host: Host) -> List[str]:
    """Log every question `host` is asked through its capabilities (sysfs, links, devlink, modules),
    as "sysfs.read", in order; the list returned grows as the host is used."""
    calls: List[str] = []
    for name in ("sysfs", "links", "devlink", "modules"):
        setattr(host, name, _Counted(getattr(host, name), name, calls))
    return calls
