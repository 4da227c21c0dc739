"""The device plugin's resource options (`rdma`, `vhost_net`, `exclude_topology`) and InfiniBand `linkTypes` in
`sriov-node export device-plugin` and the [device_plugin] config_file, checked by the reference matcher of the
plugin (tests/deviceplugin.py) against the simulated host: a ConnectX-6 in InfiniBand mode, a ConnectX-5 (RoCE)
and an X710."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from sriov_node.host.observe import observe
from sriov_node.sim.kernel import SimKernel
from tests import deviceplugin
from tests.helpers import run_cli, sim_writes

X710, IB, CX5 = "0000:20:00.0", "0000:30:00.0", "0000:40:00.0"

LAYOUT = """
[device_plugin]
config_file = "/run/sriov-node/device-plugin/config.json"

[[pf]]
name = "ibs2f0"                 # ConnectX-6, InfiniBand: RDMA netdevs for MPI, VFs for DPDK
num_vfs = 4
  [[pf.vfs]]
  range = "0-1"
  driver = "mlx5_core"
  resource = "ib_rdma"
  rdma = true
  exclude_topology = true
  [[pf.vfs]]
  range = "2-3"
  driver = "vfio-pci"
  resource = "ib_dpdk"
  vhost_net = true

[[pf]]
name = "ens3f0"                 # ConnectX-5, Ethernet: RoCE
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  driver = "mlx5_core"
  resource = "roce"
  rdma = true

[[pf]]
name = "ens1f0"                 # X710: no options, as before
num_vfs = 2
  [[pf.vfs]]
  range = "0-1"
  driver = "iavf"
  resource = "netdev"
