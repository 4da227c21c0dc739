"""Runs INSIDE the kernel-lab guest, as root, against the real Linux kernel: `sriov-node check`.

Each scenario runs the installed console script and reads the kernel's own view independently
(lspci, /proc/cmdline, sysfs). It prints one line `@@RESULTS <json>` that
tests/lab/test_check_lab.py asserts on. Steps never raise: a failed step is recorded.

The guest's / is this machine's filesystem under a throw-away tmpfs overlay, so the boot-loader
files written here (/etc/default/grub, the grub.d drop-in, a fake update-grub on PATH) vanish at power-off.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Dict

from guest import sh, wait_pf_driver  # tests/lab/guest.py, beside this script

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
SYS = "/sys/bus/pci/devices"
SMALL, BIG = "0000:01:00.0", "0000:02:00.0"  # NVMe PFs: 4 and 64 VFs, behind root ports 00:01.0 and 00:02.0
CONFIG = "/etc/sriov-node/config.toml"
FAKEBIN = "/tmp/sriov-node-check-fakebin"
CALLS = "/tmp/sriov-node-check-calls.log"
DROPIN = "/etc/default/grub.d/99-sriov-node.cfg"
results: Dict[str, Any] = {}


def step(name: str, cmd: str, **kw: Any) -> Dict[str, Any]:
    results[name] = sh(cmd, **kw)
    return results[name]


def read(path: str) -> Any:
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as exc:
        return f"<{exc.strerror}>"


def configure(text: str) -> None:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w") as fh:
        fh.write(text)
    os.chmod(CONFIG, 0o644)


def vfio_block(pci: str, num: int) -> str:
    return f'[[pf]]\npci = "{pci}"\nnum_vfs = {num}\n  [[pf.vfs]]\n  range = "0-{num - 1}"\n  driver = "vfio-pci"\n'


def wait_pf_drivers(*pcis: str) -> bool:
    return all([wait_pf_driver(p) for p in pcis])


def kernel_view() -> Dict[str, Any]:
    """The kernel's answers, read without sriov_node."""
    return {
        "cmdline": read("/proc/cmdline").strip(),
        "iommu_groups": len(os.listdir("/sys/kernel/iommu_groups")),
        "class_iommu": sorted(os.listdir("/sys/class/iommu")),
        "acpi_tables": sorted(os.listdir("/sys/firmware/acpi/tables")),
        "lspci_small": sh(f"lspci -vvv -s {SMALL}")["stdout"],
        "lspci_port": sh("lspci -vvv -s 00:01.0")["stdout"],
    }


def fake_boot_loader(grub: str) -> None:
    """A Debian-shaped /etc/default/grub and a fake update-grub that records its arguments."""
    os.makedirs("/etc/default", exist_ok=True)
    with open("/etc/default/grub", "w") as fh:
        fh.write(grub)
    os.makedirs(FAKEBIN, exist_ok=True)
    with open(f"{FAKEBIN}/update-grub", "w") as fh:
        fh.write(f'#!/bin/sh\necho "update-grub $*" >> {CALLS}\n')
    os.chmod(f"{FAKEBIN}/update-grub", 0o755)
    open(CALLS, "w").close()


def fix_round(name: str) -> None:
    step(name, f"PATH={FAKEBIN}:$PATH {BIN} check --json --fix")
    results[name]["grub"] = read("/etc/default/grub")
    results[name]["dropin"] = read(DROPIN)  # sriov-node's own (the guest is Debian: grub.d is sourced)
    results[name]["backups"] = sorted(n for n in os.listdir("/etc/default") if n.startswith("grub.sriov-node-"))
    results[name]["calls"] = read(CALLS).splitlines()
    results[name]["reboot_required"] = read("/run/sriov-node/reboot-required")


def scenario_on() -> None:
    results["setup"] = sh("modprobe nvme")
    results["pf_drivers"] = wait_pf_drivers(SMALL, BIG)
    results["kernel"] = kernel_view()
    configure(vfio_block(SMALL, 4) + vfio_block(BIG, 64))
    step("check", f"{BIN} check --json")
    # without CAP_SYS_ADMIN the kernel cuts <pci>/config to 64 bytes: check says "skip", never guesses
    sh("chmod o+x /root")  # the guest overlay only: lets nobody reach the venv's interpreter
    results["config_bytes_nobody"] = sh(f"setpriv --reuid=65534 --regid=65534 --clear-groups "
                                        f"{sys.executable} -c 'print(len(open(\"{SYS}/{SMALL}/config\", \"rb\").read()))'")
    step("check_nobody", f"setpriv --reuid=65534 --regid=65534 --clear-groups {BIN} check --json --pf {SMALL}")
    # the live root: a boot loader that lacks the arguments the running kernel has
    fake_boot_loader('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX="console=ttyS0"\n')
    fix_round("fix")
    fix_round("fix_again")
    step("apply", f"{BIN} apply --json")
    results["numvfs_after_apply"] = read(f"{SYS}/{SMALL}/sriov_numvfs").strip()


def _refused_without_iommu() -> None:
    results["setup"] = sh("modprobe nvme")
    results["pf_drivers"] = wait_pf_drivers(SMALL)
    results["kernel"] = kernel_view()
    configure(vfio_block(SMALL, 2))
    step("check", f"{BIN} check --json")
    step("apply", f"{BIN} apply --json")
    results["numvfs_after_apply"] = read(f"{SYS}/{SMALL}/sriov_numvfs").strip()


def scenario_off() -> None:
    _refused_without_iommu()
    fake_boot_loader('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet intel_iommu=off"\nGRUB_CMDLINE_LINUX=""\n')
    fix_round("fix")
    fix_round("fix_again")
    step("status", f"{BIN} status")


def scenario_cmdline_off() -> None:
    _refused_without_iommu()


if __name__ == "__main__":
    start = time.monotonic()
    {"check-on": scenario_on, "check-off": scenario_off, "check-cmdline-off": scenario_cmdline_off}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
