"""VFs in use: `apply` refuses (exit 3) every plan that would take a held VF from its driver, and
`apply --dry-run` predicts that refusal with the same judgement; the message says what the plan
would do to each held VF (disable all VFs, unbind from X and bind to Y, unbind for an eswitch mode
change) and who holds it.
"""

from __future__ import annotations

import json

import pytest

from sriov_node.sim.kernel import SimKernel
from tests.helpers import PF0, run_cli, sim_writes

CX5 = PF0  # a host with one NIC puts it on bus 0x20


def _vfio(n: int, driver: str = "vfio-pci") -> str:
    return f'[[pf]]\npci = "{PF0}"\nnum_vfs = {n}\n[[pf.vfs]]\nrange = "0-{n - 1}"\ndriver = "{driver}"\n'


def _held_by_vm(host, vf):
    SimKernel(host.root).hold_vf(host.sysfs.vf_address(PF0, vf), 4242, "qemu-kvm")
    return "/dev/vfio/", "pid 4242 (qemu-kvm)"


def _in_a_pod(host, vf, pf=PF0):
    SimKernel(host.root).move_netdev_out(host.sysfs.vf_address(pf, vf))
    return "netdev is not in the host network namespace", "moved into a pod"


# (name, NICs, the config before, how the VF is held, the config after, held VF, the words for it, the summary)
CASES = [
    ("count change", ("x710", 2, None), _vfio(4), _held_by_vm, _vfio(3), 1,
     "would be removed: all VFs are disabled (sriov_numvfs 4 -> 0 -> 3)", "refusing to disable all VFs"),
    ("count to zero", ("x710", 2, None), _vfio(2), _held_by_vm, f'[[pf]]\npci = "{PF0}"\nnum_vfs = 0\n', 0,
     "would be removed: all VFs are disabled (sriov_numvfs 2 -> 0)", "refusing to disable all VFs"),
    ("rebind", ("x710", 2, None), _vfio(2), _held_by_vm, _vfio(2, "iavf"), 0,
     "would be unbound from vfio-pci and bound to iavf", "refusing to unbind VF(s) 0-1"),
    ("unbind to none", ("x710", 2, None), _vfio(2), _held_by_vm, _vfio(2, "none"), 1,
     "would be unbound from vfio-pci and left unbound", "refusing to unbind VF(s) 0-1"),
    ("back to the default driver", ("x710", 2, None), _vfio(2), _held_by_vm, f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n', 0,
     "would be unbound from vfio-pci and given the kernel's default driver", "refusing to unbind VF(s) 0-1"),
    ("netdev in a pod, rebind", ("x710", 2, None), f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n', _in_a_pod,
     _vfio(2), 1, "would be unbound from iavf and bound to vfio-pci", "refusing to unbind VF(s) 0-1"),
    ("netdev in a pod, count change", ("x710", 2, None), f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n', _in_a_pod,
     f'[[pf]]\npci = "{PF0}"\nnum_vfs = 3\n', 0, "would be removed: all VFs are disabled (sriov_numvfs 2 -> 0 -> 3)",
     "refusing to disable all VFs"),
    ("mlx5 eswitch mode change", ("cx5", 1, None), f'[[pf]]\npci = "{CX5}"\nnum_vfs = 2\n',
     lambda host, vf: _in_a_pod(host, vf, CX5),
     f'[[pf]]\npci = "{CX5}"\nnum_vfs = 2\neswitch_mode = "switchdev"\n', 1,
     "would be unbound from mlx5_core for the eswitch mode change to switchdev, then given the kernel's default driver",
     "refusing to unbind VF(s) 0-1 for an eswitch mode change"),
]


@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run"])
@pytest.mark.parametrize("name,nic,before,hold,after,vf,words,summary", CASES, ids=[c[0] for c in CASES])
def test_a_held_vf_refuses_the_plan_and_the_dry_run_predicts_it(make_host, write_config, dry_run,
                                                                 name, nic, before, hold, after, vf, words, summary):
    host = make_host(nic)
    first = run_cli("apply", root=host.root, config=write_config(before))
    assert first.returncode == 0, first.stderr
    clues = hold(host, vf)
    writes = len(sim_writes(host))
    config = write_config(after)
    args = ["apply", "--json"] + (["--dry-run"] if dry_run else [])
    result = run_cli(*args, root=host.root, config=config)
    body = json.loads(result.stdout)
    assert result.returncode == 3, result.stderr
    assert (body["result"], body["exit_code"]) == ("refused", 3)
    (pf,) = body["pfs"]
    assert pf["status"] == "refused"
    assert summary in pf["error"] and f"VF {vf} (" in pf["error"] and words in pf["error"]
    assert all(clue in pf["error"] for clue in clues)
    assert "--force" in pf["error"]
    assert pf["detail"]["held_vfs"] == [vf]
    assert len(sim_writes(host)) == writes  # nothing written, either way
    if dry_run:  # the text form says it too
        text = run_cli("apply", "--dry-run", root=host.root, config=config)
        assert text.returncode == 3 and "refused" in text.stdout and words in text.stderr


def test_force_goes_ahead_and_the_dry_run_says_planned(make_host, write_config):
    host = make_host()
    run_cli("apply", root=host.root, config=write_config(_vfio(2)))
    _held_by_vm(host, 0)
    config = write_config(_vfio(2, "none"))
    dry = json.loads(run_cli("apply", "--dry-run", "--json", "--force", root=host.root, config=config).stdout)
    assert (dry["result"], dry["exit_code"]) == ("planned", 0) and dry["pfs"][0]["status"] == "planned"


def test_a_held_vf_the_plan_leaves_alone_refuses_nothing(make_host, write_config):
    host = make_host()
    run_cli("apply", root=host.root, config=write_config(_vfio(2)))
    _held_by_vm(host, 0)
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0"\ndriver = "vfio-pci"\n'
                          '[[pf.vfs]]\nrange = "1"\ndriver = "iavf"\n')  # only VF 1 moves
    dry = run_cli("apply", "--dry-run", "--json", root=host.root, config=config)
    assert dry.returncode == 0 and json.loads(dry.stdout)["result"] == "planned"
    applied = run_cli("apply", "--json", root=host.root, config=config)
    assert applied.returncode == 0, applied.stdout


def test_a_dpdk_app_holding_a_vf_on_uio_pci_generic_refuses_its_return_to_the_default_driver(make_host, write_config):
    host = make_host()
    path = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\n')
    run_cli("apply", root=host.root, config=path)
    vf1 = host.sysfs.vf_address(PF0, 1)
    kernel = SimKernel(host.root)
    kernel.load_module("uio_pci_generic")
    host.sysfs.set_driver_override(vf1, "uio_pci_generic")
    host.sysfs.unbind(vf1, "iavf")
    host.sysfs.drivers_probe(vf1)
    host.sysfs.set_driver_override(vf1, None)
    kernel.hold_vf(vf1, 777, "dpdk-testpmd")
    for args in (["apply", "--dry-run", "--json"], ["apply", "--json"]):
        result = run_cli(*args, root=host.root, config=path)
        error = json.loads(result.stdout)["pfs"][0]["error"]
        assert result.returncode == 3, error
        assert "VF 1" in error and "/dev/uio0 is open by pid 777 (dpdk-testpmd)" in error
        assert "would be unbound from uio_pci_generic and given the kernel's default driver" in error
    assert host.sysfs.device_driver(vf1) == "uio_pci_generic"
