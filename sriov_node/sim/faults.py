"""Faults and test hooks of the simulated kernel: the injected failures the rules consult, and what
a test does to a host that is no kernel write (a process holding a VF, a netdev moved away, a
consistency check, the model's knobs).
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, List, Optional

from sriov_node.sim.tree import SimTree


class SimFaults(SimTree):
    """The faults the model's rules consult, and the hooks tests use."""

    # ------------------------------------------------------------ faults

    def _count(self, key: str) -> int:
        model = self._model
        if not model.get("faults"):
            return 0
        counters = model.setdefault("counters", {})
        counters[key] = counters.get(key, 0) + 1
        self._save()
        return counters[key]

    def _fault(self, kind: str, **match: Any) -> Optional[Dict[str, Any]]:
        for fault in self._model.get("faults", []):
            if fault.get("kind") != kind:
                continue
            if all(fault.get(k) in (None, v) for k, v in match.items() if k != "n"):
                nth = fault.get("nth")
                if nth is None or nth == match.get("n"):
                    return fault
        return None

    # ------------------------------------------------------------ test helpers (not kernel writes)

    def hold_vf(self, vf: str, pid: int, comm: str = "qemu-kvm") -> None:
        """Pretend process `pid` has the VF's /dev/vfio/<group> open (or its /dev/uioN, when
        uio_pci_generic drives it)."""
        uio = self._listdir(f"{self.dev_dir(vf)}/uio")
        group = self._link_name(f"{self.dev_dir(vf)}/iommu_group")
        if group is None and not uio:
            raise ValueError(f"{vf} has no IOMMU group")
        self._put(f"proc/{pid}/comm", comm + "\n")
        self._link_abs(f"proc/{pid}/fd/7", f"/dev/{uio[0]}" if uio else f"/dev/vfio/{group}")

    def release(self, pid: int) -> None:
        self._rmtree(f"proc/{pid}")

    def rename_netdev(self, ifname: str, new: str) -> None:
        """udev's rename (`ip link set dev IFNAME name NEW`, RTM_SETLINK IFLA_IFNAME): the netdev keeps
        its device, ifindex and settings; its sysfs directory and /sys/class/net entry take the new
        name, and a "move" uevent says so. EEXIST when a netdev has that name; ENODEV when none has
        `ifname`. A PF's new name is the one its VFs' netdevs are named after from now on."""
        with self._transaction():
            bdf = self._link_name(f"sys/class/net/{ifname}/device")
            if bdf is None:
                raise OSError(errno.ENODEV, f"no network interface {ifname!r}")
            if not new or len(new) > 15 or "/" in new or os.path.lexists(self._p(f"sys/class/net/{new}")):
                raise OSError(errno.EEXIST if new and len(new) <= 15 else errno.EINVAL, f"cannot rename to {new!r}")
            d = self.dev_dir(bdf)
            old_dir, new_dir = f"{d}/net/{ifname}", f"{d}/net/{new}"
            for name in self._listdir(old_dir):
                path = self._p(f"{old_dir}/{name}")
                if os.path.islink(path):
                    self._link_abs(f"{new_dir}/{name}", os.readlink(path))
                else:
                    with open(path) as fh:
                        self._put(f"{new_dir}/{name}", fh.read(), os.stat(path).st_mode & 0o777)
            self._rmtree(old_dir)
            self._unlink(f"sys/class/net/{ifname}")
            self._link(f"sys/class/net/{new}", new_dir)
            hw = self._model.get("devices", {}).get(bdf)
            if hw is not None and hw.get("ifname") == ifname:
                hw["ifname"] = new
            self._emit("move", "net", new_dir, INTERFACE=new, DEVPATH_OLD="/" + os.path.relpath(old_dir, "sys"))
            self._save()

    def vfio_enable_sriov(self, on: bool = True) -> None:
        """vfio-pci loaded with enable_sriov=1 (or without): its module parameter, now and at its next load."""
        with self._transaction():
            self._model["vfio_enable_sriov"] = on
            if os.path.isdir(self._p("sys/bus/pci/drivers/vfio-pci")):
                self._put("sys/module/vfio_pci/parameters/enable_sriov", ("Y" if on else "N") + "\n", 0o444)
            self._save()

    def add_altname(self, ifname: str, altname: str) -> None:
        """`ip link property add dev IFNAME altname ALTNAME` (RTM_NEWLINKPROP): EEXIST when any netdev
        has that name or alternative name, EINVAL past ALTIFNAMSIZ; kept with the device."""
        with self._transaction():
            bdf = self._link_name(f"sys/class/net/{ifname}/device")
            if bdf is None:
                raise OSError(errno.ENODEV, f"no network interface {ifname!r}")
            if not altname or len(altname) > 127 or "/" in altname or ":" in altname:
                raise OSError(errno.EINVAL, f"invalid alternative name {altname!r}")
            devices = self._model.setdefault("devices", {})
            taken = set(self._listdir("sys/class/net")) | {n for hw in devices.values() for n in hw.get("altnames", ())}
            if altname in taken:
                raise OSError(errno.EEXIST, f"{altname!r} is taken")
            devices.setdefault(bdf, {}).setdefault("altnames", []).append(altname)
            self._save()

    def del_altname(self, ifname: str, altname: str) -> None:
        """`ip link property del dev IFNAME altname ALTNAME`."""
        with self._transaction():
            bdf = self._link_name(f"sys/class/net/{ifname}/device")
            names = self._model.get("devices", {}).get(bdf or "", {}).get("altnames", [])
            if altname not in names:
                raise OSError(errno.ENOENT, f"{ifname} has no alternative name {altname!r}")
            names.remove(altname)
            self._save()

    def rdma_driver_loaded(self, loaded: bool) -> None:
        """Whether mlx5_ib is loaded: RDMA devices appear on mlx5_core functions bound from now on."""
        with self._transaction():
            self._model["rdma"] = loaded
            self._save()

    def ib_vf_guid_readback(self, netlink: bool = True, ofed_sysfs: bool = False) -> None:
        """Where an InfiniBand VF's GUIDs can be read back. `netlink`: rtnl_fill_vfinfo reports
        IFLA_VF_IB_NODE_GUID/PORT_GUID (ndo_get_vf_guid, Linux 5.5+; the model's default); False: a
        kernel or driver build that takes the GUIDs (ndo_set_vf_guid, 4.6+) but reports none (before
        5.5, and MLNX_OFED builds without the backport). `ofed_sysfs`: the PF driver is MLNX_OFED's
        mlx5_core, with its `<PF>/sriov/<N>/{node,port,policy}` files (`PciRules._sync_ofed_sriov`)."""
        with self._transaction():
            self._model["ib_vf_guids"] = {"netlink": bool(netlink), "ofed_sysfs": bool(ofed_sysfs)}
            for bdf, hw in self._model.get("devices", {}).items():
                if hw.get("model") and self.dev_dir(bdf) is not None:
                    self._sync_ofed_sriov(bdf)  # type: ignore[attr-defined]  # PciRules writes them
            self._save()

    def move_netdev_out(self, vf: str) -> None:
        """Move the VF's netdev into another network namespace: net/ stays, empty."""
        d = self.dev_dir(vf)
        for ifname in self._listdir(f"{d}/net"):
            self._unlink(f"sys/class/net/{ifname}")
            self._rmtree(f"{d}/net/{ifname}")

    def move_netdev_back(self, vf: str) -> None:
        """The VF's netdev returns to the host namespace (the pod is gone: the CNI moves it back)."""
        self._load()
        if not self._listdir(f"{self.dev_dir(vf)}/net"):
            self._add_netdev(vf)  # type: ignore[attr-defined]  # PciRules makes netdevs

    def show_vf_remove(self) -> None:
        """VFs made from now on show `remove`, as older kernels' did (current ones hide it on VFs)."""
        model = self._load()
        model["vf_remove_attr"] = True
        self._save()

    def hold_blocks_for(self, seconds: float) -> None:
        """How long a write waits on a held vfio device before the model gives up with EDEADLK
        (the kernel waits forever; 30 s on a new host)."""
        model = self._load()
        model["hold_block_seconds"] = seconds
        self._save()

    def uevent_buffer(self, nbytes: int) -> None:
        """How many bytes of unread uevents a listener holds from now on (its netlink socket's
        receive buffer; 4 MiB unless set): the rest of a burst that finds it full is lost, and the
        listener's next receive raises ENOBUFS."""
        model = self._load()
        model["uevent_buffer"] = int(nbytes)
        self._save()

    def forget_module_aliases(self) -> None:
        """A host whose module aliases (modules.alias) cannot be read: no driver is known as a
        device's default any more (the model's ID tables still decide what binds)."""
        model = self._load()
        model["module_aliases"] = False
        self._save()

    def add_fault(self, kind: str, **fields: Any) -> None:
        if kind in ("errno", "probe_fails") and not hasattr(errno, str(fields.get("errno"))):
            raise ValueError(f"a {kind} fault needs errno=<name>, e.g. errno=\"EINVAL\"")
        model = self._load()
        model.setdefault("faults", []).append({"kind": kind, **fields})
        self._save()

    def clear_faults(self) -> None:
        model = self._load()
        model["faults"] = []
        self._save()

    def consistency_problems(self) -> List[str]:
        """What a real kernel would never show: a count that disagrees with the links, dangling links."""
        problems = []
        if os.path.isdir(self._journal_dir):
            problems.append("an unfinished write's journal is still there")
        for bdf in self._listdir("sys/bus/pci/devices"):
            d = self.dev_dir(bdf)
            if d is None or not os.path.isdir(self._p(d)):
                problems.append(f"{bdf}: sys/bus/pci/devices link is dangling")
                continue
            links = [n for n in self._listdir(d) if n.startswith("virtfn")]
            numvfs = self._get(f"{d}/sriov_numvfs")
            if numvfs is not None and int(numvfs) != len(links):
                problems.append(f"{bdf}: sriov_numvfs reads {numvfs} with {len(links)} virtfn link(s)")
            for name in links:
                vf = self._link_name(f"{d}/{name}")
                if vf is not None and not os.path.lexists(self._p(f"{d}/{name}/.")) and \
                        not os.path.lexists(self._p(f"sys/bus/pci/devices/{vf}")):
                    continue  # dangling: a VF removed by hand (echo 1 > remove), as the kernel shows it
                if vf is None or self.dev_dir(vf) is None or self._pf_of(vf) != bdf:
                    problems.append(f"{bdf}/{name} -> {vf}: not a VF of this PF")
            drv = self.driver_of(bdf)
            if drv is not None and not os.path.lexists(self._p(f"sys/bus/pci/drivers/{drv}/{bdf}")):
                problems.append(f"{bdf}: bound to {drv} without the driver's link back")
        return problems
