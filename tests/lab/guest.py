"""Runs INSIDE the kernel-lab guest, as root, against the real Linux kernel.

Each scenario drives the installed `sriov-node` console script and reads the kernel's own view
(sysfs, /dev/vfio, strace) independently of sriov_node's host layer. It prints one line
`@@RESULTS <json>` that tests/lab/test_kernel_lab.py asserts on. Steps never raise: a failed
step is recorded, so one boot answers every question.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
SYS = "/sys/bus/pci/devices"
SMALL, BIG = "0000:01:00.0", "0000:02:00.0"  # NVMe PFs: 4 and 64 VFs
CONFIG = "/etc/sriov-node/config.toml"
results: Dict[str, Any] = {}


def sh(cmd: str, timeout: float = 120) -> Dict[str, Any]:
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        out = {"rc": p.returncode, "stdout": p.stdout[-400000:], "stderr": p.stderr[-6000:]}
    except subprocess.TimeoutExpired as exc:
        out = {"rc": None, "stdout": str(exc.stdout)[-2000:], "stderr": "TIMEOUT"}
    out["seconds"] = round(time.monotonic() - start, 2)
    return out


def read(path: str) -> Any:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError as exc:
        return f"<{exc.strerror}>"


def link(path: str) -> Any:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def kernel_view(pf: str) -> Dict[str, Any]:
    """The PF and its VFs as the kernel shows them, read without sriov_node."""
    vfs = []
    for entry in sorted(glob.glob(f"{SYS}/{pf}/virtfn*"), key=lambda p: int(p.rsplit("virtfn", 1)[1])):
        vf = link(entry)
        group = link(f"{SYS}/{vf}/iommu_group")
        vfs.append({
            "pci": vf,
            "driver": link(f"{SYS}/{vf}/driver"),
            "driver_override": read(f"{SYS}/{vf}/driver_override"),
            "group": group,
            "dev_vfio": bool(group) and os.path.exists(f"/dev/vfio/{group}"),
        })
    return {"numvfs": read(f"{SYS}/{pf}/sriov_numvfs"), "autoprobe": read(f"{SYS}/{pf}/sriov_drivers_autoprobe"),
            "driver": link(f"{SYS}/{pf}/driver"), "vfs": vfs}


def write_errno(path: str, value: str) -> str:
    """One write(2) of a sysfs attribute: "ok", or the errno's name the kernel answered (a shell's
    `echo` says "I/O error" for any failed write: dash does)."""
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
        return "ok"
    except OSError as exc:
        return errno.errorcode.get(exc.errno or 0, str(exc.errno))


def configure(text: str) -> None:
    os.makedirs(os.path.dirname(CONFIG), exist_ok=True)
    with open(CONFIG, "w") as fh:
        fh.write(text)
    os.chmod(CONFIG, 0o644)  # root-owned, not group/world-writable: the trust rule is live here


def pf_block(pci: str, num: int, driver: str = "") -> str:
    text = f'[[pf]]\npci = "{pci}"\nnum_vfs = {num}\n'
    if driver and num:
        text += f'  [[pf.vfs]]\n  range = "0-{num - 1}"\n  driver = "{driver}"\n'
    return text


def step(name: str, cmd: str, **kw: Any) -> Dict[str, Any]:
    results[name] = sh(cmd, **kw)
    return results[name]


def wait_pf_driver(pci: str, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if link(f"{SYS}/{pci}/driver"):
            return True
        time.sleep(0.1)
    return False


def scenario_iommu_on() -> None:
    results["setup"] = sh("modprobe nvme")
    results["setup"]["pf_drivers"] = [wait_pf_driver(SMALL), wait_pf_driver(BIG)]
    results["totalvfs"] = [read(f"{SYS}/{SMALL}/sriov_totalvfs"), read(f"{SYS}/{BIG}/sriov_totalvfs")]

    # 1 + 3: create VFs on both PFs, bound to vfio-pci; then a second apply writes nothing
    configure(pf_block(SMALL, 4, "vfio-pci") + pf_block(BIG, 64, "vfio-pci"))
    step("apply_create", f"{BIN} apply --json", timeout=300)
    results["after_create"] = {"small": kernel_view(SMALL), "big": kernel_view(BIG)}
    step("apply_again", f"strace -f -e trace=openat,write -o /tmp/strace-again.log {BIN} apply --json")
    results["apply_again"]["sysfs_writes"] = [
        line for line in read("/tmp/strace-again.log").splitlines() if "/sys/" in line and "O_WRONLY" in line]
    step("status", f"{BIN} status --json")

    # 3: the override persists: after an unbind, a plain re-probe returns the VF to vfio-pci
    vf0 = results["after_create"]["small"]["vfs"][0]["pci"] if results["after_create"]["small"]["vfs"] else "none"
    step("reprobe", f"echo {vf0} > /sys/bus/pci/drivers/vfio-pci/unbind && echo {vf0} > /sys/bus/pci/drivers_probe")
    results["reprobe"]["driver"] = link(f"{SYS}/{vf0}/driver")

    # the kernel's own rule: N over M is EBUSY (what the planner must never trip over)
    step("raw_resize", f"""python3 -c 'import os; fd = os.open("{SYS}/{SMALL}/sriov_numvfs", os.O_WRONLY); os.write(fd, b"2\\n")'""")

    # 2: resize 4 -> 2 goes through 0, traced
    configure(pf_block(SMALL, 2, "vfio-pci") + pf_block(BIG, 64, "vfio-pci"))
    step("apply_resize", f"strace -f -y -e trace=write -o /tmp/strace-resize.log {BIN} apply --json")
    results["apply_resize"]["numvfs_writes"] = [
        line for line in read("/tmp/strace-resize.log").splitlines()
        if "write(" in line and f"{SMALL}/sriov_numvfs>" in line]
    results["apply_resize"]["ebusy"] = "EBUSY" in read("/tmp/strace-resize.log")
    results["after_resize"] = kernel_view(SMALL)

    # 4: a process holding /dev/vfio/<group> open: disabling would block; apply refuses, fast
    view = kernel_view(SMALL)
    group = view["vfs"][1]["group"] if len(view["vfs"]) > 1 else None
    holder = subprocess.Popen(["python3", "-c", f"import time; f = open('/dev/vfio/{group}', 'rb'); print('held', flush=True); time.sleep(600)"],
                              stdout=subprocess.PIPE, text=True)
    results["holder"] = {"pid": holder.pid, "group": group, "ready": holder.stdout.readline().strip()}
    configure(pf_block(SMALL, 1, "vfio-pci") + pf_block(BIG, 64, "vfio-pci"))
    step("apply_held", f"{BIN} apply", timeout=120)
    results["after_held"] = {"numvfs": read(f"{SYS}/{SMALL}/sriov_numvfs")}
    holder.kill()
    holder.wait()
    step("apply_released", f"{BIN} apply --json", timeout=120)
    results["after_released"] = kernel_view(SMALL)

    # a VF unbound by hand from vfio-pci: status reports it, apply repairs it
    big_vf5 = kernel_view(BIG)["vfs"][5]["pci"]
    step("unbind_by_hand", f"echo {big_vf5} > /sys/bus/pci/drivers/vfio-pci/unbind")
    step("status_unbound", f"{BIN} status --json")
    step("apply_rebind", f"{BIN} apply --json", timeout=120)
    results["after_rebind"] = kernel_view(BIG)["vfs"][5]

    # an absent PCI address next to the NVMe PF fails alone; the NVMe PF converges
    configure(pf_block(SMALL, 2, "vfio-pci") + pf_block(BIG, 64, "vfio-pci") + pf_block("0000:05:00.0", 2))
    step("apply_absent", f"{BIN} apply --json", timeout=120)
    results["after_absent"] = kernel_view(SMALL)

    # dropping the driver lines: override cleared, back to the kernel's default (nvme cannot take
    # QEMU's VFs: reported as not converged, with the kernel's answer)
    configure(pf_block(SMALL, 2) + pf_block(BIG, 64, "vfio-pci"))
    step("apply_default", f"{BIN} apply --json", timeout=120)
    results["after_default"] = kernel_view(SMALL)
    step("apply_default_again", f"{BIN} apply --json", timeout=120)
    # "none": deliberately unbound, converged, and then zero writes
    configure(pf_block(SMALL, 2, "none") + pf_block(BIG, 64, "vfio-pci"))
    step("apply_none", f"{BIN} apply --json", timeout=120)
    results["after_none"] = kernel_view(SMALL)
    step("apply_none_again", f"{BIN} apply --json", timeout=120)

    # 6: the PF without a driver: a new count refused before any write (ENOENT, explained)
    configure(pf_block(SMALL, 3))
    step("rmmod", "rmmod nvme")
    step("apply_nodriver", f"{BIN} apply --json", timeout=120)
    results["after_nodriver"] = kernel_view(SMALL)

    # 7: the PF bound to vfio-pci: a new count is refused unless vfio-pci was loaded with
    # enable_sriov=1, exactly where the kernel's sriov_numvfs answers ENOENT
    step("nvme_back", "modprobe nvme")
    wait_pf_driver(SMALL)
    step("nvme_zero", f"echo 0 > {SYS}/{SMALL}/sriov_numvfs")
    step("to_vfio", f"modprobe vfio-pci && echo {SMALL} > {SYS}/{SMALL}/driver/unbind && "
                    f"echo vfio-pci > {SYS}/{SMALL}/driver_override && echo {SMALL} > /sys/bus/pci/drivers_probe")
    results["vfio_param"] = read("/sys/module/vfio_pci/parameters/enable_sriov")
    results["vfio_pf_driver"] = link(f"{SYS}/{SMALL}/driver")
    configure(pf_block(SMALL, 2))
    step("validate_vfio", f"{BIN} validate", timeout=120)
    results["write_vfio"] = write_errno(f"{SYS}/{SMALL}/sriov_numvfs", "2")
    step("vfio_reload", f"modprobe -r vfio-pci && modprobe vfio-pci enable_sriov=1 && "
                        f"echo {SMALL} > /sys/bus/pci/drivers_probe")
    results["vfio_param_on"] = read("/sys/module/vfio_pci/parameters/enable_sriov")
    results["vfio_pf_driver_on"] = link(f"{SYS}/{SMALL}/driver")
    step("validate_vfio_on", f"{BIN} validate", timeout=120)
    results["write_vfio_on"] = write_errno(f"{SYS}/{SMALL}/sriov_numvfs", "2")
    results["after_vfio_on"] = kernel_view(SMALL)
    sh(f"echo 0 > {SYS}/{SMALL}/sriov_numvfs")


def scenario_iommu_off() -> None:
    results["setup"] = sh("modprobe nvme")
    results["setup"]["pf_drivers"] = [wait_pf_driver(SMALL)]
    results["iommu_groups"] = os.listdir("/sys/kernel/iommu_groups")
    # 5: vfio-pci without an IOMMU
    configure(pf_block(SMALL, 2, "vfio-pci"))
    step("apply_vfio", f"{BIN} apply", timeout=120)
    results["after_vfio"] = kernel_view(SMALL)


NSIM = "netdevsim10"


def ip_vfs(ifname: str) -> Any:
    """The PF's VFs as iproute2 shows them (`ip -d -j link show`), read without sriov_node."""
    out = sh(f"ip -d -j link show dev {ifname}")
    try:
        return json.loads(out["stdout"])[0].get("vfinfo_list", [])
    except (ValueError, IndexError, KeyError):
        return {"error": out}


