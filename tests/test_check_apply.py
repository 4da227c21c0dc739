"""`apply` runs the platform check its actions need before a PF's plan: vfio-pci without an IOMMU
is refused (exit 3) before anything is written, and only for that PF."""

from __future__ import annotations

import json

from sriov_node.engine.reconcile import reconcile
from sriov_node.engine.survey import load_desired
from sriov_node.sim.kernel import SimKernel
from sriov_node.sim.platform import SimPlatform
from tests.helpers import run_cli, sim_writes
from tests.test_apply import TWO_PFS as MIXED  # PF0: VFs 0-1 on vfio-pci, 2-3 the default; PF1: 2 VFs

from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)


def test_vfio_without_iommu_is_refused_before_any_write(make_host, write_config):
    host = make_host(iommu=False)
    result = run_cli("apply", "--json", root=host.root, config=write_config(MIXED))
    assert result.returncode == 3, result.stderr
    outcomes = {o["pci"]: o for o in json.loads(result.stdout)["pfs"]}
    refused = outcomes[PF0]
    assert refused["status"] == "refused" and refused["writes"] == 0
    assert refused["error"].startswith(f"PF {PF0}: VF(s) 0-1 must bind to vfio-pci, but the IOMMU is off")
    assert "intel_iommu=on is not on the kernel command line" in refused["error"]
    assert "Fix: sriov-node check --fix (adds intel_iommu=on iommu=pt), then reboot" in refused["error"]
    assert refused["detail"]["check"] and refused["findings"]
    assert outcomes[PF1]["status"] == "changed"  # the other PF still converges
    assert host.sysfs.num_vfs(PF0) == 0 and not [w for w in sim_writes(host) if PF0 in w[0] or PF0 in w[1]]
    assert "must bind to vfio-pci, but the IOMMU is off" in run_cli("apply", root=host.root,
                                                                    config=write_config(MIXED)).stderr


def test_the_refusal_names_the_firmware_when_it_has_no_iommu(make_host, write_config):
    host = make_host(iommu=False, platform=SimPlatform(bios_iommu=False))
    report = reconcile(host, load_desired(host, write_config(MIXED)))
    assert report.exit_code == 3
    assert "no DMAR (Intel VT-d) or IVRS (AMD-Vi) ACPI table" in report.outcomes[0].error
    assert "enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the BIOS/UEFI setup" in report.outcomes[0].error


def test_a_fixed_boot_loader_is_named_in_the_refusal(make_host, write_config):
    host = make_host(iommu=False, platform=SimPlatform(boot_args="intel_iommu=on iommu=pt"))
    report = reconcile(host, load_desired(host, write_config(MIXED)))
    assert "Fix: reboot: the next boot already has intel_iommu=on iommu=pt" in report.outcomes[0].error


def test_kernel_drivers_need_no_iommu(make_host, write_config):
    host = make_host(iommu=False)
    result = run_cli("apply", root=host.root, config=write_config(MIXED.replace('driver = "vfio-pci"', 'driver = "iavf"')))
    assert result.returncode == 0, result.stderr


def test_with_the_iommu_on_vfio_binds(make_host, write_config):
    host = make_host()
    result = run_cli("apply", root=host.root, config=write_config(MIXED))
    assert result.returncode == 0, result.stderr
    assert host.sysfs.device_driver(host.sysfs.vf_address(PF0, 0)) == "vfio-pci"


def test_a_converged_host_runs_no_preflight(make_host, write_config, monkeypatch):
    import sriov_node.engine.preflight as preflight_module

    host = make_host()
    path = write_config(MIXED)
    assert reconcile(host, load_desired(host, path)).exit_code == 0
    calls = []
    monkeypatch.setattr(preflight_module, "preflight", lambda h, p: calls.append(p.pf))
    report = reconcile(host, load_desired(host, path))
    assert report.exit_code == 0 and report.writes == 0 and calls == []


def test_a_failed_bind_still_restores_autoprobe(make_host, write_config):
    # vfio-pci refusing a VF past the preflight (here a probe failure) takes the clean-up path
    host = make_host()
    SimKernel(host.root).add_fault("probe_fails", driver="vfio-pci", errno="EINVAL")
    report = reconcile(host, load_desired(host, write_config(MIXED)))
    assert report.outcomes[0].status == "failed"
    assert host.sysfs.read("sys/bus/pci/devices", PF0, "sriov_drivers_autoprobe") == "1"
    assert [host.sysfs.device_driver(host.sysfs.vf_address(PF0, i)) for i in (2, 3)] == ["iavf", "iavf"]


def test_a_dry_run_says_what_apply_would_refuse(make_host, write_config):
    host = make_host(iommu=False)
    config = write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n')
    result = run_cli("apply", "--dry-run", "--json", root=host.root, config=config)
    assert result.returncode == 3, result.stderr
    (pf,) = json.loads(result.stdout)["pfs"]
    assert pf["status"] == "refused" and "IOMMU" in pf["error"] and pf["actions"]
