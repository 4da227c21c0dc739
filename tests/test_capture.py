"""A captured /sys (not a simulated host): shaped like the ghw I350 snapshot, files missing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run_cli

PARENT = "sys/devices/pci0000:00/0000:00:09.0"
PFS = {"0000:05:00.0": "enp5s0f0", "0000:05:00.1": "enp5s0f1"}


def _vfs(pf: str):
    fn = int(pf[-1])
    return [f"0000:05:{0x10 + i // 2:02x}.{fn + 4 * (i % 2)}" for i in range(4)]


@pytest.fixture
def capture(tmp_path: Path) -> str:
    root = tmp_path / "capture"

    def put(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def link(rel: str, target: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, path)

    for pf, ifname in PFS.items():
        d = f"{PARENT}/{pf}"
        for name, value in (("class", "0x020000"), ("vendor", "0x8086"), ("device", "0x1521"), ("numa_node", "0"),
                            ("sriov_totalvfs", "7"), ("sriov_numvfs", "4"), ("sriov_offset", "128"),
                            ("sriov_stride", "4"), ("sriov_vf_device", "1520"), ("sriov_drivers_autoprobe", "1"),
                            ("sriov_vf_total_msix", "0"), ("subsystem_vendor", ""), ("subsystem_device", "")):
            put(f"{d}/{name}", value + "\n")
        link(f"{d}/driver", "../../../../bus/pci/drivers/igb")  # dangling in the capture, as in ghw's
        put(f"{d}/net/{ifname}/address", "a0:36:9f:00:00:0" + pf[-1] + "\n")
        link(f"sys/bus/pci/devices/{pf}", f"../../../devices/pci0000:00/0000:00:09.0/{pf}")
        for i, vf in enumerate(_vfs(pf)):
            vd = f"{PARENT}/{vf}"
            put(f"{vd}/vendor", "0x8086\n")
            put(f"{vd}/device", "0x1520\n")
            link(f"{vd}/driver", "../../../../bus/pci/drivers/igbvf")
            link(f"{vd}/physfn", f"../{pf}")
            put(f"{vd}/net/{ifname}v{i}/address", f"02:00:00:00:0{pf[-1]}:0{i}\n")
            link(f"{d}/virtfn{i}", f"../{vf}")
            link(f"sys/bus/pci/devices/{vf}", f"../../../devices/pci0000:00/0000:00:09.0/{vf}")
    return str(root)


def test_status_reads_a_capture_with_files_missing(capture):
    result = run_cli("status", "--json", root=capture)
    assert result.returncode == 0, result.stderr
    pfs = json.loads(result.stdout)["pfs"]
    assert [(p["pci"], p["name"], p["driver"], p["num_vfs"], p["total_vfs"]) for p in pfs] == [
        ("0000:05:00.0", "enp5s0f0", "igb", 4, 7), ("0000:05:00.1", "enp5s0f1", "igb", 4, 7)]
    vfs = pfs[0]["vfs"]
    assert [v["pci"] for v in vfs] == ["0000:05:10.0", "0000:05:10.4", "0000:05:11.0", "0000:05:11.4"]
    assert {v["driver"] for v in vfs} == {"igbvf"}
    assert vfs[0]["iommu_group"] is None and vfs[0]["driver_override"] is None


def test_plans_against_a_capture_but_never_writes(capture, write_config):
    same = write_config('[[pf]]\nname = "enp5s0f0"\nnum_vfs = 4\n')
    assert json.loads(run_cli("apply", "--dry-run", "--json", root=capture, config=same).stdout)["actions"] == []
    smaller = write_config('[[pf]]\nvendor = "8086"\ndevice = "1521"\nindex = 1\nnum_vfs = 2\n')
    plan = json.loads(run_cli("apply", "--dry-run", "--json", root=capture, config=smaller).stdout)["actions"]
    assert [(a["pf"], a["value"]) for a in plan] == [("0000:05:00.1", 0), ("0000:05:00.1", 2)]
    applied = run_cli("apply", root=capture, config=smaller)
    assert applied.returncode == 1 and "captured tree" in applied.stderr
    assert Path(capture, PARENT, "0000:05:00.1/sriov_numvfs").read_text() == "4\n"


def test_capture_rejects_more_vfs_than_totalvfs(capture, write_config):
    result = run_cli("validate", root=capture, config=write_config('[[pf]]\nname = "enp5s0f0"\nnum_vfs = 8\n'))
    assert result.returncode == 1 and "sriov_totalvfs = 7" in result.stderr


def test_apply_on_a_capture_leaves_it_untouched(capture, write_config):
    run_cli("apply", root=capture, config=write_config('[[pf]]\nname = "enp5s0f0"\nnum_vfs = 2\n'))
    assert not Path(capture, "run").exists() and not Path(capture, "var").exists()
