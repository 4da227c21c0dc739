"""A refused InfiniBand VF GUID names the key the file sets and its value (`guid = "auto"`,
`node_guid = "..."`, `port_guid = "..."`) and every VF it is set for, in `validate`, `apply --dry-run` and
`apply` alike; never a made-up `guid = "guid"`."""

from __future__ import annotations

import pytest

from sriov_node.sim.build import create_host
from sriov_node.sim.kernel import SimKernel
from tests.helpers import open_host, run_cli, sim_writes

IB, CX5 = "0000:20:00.0", "0000:30:00.0"  # a ConnectX-6 port in InfiniBand mode; a ConnectX-5 (Ethernet)
NODE, PORT = "02:11:22:33:44:55:66:77", "02:11:22:33:44:55:66:78"
COMMANDS = [("validate",), ("apply", "--dry-run"), ("apply",)]


@pytest.fixture
def host(tmp_path):
    root = str(tmp_path / "node")
    create_host(root, (("cx6-ib", 1, None), ("cx5", 1, None)))
    return open_host(root)


def _run(host, tmp_path, command, pci, groups):
    path = tmp_path / "config.toml"
    path.write_text(f'version = 1\n[[pf]]\npci = "{pci}"\nnum_vfs = 2\n' + groups)
    before = len(sim_writes(host))
    done = run_cli(*command, root=host.root, config=str(path))
    assert done.returncode == 1, done.stdout + done.stderr
    assert len(sim_writes(host)) == before  # nothing written
    return done.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_auto_on_an_ethernet_pf_names_guid_auto_and_every_vf(host, tmp_path, command):
    err = _run(host, tmp_path, command, CX5, '[[pf.vfs]]\nrange = "0-1"\nguid = "auto"\n')
    assert 'VF(s) 0-1: pf[0].vfs[0].guid = "auto": VF GUIDs are InfiniBand\'s' in err, err
    assert '= "guid"' not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_given_guids_on_an_ethernet_pf_name_each_key_and_its_value(host, tmp_path, command):
    err = _run(host, tmp_path, command, CX5,
               f'[[pf.vfs]]\nrange = "0"\nnode_guid = "{NODE}"\nport_guid = "{PORT}"\n'
               f'[[pf.vfs]]\nrange = "1"\nport_guid = "{PORT[:-2]}79"\n')
    assert f'VF(s) 0: pf[0].vfs[0].node_guid = "{NODE}": VF GUIDs are InfiniBand\'s' in err, err
    assert f'VF(s) 0: pf[0].vfs[0].port_guid = "{PORT}"' in err, err
    assert f'VF(s) 1: pf[0].vfs[1].port_guid = "{PORT[:-2]}79"' in err, err
    assert '= "guid"' not in err and "pf[0].vfs[1].node_guid" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_auto_without_the_pfs_guid_names_guid_auto(host, tmp_path, command):
    SimKernel(host.root).rdma_driver_loaded(False)  # mlx5_ib not loaded: the PF has no node GUID to derive from
    host.sysfs.unbind(IB, "mlx5_core")
    host.sysfs.drivers_probe(IB)  # bound again, without an RDMA device
    assert host.sysfs.device_driver(IB) == "mlx5_core"
    assert not host.sysfs.listdir("sys/bus/pci/devices", IB, "infiniband")
    err = _run(host, tmp_path, command, IB, '[[pf.vfs]]\nrange = "0-1"\nguid = "auto"\n')
    assert 'VF(s) 0-1: pf[0].vfs[0].guid = "auto": guid = "auto" derives from the PF\'s InfiniBand GUID' in err, err
