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


# ---------------------------------------------------------------------------- held VFs keep their settings
# While a VF is in use (its netdev in a pod, its vfio group or uio device open), its own settings
# (mac, vlan, trust, rates, its netdev's MTU) are its holder's: apply writes none of them, status says
# "held" (by whom), never a difference; once released, the next run sets them.

def _settings(vfio: bool = False) -> str:
    driver = 'driver = "vfio-pci"\n' if vfio else ""
    return (f'[[pf]]\npci = "{PF0}"\nnum_vfs = 4\n'
            f'[[pf.vfs]]\nrange = "0"\n{driver}mac = "02:00:00:00:aa:00"\nvlan = 20\n'
            f'[[pf.vfs]]\nrange = "1"\n{driver}mac = "02:00:00:00:aa:01"\nvlan = 20\n'
            + (f'[[pf.vfs]]\nrange = "2-3"\n{driver}' if vfio else ""))


def _vf_links(host):
    from tests.helpers import open_host

    return open_host(host.root).links.vf_links("ens1f0")


def _link_writes(host):
    return [v for p, v, _ in sim_writes(host) if p == "netlink" and "RTM_SETLINK" in v]


def _status(host, config):
    result = run_cli("status", "--json", root=host.root, config=config)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_vf_whose_netdev_is_in_a_pod_keeps_its_settings_until_it_comes_back(make_host, write_config):
    host = make_host()
    assert run_cli("apply", root=host.root, config=write_config(_settings().split("[[pf.vfs]]")[0])).returncode == 0
    vf1 = host.sysfs.vf_address(PF0, 1)
    SimKernel(host.root).move_netdev_out(vf1)  # the SR-IOV CNI moved it into a pod
    config = write_config(_settings())
    writes = len(_link_writes(host))
    applied = run_cli("apply", "--json", root=host.root, config=config)
    body = json.loads(applied.stdout)
    assert applied.returncode == 0, applied.stdout
    (pf,) = body["pfs"]
    assert pf["status"] == "changed"  # VF 0 got its settings ...
    assert _vf_links(host)[0].mac == "02:00:00:00:aa:00" and _vf_links(host)[0].vlan == 20
    assert (_vf_links(host)[1].mac, _vf_links(host)[1].vlan) == ("00:00:00:00:00:00", 0)  # ... VF 1 none
    assert len(_link_writes(host)) == writes + 1 and "vf 1" not in _link_writes(host)[-1].lower()
    assert {(f["vf"], f["attr"], f["held_by"]) for f in pf["held"]} == {
        (1, "mac", "netdev in another network namespace"), (1, "vlan", "netdev in another network namespace")}
    assert not [f for f in pf["findings"] if f["vf"] == 1]
    assert any("VF 1 is in use (netdev in another network namespace)" in n for n in body["notices"])
    again = run_cli("apply", "--json", root=host.root, config=config)  # nothing to do, nothing retried
    assert again.returncode == 0 and json.loads(again.stdout)["writes"] == 0
    assert json.loads(again.stdout)["pfs"][0]["status"] == "unchanged"

    status = _status(host, config)
    assert status["converged"] is True and status["pfs"][0]["converged"] is True
    vf = status["pfs"][0]["vfs"][1]
    assert vf["matches"] is None and vf["findings"] == [] and vf["held_by"] == "netdev in another network namespace"
    assert vf["note"].startswith("held (netdev in another network namespace): mac 00:00:00:00:00:00, want mac 02")
    text = run_cli("status", root=host.root, config=config)
    assert "converged, 1 VF(s) held" in text.stdout and "DIFFERS" not in text.stdout
    assert run_cli("status", "--exit-code", root=host.root, config=config).returncode == 0

    SimKernel(host.root).move_netdev_back(vf1)  # the pod is gone
    released = run_cli("apply", "--json", root=host.root, config=config)
    assert released.returncode == 0 and json.loads(released.stdout)["pfs"][0]["status"] == "changed"
    assert (_vf_links(host)[1].mac, _vf_links(host)[1].vlan) == ("02:00:00:00:aa:01", 20)
    assert _status(host, config)["pfs"][0]["vfs"][1]["matches"] is True


