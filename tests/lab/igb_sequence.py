"""One sequence of writes on an Intel 82576 PF (igb) and its VFs, and the answers it gets, for both kernels.

The same steps run in the kernel lab's guest (LAB_IGB=1: QEMU's igb under Linux 6.1; raw sysfs writes,
`ip link set`, `ip -d -j link`, the kernel's uevents from a netlink socket) and on the simulated 82576
(the same writes through the simulated kernel, `ip`'s VF settings through the simulated host's
netlink capability, its uevent log). Each step records the kernel's answer (ok or the errno's
name) and what reads back, in a form both sides share (a VF by its index, a PCI function by its
routing-ID offset from the PF, a MAC by what it is). tests/lab/test_igb_sim_lab.py compares the two;
tests/test_sim_82576.py holds the simulator to the answers recorded from the lab (tests/data/).

In the guest: `python tests/lab/igb_sequence.py guest` prints `@@RESULTS <json>` (kernel-lab's
convention). Needs only the standard library and iproute2 there.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

ADMIN_MAC = "02:00:00:00:aa:00"
PCI = "sys/bus/pci/devices"


def errname(code: Optional[int]) -> str:
    """The errno's name as the kernel's headers spell it (95 is EOPNOTSUPP, not its alias ENOTSUP)."""
    return "EOPNOTSUPP" if code == errno.EOPNOTSUPP else errno.errorcode.get(code or 0, str(code))


STRERROR = {os.strerror(code): errname(code) for code in errno.errorcode}
# what the daemon listens to (sriov_node/service/uevents.py): PCI and netdev events
SUBSYSTEMS = ("pci", "net")


def rid(bdf: str) -> int:
    _, bus, rest = bdf.split(":")
    dev, fn = rest.split(".")
    return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn)


class Backend:
    """What a step can do to a kernel. Paths are relative to its root ("sys/...")."""

    pf = ""  # the PF's PCI address
    ifname = ""  # the PF's netdev

    def write(self, rel: str, text: str) -> str:
        raise NotImplementedError

    def ip(self, *args: str) -> str:
        """`ip link set <args>`: "ok" or the errno's name."""
        raise NotImplementedError

    def vf_links(self) -> Any:
        """`ip -d -j link show <pf>`'s VF list, as [{vf, mac, vlan, qos, proto, spoofchk, trust, link_state,
        min_tx_rate, max_tx_rate}]."""
        raise NotImplementedError

    def read(self, rel: str) -> Optional[str]:
        raise NotImplementedError

    def listdir(self, rel: str) -> List[str]:
        raise NotImplementedError

    def link_name(self, rel: str) -> Optional[str]:
        raise NotImplementedError

    def modprobe(self, module: str) -> str:
        raise NotImplementedError

    def exists(self, rel: str) -> bool:
        raise NotImplementedError

    def mark(self) -> None:
        """From now on, collect uevents."""
        raise NotImplementedError

    def events(self) -> List[Dict[str, str]]:
        """The uevents since the last mark (each a dict of its properties)."""
        raise NotImplementedError


def mac_kind(mac: Optional[str]) -> Optional[str]:
    """A MAC by what it is: zero, the one the sequence set, or another (the driver's random one)."""
    if mac is None:
        return None
    mac = mac.lower()
    if mac == "00:00:00:00:00:00":
        return "zero"
    if mac == ADMIN_MAC:
        return "admin"
    return "other"


def who(b: Backend, devpath: str, vfs: Dict[str, int]) -> str:
    """A uevent's device as both sides can name it: pf, pf-net, vfN, vfN-net."""
    parts = [p for p in devpath.split("/") if p]
    net = "net" in parts
    dev = parts[parts.index("net") - 1] if net else (parts[-1] if parts else "")
    if dev == b.pf:
        name = "pf"
    elif dev in vfs:
        name = f"vf{vfs[dev]}"
    else:
        name = "other"
    return name + ("-net" if net else "")


