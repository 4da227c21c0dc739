"""Every check in every state, as pure functions of an observed platform (no files, no kernel)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Optional, Tuple

import pytest

from sriov_node import drivers as driver_table
from sriov_node.checks import diagnose as d
from sriov_node.platform import (BootFiles, FileRead, IommuState, ModulesState, ModuleState,
                                 NetworkManagerState, PciFunction, PlatformState)
from tests.test_check_pci import lab, load_hex

DATA = Path(__file__).resolve().parent / "data"
PF = "0000:3b:00.0"
PORT = "0000:00:03.0"


def cmdline(name: str) -> str:
    return (DATA / "cmdline" / name).read_text()


def boot(grub: Optional[str] = None, *, cfg: Optional[FileRead] = None, entries: Tuple[FileRead, ...] = (),
         grubenv: Optional[str] = None, kernel_cmdline: Optional[str] = None, bls_problem: Optional[str] = None,
         dropins: Tuple[FileRead, ...] = ()) -> BootFiles:
    return BootFiles(FileRead("/etc/default/grub", grub), dropins, cfg, entries, bls_problem,
                     FileRead("/boot/grub2/grubenv", grubenv) if grubenv is not None else None,
                     FileRead("/etc/kernel/cmdline", kernel_cmdline))


def state(cmd: str = "ro quiet intel_iommu=on iommu=pt", vendor: Optional[str] = "GenuineIntel",
          units: Tuple[str, ...] = ("dmar0",), groups: int = 12, types: Tuple[str, ...] = ("identity",),
          tables: Optional[Tuple[str, ...]] = ("DMAR",), noiommu: Optional[bool] = None,
          boot_files: Optional[BootFiles] = None, **kw) -> PlatformState:
    return PlatformState("/", True, FileRead("/proc/cmdline", cmd), vendor,
                         IommuState(units, groups, types, tables, noiommu), boot=boot_files, **kw)


OFF = dict(units=(), groups=0, types=())


def one(results, check_id):
    (r,) = [r for r in results if r.id == check_id]
    return r


# ---------------------------------------------------------------------------- cpu


def test_cpu_states():
    assert d.check_cpu(state()).status == "ok" and "Intel VT-d" in d.check_cpu(state()).seen
    amd = d.check_cpu(state(vendor="AuthenticAMD", units=("ivhd0",), tables=("IVRS",)))
    assert amd.status == "ok" and "AMD-Vi" in amd.seen
    qemu = state(vendor="AuthenticAMD", tables=("DMAR",))  # the lab: a TCG CPU says AMD, the IOMMU is VT-d
    assert "Intel VT-d (DMAR table)" in d.check_cpu(qemu).seen and d.needed(qemu) == ("intel_iommu=on", "iommu=pt")
    arm = d.check_cpu(state(vendor=None, units=("smmu3.0x0000000009050000",), tables=None))
    assert arm.status == "skip" and "iommu.passthrough=1" in arm.fix


# ---------------------------------------------------------------------------- iommu


def test_iommu_on():
    r = d.check_iommu(state(), wants_vfio=True)
    assert r.status == "ok" and "dmar0" in r.seen and "12 IOMMU group(s)" in r.seen


def test_iommu_off_in_the_bios_is_not_the_command_line():
    r = d.check_iommu(state(cmd="ro quiet intel_iommu=on iommu=pt", tables=(), **OFF), wants_vfio=True)
    assert r.status == "fail"
    assert "no DMAR (Intel VT-d) or IVRS (AMD-Vi) ACPI table" in r.seen and "command line" not in r.seen
    assert r.fix.startswith("enable VT-d (Intel) or AMD-Vi/IOMMU (AMD) in the BIOS/UEFI setup")


def test_iommu_off_on_the_command_line():
    r = d.check_iommu(state(cmd=cmdline("rhel9-intel-iommu-off"), **OFF), wants_vfio=True)
    assert r.status == "fail" and "the kernel command line turns it off: intel_iommu=off in /proc/cmdline" in r.seen
    assert "BIOS" not in r.seen and "removes intel_iommu=off" in r.fix and "adds intel_iommu=on iommu=pt" in r.fix


def test_the_lab_kernel_with_iommu_off_names_the_firmware_and_the_command_line():
    # LAB_IOMMU=off: no intel-iommu device (no DMAR), a TCG CPU that says AuthenticAMD, intel_iommu=off
    r = d.check_iommu(state(cmd=(DATA / "lab/cmdline-iommu-off").read_text(), vendor="AuthenticAMD", tables=(),
                            **OFF), wants_vfio=True)
    assert r.status == "fail" and "no DMAR" in r.seen
    assert "the kernel command line also has intel_iommu=off (/proc/cmdline)" in r.seen
    assert "removes intel_iommu=off" in r.fix


def test_vtd_present_but_not_asked_for():
    r = d.check_iommu(state(cmd=cmdline("debian12"), **OFF), wants_vfio=True)
    assert r.status == "fail" and "intel_iommu=on is not on the kernel command line" in r.seen
    assert "sriov-node check --fix (adds intel_iommu=on iommu=pt)" in r.fix


@pytest.mark.parametrize("cmd,word", [("ro amd_iommu=off", "amd_iommu=off"), ("ro iommu=off", "iommu=off")])
def test_amd_iommu_off_on_the_command_line(cmd, word):
    r = d.check_iommu(state(cmd=cmd, vendor="AuthenticAMD", tables=("IVRS",), **OFF), wants_vfio=True)
    assert r.status == "fail" and f"turns it off: {word}" in r.seen and f"removes {word}" in r.fix


def test_iommu_off_without_acpi_tables_to_read_says_so():
    r = d.check_iommu(state(cmd="ro", tables=None, **OFF), wants_vfio=True)
    assert "unknown (/sys/firmware/acpi/tables cannot be listed)" in r.seen


def test_iommu_off_is_a_warning_when_nothing_wants_vfio():
    r = d.check_iommu(state(cmd="ro", **OFF), wants_vfio=False)
    assert r.status == "warn" and "no VF group asks for it" in r.seen


def test_vfio_noiommu_mode_is_a_warning():
    r = d.check_iommu(state(cmd="ro", noiommu=True, **OFF), wants_vfio=True)
    assert r.status == "warn" and "unsafe no-IOMMU mode" in r.seen


# ---------------------------------------------------------------------------- passthrough


def test_passthrough_states():
    assert d.check_passthrough(state(**OFF), True).status == "skip"
    assert d.check_passthrough(state(), True).status == "ok"
    translated = state(cmd="ro intel_iommu=on", types=("DMA-FQ",))
    r = d.check_passthrough(translated, True)
    assert r.status == "warn" and "DMA-FQ" in r.seen and "adds iommu=pt" in r.fix
    assert d.check_passthrough(translated, False).status == "ok"
    assert d.check_passthrough(state(vendor=None, units=("smmu3.0x0",), tables=None), True).status == "skip"


# ---------------------------------------------------------------------------- kernel arguments


def test_kernel_args_states():
    unreadable = replace(state(), cmdline=FileRead("/proc/cmdline", None, "permission denied"))
    assert d.check_kernel_args(unreadable, True).status == "skip"
    assert d.check_kernel_args(state(cmd=cmdline("debian12"), **OFF), False).status == "ok"
    ok = d.check_kernel_args(state(cmd=cmdline("ubuntu2204-iommu")), True)
    assert ok.status == "ok" and ok.seen.endswith("has intel_iommu=on iommu=pt")
    no_pt = d.check_kernel_args(state(cmd="ro intel_iommu=on", types=("DMA-FQ",)), True)
    assert no_pt.status == "warn" and "lacks iommu=pt" in no_pt.seen
    off = d.check_kernel_args(state(cmd=cmdline("rhel9-intel-iommu-off"), **OFF), True)
    assert off.status == "fail" and "intel_iommu=off contradicts the recipe" in off.seen
    missing = d.check_kernel_args(state(cmd=cmdline("debian12"), **OFF), True)
    assert missing.status == "fail" and "lacks intel_iommu=on iommu=pt" in missing.seen
    default_on = d.check_kernel_args(state(cmd="ro iommu=pt"), True)  # CONFIG_INTEL_IOMMU_DEFAULT_ON kernels
    assert default_on.status == "warn" and "on by this kernel's default" in default_on.seen
    amd = d.check_kernel_args(state(cmd="ro iommu=pt", vendor="AuthenticAMD", units=("ivhd0",), tables=("IVRS",)), True)
    assert amd.status == "ok"


def test_the_last_intel_iommu_wins():
    words = ("intel_iommu=off", "intel_iommu=on", "iommu=pt")
    r = d.check_kernel_args(state(cmd=" ".join(words)), True)
    assert r.status == "warn" and "intel_iommu=off contradicts" in r.seen  # in effect: on; --fix drops the word
    assert d.kargs.satisfied(words, "intel_iommu=on") and "removes intel_iommu=off" in r.fix
    r = d.check_kernel_args(state(cmd=" ".join(reversed(words))), True)
    assert r.status == "fail" and "intel_iommu=on is overridden by a later argument" in r.seen


def test_an_argument_for_the_other_vendor_only_warns():
    r = d.check_kernel_args(state(cmd="ro intel_iommu=on iommu=pt amd_iommu=off"), True)
    assert r.status == "warn" and "amd_iommu=off contradicts the recipe" in r.seen


# ---------------------------------------------------------------------------- boot loader

DEBIAN_GRUB = (DATA / "grub/debian12/etc/default/grub").read_text()
FIXED_GRUB = DEBIAN_GRUB.replace('GRUB_CMDLINE_LINUX=""', 'GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"')
GRUB_CFG = (DATA / "grub-cfg/debian12-grub.cfg").read_text()


def bls_files(name: str) -> Tuple[Tuple[FileRead, ...], str]:
    root = DATA / "bls" / name
    entries = tuple(FileRead(f"/boot/loader/entries/{p.name}", p.read_text())
                    for p in sorted((root / "boot/loader/entries").iterdir()))
    return entries, (root / "boot/grub2/grubenv").read_text()


def test_bootloader_not_needed():
    r = d.check_bootloader(state(cmd="ro", boot_files=boot(DEBIAN_GRUB), **OFF), False)
    assert r.status == "ok" and "no VF group wants vfio-pci" in r.seen


def test_bootloader_not_found():
    r = d.check_bootloader(state(boot_files=boot()), True)
    assert r.status == "skip" and "no boot loader configuration found" in r.seen


def test_debian_next_boot_has_the_arguments():
    r = d.check_bootloader(state(cmd=cmdline("ubuntu2204-iommu"), boot_files=boot(FIXED_GRUB)), True)
    assert r.status == "ok" and r.subject == "grub"
    assert r.seen == ("running kernel has intel_iommu=on iommu=pt; next boot will have intel_iommu=on iommu=pt "
                      "(/etc/default/grub)")


def test_debian_next_boot_lacks_them():
    r = d.check_bootloader(state(cmd=cmdline("debian12"), boot_files=boot(DEBIAN_GRUB), **OFF), True)
    assert r.status == "fail" and "next boot will have no IOMMU argument" in r.seen
    assert "lacks intel_iommu=on iommu=pt" in r.seen and "sriov-node check --fix" in r.fix


def test_edited_but_not_regenerated_asks_for_update_grub():
    cfg = FileRead("/boot/grub/grub.cfg", GRUB_CFG)
    r = d.check_bootloader(state(cmd=cmdline("debian12"), boot_files=boot(FIXED_GRUB, cfg=cfg), **OFF), True)
    assert r.status == "fail" and "first entry of /boot/grub/grub.cfg" in r.seen
    assert "was not regenerated" in r.seen and r.fix == "run update-grub, then reboot"


def test_regenerated_grub_cfg_is_the_next_boot():
    cfg = FileRead("/boot/grub/grub.cfg", GRUB_CFG.replace("ro  quiet", "ro intel_iommu=on iommu=pt quiet"))
    r = d.check_bootloader(state(cmd=cmdline("debian12"), boot_files=boot(FIXED_GRUB, cfg=cfg), **OFF), True)
    assert r.status == "ok" and "the running kernel lacks them: reboot" in r.seen


def test_unreadable_grub_cfg_falls_back_to_the_defaults_and_says_so():
    cfg = FileRead("/boot/grub/grub.cfg", None, "permission denied (run sriov-node check as root)")
    r = d.check_bootloader(state(boot_files=boot(FIXED_GRUB, cfg=cfg)), True)
    assert r.status == "ok" and "/boot/grub/grub.cfg: permission denied" in r.seen


def test_unreadable_or_uncertain_defaults_are_skipped():
    denied = BootFiles(FileRead("/etc/default/grub", None, "permission denied (run sriov-node check as root)"), (),
                       None, (), None, None, FileRead("/etc/kernel/cmdline"))
    r = d.check_bootloader(state(boot_files=denied), True)
    assert r.status == "skip" and "permission denied" in r.seen and r.fix == "run sriov-node check as root"
    cond = (DATA / "grub/conditional/etc/default/grub").read_text()
    r = d.check_bootloader(state(boot_files=boot(cond)), True)
    assert r.status == "skip" and "sets GRUB_CMDLINE_LINUX conditionally" in r.seen


def test_rhel_default_entry_and_the_other_places():
    entries, env = bls_files("rhel9")
    kernel_cmdline = (DATA / "bls/rhel9/etc/kernel/cmdline").read_text()
    fixed = tuple(replace(e, text=e.text.replace("rhgb quiet", "rhgb quiet intel_iommu=on iommu=pt"))
                  if "362.8.1" in e.path else e for e in entries)
    r = d.check_bootloader(state(boot_files=boot(entries=fixed, grubenv=env, kernel_cmdline=kernel_cmdline)), True)
    assert r.status == "warn" and r.subject == "bls"
    assert "next boot will have intel_iommu=on iommu=pt (default entry /boot/loader/entries/" in r.seen
    assert "entry 0f6a1c2e9d8b4a7f8e3c5b1a2d4f6e8c-5.14.0-284.30.1.el9_2.x86_64" in r.seen
    assert "/etc/kernel/cmdline (kernels installed later)" in r.seen and "rescue" not in r.seen
    r = d.check_bootloader(state(boot_files=boot(entries=entries, grubenv=env)), True)
    assert r.status == "fail" and "lacks intel_iommu=on iommu=pt" in r.seen


def test_rhel8_kernelopts_with_iommu_off():
    entries, env = bls_files("rhel8")
    r = d.check_bootloader(state(boot_files=boot(entries=entries, grubenv=env)), True)
    assert r.status == "fail" and "iommu=off contradicts the recipe" in r.seen


def test_bls_entries_root_may_read():
    r = d.check_bootloader(state(boot_files=boot(bls_problem="/boot/loader/entries: permission denied "
                                                             "(run sriov-node check as root)")), True)
    assert r.status == "skip" and r.fix == "run sriov-node check as root"


# ---------------------------------------------------------------------------- per PF


def pf(**kw) -> PciFunction:
    base = dict(pci=PF, exists=True, vendor="8086", device="1572", driver="i40e", total_vfs=64, num_vfs=0,
                config=load_hex("x710-pf"), upstream=PORT, upstream_config=load_hex("root-port-ari"), ari_enabled=True)
    base.update(kw)
    return PciFunction(**base)


WANT = d.PfWant(PF, "pf[0]", 8, None, f"{PF} (ens1f0)")


def test_pf_driver_states():
    assert d.check_pf_driver(pf(), WANT).status == "ok"
    none = d.check_pf_driver(pf(driver=None, default_driver="i40e"), WANT)
    assert none.status == "fail" and "ENOENT" in none.seen and none.fix.startswith("modprobe i40e")
    assert d.check_pf_driver(pf(driver=None), replace(WANT, num_vfs=0)).status == "warn"
    assert d.check_pf_driver(pf(driver="vfio-pci", vfio_enable_sriov=True), WANT).status == "ok"
    vfio = d.check_pf_driver(pf(driver="vfio-pci", vfio_enable_sriov=False), WANT)
    assert vfio.status == "fail" and "enable_sriov=1" in vfio.fix
    for stub in ("pci-stub", "uio_pci_generic"):  # the drivers preflight refuses a new count on
        assert d.check_pf_driver(pf(driver=stub), WANT).status == "fail", stub
    unknown = d.check_pf_driver(pf(driver="octeontx2_pf"), WANT)
    assert unknown.status == "warn" and "max_vfs" in unknown.fix
    assert d.check_pf_driver(pf(total_vfs=None), WANT) is None  # not a PF: the capability check explains


DRIVER_NAMES = sorted(set(driver_table.DRIVERS) | driver_table.STUB_DRIVERS
                      | getattr(driver_table, "OTHER_PF_DRIVERS", frozenset()) | {"octeontx2_pf", "some_vendor_driver"})


@pytest.mark.parametrize("name", DRIVER_NAMES)
def test_check_and_preflight_give_the_driver_tables_one_answer(name):
    """Every driver a PF can be bound to that sriov-node names (each row of the driver table, the
    stubs, the PF drivers without a row) and some it does not: `check`'s pf_driver line, the
    preflight's refusal (engine/preflight.py) and the executor's ENOENT words all follow
    `drivers.makes_vfs`: a VF driver or a stub fails with its reason and the fix to bind the PF's
    own driver, a PF driver passes, an unknown one is a warning."""
    import errno

    from sriov_node.engine.hints import numvfs_error

    answer = driver_table.makes_vfs(name)
    row = driver_table.driver(name)
    if row is not None:
        assert answer == (row.role != "vf"), name
    result = d.check_pf_driver(pf(driver=name), WANT)
    assert result.status == {True: "ok", False: "fail", None: "warn"}[answer], (name, result)
    why, fix = numvfs_error(errno.ENOENT, 2, total=64, pf_driver=name)
    if answer is False:
        assert "no sriov_configure" in result.seen and "bind the PF to its own driver" in result.fix
        assert "no sriov_configure" in why and "bind the PF to its own driver" in fix, (why, fix)
    else:
        assert "bind the PF to its own driver" not in fix


def test_sriov_capability_states():
    ok = d.check_sriov_capability(pf(), WANT)
    assert ok.status == "ok" and "TotalVFs 64" in ok.seen and "VF BAR0 at 0x38200000000" in ok.seen
    assert "limits sriov_totalvfs to 63" in d.check_sriov_capability(pf(total_vfs=63), WANT).seen
    assert d.check_sriov_capability(pf(config=None), WANT).status == "skip"
    short = d.check_sriov_capability(pf(config=load_hex("x710-pf")[:64]), WANT)
    assert short.status == "skip" and "only 64 bytes" in short.seen and short.fix == "run sriov-node check as root"
    legacy = d.check_sriov_capability(pf(config=load_hex("x710-pf")[:256]), WANT)
    assert legacy.status == "fail" and "no extended configuration space" in legacy.seen
    off = d.check_sriov_capability(pf(config=load_hex("x710-pf-bios-off"), total_vfs=None), WANT)
    assert off.status == "fail" and "disabled in the BIOS/firmware" in off.seen and "SR-IOV Support" in off.fix
    zero = d.check_sriov_capability(pf(config=load_hex("x710-pf-totalvfs0"), total_vfs=None), WANT)
    assert zero.status == "fail" and "TotalVFs 0" in zero.seen
    nommio = d.check_sriov_capability(pf(config=load_hex("x710-pf-no-mmio")), WANT)
    assert nommio.status == "fail" and "ENOMEM" in nommio.seen and "pci=realloc" in nommio.fix
    assert "Above 4G Decoding" in nommio.fix
    assert d.check_sriov_capability(pf(config=load_hex("x710-pf-no-mmio")), replace(WANT, num_vfs=0)).status == "warn"


def test_mellanox_firmware_hint_names_mlxconfig():
    mlx = pf(vendor="15b3", device="1017", config=load_hex("x710-pf-bios-off"), total_vfs=None)
    r = d.check_sriov_capability(mlx, WANT)
    assert f"mlxconfig -d {PF} set SRIOV_EN=1" in r.fix


def test_the_lab_nvme_pf_is_fine():
    nvme = pf(vendor="1b36", device="0010", driver="nvme", total_vfs=4, config=lab("qemu-nvme-pf-4vfs"),
              upstream="0000:00:01.0", upstream_config=lab("qemu-pcie-root-port"))
    results = d.check_device(nvme, d.PfWant(nvme.pci, "pf[0]", 4, None, None))
    assert [(r.id, r.status) for r in results] == [("pf_selected", "ok"), ("pf_driver", "ok"),
                                                    ("sriov_capability", "ok"), ("ari", "ok")]
    assert "SR-IOV capability at 0x120: TotalVFs 4" in results[2].seen


def test_ari_states():
    assert d.check_ari(pf(), replace(WANT, num_vfs=None)) is None
    assert d.check_ari(pf(), replace(WANT, num_vfs=7)).status == "ok"
    assert d.check_ari(pf(upstream=None), WANT).status == "skip"
    ok = d.check_ari(pf(), WANT)
    assert ok.status == "ok" and "root port 0000:00:03.0 supports ARI forwarding (enabled)" in ok.seen
    lacking = d.check_ari(pf(upstream_config=load_hex("root-port-no-ari"), ari_enabled=False), WANT)
    assert lacking.status == "warn" and "DevCap2 bit 5 clear" in lacking.seen and "at most 7 VFs" in lacking.fix
    no_ari_cap = d.check_ari(pf(config=load_hex("i210")), WANT)
    assert "no ARI capability, so it uses its non-ARI VF offsets" in no_ari_cap.seen
    short = load_hex("root-port-no-ari")[:64]
    assert d.check_ari(pf(upstream_config=short, ari_enabled=True), WANT).status == "ok"
    unknown = d.check_ari(pf(upstream_config=short, ari_enabled=False), WANT)
    assert unknown.status == "skip" and "cut to 64 bytes" in unknown.seen
    v1 = d.check_ari(pf(upstream_config=load_hex("root-port-pcie-v1"), ari_enabled=False), WANT)
    assert v1.status == "skip" and "version 2" in v1.seen


def test_pf_selection_states():
    assert d.check_device(PciFunction(PF, False), WANT)[0].status == "fail"
    failed = d.check_device(pf(), replace(WANT, problem="cfg: pf[0].num_vfs: 80 exceeds sriov_totalvfs = 64"))
    assert (failed[0].id, failed[0].status) == ("pf_selected", "fail")
    ok = d.check_device(pf(), WANT)[0]
    assert ok.status == "ok" and ok.seen == f"pf[0] selects PF {PF} (ens1f0): num_vfs 8 (sriov_totalvfs 64)"
    report = d.diagnose(state(), d.Scope(True, unmatched=(("pf[1]", "no network interface named 'ens9'"),)))
    assert one(report.results, "pf_selected").status == "fail" and report.failed


# ---------------------------------------------------------------------------- modules, NetworkManager


def modules(*states: ModuleState, problem: Optional[str] = None) -> ModulesState:
    return ModulesState("6.1.0-18-amd64", "/lib/modules/6.1.0-18-amd64", states, problem)


def test_module_states():
    st = state(modules=modules(ModuleState("iavf", "iavf", True),
                               ModuleState("vfio-pci", "vfio_pci", False, None, "kernel/drivers/vfio/pci/vfio-pci.ko"),
                               ModuleState("igbvf", "igbvf", False, "kernel/drivers/net/ethernet/intel/igbvf/igbvf.ko"),
                               ModuleState("nosuch", "nosuch", False)))
    by = {r.subject: r for r in d.check_modules(st, ["iavf", "vfio-pci", "igbvf", "nosuch"])}
    assert by["iavf"].status == "ok" and "loaded" in by["iavf"].seen
    assert by["vfio-pci"].status == "ok" and "modprobe vfio_pci finds" in by["vfio-pci"].seen
    assert by["igbvf"].status == "ok" and "built into the kernel" in by["igbvf"].seen
    assert by["nosuch"].status == "fail" and "linux-modules-extra-6.1.0-18-amd64" in by["nosuch"].fix
    unknown = state(modules=modules(ModuleState("nosuch", "nosuch", False), problem="no /lib/modules/6.1.0-18-amd64"))
    assert d.check_modules(unknown, ["nosuch"])[0].status == "skip"


def test_networkmanager_states():
    assert d.check_networkmanager(state(networkmanager=NetworkManagerState(None)), True).status == "skip"
    assert d.check_networkmanager(state(networkmanager=NetworkManagerState(False)), True).status == "ok"
    running = NetworkManagerState(True, 812)
    assert d.check_networkmanager(state(networkmanager=running), False).status == "ok"
    warn = d.check_networkmanager(state(networkmanager=running), True)
    assert warn.status == "warn" and "DHCP" in warn.seen and "sriov-node udev-rule" in warn.fix
    told = replace(running, unmanaged=(("/etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules",
                                        'ENV{NM_UNMANAGED}="1", ENV{SRIOV_NODE_VF}="1"'),))
    assert d.check_networkmanager(state(networkmanager=told), True).status == "ok"


def test_warnings_alone_do_not_fail():
    report = d.diagnose(state(types=("DMA-FQ",), cmd="ro intel_iommu=on", boot_files=boot(FIXED_GRUB)), d.Scope(False))
    assert report.counts["warn"] >= 1 and not report.failed
