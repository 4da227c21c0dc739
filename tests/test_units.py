"""The shipped systemd units and udev rule, judged by systemd's own tools.

`systemd-analyze verify` only warns (exit 0) on unknown keys or a missing ExecStart, so its
stderr must be empty; `systemd-analyze security --offline=true` scores the sandbox: at most 3.0
for the boot oneshot, 2.5 for the daemon. The udev rule is parsed by udevd's own parser
(`udevadm test`, in a private mount namespace: it writes to /run/udev).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = {"sriov-node.service": 3.0, "sriov-node-agent.service": 2.5}


def analyze() -> str:
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze is missing: scripts/setup installs it (apt package systemd)"
    return tool


@pytest.fixture(scope="module")
def unit_root(tmp_path_factory) -> Path:
    """A root where the units' neighbours exist: systemd's own units, the binaries they exec."""
    root = tmp_path_factory.mktemp("unit-root")
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in ("bin", "lib", "sbin"):
        os.symlink("usr/" + ("lib" if name == "lib" else "bin"), root / name)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    stub = root / "usr/bin/sriov-node"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    shutil.copy(shutil.which("kill") or "/usr/bin/kill", root / "usr/bin/kill")
    return root


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_verify_is_clean(unit_root, unit):
    shutil.copy(REPO / "systemd" / unit, unit_root / "etc/systemd/system" / unit)
    proc = subprocess.run([analyze(), "verify", "--man=no", f"--root={unit_root}", f"/etc/systemd/system/{unit}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip() == "", proc.stderr


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_a_plain_verify_of_the_checkouts_units_is_clean(unit_root, unit):
    """As users run it on the files in this repository: man pages checked (the default), and none is
    installed here, so the units name a man page only where an installer puts one (debian/rules,
    scripts/install)."""
    shutil.copy(REPO / "systemd" / unit, unit_root / "etc/systemd/system" / unit)
    proc = subprocess.run([analyze(), "verify", f"--root={unit_root}", f"/etc/systemd/system/{unit}"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MANPATH": str(unit_root)})
    assert proc.stderr.strip() == "", proc.stderr
    docs = [line for line in (REPO / "systemd" / unit).read_text().splitlines() if line.startswith("Documentation=")]
    assert docs and not [d for d in docs if "man:" in d]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_security_exposure_is_within_target(unit):
    proc = subprocess.run([analyze(), "security", "--offline=true", str(REPO / "systemd" / unit)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout + proc.stderr)
    assert m, proc.stdout[-2000:] + proc.stderr
    assert float(m.group(1)) <= UNITS[unit], f"{unit}: exposure {m.group(1)} > {UNITS[unit]}"


def test_the_boot_unit_is_ordered_before_the_network_and_kubelet():
    text = (REPO / "systemd/sriov-node.service").read_text()
    directives = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            directives.setdefault(key, []).extend(value.split())
    assert {"network-pre.target", "NetworkManager.service", "systemd-networkd.service", "kubelet.service"} <= set(directives["Before"])
    assert "network-pre.target" in directives["Wants"]
    assert "systemd-udev-settle.service" not in text.replace("# ", "")  # deprecated: never depended on
    assert directives["Type"] == ["oneshot"] and directives["RemainAfterExit"] == ["yes"]
    assert directives["DefaultDependencies"] == ["no"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_udev_rule_parses_clean():
    rules = sorted((REPO / "etc/udev/rules.d").glob("*.rules"))
    assert rules
    script = "\n".join([
        "set -e", "mount -t tmpfs tmpfs /run", "mkdir -p /run/udev/rules.d",
        *[f"cp {r} /run/udev/rules.d/" for r in rules],
        "udevadm test --action=add /sys/class/net/lo 2>&1 || true",
    ])
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    for rule in rules:
        assert f"Reading rules file: /run/udev/rules.d/{rule.name}" in out, out[-3000:]
        assert f"/run/udev/rules.d/{rule.name}:" not in out, out[-3000:]  # udevd names the file on any complaint
