"""`sriov-node check` against a real Linux 6.1 kernel (QEMU: NVMe SR-IOV PFs, intel-iommu on and off)."""

from __future__ import annotations

import json
import re
from typing import Any, Dict

import pytest

from tests.lab.conftest import boot

SCRIPT = "tests/lab/guest_check.py"
SMALL, BIG = "0000:01:00.0", "0000:02:00.0"


@pytest.fixture(scope="session")
def check_on() -> Dict[str, Any]:
    return boot("check-on", script=SCRIPT)


@pytest.fixture(scope="session")
def check_off() -> Dict[str, Any]:
    return boot("check-off", script=SCRIPT, LAB_IOMMU="off")


@pytest.fixture(scope="session")
def check_cmdline_off() -> Dict[str, Any]:
    # the intel-iommu device (a DMAR table) is there; the last intel_iommu= on the command line says off
    return boot("check-cmdline-off", script=SCRIPT, LAB_APPEND="intel_iommu=off")


def body(run: Dict[str, Any]) -> Dict[str, Any]:
    assert run["stdout"], run
    return json.loads(run["stdout"])


def result(run: Dict[str, Any], check_id: str, subject: Any = None) -> Dict[str, Any]:
    (found,) = [c for c in body(run)["checks"] if c["id"] == check_id and (subject is None or c["subject"] == subject)]
    return found


def test_the_nvme_pf_config_space_is_parsed_as_lspci_reads_it(check_on):
    assert check_on["pf_drivers"], check_on["setup"]
    run = check_on["check"]
    assert run["rc"] == 0, run
    cap = result(run, "sriov_capability", SMALL)
    assert cap["status"] == "ok" and "SR-IOV capability at 0x120: TotalVFs 4" in cap["seen"], cap
    lspci = check_on["kernel"]["lspci_small"]
    offset = re.search(r"Capabilities: \[([0-9a-f]+) v1\] Single Root I/O Virtualization", lspci).group(1)
    assert f"at 0x{offset}:" in cap["seen"] and "Total VFs: 4" in lspci
    bar = re.search(r"Region 0: Memory at 0*([0-9a-f]+) \(64-bit", lspci.split("Single Root")[1]).group(1)
    assert f"VF BAR0 at 0x{bar}" in cap["seen"]
    assert "TotalVFs 64" in result(run, "sriov_capability", BIG)["seen"]


def test_iommu_on_in_the_lab_kernel(check_on):
    run = check_on["check"]
    kernel = check_on["kernel"]
    iommu = result(run, "iommu")
    assert iommu["status"] == "ok" and f"{kernel['iommu_groups']} IOMMU group(s)" in iommu["seen"]
    assert kernel["class_iommu"] == ["dmar0"] and "dmar0" in iommu["seen"]
    assert "DMAR" in kernel["acpi_tables"] and "Intel VT-d (DMAR table)" in result(run, "cpu")["seen"]
    assert result(run, "iommu_passthrough")["status"] == "ok"
    assert result(run, "kernel_args")["seen"] == "running kernel (/proc/cmdline) has intel_iommu=on iommu=pt"
    assert "intel_iommu=on iommu=pt" in kernel["cmdline"]


def test_ari_forwarding_of_the_root_port_above_the_64_vf_pf(check_on):
    ari = result(check_on["check"], "ari", BIG)
    assert ari["status"] == "ok" and "root port 0000:00:02.0 supports ARI forwarding (enabled)" in ari["seen"]
    assert "ARIFwd+" in check_on["kernel"]["lspci_port"]


def test_without_cap_sys_admin_the_config_space_check_skips(check_on):
    assert check_on["config_bytes_nobody"]["stdout"].strip() == "64"
    run = check_on["check_nobody"]
    assert run["rc"] == 0, run
    cap = result(run, "sriov_capability", SMALL)
    assert cap["status"] == "skip" and "only 64 bytes" in cap["seen"] and cap["fix"] == "run sriov-node check as root"