class Sequence:
    """The steps; each records its answers under a name, in order."""

    def __init__(self, b: Backend):
        self.b = b
        self.out: Dict[str, Any] = {}
        # the VFs' addresses as the PF lays them out (offset 128, stride 2): named in uevents
        # even once they are gone
        base = rid(b.pf)
        domain = b.pf.split(":")[0]
        self.vf_names = {}
        for i in range(8):
            r = base + 128 + 2 * i
            self.vf_names[f"{domain}:{r >> 8:02x}:{(r & 0xff) >> 3:02x}.{r & 7}"] = i

    # ------------------------------------------------------------ read-backs

    def state(self) -> Dict[str, Any]:
        b, pf = self.b, self.b.pf
        links = sorted((n for n in b.listdir(f"{PCI}/{pf}") if n.startswith("virtfn")), key=lambda n: int(n[6:]))
        vfs = []
        for n in links:
            vf = b.link_name(f"{PCI}/{pf}/{n}")
            if vf is None:
                vfs.append({"index": int(n[6:]), "missing": True})
                continue
            nets = b.listdir(f"{PCI}/{vf}/net")
            vfs.append({
                "index": int(n[6:]),
                "offset": rid(vf) - rid(pf),
                "driver": b.link_name(f"{PCI}/{vf}/driver"),
                "id": f"{b.read(f'{PCI}/{vf}/vendor')}:{b.read(f'{PCI}/{vf}/device')}",
                "physfn": b.link_name(f"{PCI}/{vf}/physfn") == pf,
                "group": b.link_name(f"{PCI}/{vf}/iommu_group"),
                "netdevs": len(nets),
                "netdev_mac": mac_kind(b.read(f"{PCI}/{vf}/net/{nets[0]}/address")) if nets else None,
            })
        groups = [vf.get("group") for vf in vfs]
        for vf in vfs:
            vf.pop("group", None)
        return {"numvfs": b.read(f"{PCI}/{pf}/sriov_numvfs"), "virtfn": len(links), "vfs": vfs,
                "own_groups": all(groups) and len(set(groups)) == len(groups)}

    def links(self) -> Any:
        vfs = self.b.vf_links()
        if not isinstance(vfs, list):
            return vfs
        return [{**vf, "mac": mac_kind(vf["mac"])} for vf in vfs]

    def identity(self) -> Dict[str, Any]:
        b, pf = self.b, self.b.pf
        names = ("vendor", "device", "subsystem_vendor", "subsystem_device", "class", "sriov_totalvfs",
                 "sriov_offset", "sriov_stride", "sriov_vf_device", "sriov_numvfs", "sriov_drivers_autoprobe")
        out = {name: b.read(f"{PCI}/{pf}/{name}") for name in names}
        out["driver"] = b.link_name(f"{PCI}/{pf}/driver")
        return out

    def vf_identity(self) -> Dict[str, Any]:
        b = self.b
        vf = b.link_name(f"{PCI}/{b.pf}/virtfn0")
        names = ("vendor", "device", "subsystem_vendor", "subsystem_device", "class")
        return {name: b.read(f"{PCI}/{vf}/{name}") for name in names} if vf else {}

    def uevents(self) -> List[str]:
        """The uevents since the mark that the daemon listens to, as 'action subsystem who [driver]'."""
        out = []
        for e in self.b.events():
            if e.get("SUBSYSTEM") not in SUBSYSTEMS:
                continue
            text = f"{e.get('ACTION')} {e.get('SUBSYSTEM')} {who(self.b, e.get('DEVPATH', ''), self.vf_names)}"
            if e.get("DRIVER"):
                text += f" {e['DRIVER']}"
            out.append(text)
        return out

    # ------------------------------------------------------------ steps

    def step(self, name: str, answer: str, events: bool = False, **reads: Any) -> None:
        entry: Dict[str, Any] = {"answer": answer}
        if events:
            entry["uevents"] = self.uevents()
        entry.update(reads)
        self.out[name] = entry

    def write(self, name: str, rel: str, text: str, **reads: Any) -> str:
        self.b.mark()
        answer = self.b.write(rel, text)
        self.step(name, answer, events=True, **reads)
        return answer

    def ip(self, name: str, *args: str) -> str:
        answer = self.b.ip(*args)
        self.step(name, answer)
        return answer

    def run(self) -> Dict[str, Any]:
        b = self.b
        numvfs = f"{PCI}/{b.pf}/sriov_numvfs"
        self.out["identity"] = self.identity()
        self.ip("pf_down", b.ifname, "down")
        self.write("enable_4", numvfs, "4\n")
        self.out["enable_4"].update(state=self.state(), links=self.links(), vf_identity=self.vf_identity())
        self.write("resize_4_to_2", numvfs, "2\n")
        self.write("above_total_8", numvfs, "8\n")
        self.out["after_refusals"] = self.state()
        # VF settings on the PF (IFLA_VF_*), one `ip` command each, as an operator would
        self.ip("mac", b.ifname, "vf", "0", "mac", ADMIN_MAC)
        self.out["after_mac"] = {"state": self.state(), "links": self.links()}
        self.ip("vlan_qos", b.ifname, "vf", "0", "vlan", "100", "qos", "3")
        self.ip("vlan_8021ad", b.ifname, "vf", "1", "vlan", "200", "proto", "802.1ad")
        self.ip("vlan_8021q", b.ifname, "vf", "1", "vlan", "200")
        self.ip("spoofchk_off", b.ifname, "vf", "0", "spoofchk", "off")
        self.ip("trust_on", b.ifname, "vf", "0", "trust", "on")
        self.ip("link_state", b.ifname, "vf", "1", "state", "disable")
        self.ip("rate_pf_down", b.ifname, "vf", "0", "max_tx_rate", "100")
        self.ip("pf_up", b.ifname, "up")
        self.ip("rate", b.ifname, "vf", "0", "max_tx_rate", "100")
        self.ip("rate_above_link", b.ifname, "vf", "1", "max_tx_rate", "1001")
        self.ip("rate_at_link", b.ifname, "vf", "1", "max_tx_rate", "1000")
        self.ip("min_tx_rate", b.ifname, "vf", "1", "min_tx_rate", "10", "max_tx_rate", "500")
        self.ip("vf_out_of_range", b.ifname, "vf", "4", "trust", "on")
        self.out["after_settings"] = {"state": self.state(), "links": self.links()}
        # the VF takes its new MAC when igbvf probes it again
        vf0 = b.link_name(f"{PCI}/{b.pf}/virtfn0") or "missing"
        self.write("unbind_vf0", "sys/bus/pci/drivers/igbvf/unbind", vf0 + "\n")
        self.write("bind_vf0", "sys/bus/pci/drivers/igbvf/bind", vf0 + "\n")
        self.out["after_rebind"] = {"state": self.state(), "links": self.links()}
        # VF 1 to vfio-pci, as the agent binds a named driver: override, unbind, probe
        self.step("modprobe_vfio", b.modprobe("vfio-pci"))
        vf1 = b.link_name(f"{PCI}/{b.pf}/virtfn1") or "missing"
        self.write("override_vf1", f"{PCI}/{vf1}/driver_override", "vfio-pci\n")
        self.write("unbind_vf1", "sys/bus/pci/drivers/igbvf/unbind", vf1 + "\n")
        self.write("probe_vf1", "sys/bus/pci/drivers_probe", vf1 + "\n")
        group = b.link_name(f"{PCI}/{vf1}/iommu_group")
        self.out["probe_vf1"].update(state=self.state(), dev_vfio=bool(group) and b.exists(f"dev/vfio/{group}"))
        self.ip("pf_down_again", b.ifname, "down")
        self.write("disable", numvfs, "0\n")  # a VF on vfio-pci (not open) goes too
        self.out["disable"]["state"] = self.state()
        self.write("enable_2_again", numvfs, "2\n")
        self.out["enable_2_again"].update(state=self.state(), links=self.links())
        self.write("disable_again", numvfs, "0\n")
        # VFs that must not meet their default driver: autoprobe off, then enable, then probe one
        self.write("autoprobe_off", f"{PCI}/{b.pf}/sriov_drivers_autoprobe", "0\n")
        self.write("enable_2_unprobed", numvfs, "2\n")
        self.out["enable_2_unprobed"]["state"] = self.state()
        self.write("autoprobe_on", f"{PCI}/{b.pf}/sriov_drivers_autoprobe", "1\n")
        vf0 = b.link_name(f"{PCI}/{b.pf}/virtfn0") or "missing"
        self.write("probe_vf0", "sys/bus/pci/drivers_probe", vf0 + "\n")
        self.out["probe_vf0"]["state"] = self.state()
        # the PF driver let go and bound again (a driver reload): its remove takes the VFs
        self.write("unbind_pf", "sys/bus/pci/drivers/igb/unbind", b.pf + "\n")
        self.out["unbind_pf"]["state"] = self.state()
        self.write("numvfs_no_driver", numvfs, "2\n")
        self.write("bind_pf", "sys/bus/pci/drivers/igb/bind", b.pf + "\n")
        nets = b.listdir(f"{PCI}/{b.pf}/net")
        self.out["bind_pf"].update(state=self.state(), netdevs=len(nets),
                                   autoprobe=b.read(f"{PCI}/{b.pf}/sriov_drivers_autoprobe"))
        b.ifname = nets[0] if nets else b.ifname
        self.write("enable_1_after_reload", numvfs, "1\n")
        self.out["enable_1_after_reload"].update(state=self.state(), links=self.links())
        self.write("disable_last", numvfs, "0\n")
        return self.out