def test_a_vf_held_by_a_vm_through_vfio_keeps_its_settings_until_released(make_host, write_config):
    host = make_host()
    assert run_cli("apply", root=host.root, config=write_config(_vfio(4))).returncode == 0
    _held_by_vm(host, 1)
    config = write_config(_settings(vfio=True))
    dry = run_cli("apply", "--dry-run", "--json", root=host.root, config=config)
    planned = json.loads(dry.stdout)["actions"]
    assert dry.returncode == 0 and planned, dry.stdout
    assert {(a["op"], v["vf"]) for a in planned for v in a["vfs"]} == {("set_vf_mac", 0), ("set_vf_vlan", 0)}
    applied = run_cli("apply", "--json", root=host.root, config=config)
    assert applied.returncode == 0, applied.stdout
    assert (_vf_links(host)[1].mac, _vf_links(host)[1].vlan) == ("00:00:00:00:00:00", 0)
    assert _vf_links(host)[0].vlan == 20
    held = json.loads(applied.stdout)["pfs"][0]["held"]
    assert {f["held_by"] for f in held} == {"pid 4242 (qemu-kvm)"}
    status = _status(host, config)
    assert status["converged"] is True and status["pfs"][0]["vfs"][1]["note"].startswith("held (pid 4242 (qemu-kvm))")
    metrics = run_cli("metrics", root=host.root, config=config).stdout
    assert "sriov_node_converged 1" in metrics and 'sriov_node_pf_differences{pf="%s"' % PF0 in metrics
    assert [line for line in metrics.splitlines() if line.startswith("sriov_node_pf_differences")][0].endswith(" 0")

    SimKernel(host.root).release(4242)
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    assert (_vf_links(host)[1].mac, _vf_links(host)[1].vlan) == ("02:00:00:00:aa:01", 20)


def test_a_held_vf_whose_driver_must_change_is_still_refused(make_host, write_config):
    host = make_host()
    assert run_cli("apply", root=host.root, config=write_config(_vfio(4))).returncode == 0
    _held_by_vm(host, 1)
    writes = len(sim_writes(host))
    result = run_cli("apply", "--json", root=host.root, config=write_config(_settings()))
    body = json.loads(result.stdout)
    assert result.returncode == 3 and body["pfs"][0]["status"] == "refused", result.stdout
    assert "VF 1" in body["pfs"][0]["error"] and "pid 4242 (qemu-kvm)" in body["pfs"][0]["error"]
    assert len(sim_writes(host)) == writes
    smaller = run_cli("apply", "--json", root=host.root, config=write_config(_settings(vfio=True).replace("= 4", "= 3").replace("2-3", "2")))
    assert smaller.returncode == 3 and "refusing to disable all VFs" in json.loads(smaller.stdout)["pfs"][0]["error"]
    assert len(sim_writes(host)) == writes


def test_the_daemon_leaves_a_held_vf_alone_and_does_not_retry_it(make_host, write_config):
    import logging

    from sriov_node.engine.survey import load_desired
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    host = make_host()
    path = write_config(_settings())
    d = Daemon(host, path, notifier=Notifier(enabled=False), log=logging.getLogger("sriov-node-test"))
    d.desired = load_desired(host, path)
    assert d.run_once(None).exit_code == 0
    SimKernel(host.root).move_netdev_out(host.sysfs.vf_address(PF0, 1))
    host.links.set_vf_links("ens1f0", [(1, {"vlan": (30, 0, "802.1Q")})])  # the CNI's VLAN for the pod
    writes = len(sim_writes(host))
    for _ in range(2):
        report = d.run_once(frozenset({PF0}))
        assert [(o.pci, o.status, o.writes) for o in report.outcomes] == [(PF0, "unchanged", 0)]
        assert not d.failures and not d.not_before  # no back-off, nothing to retry
    assert len(sim_writes(host)) == writes and _vf_links(host)[1].vlan == 30


def test_the_mtu_of_a_vf_netdev_in_a_pod_is_shown_held_not_ok(make_host, write_config):
    host = make_host()
    config = write_config(f'[[pf]]\npci = "{PF0}"\nnum_vfs = 2\nmtu = 9000\n[[pf.vfs]]\nrange = "0-1"\nmtu = 9000\n')
    assert run_cli("apply", root=host.root, config=config).returncode == 0
    SimKernel(host.root).move_netdev_out(host.sysfs.vf_address(PF0, 1))
    vf = _status(host, config)["pfs"][0]["vfs"][1]
    assert vf["matches"] is None and vf["note"] == "held (netdev in another network namespace): MTU not visible here, want 9000"
    again = run_cli("apply", "--json", root=host.root, config=config)
    assert again.returncode == 0 and json.loads(again.stdout)["writes"] == 0
