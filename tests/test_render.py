"""`status` and `apply --dry-run` for a person: VFs alike folded into ranges, differences first,
settings shown, colour only on a terminal without NO_COLOR, `--verbose` for one line per VF."""

from __future__ import annotations

import io
import os
import pty
import subprocess

import pytest

from tests.helpers import CLI, run_cli

CONFIG = """
[[pf]]
name = "ens1f0"
num_vfs = 64
  [[pf.vfs]]
  range = "0-31"
  driver = "vfio-pci"
  [[pf.vfs]]
  range = "32-63"
  driver = "iavf"
  vlan = 100
  trust = true
[[pf]]
name = "ens1f1"
num_vfs = 64
  [[pf.vfs]]
  range = "0-31"
  driver = "vfio-pci"
  [[pf.vfs]]
  range = "32-63"
  driver = "iavf"
"""


@pytest.fixture
def big(make_host, write_config):
    host = make_host(("x710", 2, 64))
    config = write_config(CONFIG)
    return host, config


def test_a_64_vf_plan_fits_a_terminal_and_verbose_lists_every_action(big):
    host, config = big
    plan = run_cli("apply", "--dry-run", root=host.root, config=config)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    assert len(lines) <= 24 + 2, plan.stdout  # 24 rows, and each PF's one line of retry rules
    assert "    [bindings] VFs 0-31: driver_override -> vfio-pci" in lines
    assert "    [bindings] VFs 32-63: bind to iavf" in lines
    assert any(line.startswith("    [if it stops early] ") and "clean-up step(s)" in line for line in lines)
    verbose = run_cli("apply", "--dry-run", "--verbose", root=host.root, config=config).stdout.splitlines()
    assert "    [bindings] VF 17: bind to vfio-pci" in verbose and len(verbose) > 250


def test_status_at_64_vfs_fits_a_terminal_with_its_differences_first(big):
    host, config = big
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    host.sysfs.unbind("0000:20:03.1", "vfio-pci")  # VF 9 of ens1f0, taken away by another tool
    status = run_cli("status", root=host.root, config=config)
    lines = status.stdout.splitlines()
    assert len(lines) <= 24, status.stdout
    assert lines[0] == "2 PF(s): DIFFERS"
    pf0 = lines.index(next(line for line in lines if line.startswith("0000:20:00.0")))
    # under the PF: the VF that differs first, then the runs of VFs that agree, with their settings
    assert lines[pf0 + 1].split()[:2] == ["vf9", "-"] and "DIFFERS: bound to no driver, want vfio-pci" in lines[pf0 + 1]
    assert lines[pf0 + 2].split()[:4] == ["vf0-8", "vfio-pci", "group", "4-12"]
    assert lines[pf0 + 3].split()[:2] == ["vf10-31", "vfio-pci"]
    assert "ens1f0v32-63" in lines[pf0 + 4] and "vlan 100 (802.1Q), trust on" in lines[pf0 + 4]
    assert "\033[" not in status.stdout  # not a terminal: no colour
    verbose = run_cli("status", "--verbose", root=host.root, config=config).stdout.splitlines()
    assert len([line for line in verbose if line.startswith("    vf")]) == 128
    assert any(line.split()[:2] == ["vf9", "0000:20:03.1"] for line in verbose)


def _on_a_terminal(args, env):
    """Run the CLI with stdout on a pseudo-terminal; return what it printed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([CLI, *args], stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    out = io.BytesIO()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out.write(chunk)
    proc.wait(timeout=120)
    os.close(master)
    return out.getvalue().decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(big):
    host, config = big
    args = ["--root", host.root, "--config", config, "status"]
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR",) and not k.startswith("SRIOV_NODE_")}
    assert "\033[31mDIFFERS\033[0m" in _on_a_terminal(args, env)
    assert "\033[" not in _on_a_terminal(args, {**env, "NO_COLOR": "1"})


@pytest.mark.parametrize("verbose", [False, True], ids=["folded", "verbose"])
def test_settings_of_vfs_made_anew_are_not_read_and_not_said_to_be_unreported(make_host, write_config, verbose):
    """A count changed by hand: the next apply makes the VFs anew, so status reads none of their
    settings. It says they are not compared; it never says the driver did not report them."""
    from sriov_node.sim.kernel import SimKernel

    host = make_host(("e810", 1, None))
    config = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n  [[pf.vfs]]\n  range = "0-1"\n  vlan = 7\n  trust = true\n')
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    kernel = SimKernel(host.root)
    for count in (b"0", b"3"):  # by hand: 2 -> 0 -> 3
        kernel.write("sys/bus/pci/devices/0000:20:00.0/sriov_numvfs", count)
    out = run_cli("status", *(["--verbose"] if verbose else []), root=host.root, config=config).stdout
    assert "not compared: the next apply makes the VFs anew" in out, out
    assert "not reported" not in out, out