# ---------------------------------------------------------------------------- the lab's guest

class GuestBackend(Backend):
    """The real kernel: raw write(2)s, iproute2, and the kernel's uevent netlink group."""

    def __init__(self, pf: str):
        self.pf = pf
        self.ifname = os.listdir(f"/{PCI}/{pf}/net")[0]
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)  # NETLINK_KOBJECT_UEVENT
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 1))  # the kernel's group
        self.sock.setblocking(False)

    def write(self, rel: str, text: str) -> str:
        try:
            fd = os.open("/" + rel, os.O_WRONLY)
        except OSError as exc:
            return errname(exc.errno)
        try:
            os.write(fd, text.encode())
            return "ok"
        except OSError as exc:
            return errname(exc.errno)
        finally:
            os.close(fd)

    def ip(self, *args: str) -> str:
        p = subprocess.run(["ip", "link", "set", "dev", *args], capture_output=True, text=True)
        if p.returncode == 0:
            if args[1:] == ("up",):  # the link comes up a moment later: wait for the carrier
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and self.read(f"sys/class/net/{args[0]}/carrier") != "1":
                    time.sleep(0.1)
            return "ok"
        found = re.search(r"RTNETLINK answers: (.*)", p.stderr)
        return STRERROR.get(found.group(1).strip(), p.stderr.strip()) if found else p.stderr.strip()

    def vf_links(self) -> Any:
        p = subprocess.run(["ip", "-d", "-j", "link", "show", "dev", self.ifname], capture_output=True, text=True)
        try:
            raw = json.loads(p.stdout)[0].get("vfinfo_list", [])
        except (ValueError, IndexError):
            return {"error": p.stderr}
        out = []
        for vf in raw:
            vlans = vf.get("vlan_list") or [{}]
            out.append({"vf": vf.get("vf"), "mac": vf.get("address"), "vlan": vlans[0].get("vlan", 0),
                        "qos": vlans[0].get("qos", 0), "proto": vlans[0].get("protocol", "802.1Q"),
                        "spoofchk": vf.get("spoofchk"), "trust": vf.get("trust"),
                        "link_state": vf.get("link_state"), "min_tx_rate": vf.get("rate", {}).get("min_tx", 0),
                        "max_tx_rate": vf.get("rate", {}).get("max_tx", 0)})
        return out

    def read(self, rel: str) -> Optional[str]:
        try:
            with open("/" + rel) as fh:
                return fh.read().strip()
        except OSError:
            return None

    def listdir(self, rel: str) -> List[str]:
        try:
            return sorted(os.listdir("/" + rel))
        except OSError:
            return []

    def link_name(self, rel: str) -> Optional[str]:
        try:
            return os.path.basename(os.readlink("/" + rel))
        except OSError:
            return None

    def modprobe(self, module: str) -> str:
        p = subprocess.run(["modprobe", module], capture_output=True, text=True)
        return "ok" if p.returncode == 0 else p.stderr.strip()

    def exists(self, rel: str) -> bool:
        return os.path.exists("/" + rel)

    def _drain(self) -> List[Dict[str, str]]:
        out = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            fields = data.split(b"\0")
            props = dict(f.decode("latin-1").split("=", 1) for f in fields[1:] if b"=" in f)
            out.append(props)

    def mark(self) -> None:
        time.sleep(0.5)
        self._drain()

    def events(self) -> List[Dict[str, str]]:
        time.sleep(1.0)  # what a write sets off has been sent when it returns; let the socket catch up
        events = self._drain()
        return sorted(events, key=lambda e: int(e.get("SEQNUM", 0)))


