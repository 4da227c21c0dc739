"""Every path the host layer touches is resolved under one root prefix, one checked name at a time."""

from __future__ import annotations

import os
from typing import Dict, Tuple

PCI_DEVICES = "sys/bus/pci/devices"
PCI_DRIVERS = "sys/bus/pci/drivers"
CLASS_NET = "sys/class/net"


def check_part(part: str) -> str:
    """A single path component: never empty, '.', '..', or carrying '/' or NUL."""
    if not part or part in (".", "..") or "/" in part or "\0" in part:
        raise ValueError(f"refusing path component {part!r}")
    return part


class Root:
    """The root prefix ('/' for the real machine) and path building under it."""

    def __init__(self, root: str = "/"):
        self.root = os.path.abspath(root)
        self._prefix = self.root.rstrip("/") + "/"
        self._paths: Dict[Tuple[str, ...], str] = {}  # a run asks for the same few files per VF, often twice

    @property
    def is_real(self) -> bool:
        return self.root == "/"

    def path(self, base: str, *parts: str) -> str:
        """`base` is a trusted constant ('sys/bus/pci/devices'); each part is one checked name."""
        key = (base,) + parts
        path = self._paths.get(key)
        if path is None:
            for part in parts:
                check_part(part)
            path = self._prefix + base + ("/" + "/".join(parts) if parts else "")
            if len(self._paths) >= 65536:
                self._paths.clear()
            self._paths[key] = path
        return path