def scenario_netdevsim() -> None:
    results["setup"] = sh(f"modprobe netdevsim && echo '10 1' > /sys/bus/netdevsim/new_device && "
                          f"echo 64 > /sys/kernel/debug/netdevsim/{NSIM}/max_vfs")
    time.sleep(0.5)
    nets = os.listdir(f"/sys/bus/netdevsim/devices/{NSIM}/net") if os.path.isdir(f"/sys/bus/netdevsim/devices/{NSIM}/net") else []
    ifname = results["ifname"] = nets[0] if nets else "missing"
    # what the kernel gives a new VF, read with iproute2 before sriov-node ever ran (what undo puts back)
    numvfs = f"/sys/bus/netdevsim/devices/{NSIM}/sriov_numvfs"
    results["fresh_make"] = sh(f"echo 8 > {numvfs}")
    results["ip_fresh"] = ip_vfs(ifname)
    results["fresh_remove"] = sh(f"echo 0 > {numvfs}")
    every = f"""[[pf]]
name = "{ifname}"
num_vfs = 8
mtu = 9000
  [[pf.vfs]]
  range = "0"
  mac = "02:aa:bb:cc:dd:00"
  vlan = 100
  qos = 3
  vlan_proto = "802.1ad"
  spoofchk = false
  trust = true
  link_state = "disable"
  min_tx_rate = 10
  max_tx_rate = 100
  [[pf.vfs]]
  range = "1-7"
  vlan = 200
  spoofchk = true
  trust = true
  link_state = "enable"
"""
    configure(every)
    step("apply_every", f"{BIN} apply --json", timeout=180)
    results["ip_after"] = ip_vfs(ifname)
    results["mtu_after"] = read(f"/sys/class/net/{ifname}/mtu")
    step("apply_again", f"{BIN} apply --json", timeout=180)
    step("status", f"{BIN} status --json", timeout=180)
    # a VF changed by hand is found and put back
    step("by_hand", f"ip link set dev {ifname} vf 3 vlan 7 trust off")
    step("apply_repair", f"{BIN} apply --json", timeout=180)
    results["ip_repaired"] = ip_vfs(ifname)
    # switchdev through devlink; legacy VF rates are then refused (EOPNOTSUPP), explained
    configure(every.replace("mtu = 9000", 'mtu = 9000\neswitch_mode = "switchdev"'))
    step("apply_switchdev_rates", f"{BIN} apply --json", timeout=180)  # mode only: the rates are already there
    configure(every.replace("mtu = 9000", 'mtu = 9000\neswitch_mode = "switchdev"').replace("max_tx_rate = 100", "max_tx_rate = 200"))
    step("apply_switchdev_new_rate", f"{BIN} apply --json", timeout=180)
    step("eswitch_show", f"devlink -j dev eswitch show netdevsim/{NSIM}")
    step("representors", "ip -j -d link show")
    configure(every.replace("mtu = 9000", 'mtu = 9000\neswitch_mode = "switchdev"')
              .replace("  min_tx_rate = 10\n  max_tx_rate = 100\n", ""))
    step("apply_switchdev", f"{BIN} apply --json", timeout=180)
    configure(every.replace("mtu = 9000", 'mtu = 9000\neswitch_mode = "legacy"'))
    step("apply_legacy", f"{BIN} apply --json", timeout=180)
    results["ip_legacy"] = ip_vfs(ifname)
    undo_netdevsim(ifname, every.replace("mtu = 9000", 'mtu = 9000\neswitch_mode = "legacy"'))