# ---------------------------------------------------------------------------- the simulated host

class SimBackend(Backend):
    """The simulated kernel behind a `sim create` root: each sysfs write through its model, `ip`'s VF
    settings through the simulated host's netlink capability (one IFLA_VF_INFO per command, as
    iproute2 sends it), its uevent log."""

    def __init__(self, root: str, pf: str):
        from sriov_node.sim.host import open_sim_host
        from sriov_node.sim.kernel import SimKernel

        self.root = root
        self.host = open_sim_host(root)
        self.kernel = SimKernel(root)
        self.pf = pf
        self.ifname = self.listdir(f"{PCI}/{pf}/net")[0]
        self._seen = 0

    def write(self, rel: str, text: str) -> str:
        try:
            self.kernel.write(rel, text.encode())
            return "ok"
        except OSError as exc:
            return errname(exc.errno)

    def ip(self, *args: str) -> str:
        from sriov_node.sim.net import SimNet

        ifname, rest = args[0], list(args[1:])
        try:
            if rest in (["up"], ["down"]):
                SimNet(self.kernel).set_link_up(ifname, rest == ["up"])
                return "ok"
            assert rest[0] == "vf", args
            vf, words = int(rest[1]), rest[2:]
            change = self._change(ifname, vf, dict(zip(words[::2], words[1::2])))
            self.host.links.set_vf_links(ifname, [(vf, change)])
            return "ok"
        except OSError as exc:
            return errname(exc.errno)

    def _change(self, ifname: str, vf: int, words: Dict[str, str]) -> Dict[str, Any]:
        """What iproute2 puts in the IFLA_VF_INFO for these words (iplink.c iplink_parse_vf)."""
        change: Dict[str, Any] = {}
        if "mac" in words:
            change["mac"] = words["mac"]
        if "vlan" in words:
            change["vlan"] = (int(words["vlan"]), int(words.get("qos", 0)), words.get("proto", "802.1Q"))
        if "min_tx_rate" in words or "max_tx_rate" in words:
            # one unset side is read back from the kernel first (ipaddr_get_vf_rate)
            now = self.host.links.vf_links(ifname).get(vf)
            low = int(words.get("min_tx_rate", now.min_tx_rate if now else 0))
            high = int(words.get("max_tx_rate", now.max_tx_rate if now else 0))
            change["rate"] = (low, high)
        if "spoofchk" in words:
            change["spoofchk"] = words["spoofchk"] == "on"
        if "trust" in words:
            change["trust"] = words["trust"] == "on"
        if "state" in words:
            change["link_state"] = words["state"]
        return change

    def vf_links(self) -> Any:
        out = []
        for i, v in sorted(self.host.links.vf_links(self.ifname).items()):
            out.append({"vf": i, "mac": v.mac, "vlan": v.vlan, "qos": v.qos, "proto": v.vlan_proto,
                        "spoofchk": v.spoofchk, "trust": v.trust, "link_state": v.link_state,
                        "min_tx_rate": v.min_tx_rate, "max_tx_rate": v.max_tx_rate})
        return out

    def read(self, rel: str) -> Optional[str]:
        try:
            with open(os.path.join(self.root, rel)) as fh:
                return fh.read().strip()
        except OSError:
            return None

    def listdir(self, rel: str) -> List[str]:
        try:
            return sorted(os.listdir(os.path.join(self.root, rel)))
        except OSError:
            return []

    def link_name(self, rel: str) -> Optional[str]:
        try:
            return os.path.basename(os.readlink(os.path.join(self.root, rel)))
        except OSError:
            return None

    def modprobe(self, module: str) -> str:
        try:
            self.host.modules.load(module)
            return "ok"
        except OSError as exc:
            return str(exc)

    def exists(self, rel: str) -> bool:
        return os.path.exists(os.path.join(self.root, rel))

    def _log(self) -> List[Dict[str, str]]:
        from sriov_node.sim.kernel import UEVENT_LOG

        try:
            with open(os.path.join(self.root, UEVENT_LOG)) as fh:
                return [json.loads(line) for line in fh]
        except FileNotFoundError:
            return []

    def mark(self) -> None:
        self._seen = len(self._log())

    def events(self) -> List[Dict[str, str]]:
        return self._log()[self._seen:]


