"""The firmware tools' side: `mstconfig`/`mlxconfig -e -d <pci> query` for an mlx5 PF (read-only)."""

from __future__ import annotations

import os
import subprocess
from typing import Optional, Tuple

from sriov_node.drivers import FIRMWARE_TOOLS

_DIRS = ("usr/bin", "usr/sbin", "bin", "sbin", "usr/local/bin", "usr/local/sbin")


def find_tool(root: str) -> Optional[str]:
    """The first of mstconfig, mlxconfig installed under the root (a simulated host brings its own)."""
    for tool in FIRMWARE_TOOLS:
        for where in _DIRS:
            path = os.path.join(root, where, tool)
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return None


def query(root: str, kind: str, pci: str, timeout: float = 30.0) -> Tuple[Optional[str], Optional[str], Optional[str]]:
    """(the tool's name, its query output, why there is none). A captured tree runs nothing."""
    if kind == "capture":
        return None, None, None
    path = find_tool(root)
    if path is None:
        return None, None, None
    name = os.path.basename(path)
    try:
        proc = subprocess.run([path, "-e", "-d", pci, "query"], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return name, None, str(exc)
    if proc.returncode != 0:
        return name, None, (proc.stderr or proc.stdout).strip()[-500:] or f"exit {proc.returncode}"
    return name, proc.stdout, None