def test_fix_on_the_live_root_writes_its_dropin_and_runs_update_grub_once(check_on):
    first, again = check_on["fix"], check_on["fix_again"]
    assert first["rc"] == 0, first
    assert 'GRUB_CMDLINE_LINUX="console=ttyS0"' in first["grub"]  # nothing to remove: not edited, no backup
    assert first["dropin"].endswith('\nGRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} intel_iommu=on iommu=pt"\n')
    assert first["backups"] == [] and first["calls"] == ["update-grub "]
    fix = body(first)["fix"]
    assert fix["commands"][0]["ran"] and fix["commands"][0]["exit_code"] == 0
    assert first["reboot_required"].startswith("<")  # the running kernel already has them: no reboot
    assert result(first, "bootloader")["status"] == "ok"
    assert again["rc"] == 0 and body(again)["fix"]["nothing_to_do"]
    assert again["grub"] == first["grub"] and again["calls"] == ["update-grub "] and again["backups"] == first["backups"]
    assert again["dropin"] == first["dropin"]


def test_apply_passes_the_preflight_with_the_iommu_on(check_on):
    assert check_on["apply"]["rc"] == 0, check_on["apply"]
    assert check_on["numvfs_after_apply"] == "4"


def test_iommu_off_in_the_lab_kernel(check_off):
    kernel = check_off["kernel"]
    assert kernel["iommu_groups"] == 0 and "DMAR" not in kernel["acpi_tables"]
    run = check_off["check"]
    assert run["rc"] == 1, run
    iommu = result(run, "iommu")
    assert iommu["status"] == "fail" and "no DMAR (Intel VT-d) or IVRS (AMD-Vi) ACPI table" in iommu["seen"]
    assert "the kernel command line also has intel_iommu=off" in iommu["seen"]
    assert "in the BIOS/UEFI setup" in iommu["fix"]


def test_apply_refuses_vfio_without_an_iommu_and_writes_nothing(check_off):
    run = check_off["apply"]
    assert run["rc"] == 3, run
    (pf,) = body(run)["pfs"]
    assert pf["status"] == "refused" and "must bind to vfio-pci, but the IOMMU is off" in pf["error"]
    assert "intel_iommu=off" in run["stderr"]
    assert check_off["numvfs_after_apply"] == "0"  # the kernel's own count: no VF was created


def test_fix_records_the_pending_reboot_and_status_shows_it(check_off):
    first, again = check_off["fix"], check_off["fix_again"]
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"' in first["grub"] and 'GRUB_CMDLINE_LINUX=""' in first["grub"]
    assert first["dropin"].endswith('\nGRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} iommu=pt"\n')
    assert len(first["backups"]) == 1  # /etc/default/grub, where intel_iommu=off was removed
    assert "reboot to use them" in first["reboot_required"] and first["calls"] == ["update-grub "]
    assert body(first)["fix"]["summary"] == "adds iommu=pt; removes intel_iommu=off"
    assert body(again)["fix"]["nothing_to_do"] and again["calls"] == ["update-grub "]
    assert "reboot required: " in check_off["status"]["stdout"]


def test_iommu_off_on_the_command_line_is_not_the_bios(check_cmdline_off):
    kernel = check_cmdline_off["kernel"]
    assert "DMAR" in kernel["acpi_tables"] and kernel["iommu_groups"] == 0
    assert kernel["cmdline"].endswith("intel_iommu=on iommu=pt intel_iommu=off")
    run = check_cmdline_off["check"]
    iommu = result(run, "iommu")
    assert run["rc"] == 1 and iommu["status"] == "fail"
    assert "the kernel command line turns it off: intel_iommu=off" in iommu["seen"] and "DMAR" not in iommu["seen"]
    assert "intel_iommu=on is overridden by a later argument" in result(run, "kernel_args")["seen"]
    assert check_cmdline_off["apply"]["rc"] == 3