def run_sim(root: str, pf: str) -> Dict[str, Any]:
    return Sequence(SimBackend(root, pf)).run()


def compare(lab: Any, sim: Any, where: str = "") -> List[Tuple[str, Any, Any]]:
    """Every place the two answers differ: (path, lab, sim)."""
    if isinstance(lab, dict) and isinstance(sim, dict):
        out = []
        for key in list(lab) + [k for k in sim if k not in lab]:
            out += compare(lab.get(key), sim.get(key), f"{where}.{key}" if where else key)
        return out
    if isinstance(lab, list) and isinstance(sim, list) and len(lab) == len(sim) and not all(
            isinstance(x, str) for x in lab + sim):
        return [d for i, (a, b) in enumerate(zip(lab, sim)) for d in compare(a, b, f"{where}[{i}]")]
    return [] if lab == sim else [(where, lab, sim)]


if __name__ == "__main__" and sys.argv[1:] == ["guest"]:
    start = time.monotonic()
    results: Dict[str, Any] = {}
    for cmd in ("modprobe igb", "modprobe igbvf"):
        subprocess.run(cmd.split(), capture_output=True)
    pf = "0000:03:00.0"  # scripts/kernel-lab LAB_IGB=1
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (os.path.exists(f"/{PCI}/{pf}/driver") and os.listdir(f"/{PCI}/{pf}/net")
                                               if os.path.isdir(f"/{PCI}/{pf}/net") else False):
        time.sleep(0.2)
    time.sleep(0.5)
    try:
        results["sequence"] = Sequence(GuestBackend(pf)).run()
    except Exception:  # recorded: the host side says what failed
        import traceback

        results["error"] = traceback.format_exc()
    results["guest_seconds"] = round(time.monotonic() - start, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
