"""`check` with nothing asked of any PF (no config, or a config without [[pf]] blocks): every network
function (PCI class 0x02), every function with an SR-IOV capability in its config space and every
function with sriov_totalvfs is looked at, and `check` says which can make VFs and, for each that
cannot, why and the fix (BIOS/firmware SR-IOV, VF BARs, the PF driver, ARI beyond 7 VFs).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sriov_node.sim.platform import SimPlatform, endpoint_config
from tests.helpers import run_cli

MGMT = "0000:02:00.0"  # eno1, an I210: no SR-IOV
X710 = ("0000:20:00.0", "0000:20:00.1")
CX5 = "0000:30:00.0"
I350 = "0000:40:00.0"


def check(host, *args, config=None):
    result = run_cli("check", "--json", *args, root=host.root, config=config)
    return result.returncode, json.loads(result.stdout), result


def results(body, check_id=None, subject=None):
    return [c for c in body["checks"] if (check_id is None or c["id"] == check_id)
            and (subject is None or c["subject"] == subject)]


def one(body, check_id, subject=None):
    found = results(body, check_id, subject)
    assert len(found) == 1, (check_id, subject, body["checks"])
    return found[0]


def test_bios_sriov_off_names_every_nic_and_the_firmware_fix(make_host):
    host = make_host(("x710", 2, None), ("cx5", 1, None), bios_sriov=False)
    code, body, _ = check(host)
    assert code == 1 and body["result"] == "fail"
    for pci in (MGMT, *X710, CX5):
        cap = one(body, "sriov_capability", pci)
        assert cap["status"] == "warn" and "no SR-IOV capability" in cap["seen"] and "cannot make VFs" in cap["seen"]
    assert "'SR-IOV Support' in the BIOS" in one(body, "sriov_capability", X710[0])["fix"]
    assert f"mlxconfig -d {CX5} set SRIOV_EN=1" in one(body, "sriov_capability", CX5)["fix"]
    summary = one(body, "vf_capable")
    assert summary["status"] == "fail" and summary["seen"].startswith("no function here can make VFs")
    assert all(f"{p}" in summary["seen"] for p in (MGMT, *X710, CX5)) and "BIOS" in summary["fix"]
    text = run_cli("check", root=host.root)
    assert text.returncode == 1
    for pci in (MGMT, *X710, CX5):
        assert f"warn  sriov_capability {pci}" in text.stdout
    assert "FAIL  vf_capable" in text.stdout and "fix: if this device supports SR-IOV: Intel:" in text.stdout


def test_vf_bars_unassigned_say_above_4g_decoding_or_pci_realloc(make_host):
    host = make_host(mmio=False)
    code, body, _ = check(host)
    assert code == 1
    for pci in X710:
        cap = one(body, "sriov_capability", pci)
        assert cap["status"] == "fail" and "no MMIO is reserved for the VFs" in cap["seen"]
        assert "Above 4G Decoding" in cap["fix"] and "pci=realloc" in cap["fix"]
    summary = one(body, "vf_capable")
    assert summary["status"] == "fail" and f"{X710[0]} (ens1f0): VF BARs unassigned" in summary["seen"]


def test_mixed_nics_say_which_can_and_which_cannot(make_host):
    host = make_host(("x710", 2, None), ("cx5", 1, None), ("i350", 1, None))
    host.sysfs.unbind(CX5, "mlx5_core")
    code, body, _ = check(host)
    assert code == 1
    drv = one(body, "pf_driver", CX5)
    assert drv["status"] == "fail" and "no driver is bound" in drv["seen"] and "modprobe mlx5_core" in drv["fix"]
    assert one(body, "pf_driver", X710[0])["status"] == "ok"
    assert one(body, "ari", I350)["seen"].endswith("up to 7 VFs (TotalVFs): 7 or fewer need no ARI")
    summary = one(body, "vf_capable")
    assert summary["status"] == "ok"
    assert summary["seen"] == (
        "can make VFs: 0000:20:00.0 (ens1f0) up to 64, 0000:20:00.1 (ens1f1) up to 64, 0000:40:00.0 (ens3f0) up to 7; "
        "cannot: 0000:02:00.0 (eno1): no SR-IOV capability; 0000:30:00.0: no driver bound")


def test_without_ari_forwarding_more_than_7_vfs_is_a_warning(make_host):
    host = make_host(("x710", 1, None), ("i350", 1, None), platform=SimPlatform(ari=False))
    code, body, _ = check(host)
    ari = one(body, "ari", X710[0])
    assert ari["status"] == "warn" and "does not support ARI forwarding" in ari["seen"]
    assert "use at most 7 VFs" in ari["fix"]
    assert one(body, "ari", "0000:30:00.0")["status"] == "ok"  # the I350 here: 7 VFs need no ARI
    assert "0000:20:00.0 (ens1f0) up to 64 (7 without ARI forwarding)" in one(body, "vf_capable")["seen"]


def test_a_nic_without_sriov_is_a_warning_not_a_failure(make_host):
    host = make_host()
    code, body, _ = check(host)
    assert code == 0 and body["result"] == "warn"
    cap = one(body, "sriov_capability", MGMT)
    assert cap["status"] == "warn" and cap["seen"].startswith("network function 0000:02:00.0 (eno1): no SR-IOV")
    assert results(body, "pf_driver", MGMT) == [] and results(body, "ari", MGMT) == []
    # asked for by --pf, the same function fails: it was named and cannot make VFs
    code, body, _ = check(host, "--pf", MGMT)
    assert code == 1 and one(body, "sriov_capability", MGMT)["status"] == "fail"
    assert one(body, "vf_capable")["status"] == "fail"


def test_vfs_are_not_looked_at_as_pfs(make_host):
    host = make_host(("x710", 1, None))
    host.sysfs.set_num_vfs(X710[0], 2)
    vfs = sorted(os.path.basename(os.readlink(host.sysfs.path("sys/bus/pci/devices", X710[0], f"virtfn{i}")))
                 for i in range(2))
    code, body, _ = check(host)
    subjects = {c["subject"] for c in body["checks"]}
    assert not subjects & set(vfs) and X710[0] in subjects


def _add_function(host, bdf: str, class_code: int, config: bytes) -> None:
    """A function the simulated NICs do not model (an NVMe controller), under the first root port."""
    root = Path(host.root)
    d = root / "sys/devices/pci0000:00/0000:00:1c.0" / bdf
    d.mkdir(parents=True)
    for name, value in (("vendor", "0x144d"), ("device", "0xa824"), ("class", f"0x{class_code:06x}")):
        (d / name).write_text(value + "\n")
    (d / "config").write_bytes(config)
    os.symlink(os.path.relpath(d, root / "sys/bus/pci/devices"), root / "sys/bus/pci/devices" / bdf)


def test_a_non_network_function_with_sriov_in_config_space_is_looked_at(make_host):
    host = make_host(("x710", 1, None))
    sriov = {"total": 0, "offset": 1, "stride": 1, "vf_device": "a824", "vf_bar": 0}
    _add_function(host, "0000:05:00.0", 0x010802, endpoint_config("144d", "a824", sriov=sriov, pci_class=0x010802))
    _add_function(host, "0000:06:00.0", 0x010802, endpoint_config("144d", "a824", pci_class=0x010802))
    code, body, _ = check(host)
    cap = one(body, "sriov_capability", "0000:05:00.0")
    assert cap["status"] == "fail" and "TotalVFs 0 means the firmware disabled SR-IOV" in cap["seen"]
    assert results(body, subject="0000:06:00.0") == []  # not network, no SR-IOV: not a candidate
    assert "0000:05:00.0: TotalVFs 0" in one(body, "vf_capable")["seen"]


def test_a_config_space_with_total_vfs_zero(make_host):
    host = make_host(("x710", 1, None))
    config = Path(host.root, "sys/bus/pci/devices", X710[0], "config")
    sriov = {"total": 0, "offset": 16, "stride": 1, "vf_device": "154c", "vf_bar": 0}
    Path(os.path.realpath(config)).write_bytes(endpoint_config("8086", "1572", sriov=sriov, ari_cap=True))
    code, body, _ = check(host)
    cap = one(body, "sriov_capability", X710[0])
    assert cap["status"] == "fail" and "TotalVFs 0" in cap["seen"] and "'SR-IOV Support' in the BIOS" in cap["fix"]


def test_an_empty_config_looks_at_every_pf_but_fails_nothing(make_host, write_config):
    host = make_host(("x710", 2, None), bios_sriov=False)
    path = write_config("# no PF yet\n")
    code, body, _ = check(host, config=path)
    assert code == 0 and body["config"] == path and body["assumed"] is None and body["vfio"] is False
    for pci in (MGMT, *X710):
        assert one(body, "sriov_capability", pci)["status"] == "warn"
    summary = one(body, "vf_capable")
    assert summary["status"] == "warn" and summary["seen"].startswith("no function here can make VFs")
    # a config that selects a PF looks only at that PF, and fails it
    code, body, _ = check(host, config=write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'))
    assert code == 1 and results(body, "vf_capable") == [] and results(body, subject=MGMT) == []
    assert one(body, "sriov_capability", X710[0])["status"] == "fail"


def test_no_config_file_at_all(make_host, tmp_path):
    host = make_host(("x710", 1, None), bios_sriov=False)
    assert not Path(host.root, "etc/sriov-node/config.toml").exists()
    code, body, _ = check(host)
    assert code == 1 and body["config"] is None and "no config" in body["assumed"]
    assert [c["subject"] for c in results(body, "sriov_capability")] == [MGMT, X710[0]]


def test_a_host_with_no_candidate_at_all(make_host):
    host = make_host(("x710", 1, None))
    devices = Path(host.root, "sys/bus/pci/devices")
    for name in (MGMT, X710[0]):
        (Path(os.path.realpath(devices / name)) / "class").write_text("0x010802\n")
        os.unlink(os.path.realpath(devices / name / "sriov_totalvfs")) if name == X710[0] else None
        Path(os.path.realpath(devices / name / "config")).write_bytes(endpoint_config("144d", "a824",
                                                                                      pci_class=0x010802))
    code, body, _ = check(host)
    summary = one(body, "vf_capable")
    assert code == 1 and summary["status"] == "fail" and "nothing here can make VFs" in summary["seen"]


def test_the_json_lists_each_function_once_per_check(make_host):
    host = make_host(("x710", 2, None), ("cx5", 1, None), bios_sriov=False)
    code, body, _ = check(host)
    pf_checks = [(c["id"], c["subject"]) for c in body["checks"] if c["subject"] and c["id"] not in ("module", "bootloader")]
    assert pf_checks == [("sriov_capability", p) for p in (MGMT, *X710, CX5)]
    assert all(c["block"] is None for c in body["checks"])
    assert body["counts"] == {"ok": 7, "warn": 4, "fail": 1, "skip": 0}


def test_a_capability_the_kernel_did_not_set_up(make_host):
    """TotalVFs 8 and VF BARs in config space, but no sriov_totalvfs (a kernel without CONFIG_PCI_IOV,
    or one whose sriov_init gave up): VFs cannot be created through sysfs."""
    host = make_host(("x710", 1, None))
    sriov = {"total": 8, "offset": 1, "stride": 1, "vf_device": "0d5a", "vf_bar": 0x39000000000}
    _add_function(host, "0000:07:00.0", 0x120000, endpoint_config("8086", "0d5a", sriov=sriov, pci_class=0x120000))
    code, body, _ = check(host)
    cap = one(body, "sriov_capability", "0000:07:00.0")
    assert cap["status"] == "fail" and "the kernel shows no sriov_totalvfs for it" in cap["seen"]
    assert "CONFIG_PCI_IOV=y" in cap["fix"]
    assert "0000:07:00.0: the kernel did not set SR-IOV up" in one(body, "vf_capable")["seen"]