"""


@pytest.fixture
def host(make_host):
    return make_host(("x710", 1, None), ("cx6-ib", 1, None), ("cx5", 1, None))


def _apply(host, path):
    proc = run_cli("apply", root=host.root, config=path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _export(host, path):
    return run_cli("export", "device-plugin", "--json-only", root=host.root, config=path)


def _vfs(host, pf, indices):
    seen = observe(host).pf(pf)
    return sorted(seen.vf(i).pci for i in indices)


def test_the_reference_matcher_reads_link_types_and_rdma_devices():
    vf = deviceplugin.Device("0000:30:00.1", "15b3", "101c", "mlx5_core", "ibs2f0", IB, 0, 2, False, 0,
                             link_type="infiniband", rdma=False)
    assert deviceplugin.selector_matches({"linkTypes": ["infiniband"]}, vf)
    assert not deviceplugin.selector_matches({"linkTypes": ["ether"]}, vf)
    assert not deviceplugin.selector_matches({"isRdma": True}, vf)  # rdmamap finds no RDMA device: left out
    assert deviceplugin.selector_matches({"isRdma": False, "needVhostNet": True}, vf)  # vhost-net filters nothing
    with pytest.raises(AssertionError, match="isrdma must be a JSON boolean"):
        deviceplugin.match(json.dumps({"resourceList": [{"resourceName": "x", "selectors": {"isRdma": "true"}}]}), [])


def test_options_and_link_types_are_exported_and_select_exactly_the_configured_vfs(host, write_config):
    path = write_config(LAYOUT)
    _apply(host, path)

    proc = _export(host, path)

    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    ib_rdma, ib_dpdk, roce, netdev = doc["resourceList"]
    assert ib_rdma == {"resourceName": "ib_rdma", "resourcePrefix": "intel.com", "excludeTopology": True,
                       "selectors": {"vendors": ["15b3"], "devices": ["101c"], "drivers": ["mlx5_core"],
                                     "pfNames": ["ibs2f0#0-1"], "linkTypes": ["infiniband"], "isRdma": True}}
    assert ib_dpdk["selectors"] == {"vendors": ["15b3"], "devices": ["101c"], "drivers": ["vfio-pci"],
                                    "pfNames": ["ibs2f0#2-3"], "linkTypes": ["infiniband"], "needVhostNet": True}
    assert "excludeTopology" not in ib_dpdk
    # Ethernet: no linkTypes (exact without it); an RoCE resource still has isRdma
    assert roce["selectors"] == {"vendors": ["15b3"], "devices": ["1018"], "drivers": ["mlx5_core"],
                                 "pfNames": ["ens3f0#0-1"], "isRdma": True}
    assert netdev["selectors"] == {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"],
                                   "pfNames": ["ens1f0#0-1"]}
    pools = deviceplugin.match(proc.stdout, deviceplugin.devices(host.root))
    assert pools == {"intel.com/ib_rdma": _vfs(host, IB, (0, 1)), "intel.com/ib_dpdk": _vfs(host, IB, (2, 3)),
                     "intel.com/roce": _vfs(host, CX5, (0, 1)), "intel.com/netdev": _vfs(host, X710, (0, 1))}
    # the plugin mounts /dev/vhost-net only where it exists: said, not refused
    assert "vhost_net = true, and this host has no /dev/vhost-net" in proc.stderr and "modprobe vhost_net" in proc.stderr
    # the file a converged run wrote is the same document
    with open(os.path.join(host.root, "run/sriov-node/device-plugin/config.json")) as fh:
        assert json.load(fh) == doc


def test_rdma_vfs_without_an_rdma_device_are_refused_and_the_file_is_not_written(host, write_config):
    SimKernel(host.root).rdma_driver_loaded(False)  # mlx5_ib not loaded: mlx5_core VFs get no RDMA device
    path = write_config(LAYOUT)
    proc = _apply(host, path)
    assert "device plugin config /run/sriov-node/device-plugin/config.json not written" in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(host.root, "run/sriov-node/device-plugin/config.json"))

    proc = _export(host, path)

    assert proc.returncode == 1
    message = json.loads(proc.stdout)["error"]["message"]
    assert (f"pf[0].vfs[0].rdma: resource 'ib_rdma' has rdma = true, and VF(s) 0-1 of {IB} (ibs2f0) (bound to "
            "mlx5_core) have no RDMA device") in message
    assert "load the VFs' RDMA driver (mlx5_ib for mlx5_core" in message
    assert f"VF(s) 0-1 of {CX5} (ens3f0)" in message


def test_a_vf_whose_netdev_is_in_a_pod_is_not_judged(host, write_config):
    path = write_config(LAYOUT)
    _apply(host, path)
    vf = observe(host).pf(IB).vf(0).pci
    kernel = SimKernel(host.root)
    kernel.move_netdev_out(vf)  # exclusive RDMA mode: the pod's namespace took the netdev and the RDMA device
    for name in os.listdir(os.path.join(host.root, "sys/bus/pci/devices", vf, "infiniband")):
        os.unlink(os.path.join(host.root, "sys/class/infiniband", name))
    os.rename(os.path.join(host.root, "sys/bus/pci/devices", vf, "infiniband"), os.path.join(host.root, "gone"))

    proc = _export(host, path)

    assert proc.returncode == 0, proc.stdout
    assert json.loads(proc.stdout)["resourceList"][0]["selectors"]["pfNames"] == ["ibs2f0#0-1"]


def test_a_resource_across_link_types_is_refused(host, write_config):
    path = write_config("""
        [[pf]]
        name = "ibs2f0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0-1"
          driver = "vfio-pci"
          resource = "dpdk"
        [[pf]]
        name = "ens3f0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0-1"
          driver = "vfio-pci"
          resource = "dpdk"
    """)
    _apply(host, path)

    proc = _export(host, path)

    assert proc.returncode == 1
    assert (f"resource 'dpdk' has VFs of two link types: ether (of {CX5} (ens3f0)) and infiniband (of {IB} "
            "(ibs2f0)); one CNI serves one link type") in json.loads(proc.stdout)["error"]["message"]


def test_rdma_on_an_accelerator_resource_is_refused(make_host, write_config):
    host = make_host(("hisi-zip", 1, None))
    path = write_config("""
        [[pf]]
        pci = "0000:20:00.0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0-1"
          driver = "hisi_zip"
          resource = "zip"
          rdma = true
    """)
    _apply(host, path)

    proc = _export(host, path)

    assert proc.returncode == 1
    assert ("pf[0].vfs[0].rdma: resource 'zip' is an accelerator resource (the VFs of 0000:20:00.0), and rdma is a "
            "network device selector") in json.loads(proc.stdout)["error"]["message"]


@pytest.mark.parametrize("group,key,words", [
    ('driver = "vfio-pci"\nresource = "a"\nrdma = true', "pf[0].vfs[0].rdma",
     "true with driver = 'vfio-pci': a VF's RDMA device"),
    ('driver = "mlx5_vfio_pci"\nresource = "a"\nrdma = true', "pf[0].vfs[0].rdma",
     "true with driver = 'mlx5_vfio_pci'"),
    ('driver = "iavf"\nvhost_net = true', "pf[0].vfs[0].vhost_net",
     "is an option of the group's device plugin resource, and the group names none"),
    ('driver = "iavf"\nresource = "a"\nexclude_topology = "yes"', "pf[0].vfs[0].exclude_topology",
     "must be true or false, got a string"),
])
def test_bad_options_are_refused_naming_the_key(host, write_config, group, key, words):
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\n' + group + "\n")

    for command in ("validate", "apply"):
        proc = run_cli(command, root=host.root, config=path)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{path}: {key}: {words}" in proc.stderr, proc.stderr
    assert sim_writes(host) == []


def test_a_resource_has_one_value_of_each_option(host, write_config):
    path = write_config(textwrap.dedent("""
        [[pf]]
        name = "ens3f0"
        num_vfs = 4
          [[pf.vfs]]
          range = "0-1"
          driver = "mlx5_core"
          resource = "roce"
          rdma = true
        [[pf]]
        name = "ibs2f0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0-1"
          driver = "mlx5_core"
          resource = "roce"
    """))

    proc = run_cli("apply", root=host.root, config=path)

    assert proc.returncode == 2
    assert (f"{path}: pf[1].vfs[0].rdma: false here but true in pf[0].vfs[0] (resource 'roce'): the device plugin "
            "gives a resource one rdma; write rdma = true in both, or name a second resource") in proc.stderr
    assert sim_writes(host) == []
