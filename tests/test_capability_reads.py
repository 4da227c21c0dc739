"""The engine's deciding side and capture read the kernel only through the host's capabilities'
questions (`host.sysfs.pci_drivers()`, `iommu_enabled()`, `observe_pf`, ...): never a file, a
directory listing, a link or a raw sysfs path of their own, never netlink or devlink directly.
Only `host/` and the executor touch the kernel's files."""

from __future__ import annotations

import ast
import inspect

import pytest

import sriov_node.authoring.capture
import sriov_node.engine.compare
import sriov_node.engine.plan
import sriov_node.engine.preflight
import sriov_node.engine.reconcile

MODULES = [sriov_node.engine.reconcile, sriov_node.engine.preflight, sriov_node.authoring.capture,
           sriov_node.engine.plan, sriov_node.engine.compare]
# Generic file questions: each takes a path, so a caller using one picks the kernel file itself.
RAW = {"open", "listdir", "readlink", "read", "read_int", "read_bytes", "exists", "isdir", "lexists",
       "link_name", "uevent", "path", "scandir", "stat", "lstat", "realpath"}
DIRECT = {"links", "devlink"}  # the capabilities' netlink and devlink sides: observe reads them
FORBIDDEN_IMPORTS = {"os", "os.path", "pyroute2", "glob", "pathlib"}


def _problems(module) -> list:
    tree = ast.parse(inspect.getsource(module))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in RAW:
                found.append(f"line {node.lineno}: {name}(...)")
        if isinstance(node, ast.Attribute) and node.attr in DIRECT and isinstance(node.value, ast.Name) \
                and node.value.id == "host":
            found.append(f"line {node.lineno}: host.{node.attr}")
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name in FORBIDDEN_IMPORTS]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in FORBIDDEN_IMPORTS:
            found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_reads_go_through_the_host_capabilities(module):
    assert _problems(module) == []
