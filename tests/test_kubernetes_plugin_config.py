"""[device_plugin] config_file: the node's own device-plugin config.json, written by every run (apply, set, boot,
the daemon) only once the whole node reads back converged, atomically, and only when its bytes change."""

from __future__ import annotations

import json
import os
import stat

import pytest

from sriov_node.config import load_config
from tests.helpers import open_host
from sriov_node.engine.reconcile import reconcile
from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, PF1, run_cli

PLUGIN_FILE = "/run/sriov-node/device-plugin/config.json"


def layout(num_vfs: int = 4, second: int = 2, path: str = PLUGIN_FILE) -> str:
    return f"""
[device_plugin]
resource_prefix = "example.org"
config_file = "{path}"

[[pf]]
pci = "{PF0}"
num_vfs = {num_vfs}
  [[pf.vfs]]
  range = "0-{num_vfs - 1}"
  driver = "iavf"
  resource = "netdev"

[[pf]]
pci = "{PF1}"
num_vfs = {second}
  [[pf.vfs]]
  range = "0-{second - 1}"
  driver = "vfio-pci"
  resource = "dpdk"
"""


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), iommu=True)


def plugin_file(host) -> str:
    return os.path.join(host.root, PLUGIN_FILE.lstrip("/"))


def exported(host, config: str) -> str:
    """What `export device-plugin --json-only` prints for the converged host: the file must say the same."""
    proc = run_cli("export", "device-plugin", "--json-only", root=host.root, config=config)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_apply_writes_the_file_once_converged_the_same_bytes_as_the_export(host, write_config):
    config = write_config(layout())
    proc = run_cli("apply", root=host.root, config=config)
    assert proc.returncode == 0, proc.stderr
    assert "wrote the device plugin config" in proc.stderr
    with open(plugin_file(host)) as fh:
        text = fh.read()
    assert text == exported(host, config)
    names = {r["resourceName"] for r in json.loads(text)["resourceList"]}
    assert names == {"netdev", "dpdk"}
    assert stat.S_IMODE(os.stat(plugin_file(host)).st_mode) == 0o644
    assert os.listdir(os.path.dirname(plugin_file(host))) == ["config.json"]  # no temporary left behind


def test_a_failed_apply_writes_nothing(host, write_config):
    config = write_config(layout())
    SimKernel(host.root).add_fault("errno", device=PF1, attr="sriov_numvfs", errno="ENOMEM")
    proc = run_cli("apply", root=host.root, config=config)
    assert proc.returncode == 1
    assert "not written: the node differs" in proc.stderr
    assert not os.path.exists(plugin_file(host))

    SimKernel(host.root).clear_faults()
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    assert os.path.exists(plugin_file(host))


def test_while_the_node_differs_the_file_keeps_the_last_converged_layout(host, write_config):
    """A new layout that fails part-way: the plugin keeps reading the old file, never the new selectors."""
    first = write_config(layout(4, 2))
    assert run_cli("apply", root=host.root, config=first).returncode == 0
    with open(plugin_file(host), "rb") as fh:
        old = fh.read()

    second = write_config(layout(6, 3))
    SimKernel(host.root).add_fault("errno", device=PF1, attr="sriov_numvfs", errno="ENOMEM")
    assert run_cli("apply", root=host.root, config=second).returncode == 1  # PF0 changed, PF1 failed
    with open(plugin_file(host), "rb") as fh:
        assert fh.read() == old

    SimKernel(host.root).clear_faults()
    assert run_cli("apply", root=host.root, config=second).returncode == 0
    with open(plugin_file(host)) as fh:
        assert fh.read() == exported(host, second) != old.decode()


def test_a_run_over_some_pfs_writes_only_when_every_other_pf_is_converged_too(host, write_config):
    """The daemon's runs cover the PFs an event named: the file waits for the whole node."""
    desired = load_config(write_config(layout()))
    report = reconcile(open_host(host.root), desired, only=frozenset({PF0}))
    assert report.exit_code == 0
    assert "the node differs" in (report.device_plugin or "")
    assert not os.path.exists(plugin_file(host))

    report = reconcile(open_host(host.root), desired, only=frozenset({PF1}))
    assert report.exit_code == 0 and report.device_plugin.startswith("wrote")
    assert os.path.exists(plugin_file(host))


def test_a_refused_run_writes_nothing(host, write_config):
    assert run_cli("apply", root=host.root, config=write_config(layout(4, 2))).returncode == 0
    with open(plugin_file(host), "rb") as fh:
        old = fh.read()
    SimKernel(host.root).hold_vf(host.sysfs.vf_address(PF1, 1), 4242)  # a VM holds a vfio-pci VF
    proc = run_cli("apply", root=host.root, config=write_config(layout(4, 1)))
    assert proc.returncode == 3, proc.stderr
    with open(plugin_file(host), "rb") as fh:
        assert fh.read() == old


def test_the_file_is_replaced_by_rename_and_left_alone_when_its_bytes_do_not_change(host, write_config):
    assert run_cli("apply", root=host.root, config=write_config(layout(4, 2))).returncode == 0
    path = plugin_file(host)
    with open(path, "rb") as reader:  # a reader of the old file
        inode = os.fstat(reader.fileno()).st_ino
        again = run_cli("apply", root=host.root, config=write_config(layout(4, 2)))
        assert again.returncode == 0 and "device plugin config" not in again.stderr
        assert os.stat(path).st_ino == inode  # same bytes: not rewritten (the plugin's pod is not restarted)

        assert run_cli("apply", root=host.root, config=write_config(layout(3, 2))).returncode == 0
        assert os.stat(path).st_ino != inode  # a new file renamed over the old one
        old = reader.read()
    assert json.loads(old)["resourceList"][0]["selectors"]["rootDevices" if b"rootDevices" in old else "pfNames"]
    with open(path, "rb") as fh:
        assert fh.read() != old


def test_dry_run_and_export_write_no_file(host, write_config):
    config = write_config(layout())
    assert run_cli("apply", "--dry-run", root=host.root, config=config).returncode == 0
    assert not os.path.exists(plugin_file(host))


def test_boot_writes_it_after_converging(host, write_config):
    config = write_config(layout())
    proc = run_cli("boot", root=host.root, config=config)
    assert proc.returncode == 0, proc.stderr
    with open(plugin_file(host)) as fh:
        assert fh.read() == exported(host, config)


def test_a_config_without_resources_writes_an_empty_list(host, write_config):
    config = write_config(f"""
[device_plugin]
config_file = "{PLUGIN_FILE}"

[[pf]]
pci = "{PF0}"
num_vfs = 2
""")
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    with open(plugin_file(host)) as fh:
        assert json.load(fh) == {"resourceList": []}  # the plugin advertises nothing: no VF is anyone's


@pytest.mark.parametrize("value,words", [
    ('"run/config.json"', "absolute file path"),
    ('"/run/../etc/config.json"', "absolute file path"),
    ('"/run/pcidp/"', "absolute file path"),
    ('"/run/pcidp/.config.json"', "hidden name"),
    ("7", "must be a string"),
])
def test_a_bad_config_file_is_refused_naming_the_key(host, write_config, value, words):
    config = write_config(f'[device_plugin]\nconfig_file = {value}\n\n[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    proc = run_cli("apply", root=host.root, config=config)
    assert proc.returncode == 2
    assert "device_plugin.config_file" in proc.stderr and words in proc.stderr
    assert SimKernel(host.root).write_log() == []
