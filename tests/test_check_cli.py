"""`sriov-node check` through the console script, on simulated hosts built for each case."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sriov_node.sim.platform import SimPlatform
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parent.parent
from tests.helpers import PF0, PF1  # noqa: E402  (the first NIC's two ports)
MGMT = "0000:02:00.0"  # eno1: a network function without SR-IOV
VFIO = '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\ndriver = "vfio-pci"\n'
IAVF = '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\ndriver = "iavf"\n'


def check(host, *args, config=None):
    result = run_cli("check", "--json", *args, root=host.root, config=config)
    body = json.loads(result.stdout)
    return result.returncode, body


def by_id(body, check_id, subject=None):
    found = [c for c in body["checks"] if c["id"] == check_id and (subject is None or c["subject"] == subject)]
    assert len(found) == 1, (check_id, subject, body["checks"])
    return found[0]


def test_a_healthy_host_passes_and_the_json_has_its_shape(make_host):
    host = make_host()
    code, body = check(host)
    assert code == 0 and body["result"] == "warn" and body["exit_code"] == 0  # eno1 cannot make VFs
    assert set(body) == {"root", "config", "vfio", "assumed", "result", "exit_code", "counts", "checks",
                         "reboot_required"}
    assert body["config"] is None and "no config" in body["assumed"]
    assert [(c["id"], c["subject"]) for c in body["checks"]] == [
        ("cpu", None), ("iommu", None), ("iommu_passthrough", None), ("kernel_args", None), ("bootloader", "grub"),
        ("sriov_capability", MGMT), ("pf_driver", PF0), ("sriov_capability", PF0), ("ari", PF0),
        ("pf_driver", PF1), ("sriov_capability", PF1), ("ari", PF1), ("vf_capable", None),
        ("module", "vfio-pci"), ("networkmanager", None)]
    assert all(set(c) == {"id", "subject", "block", "status", "seen", "fix"} for c in body["checks"])
    assert body["counts"] == {"ok": 14, "warn": 1, "fail": 0, "skip": 0}
    assert by_id(body, "sriov_capability", MGMT)["status"] == "warn"


def test_text_output_names_each_check_and_its_fix(make_host):
    host = make_host(iommu=False)
    result = run_cli("check", root=host.root)
    assert result.returncode == 1
    assert "FAIL  iommu" in result.stdout and "fix: sriov-node check --fix (adds intel_iommu=on iommu=pt)" in result.stdout
    assert result.stdout.rstrip().endswith("10 ok, 1 warn, 3 fail, 1 skip")


def test_iommu_off_in_the_bios(make_host):
    code, body = check(make_host(iommu=False, platform=SimPlatform(bios_iommu=False)))
    assert code == 1
    r = by_id(body, "iommu")
    assert r["status"] == "fail" and "no DMAR (Intel VT-d) or IVRS (AMD-Vi) ACPI table" in r["seen"]
    assert "in the BIOS/UEFI setup" in r["fix"]


def test_iommu_off_on_the_command_line(make_host):
    code, body = check(make_host(iommu=False, platform=SimPlatform(cmdline="intel_iommu=off")))
    r = by_id(body, "iommu")
    assert code == 1 and "turns it off: intel_iommu=off" in r["seen"] and "DMAR" not in r["seen"]
    assert by_id(body, "kernel_args")["status"] == "fail"


def test_amd(make_host):
    code, body = check(make_host(platform=SimPlatform(cpu="amd")))
    assert code == 0 and "AuthenticAMD" in by_id(body, "cpu")["seen"] and "ivhd0" in by_id(body, "iommu")["seen"]
    code, body = check(make_host(iommu=False, platform=SimPlatform(cpu="amd")))
    assert code == 1 and "amd_iommu=off" in by_id(body, "iommu")["seen"]


def test_no_config_means_the_vfio_recipe_but_a_config_without_vfio_needs_no_iommu(make_host, write_config):
    host = make_host(iommu=False)
    code, body = check(host, config=write_config(IAVF))
    assert code == 0, body
    assert body["vfio"] is False and body["assumed"] is None
    assert by_id(body, "iommu")["status"] == "warn" and by_id(body, "kernel_args")["status"] == "ok"
    assert by_id(body, "module", "iavf")["status"] == "ok"
    code, body = check(host, config=write_config(VFIO))
    assert code == 1 and by_id(body, "iommu")["status"] == "fail" and body["vfio"] is True


def test_sr_iov_off_in_the_bios_is_explained_per_pf(make_host, write_config):
    host = make_host(bios_sriov=False)
    code, body = check(host, config=write_config(VFIO))
    assert code == 1
    selected = by_id(body, "pf_selected", PF0)
    assert selected["status"] == "fail" and "is not an SR-IOV PF" in selected["seen"] and selected["block"] == "pf[0]"
    cap = by_id(body, "sriov_capability", PF0)
    assert cap["status"] == "fail" and "no SR-IOV capability (ID 0x0010)" in cap["seen"]
    fleet = '[[pf]]\nvendor = "8086"\ndevice = "1572"\nnum_vfs = 8\n'
    code, body = check(host, config=write_config(fleet))
    assert code == 1 and {c["subject"] for c in body["checks"] if c["id"] == "sriov_capability"} == {PF0, PF1}


def test_vf_bars_without_mmio(make_host):
    code, body = check(make_host(mmio=False))
    cap = by_id(body, "sriov_capability", PF0)
    assert code == 1 and "ENOMEM" in cap["seen"] and "pci=realloc" in cap["fix"]


def test_ari_forwarding_for_more_than_seven_vfs(make_host, write_config):
    sixteen = write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 16\n')
    _, body = check(make_host(), config=sixteen)
    assert by_id(body, "ari", PF0)["status"] == "ok"
    code, body = check(make_host(platform=SimPlatform(ari=False)), config=sixteen)
    assert code == 0 and by_id(body, "ari", PF0)["status"] == "warn"
    _, body = check(make_host(platform=SimPlatform(ari=False)), config=write_config(
        '[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 7\n'))
    assert by_id(body, "ari", PF0)["status"] == "ok"


def test_desired_versus_capable(make_host, write_config):
    host = make_host(("i350", 2, None))
    cfg = write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 8\n[[pf]]\nname = "ens9"\nnum_vfs = 1\n')
    code, body = check(host, config=cfg)
    assert code == 1
    over = by_id(body, "pf_selected", PF0)
    assert "8 exceeds sriov_totalvfs = 7" in over["seen"]
    assert "TotalVFs 8" in by_id(body, "sriov_capability", PF0)["seen"]  # config space says 8: igb caps it at 7
    absent = [c for c in body["checks"] if c["id"] == "pf_selected" and c["block"] == "pf[1]"]
    assert absent and absent[0]["status"] == "fail" and "no network interface named 'ens9'" in absent[0]["seen"]


def test_pf_without_its_driver_module(make_host, write_config):
    host = make_host(platform=SimPlatform(missing_modules=("i40e",)))
    code, body = check(host, config=write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'))
    r = by_id(body, "pf_driver", PF0)
    assert code == 1 and r["status"] == "fail" and "no driver is bound" in r["seen"]


def test_modules_named_in_the_config(make_host, write_config):
    host = make_host(platform=SimPlatform(missing_modules=("vfio-pci",)))
    code, body = check(host, config=write_config(VFIO))
    r = by_id(body, "module", "vfio-pci")
    assert code == 1 and r["status"] == "fail" and "has no module vfio_pci" in r["seen"]
    _, body = check(make_host(vfio_loaded=True), config=write_config(VFIO))
    assert by_id(body, "module", "vfio-pci")["seen"] == "vfio-pci is loaded"


def test_networkmanager(make_host, write_config):
    host = make_host(platform=SimPlatform(networkmanager=True))
    code, body = check(host, config=write_config(IAVF))
    assert code == 0 and by_id(body, "networkmanager")["status"] == "warn"
    assert by_id(body, "networkmanager")["seen"].startswith("NetworkManager runs (pid 812)")
    _, body = check(host, config=write_config(VFIO))
    assert by_id(body, "networkmanager")["status"] == "ok"  # no VF gets a netdev
    rules = Path(host.root, "etc/udev/rules.d")
    rules.mkdir(parents=True)
    shutil.copy(REPO / "etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules", rules)
    _, body = check(host, config=write_config(IAVF))
    r = by_id(body, "networkmanager")
    assert r["status"] == "ok" and "90-sriov-node-vf-unmanaged.rules" in r["seen"]


def test_without_root_the_config_space_is_cut_to_64_bytes(make_host):
    host = make_host()
    config = Path(host.root, "sys/bus/pci/devices", PF0, "config")
    config.write_bytes(config.read_bytes()[:64])  # what the kernel gives a reader without CAP_SYS_ADMIN
    code, body = check(host)
    r = by_id(body, "sriov_capability", PF0)
    assert code == 0 and r["status"] == "skip" and "only 64 bytes" in r["seen"]


@pytest.mark.parametrize("selector", ["ens1f1", "20:00.1", "0000:20:00.1"])
def test_pf_selects_one_pf(make_host, selector):
    code, body = check(make_host(), "--pf", selector)
    assert code == 0 and {c["subject"] for c in body["checks"] if c["id"] == "sriov_capability"} == {PF1}


def test_pf_by_ids_and_a_pf_that_is_not_there(make_host):
    host = make_host(("x710", 1, None), ("e810", 1, None))
    _, body = check(host, "--pf", "8086:159b")
    assert {c["subject"] for c in body["checks"] if c["id"] == "sriov_capability"} == {"0000:30:00.0"}
    code, body = check(host, "--pf", "ens7")
    r = by_id(body, "pf_selected")
    assert code == 1 and "--pf ens7 matches no PCI function here" in r["seen"]


def test_pf_on_a_device_that_is_not_a_pf(make_host):
    code, body = check(make_host(), "--pf", "0000:02:00.0")  # the I210 management NIC: no SR-IOV
    assert code == 1 and "no SR-IOV capability" in by_id(body, "sriov_capability", "0000:02:00.0")["seen"]


def test_pf_with_a_config_keeps_only_its_blocks(make_host, write_config):
    host = make_host()
    cfg = write_config(VFIO + '[[pf]]\npci = "0000:20:00.1"\nnum_vfs = 70\n')
    code, body = check(host, "--pf", PF0, config=cfg)
    assert code == 0 and by_id(body, "pf_selected", PF0)["status"] == "ok"
    code, body = check(host, config=cfg)
    assert code == 1 and by_id(body, "pf_selected", PF1)["status"] == "fail"


def test_usage_and_config_errors_exit_2_with_json(make_host, write_config):
    host = make_host()
    result = run_cli("check", "--json", "--pf", "not/a name", root=host.root)
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["type"] == "UsageError"
    result = run_cli("check", "--json", root=host.root, config=write_config('[[pf]]\nnaem = "x"\n'))
    assert result.returncode == 2 and json.loads(result.stdout)["error"]["type"] == "ConfigError"
    result = run_cli("check", "--json", "--dry-run", root=host.root)
    assert result.returncode == 2 and "--dry-run goes with --fix" in json.loads(result.stdout)["error"]["message"]


def test_sim_create_options_reach_the_checks(tmp_path):
    root = str(tmp_path / "sim")
    made = run_cli("sim", "create", root, "--cpu", "amd", "--iommu", "off", "--bios-iommu", "off",
                   "--bootloader", "rhel", "--no-ari", "--networkmanager", "--missing-module", "iavf")
    assert made.returncode == 0, made.stderr
    result = run_cli("check", "--json", root=root)
    body = json.loads(result.stdout)
    assert "AuthenticAMD" in by_id(body, "cpu")["seen"] and "no DMAR" in by_id(body, "iommu")["seen"]
    assert by_id(body, "bootloader")["subject"] == "bls"
    bad = run_cli("sim", "create", str(tmp_path / "bad"), "--iommu", "on", "--bios-iommu", "off")
    assert bad.returncode == 2 and "--bios-iommu off goes with --iommu off" in bad.stderr
    bad = run_cli("sim", "create", str(tmp_path / "bad"), "--cmdline", "intel_iommu=off")
    assert bad.returncode == 2 and "that kernel has no IOMMU" in bad.stderr
    bad = run_cli("sim", "create", str(tmp_path / "bad"), "--bootloader", "lilo")
    assert bad.returncode == 2 and "--bootloader takes" in bad.stderr


def test_two_blocks_on_one_pf_fail_once_each_and_the_pf_is_examined_once(make_host, write_config):
    cfg = write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n[[pf]]\nname = "ens1f0"\nnum_vfs = 3\n')
    code, body = check(make_host(), config=cfg)
    selected = [c for c in body["checks"] if c["id"] == "pf_selected"]
    assert code == 1 and [(c["block"], c["status"]) for c in selected] == [("pf[0]", "fail"), ("pf[1]", "fail")]
    assert all("also selects" in c["seen"] for c in selected)
    assert len([c for c in body["checks"] if c["id"] == "sriov_capability"]) == 1


def test_a_root_without_proc_cpuinfo_says_the_vendor_is_unknown_not_that_the_cpu_is_not_x86(make_host):
    host = make_host(iommu=False, platform=SimPlatform(bios_iommu=False))
    (Path(host.root) / "proc/cpuinfo").unlink()  # a sysfs capture keeps no /proc
    code, body = check(host)
    cpu = by_id(body, "cpu")
    assert cpu["status"] == "skip" and "/proc/cpuinfo cannot be read (absent)" in cpu["seen"]
    assert "no x86 vendor" not in cpu["seen"] and "grep vendor_id /proc/cpuinfo" in cpu["fix"]
