"""PCI configuration space parsing: real captures from the lab kernel and dumps laid out from the spec."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sriov_node import platform as pcicfg

DATA = Path(__file__).resolve().parent / "data"


def load_hex(name: str) -> bytes:
    """An `lspci -xxxx`-style dump (tests/data/pci/*.hex): lines left out are zeros."""
    size = 4096
    out = bytearray(size)
    for line in (DATA / "pci" / f"{name}.hex").read_text().splitlines():
        if line.startswith("# size:"):
            size = int(line.split(":")[1])
            out = bytearray(size)
        elif line and not line.startswith("#"):
            offset, _, data = line.partition(":")
            for i, byte in enumerate(data.split()):
                out[int(offset, 16) + i] = int(byte, 16)
    return bytes(out)


def lab(name: str) -> bytes:
    return (DATA / "lab" / f"{name}.config").read_bytes()


def lspci_sriov(name: str) -> dict:
    """What `lspci -vvv` (run in the lab guest beside the capture) says of the SR-IOV capability."""
    text = (DATA / "lab" / f"{name}.lspci").read_text()
    cap = re.search(r"Capabilities: \[([0-9a-f]+) v1\] Single Root I/O Virtualization", text)
    counts = re.search(r"Initial VFs: (\d+), Total VFs: (\d+), Number of VFs: (\d+)", text)
    offs = re.search(r"VF offset: (\d+), stride: (\d+), Device ID: ([0-9a-f]+)", text)
    region = re.search(r"Region 0: Memory at ([0-9a-f]+) \(64-bit", text.split("Single Root")[1])
    return {"offset": int(cap.group(1), 16), "initial": int(counts.group(1)), "total": int(counts.group(2)),
            "num": int(counts.group(3)), "first": int(offs.group(1)), "stride": int(offs.group(2)),
            "vf_device": int(offs.group(3), 16), "bar0": int(region.group(1), 16)}


@pytest.mark.parametrize("name", ["qemu-nvme-pf-4vfs", "qemu-nvme-pf-64vfs"])
def test_the_lab_nvme_config_space_parses_as_lspci_reads_it(name):
    cap = pcicfg.sriov_cap(lab(name))
    want = lspci_sriov(name)
    assert cap is not None
    assert (cap.offset, cap.initial_vfs, cap.total_vfs, cap.num_vfs) == (want["offset"], want["initial"],
                                                                         want["total"], want["num"])
    assert (cap.first_vf_offset, cap.vf_stride, cap.vf_device) == (want["first"], want["stride"], want["vf_device"])
    assert cap.bars_assigned and cap.bars[0].address == want["bar0"] and cap.bars[0].is_64
    assert cap.ari_hierarchy  # IOVCtl: ARIHierarchy+
    assert [cid for cid, _ in pcicfg.extended_caps(lab(name))] == [pcicfg.EXT_ARI, pcicfg.EXT_SRIOV]


def test_the_lab_root_port_forwards_ari():
    port = pcicfg.pcie_cap(lab("qemu-pcie-root-port"))
    assert port is not None and port.offset == 0x54 and pcicfg.PORT_TYPES[port.port_type] == "root port"
    assert port.ari_forwarding_supported and port.ari_forwarding_enabled  # lspci: DevCap2 ARIFwd+, DevCtl2 ARIFwd+
    assert pcicfg.sriov_cap(lab("qemu-pcie-root-port")) is None


def test_x710_sr_iov_capability_from_the_spec_layout():
    cap = pcicfg.sriov_cap(load_hex("x710-pf"))
    assert (cap.offset, cap.total_vfs, cap.first_vf_offset, cap.vf_stride, cap.vf_device) == (0x160, 64, 16, 1, 0x154C)
    assert [(b.index, hex(b.address), b.is_64, b.prefetchable) for b in cap.bars] == [
        (0, "0x38200000000", True, True), (3, "0x38200004000", True, True)]
    assert cap.bars_assigned


def test_cx5_capability_sits_at_0x180():
    cap = pcicfg.sriov_cap(load_hex("cx5-pf"))
    assert (cap.offset, cap.total_vfs, cap.first_vf_offset) == (0x180, 8, 2)


def test_i350_has_no_ari_hierarchy_and_its_non_ari_stride():
    cap = pcicfg.sriov_cap(load_hex("i350-pf"))
    assert (cap.total_vfs, cap.first_vf_offset, cap.vf_stride, cap.ari_hierarchy) == (8, 128, 4, False)


def test_the_three_firmware_cases_are_told_apart():
    assert pcicfg.sriov_cap(load_hex("x710-pf-bios-off")) is None
    assert pcicfg.find_ext(load_hex("x710-pf-bios-off"), pcicfg.EXT_ARI) == 0x150  # the list is there, SR-IOV is not
    assert pcicfg.sriov_cap(load_hex("x710-pf-totalvfs0")).total_vfs == 0
    no_mmio = pcicfg.sriov_cap(load_hex("x710-pf-no-mmio"))
    assert no_mmio.total_vfs == 64 and not no_mmio.bars_assigned
    assert [b.index for b in no_mmio.bars] == [0, 3]  # implemented (type bits set), address 0


def test_a_nic_without_sr_iov():
    assert pcicfg.sriov_cap(load_hex("i210")) is None
    assert [cid for cid, _ in pcicfg.extended_caps(load_hex("i210"))] == [0x0001, 0x0003, 0x0017]


def test_truncated_reads_find_nothing_beyond_what_was_read():
    full = load_hex("x710-pf")
    assert pcicfg.extended_caps(full[:64]) == () and pcicfg.sriov_cap(full[:256]) is None
    assert pcicfg.standard_caps(full[:64]) == ()  # the list starts at 0x40: beyond 64 bytes


def test_a_looping_capability_list_ends():
    caps = pcicfg.extended_caps(load_hex("x710-pf-looping-list"))
    assert [off for _, off in caps] == [0x100, 0x150, 0x160]


def test_root_ports_with_and_without_ari_forwarding():
    assert pcicfg.pcie_cap(load_hex("root-port-ari")).ari_forwarding_supported is True
    assert pcicfg.pcie_cap(load_hex("root-port-no-ari")).ari_forwarding_supported is False
    v1 = pcicfg.pcie_cap(load_hex("root-port-pcie-v1"))
    assert v1.version == 1 and v1.devcap2 is None and v1.ari_forwarding_supported is None