def undo_netdevsim(ifname: str, legacy: str) -> None:
    """Undo that is whole, on the real kernel: a checkpoint that changes VLANs and adds a rate is
    taken back by what its timer runs (`rollback --if-uncommitted N`), every value read back; then an
    applied edit that drops every VF setting and the PF's MTU puts back what the kernel first gave."""
    risky = legacy.replace("  range = \"1-7\"\n  vlan = 200\n", "  range = \"1-7\"\n  vlan = 300\n  max_tx_rate = 50\n")
    configure(risky)
    step("undo_checkpoint", f"{BIN} apply --checkpoint 600 --json", timeout=180)
    results["ip_checkpoint"] = ip_vfs(ifname)
    try:
        number = int(json.loads(results["undo_checkpoint"]["stdout"])["generation"])
    except (ValueError, KeyError, TypeError):
        number = -1
    results["undo_number"] = number
    step("undo_expire", f"{BIN} rollback --if-uncommitted {number}", timeout=180)
    results["ip_expired"] = ip_vfs(ifname)
    step("undo_status_expired", f"{BIN} status --exit-code", timeout=180)
    configure(f'[[pf]]\nname = "{ifname}"\nnum_vfs = 8\n')
    step("undo_drop_all", f"{BIN} apply", timeout=180)
    results["ip_dropped"] = ip_vfs(ifname)
    results["mtu_dropped"] = read(f"/sys/class/net/{ifname}/mtu")
    step("undo_status_dropped", f"{BIN} status --exit-code", timeout=180)
    step("undo_again", f"{BIN} apply --json", timeout=180)


if __name__ == "__main__":
    start = time.monotonic()
    {"iommu-on": scenario_iommu_on, "iommu-off": scenario_iommu_off, "netdevsim": scenario_netdevsim}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
