"""The schema's device plugin and metrics keys: what is accepted (the refusals are in tests/bad_configs/86-99)."""

from __future__ import annotations

import pytest

from sriov_node.config import parse_config
from sriov_node.errors import ConfigError
from sriov_node.model import PfSelector, PfSpec, VfGroup


def parse(text: str):
    return parse_config(text.encode(), "/etc/sriov-node/config.toml")


SPANNING = """
[[pf]]
name = "ens1f0"
num_vfs = 8
  [[pf.vfs]]
  range = "0-3"
  driver = "vfio-pci"
  resource = "intel_sriov_dpdk"
  [[pf.vfs]]
  range = "4-5"
  driver = "iavf"
  resource = "intel_sriov_netdevice"
  [[pf.vfs]]
  range = "6-7"
  driver = "iavf"
  resource = "intel_sriov_netdevice"
[[pf]]
vendor = "8086"
device = "159b"
num_vfs = 4
  [[pf.vfs]]
  range = "0-3"
  driver = "iavf"
  resource = "intel_sriov_netdevice"
"""


def test_a_resource_may_span_groups_and_pfs_with_one_driver():
    desired = parse(SPANNING)
    assert desired.pfs == (
        PfSpec("pf[0]", PfSelector(name="ens1f0"), 8, vfs=(
            VfGroup("pf[0].vfs[0]", "0-3", (0, 1, 2, 3), driver="vfio-pci", resource="intel_sriov_dpdk"),
            VfGroup("pf[0].vfs[1]", "4-5", (4, 5), driver="iavf", resource="intel_sriov_netdevice"),
            VfGroup("pf[0].vfs[2]", "6-7", (6, 7), driver="iavf", resource="intel_sriov_netdevice"),
        )),
        PfSpec("pf[1]", PfSelector(vendor="8086", device="159b"), 4, vfs=(
            VfGroup("pf[1].vfs[0]", "0-3", (0, 1, 2, 3), driver="iavf", resource="intel_sriov_netdevice"),
        )),
    )
    assert desired.resources() == ("intel_sriov_dpdk", "intel_sriov_netdevice")  # in the order first named
    assert desired.resource_prefix == "intel.com"  # the default without [device_plugin]
    assert desired.device_plugin_file is None and desired.metrics_textfile is None


def test_device_plugin_and_metrics_tables():
    desired = parse('[device_plugin]\nresource_prefix = "sriov.example.org"\n'
                    '[metrics]\ntextfile = "/var/lib/node_exporter/textfile/sriov_node.prom"\n')
    assert desired.resource_prefix == "sriov.example.org"
    assert desired.metrics_textfile == "/var/lib/node_exporter/textfile/sriov_node.prom"
    assert desired.device_plugin_file is None and desired.pfs == () and desired.resources() == ()
    empty = parse("[device_plugin]\n[metrics]\n")  # the tables without keys: the defaults
    assert (empty.resource_prefix, empty.device_plugin_file, empty.metrics_textfile) == ("intel.com", None, None)


@pytest.mark.parametrize("name", ["a", "A-1", "x" * 63, "intel_sriov_netdevice", "mlnx-sriov"])
def test_resource_names_the_plugin_and_kubelet_accept(name):
    desired = parse(f'[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "iavf"\nresource = "{name}"\n')
    assert desired.pfs[0].vfs == (VfGroup("pf[0].vfs[0]", "0", (0,), driver="iavf", resource=name),)
    assert desired.resources() == (name,)


@pytest.mark.parametrize("name", ["", "a.b", "_a", "a_", "x" * 64, "a b", "é"])
def test_resource_names_they_refuse(name):
    with pytest.raises(ConfigError) as info:
        parse(f'[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n[[pf.vfs]]\nrange = "0"\ndriver = "iavf"\nresource = "{name}"\n')
    assert [p.key for p in info.value.problems] == ["pf[0].vfs[0].resource"]


def test_the_group_that_breaks_the_one_driver_rule_is_named_with_the_first_one():
    text = SPANNING.replace('range = "6-7"\n  driver = "iavf"', 'range = "6-7"\n  driver = "vfio-pci"')
    with pytest.raises(ConfigError) as info:
        parse(text)
    problems = {p.key: p.message for p in info.value.problems}
    assert list(problems) == ["pf[0].vfs[2].resource"]
    assert "has driver 'vfio-pci' here but 'iavf' in pf[0].vfs[1]" in problems["pf[0].vfs[2].resource"]
