"""The PCI and driver rules of the simulated kernel (docs/kernel-sriov-spec): what each write to a
device or driver attribute does, the errno it fails with, and the binding, SR-IOV enable and
disable, remove and rescan, and module loading it sets off.
"""

from __future__ import annotations

import errno
import os
import re
import time
from typing import Any, Dict, List, Optional, Tuple

from sriov_node.sim.faults import SimFaults
from sriov_node.sim.tree import _err

_BDF_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
PAGE_SIZE = 4096

# Drivers every distribution kernel ships as modules, loadable on any simulated host (modprobe):
# uio_pci_generic has no ID table (it binds through driver_override or new_id, as DPDK's tools do).
GENERIC_DRIVERS: Dict[str, Dict[str, Any]] = {
    "uio_pci_generic": {"ids": [], "generic": True, "uio": True},
    # bind only through driver_override/new_id; pci-stub has no sriov_configure, pci-pf-stub's is
    # pci_sriov_configure_simple (VFs for a PF with no driver of its own)
    "pci-stub": {"ids": [], "generic": True},
    "pci-pf-stub": {"ids": [], "generic": True, "sriov_configure": True},
}
# vfio-pci's module parameter: vfio_pci_sriov_configure answers ENOENT unless it is Y (module_param 0444)
VFIO_ENABLE_SRIOV = "sys/module/vfio_pci/parameters/enable_sriov"

# PF drivers whose remove never calls pci_disable_sriov(): their VFs outlive the driver ("driver
# left SR-IOV enabled after remove"), and the PF itself (nvme on Linux 6.1, checked in the lab)
LEAVES_SRIOV_ON_REMOVE = frozenset({"nvme"})

READ_ONLY_ATTRS = {
    "vendor", "device", "class", "subsystem_vendor", "subsystem_device", "numa_node", "revision",
    "sriov_totalvfs", "sriov_offset", "sriov_stride", "sriov_vf_device", "sriov_vf_total_msix",
    "local_cpulist", "irq", "modalias",
}


def modalias(vendor: str, device: str, cls: str = "020000", subsystem: Optional[str] = None) -> str:
    """pci:vVVVVVVVVdDDDDDDDDsvSSSSSSSSsdSSSSSSSSbcCCscSSiII, as the kernel prints it for a device
    (`subsystem` "vvvv:dddd"; none: the vendor's, device 0)."""
    sub_vendor, sub_device = subsystem.split(":") if subsystem else (vendor, "0000")
    return (f"pci:v0000{vendor.upper()}d0000{device.upper()}sv0000{sub_vendor.upper()}sd0000{sub_device.upper()}"
            f"bc{cls[0:2].upper()}sc{cls[2:4].upper()}i{cls[4:6].upper()}")


def parse_kstrtoul(data: bytes, limit: int) -> int:
    """kstrtou16/kstrtouint, base 0: one '+', 0x hex, leading-0 octal, one trailing newline."""
    text = data.split(b"\0", 1)[0].decode("latin-1")  # the handler sees a NUL-terminated buffer
    if text.endswith("\n"):
        text = text[:-1]
    if text.startswith("+"):
        text = text[1:]
    if text[:2].lower() == "0x" and len(text) > 2:
        digits, base = text[2:], 16
    elif text.startswith("0") and len(text) > 1:
        digits, base = text[1:], 8
    else:
        digits, base = text, 10
    if not digits or any(c not in "0123456789abcdef"[:base] for c in digits.lower()):
        raise _err(errno.EINVAL)
    value = int(digits, base)
    if value > limit:
        raise _err(errno.EINVAL)  # too large for u16 is EINVAL on 5.11+ (ERANGE only for > totalvfs)
    return value


def parse_kstrtobool(data: bytes) -> bool:
    text = data.decode("latin-1")
    if not text:
        raise _err(errno.EINVAL)
    c = text[0]
    if c in "yYtT1eE":
        return True
    if c in "nNfF0dD":
        return False
    if c in "oO" and len(text) > 1:
        if text[1] in "nN":
            return True
        if text[1] in "fF":
            return False
    raise _err(errno.EINVAL)


class PciRules(SimFaults):
    """Every kernel write of the model, dispatched to the rule of the file written."""

    def _pci_event(self, action: str, bdf: str, **props: str) -> None:
        d = self.dev_dir(bdf)
        if d is None:
            return
        ident = self._pci_id(bdf).upper()
        self._emit(action, "pci", d, PCI_SLOT_NAME=bdf, PCI_ID=ident, **props)

    # ------------------------------------------------------------ device lookups

    def _dev(self, bdf: str) -> str:
        d = self.dev_dir(bdf) if _BDF_RE.match(bdf) else None
        if d is None or not os.path.isdir(self._p(d)):
            raise _err(errno.ENODEV)
        return d

    def _override(self, bdf: str) -> Optional[str]:
        value = self._get(f"{self.dev_dir(bdf)}/driver_override")
        return None if value in (None, "(null)") else value

    def _pci_id(self, bdf: str) -> str:
        d = self.dev_dir(bdf)
        return f"{(self._get(f'{d}/vendor') or '')[2:]}:{(self._get(f'{d}/device') or '')[2:]}"

    def _loaded(self, name: str) -> bool:
        return os.path.isdir(self._p(f"sys/bus/pci/drivers/{name}"))

    def _num_vfs(self, pf: str) -> int:
        return int(self._get(f"{self.dev_dir(pf)}/sriov_numvfs") or 0)

    def _has_vfs(self, bdf: str) -> bool:
        return os.path.exists(self._p(f"{self.dev_dir(bdf)}/sriov_numvfs")) and self._num_vfs(bdf) > 0

    # ------------------------------------------------------------ entry points

    def write(self, rel: str, data: bytes) -> None:
        """One write(2) to `rel` (relative to the root); raises OSError like the kernel."""
        with self._transaction():
            try:
                self._dispatch(rel, data[: PAGE_SIZE])
            except OSError as exc:
                self._log(rel, data, errno.errorcode.get(exc.errno, str(exc.errno)))
                raise
            self._log(rel, data, "ok")

    def _dispatch(self, rel: str, data: bytes) -> None:
        if not data:
            return  # a zero-length write never reaches the store handler
        real = os.path.relpath(os.path.realpath(self._p(rel)), self.root)
        parent, attr = os.path.split(real)
        if real == "sys/bus/pci/drivers_probe":
            return self._drivers_probe(data)
        if real == "sys/bus/pci/drivers_autoprobe":
            self._put(real, "0\n" if data[:1] == b"0" else "1\n")
            return None
        if real == "sys/bus/pci/rescan":
            if parse_kstrtoul(data, 0xFFFFFFFF):
                self._rescan()
            return None
        if os.path.dirname(parent) == "sys/bus/pci/drivers":
            drv = os.path.basename(parent)
            if not self._loaded(drv):
                raise _err(errno.ENOENT)
            if attr == "bind":
                return self._bind(drv, self._device_name(data))
            if attr == "unbind":
                return self._unbind(drv, self._device_name(data))
            if attr == "new_id":
                return self._new_id(drv, data)
            if attr == "remove_id":
                return self._remove_id(drv, data)
        bdf = os.path.basename(parent)
        if not _BDF_RE.match(bdf) or not os.path.isdir(self._p(parent)):
            raise _err(errno.ENOENT)
        if attr == "remove" and self.dev_dir(bdf) == parent:
            # Every PCI device has it (0200), except a VF: pci_dev_hp_attr_is_visible() hides
            # remove and rescan on VFs (6.1 checked in the lab). The model can show it on VFs as
            # older kernels did (show_vf_remove), the one way a VF disappears behind its PF's back.
            if self._pf_of(bdf) is not None and not self._model.get("vf_remove_attr"):
                raise _err(errno.ENOENT)
            if parse_kstrtoul(data, 0xFFFFFFFF):
                self._remove_function(bdf)
            return None
        if not os.path.exists(self._p(real)):
            raise _err(errno.ENOENT)
        n = self._count(f"{bdf}/{attr}")
        fault = self._fault("errno", device=bdf, attr=attr, n=n)
        if fault:
            raise _err(getattr(errno, fault["errno"]))
        delay = self._fault("delay", device=bdf, attr=attr, n=n)
        if delay:
            time.sleep(float(delay.get("seconds", 1.0)))
        vanish = self._fault("pf_vanishes", device=bdf, attr=attr, n=n)
        if vanish:
            self._remove_device(bdf)
            raise _err(errno.ENODEV)
        if attr in READ_ONLY_ATTRS:
            raise _err(errno.EACCES)
        if attr == "sriov_numvfs":
            value = parse_kstrtoul(data, 0xFFFF)
            if self._fault("write_ignored", device=bdf, attr=attr, n=n):
                return None  # the driver returned success without enabling anything
            return self._set_num_vfs(bdf, value)
        if attr == "sriov_drivers_autoprobe":
            value = parse_kstrtobool(data)
            self._put(f"{parent}/{attr}", "1\n" if value else "0\n")
            return None
        if attr == "driver_override":
            return self._set_override(bdf, data)
        raise _err(errno.EACCES)

    @staticmethod
    def _device_name(data: bytes) -> str:
        text = data.decode("latin-1")
        return text[:-1] if text.endswith("\n") else text  # sysfs_streq: one trailing newline

    # ------------------------------------------------------------ driver_override / probe

    def _set_override(self, bdf: str, data: bytes) -> None:
        if len(data) >= PAGE_SIZE - 1:
            raise _err(errno.EINVAL)
        text = data.decode("latin-1").split("\0", 1)[0].split("\n", 1)[0]
        self._put(f"{self.dev_dir(bdf)}/driver_override", (text or "(null)") + "\n")

    def _matches(self, bdf: str, drv: str) -> bool:
        override = self._override(bdf)
        if override is not None:
            return override == drv
        spec = self._model["drivers"].get(drv, {})
        ident = self._pci_id(bdf)
        return ident in spec.get("ids", []) or ident in spec.get("dynamic_ids", [])

    # ------------------------------------------------------------ new_id / remove_id (kernel-sriov-spec §2.4)

    @staticmethod
    def _parse_id(data: bytes, most: int) -> Tuple[str, List[str]]:
        fields = data.decode("latin-1").split("\0", 1)[0].split()
        if len(fields) < 2 or len(fields) > most:
            raise _err(errno.EINVAL)
        try:
            values = [int(f, 16) for f in fields]
        except ValueError:
            raise _err(errno.EINVAL)
        if any(v > 0xFFFF for v in values[:2]):
            raise _err(errno.EINVAL)
        return f"{values[0]:04x}:{values[1]:04x}", fields

    def _new_id(self, drv: str, data: bytes) -> None:
        """A dynamic ID: the driver now matches that vendor:device, and attaches to every unbound
        device with it at once (auto-probe gating and driver_override still apply)."""
        ident, fields = self._parse_id(data, 7)
        spec = self._model["drivers"][drv]
        if len(fields) >= 7 and spec.get("ids") and int(fields[6], 16) != 0:
            raise _err(errno.EINVAL)  # driver_data must be one of the static table's (all 0 here)
        if len(fields) < 7 and (ident in spec.get("ids", []) or ident in spec.get("dynamic_ids", [])):
            raise _err(errno.EEXIST)
        spec.setdefault("dynamic_ids", []).append(ident)
        self._save()
        for bdf in self._listdir("sys/bus/pci/devices"):
            if self.driver_of(bdf) is None and self._matches(bdf, drv) and self._may_autoprobe(bdf):
                try:
                    self._probe(bdf, drv)
                except OSError:
                    pass

    def _remove_id(self, drv: str, data: bytes) -> None:
        ident, _ = self._parse_id(data, 6)
        dynamic = self._model["drivers"][drv].get("dynamic_ids", [])
        if ident not in dynamic:
            raise _err(errno.ENODEV)
        dynamic.remove(ident)  # devices already bound stay bound
        self._save()

    def _may_autoprobe(self, bdf: str) -> bool:
        pf = self._pf_of(bdf)
        if pf is None:
            return True
        autoprobe = self._get(f"{self.dev_dir(pf)}/sriov_drivers_autoprobe")
        return autoprobe != "0" or self._override(bdf) is not None

    def _probe(self, bdf: str, drv: str) -> None:
        spec = self._model["drivers"].get(drv, {})
        if not self._may_autoprobe(bdf):
            raise _err(errno.ENODEV)
        fault = self._fault("probe_fails", driver=drv, device=bdf)
        if fault:
            raise _err(getattr(errno, fault["errno"]))
        d = self.dev_dir(bdf)
        ident = self._pci_id(bdf)
        if not (spec.get("vfio") or spec.get("generic")) and ident not in spec.get("ids", []) \
                and ident not in spec.get("dynamic_ids", []):
            raise _err(errno.ENODEV, f"{drv} does not support this device")  # matched through driver_override only
        if spec.get("vfio"):
            group = self._link_name(f"{d}/iommu_group")
            if group is None:
                raise _err(errno.EINVAL, "vfio-pci: no IOMMU group")
            if self._has_vfs(bdf):
                raise _err(errno.EBUSY, "Cannot bind to PF with SR-IOV enabled")
        self._attach(bdf, drv)

    def _attach(self, bdf: str, drv: str) -> None:
        d = self.dev_dir(bdf)
        spec = self._model["drivers"][drv]
        self._link(f"{d}/driver", f"sys/bus/pci/drivers/{drv}")
        self._link(f"sys/bus/pci/drivers/{drv}/{bdf}", d)
        if spec.get("netdev"):
            self._add_netdev(bdf)
            for ifname in self._listdir(f"{d}/net"):
                self._emit("add", "net", f"{d}/net/{ifname}", INTERFACE=ifname)
        if drv == "mlx5_core":
            self._add_rdma_device(bdf)
            self._sync_ofed_sriov(bdf)
        self._pci_event("bind", bdf, DRIVER=drv)
        if spec.get("vfio"):
            group = self._link_name(f"{d}/iommu_group")
            self._put("dev/vfio/vfio", "")
            self._put(f"dev/vfio/{group}", "")
        if spec.get("uio"):  # uio_pci_generic: <dev>/uio/uioN and /dev/uioN, the node DPDK opens
            taken = {n for n in self._listdir("dev") if n.startswith("uio")}
            name = next(f"uio{n}" for n in range(len(taken) + 1) if f"uio{n}" not in taken)
            self._put(f"{d}/uio/{name}/name", "uio_pci_generic\n", 0o444)
            self._put(f"dev/{name}", "")
        limit = self._model.get("devices", {}).get(bdf, {}).get("driver_limit")
        if limit is not None and os.path.exists(self._p(f"{d}/sriov_totalvfs")):
            self._put(f"{d}/sriov_totalvfs", f"{limit}\n", 0o444)

    def _detach(self, bdf: str, drv: str) -> None:
        d = self.dev_dir(bdf)
        spec = self._model["drivers"].get(drv, {})
        if spec.get("sriov_configure") and self._has_vfs(bdf) and drv not in LEAVES_SRIOV_ON_REMOVE \
                and not self._fault("pf_leaves_sriov_enabled", device=bdf):
            self._disable(bdf)  # PF drivers call pci_disable_sriov() in remove; leaving VFs is the exception
        if spec.get("sriov_configure"):
            self._forget_vf_settings(bdf)  # they lived in the driver
        if spec.get("vfio"):
            group = self._link_name(f"{d}/iommu_group")
            if group:
                self._wait_released([group])
        for ifname in self._listdir(f"{d}/net"):
            self._emit("remove", "net", f"{d}/net/{ifname}", INTERFACE=ifname)
            self._unlink(f"sys/class/net/{ifname}")
        self._rmtree(f"{d}/net")
        self._remove_rdma_device(bdf)
        self._rmtree(f"{d}/sriov")  # MLNX_OFED's mlx5_sriov_sysfs_cleanup: gone with the driver
        self._pci_event("unbind", bdf)  # KOBJ_UNBIND is sent once dev->driver is NULL: no DRIVER=
        if spec.get("vfio"):
            group = self._link_name(f"{d}/iommu_group")
            if group:
                self._unlink(f"dev/vfio/{group}")
        for name in self._listdir(f"{d}/uio"):
            self._unlink(f"dev/{name}")
        self._rmtree(f"{d}/uio")
        self._unlink(f"{d}/driver")
        self._unlink(f"sys/bus/pci/drivers/{drv}/{bdf}")
        hw = self._model.get("devices", {}).get(bdf, {})
        if hw.get("cap_total_vfs") is not None and os.path.exists(self._p(f"{d}/sriov_totalvfs")):
            self._put(f"{d}/sriov_totalvfs", f"{hw['cap_total_vfs']}\n", 0o444)

    def _add_netdev(self, bdf: str) -> None:
        d = self.dev_dir(bdf)
        hw = self._model.get("devices", {}).get(bdf)
        pf = self._pf_of(bdf)
        if hw is not None:
            ifname, mac = hw["ifname"], hw["mac"]
        elif pf is not None:
            index = self._vf_index(pf, bdf)
            pf_hw = self._model["devices"][pf]
            ifname = f"{pf_hw['ifname']}v{index}"
            admin = self._model.get("net", {}).get(pf, {}).get(str(index), {}).get("mac")
            mac = admin if admin and admin != "00:00:00:00:00:00" else (
                "02:" + ":".join(bdf.replace(":", "").replace(".", "")[i:i + 2] for i in (2, 4, 6))
                + f":{index >> 8:02x}:{index & 0xff:02x}")
        else:
            return
        link_type = self._link_type(bdf)
        if link_type == "infiniband":  # IPoIB: a 20-byte address, QPN and port GID (a VF's GUID: 0 until set)
            guid = "00:00:00:00:00:00:00:00" if hw is None else f"{mac[:8]}:03:00:{mac[9:]}"
            mac = f"00:00:10:87:fe:80:00:00:00:00:00:00:{guid}"
        self._put(f"{d}/net/{ifname}/address", mac + "\n", 0o444)
        self._put(f"{d}/net/{ifname}/type", ("32" if link_type == "infiniband" else "1") + "\n", 0o444)
        self._put(f"{d}/net/{ifname}/mtu", ("2044" if link_type == "infiniband" else "1500") + "\n")
        if hw is not None and hw.get("model"):  # a PF's link: up, at the NIC's speed (-1 would be down)
            from sriov_node.sim.nics import NICS

            self._put(f"{d}/net/{ifname}/speed", f"{NICS[hw['model']].speed}\n", 0o444)
        self._put(f"{d}/net/{ifname}/addr_assign_type", ("0" if hw is not None else "1") + "\n", 0o444)
        # dev_new_index: the next index, never one a netdev had before (a reloaded driver's netdev is new)
        ifindex = self._model.get("next_ifindex", 2)
        self._model["next_ifindex"] = ifindex + 1
        self._dirty = True
        self._put(f"{d}/net/{ifname}/ifindex", f"{ifindex}\n", 0o444)
        self._link_abs(f"{d}/net/{ifname}/device", f"../../../{bdf}")  # as the kernel writes it
        self._link(f"sys/class/net/{ifname}", f"{d}/net/{ifname}")

    def _link_type(self, bdf: str) -> str:
        """The link layer of the function's netdevs: its NIC model's (a VF's: its PF's)."""
        from sriov_node.sim.nics import NICS

        pf = self._pf_of(bdf)
        hw = self._model.get("devices", {}).get(pf or bdf, {})
        model = NICS.get(hw.get("model", ""))
        return model.link_type if model else "ether"

    def _add_rdma_device(self, bdf: str) -> None:
        """mlx5_ib's RDMA device for an mlx5_core function: <dev>/infiniband/mlx5_N and
        /sys/class/infiniband/mlx5_N (what rdmamap and the device plugin's isRdma read). Not while the
        model says mlx5_ib is not loaded (`rdma_driver_loaded`)."""
        if not self._model.get("rdma", True):
            return
        n = self._model.get("next_rdma", 0)
        self._model["next_rdma"] = n + 1
        d = self.dev_dir(bdf)
        name = f"mlx5_{n}"
        self._put(f"{d}/infiniband/{name}/node_type", "1: CA\n", 0o444)
        guid = self._ib_node_guid(bdf)
        if guid is not None:  # sysfs shows it as four groups of 16 bits
            raw = guid.replace(":", "")
            self._put(f"{d}/infiniband/{name}/node_guid", ":".join(raw[i:i + 4] for i in range(0, 16, 4)) + "\n", 0o444)
        self._link(f"sys/class/infiniband/{name}", f"{d}/infiniband/{name}")

    def _ib_node_guid(self, bdf: str) -> Optional[str]:
        """The node GUID an InfiniBand function's RDMA device reports: a PF's from its MAC (ConnectX:
        OUI, 03:00, the MAC's last 3 bytes); a VF's is what its PF held for it when mlx5_ib probed it
        (mlx5_ib reads the vport context at probe: a GUID set later shows after a rebind), 0 if none."""
        if self._link_type(bdf) != "infiniband":
            return None
        hw = self._model.get("devices", {}).get(bdf)
        if hw is not None:
            mac = hw["mac"]
            return f"{mac[:8]}:03:00:{mac[9:]}"
        pf = self._pf_of(bdf)
        if pf is None:
            return None
        index = self._vf_index(pf, bdf)
        return self._model.get("ib_guids", {}).get(pf, {}).get(str(index), {}).get("node_guid",
                                                                                     "00:00:00:00:00:00:00:00")

    def _sync_ofed_sriov(self, pf: str) -> None:
        """MLNX_OFED's mlx5_core (sriov_sysfs.c), where the model says the driver is OFED's
        (`ib_vf_guid_readback(ofed_sysfs=True)`): a `sriov` directory on an mlx5_core PF
        (mlx5_sriov_sysfs_init), and while VFs exist one directory per VF, `sriov/<N>` (the same files
        as /sys/class/infiniband/<dev>/device/sriov/<N>); on an InfiniBand port each holds `node`,
        `port` and `policy` (vf_ib_attrs). `node` and `port` show the VF's vport GUIDs as
        "%02x:...:%02x\\n", most significant byte first: what the PF driver holds for the VF (set
        through netlink or these files), 0 when none was set. The model writes them again at every
        change instead of answering each read."""
        d = self.dev_dir(pf)
        if d is None or self._pf_of(pf) is not None:
            return
        self._rmtree(f"{d}/sriov")
        if not self._model.get("ib_vf_guids", {}).get("ofed_sysfs") or self.driver_of(pf) != "mlx5_core":
            return
        self._makedirs(f"{d}/sriov")
        if self._link_type(pf) != "infiniband":
            return  # Ethernet ports' VF directories (mac, vlan, ...) are not modelled
        guids = self._model.get("ib_guids", {}).get(pf, {})
        zero = "00:00:00:00:00:00:00:00"
        for index in range(self._num_vfs(pf)):
            mine = guids.get(str(index), {})
            self._put(f"{d}/sriov/{index}/node", mine.get("node_guid", zero) + "\n")
            self._put(f"{d}/sriov/{index}/port", mine.get("port_guid", zero) + "\n")
            self._put(f"{d}/sriov/{index}/policy", "Down\n")

    def _remove_rdma_device(self, bdf: str) -> None:
        d = self.dev_dir(bdf)
        for name in self._listdir(f"{d}/infiniband"):
            self._unlink(f"sys/class/infiniband/{name}")
        self._rmtree(f"{d}/infiniband")

    def _drivers_probe(self, data: bytes) -> None:
        bdf = self._device_name(data)
        self._dev(bdf)
        if self.driver_of(bdf) is not None:
            return
        self._autoprobe(bdf)

    def _autoprobe(self, bdf: str) -> None:
        """First matching loaded driver whose probe succeeds; failures are swallowed."""
        for drv in sorted(self._model["drivers"]):
            if self._loaded(drv) and self._matches(bdf, drv):
                try:
                    self._probe(bdf, drv)
                    return
                except OSError:
                    continue

    def _bind(self, drv: str, bdf: str) -> None:
        self._dev(bdf)
        if not self._loaded(drv) or not self._matches(bdf, drv):
            raise _err(errno.ENODEV)
        if self.driver_of(bdf) is not None:
            raise _err(errno.EBUSY)
        self._probe(bdf, drv)

    def _unbind(self, drv: str, bdf: str) -> None:
        self._dev(bdf)
        if self.driver_of(bdf) != drv:
            raise _err(errno.ENODEV)
        self._detach(bdf, drv)

    # ------------------------------------------------------------ SR-IOV enable / disable

    def _set_num_vfs(self, pf: str, n: int) -> None:
        d = self.dev_dir(pf)
        total = int(self._get(f"{d}/sriov_totalvfs") or 0)
        if n > total:
            raise _err(errno.ERANGE)
        current = self._num_vfs(pf)
        if n == current:
            return
        drv = self.driver_of(pf)
        if drv is None:
            raise _err(errno.ENOENT, "no driver bound to device; cannot configure SR-IOV")
        if drv == "vfio-pci":  # vfio_pci_sriov_configure
            if (self._get(VFIO_ENABLE_SRIOV) or "N") != "Y":
                raise _err(errno.ENOENT, "vfio-pci: loaded without enable_sriov=1")
        elif not self._model["drivers"].get(drv, {}).get("sriov_configure"):
            raise _err(errno.ENOENT, "driver does not support SR-IOV configuration via sysfs")
        if n == 0:
            self._disable(pf)
            return
        if current != 0:
            raise _err(errno.EBUSY, f"{current} VFs already enabled. Disable before enabling {n} VFs")
        self._enable(pf, n)

    @staticmethod
    def _rid(bdf: str) -> int:
        _, bus, rest = bdf.split(":")
        dev, fn = rest.split(".")
        return int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn)

    def _vf_index(self, pf: str, vf: str) -> int:
        """The VF's index from its routing ID: rid(VF i) = rid(PF) + offset + i * stride."""
        hw = self._model["devices"][pf]
        return (self._rid(vf) - self._rid(pf) - hw["offset"]) // hw["stride"]

    def _vf_bdf(self, pf: str, i: int, offset: int, stride: int) -> str:
        domain, bus, rest = pf.split(":")
        dev, fn = rest.split(".")
        rid = (int(bus, 16) << 8 | int(dev, 16) << 3 | int(fn)) + offset + i * stride
        return f"{domain}:{rid >> 8:02x}:{(rid & 0xff) >> 3:02x}.{rid & 7}"

    def _enable(self, pf: str, n: int) -> None:
        hw = self._model["devices"][pf]
        if not hw.get("mmio", True):
            raise _err(errno.ENOMEM, "not enough MMIO resources for SR-IOV")
        offset, stride = hw["offset"], hw["stride"]
        last_bus = int(self._vf_bdf(pf, n - 1, offset, stride).split(":")[1], 16)
        if last_bus > hw["subordinate"]:
            raise _err(errno.ENOMEM, f"can't enable {n} VFs (bus {last_bus:02x} out of range)")
        parent = os.path.dirname(self.dev_dir(pf))
        d = self.dev_dir(pf)
        iommu = self._model.get("iommu", False)
        created = []
        for i in range(n):
            if self._fault("vf_never_appears", device=pf, vf=i):
                continue
            vf = self._vf_bdf(pf, i, offset, stride)
            vd = f"{parent}/{vf}"
            if os.path.lexists(self._p(f"sys/bus/pci/devices/{vf}")):
                raise _err(errno.EEXIST, f"simulated host: VF address {vf} is taken (impossible NIC layout)")
            if os.path.lexists(self._p(f"{d}/virtfn{i}")):
                # pci_iov_sysfs_link(): sysfs_create_link() finds the name taken (the stale link of a
                # VF removed by hand) and the enable fails; sriov_add_vfs() removes the VFs it added
                for j, done in enumerate(created):
                    self._unlink(f"{d}/virtfn{j}")
                    self._remove_device(done)
                raise _err(errno.EEXIST, f"sysfs: cannot create duplicate filename '.../{pf}/virtfn{i}'")
            for name, value in (("vendor", f"0x{hw['vendor']}"), ("device", f"0x{hw['vf_device']}"),
                                ("class", f"0x{hw.get('class', '020000')}"), ("numa_node", "0"),
                                ("modalias", modalias(hw["vendor"], hw["vf_device"], hw.get("class", "020000"),
                                                      hw.get("subsystem"))),
                                ("uevent", f"PCI_ID={hw['vendor'].upper()}:{hw['vf_device'].upper()}\nPCI_SLOT_NAME={vf}")):
                self._put(f"{vd}/{name}", value + "\n", 0o444)
            if hw.get("subsystem"):  # the VF's own subsystem IDs (config space), where the model knows them
                for name, value in zip(("subsystem_vendor", "subsystem_device"), hw["subsystem"].split(":")):
                    self._put(f"{vd}/{name}", f"0x{value}\n", 0o444)
            self._put(f"{vd}/driver_override", "(null)\n")
            if self._model.get("vf_remove_attr"):
                self._put(f"{vd}/remove", "", 0o200)
            self._link(f"sys/bus/pci/devices/{vf}", vd)
            self._link(f"{d}/virtfn{i}", vd)
            self._link(f"{vd}/physfn", d)
            stall = self._fault("stall", device=pf)
            if stall and i == n // 2:
                time.sleep(float(stall.get("seconds", 1.0)))  # a window in the middle of one write
            if iommu:
                group = str(self._model["next_group"])
                self._model["next_group"] += 1
                self._put(f"sys/kernel/iommu_groups/{group}/type", "identity\n", 0o444)
                self._link(f"sys/kernel/iommu_groups/{group}/devices/{vf}", vd)
                self._link(f"{vd}/iommu_group", f"sys/kernel/iommu_groups/{group}")
            created.append(vf)
            self._pci_event("add", vf)
            self._pci_event("change", vf)  # sent once the virtfn/physfn links exist
            # pci_iov_add_virtfn() -> pci_bus_add_device(): each VF is probed before the next one is
            # added (add, change, its netdev's add, bind; then the next VF: the lab's igb shows it)
            if self._get("sys/bus/pci/drivers_autoprobe") != "0" and self._may_autoprobe(vf):
                self._autoprobe(vf)
        if iommu:
            self._save()
        self._pci_event("change", pf, DRIVER=self.driver_of(pf))
        self._put(f"{d}/sriov_numvfs", f"{n}\n")
        self._sync_ofed_sriov(pf)  # mlx5_create_vfs_sysfs

    def _holders(self, groups: List[str]) -> List[str]:
        wanted = {f"/dev/vfio/{g}" for g in groups}
        pids = []
        for pid in self._listdir("proc"):
            for fd in self._listdir(f"proc/{pid}/fd"):
                if self._link_target(f"proc/{pid}/fd/{fd}") in wanted:
                    pids.append(pid)
        return pids

    def _wait_released(self, groups: List[str]) -> None:
        """vfio-pci's remove waits, uninterruptibly, until userspace closes the device.

        The kernel waits forever; the model gives up after hold_block_seconds so that a test
        can never hang, with an errno the kernel never returns here (EDEADLK).
        """
        deadline = time.monotonic() + float(self._model.get("hold_block_seconds", 30))
        while groups and self._holders(groups):
            if time.monotonic() >= deadline:
                raise _err(errno.EDEADLK, "simulated host: a held vfio device would block this write forever")
            time.sleep(0.01)

    def _vf_addresses(self, pf: str) -> List[str]:
        d = self.dev_dir(pf)
        return [vf for n in self._listdir(d) if n.startswith("virtfn") for vf in [self._link_name(f"{d}/{n}")] if vf]

    def _forget_vf_settings(self, pf: str) -> None:
        """VF MAC, VLAN, trust... live in the PF driver: gone with the VFs or the driver."""
        changed = bool(self._model.get("net", {}).pop(pf, None))
        changed = bool(self._model.get("ib_guids", {}).pop(pf, None)) or changed  # mlx5's vfs_ctx
        hw = self._model.get("devices", {}).get(pf)
        changed = bool(hw and hw.pop("eswitch", None)) or changed
        if changed:
            self._save()

    def _disable(self, pf: str) -> None:
        d = self.dev_dir(pf)
        vfs = sorted(
            ((int(n[6:]), self._link_name(f"{d}/{n}")) for n in self._listdir(d) if n.startswith("virtfn")),
        )
        groups = [
            g for _, vf in vfs if vf and self.driver_of(vf) == "vfio-pci"
            for g in [self._link_name(f"{self.dev_dir(vf)}/iommu_group")] if g
        ]
        self._wait_released(groups)
        for i, vf in vfs:
            if not vf or self.dev_dir(vf) is None or self._pf_of(vf) != pf:
                # pci_iov_remove_virtfn() looks the VF up by its address; a VF removed by hand is
                # not found, and its virtfn link stays behind, dangling
                continue
            self._unlink(f"{d}/virtfn{i}")
            self._remove_device(vf)
        self._put(f"{d}/sriov_numvfs", "0\n")
        self._sync_ofed_sriov(pf)  # mlx5_destroy_vfs_sysfs
        if self._model.get("net", {}).pop(pf, None):  # the VFs' settings went with them
            self._save()
        from sriov_node.sim.net import vfs_disabled
        vfs_disabled(self, pf)  # and the PF driver's eswitch may go back to legacy

    # ------------------------------------------------------------ remove / rescan (pci-sysfs.c, remove.c, probe.c)

    # Attributes a function shows again when a bus scan finds it (config space and firmware values);
    # everything else (driver, netdevs, VFs, driver_override, autoprobe) starts afresh.
    _STATIC = ("vendor", "device", "class", "numa_node", "subsystem_vendor", "subsystem_device", "config",
               "ari_enabled", "modalias", "uevent", "sriov_offset", "sriov_stride", "sriov_vf_device",
               "sriov_vf_total_msix")

    def _remove_function(self, bdf: str) -> None:
        """echo 1 > <dev>/remove: pci_stop_and_remove_bus_device(). Its driver lets go first (most PF
        drivers disable SR-IOV in their remove; nvme does not, and its VFs stay). A VF leaves its
        PF's virtfnN link dangling and sriov_numvfs as it was. A bus scan finds the function again,
        except a VF: its Vendor ID reads 0xFFFF, so only enabling SR-IOV makes VFs."""
        d = self.dev_dir(bdf)
        if self._pf_of(bdf) is None:
            record: Dict[str, Any] = {"dir": d, "files": {}}
            for name in self._STATIC:
                path = self._p(f"{d}/{name}")
                if os.path.isfile(path):
                    with open(path, "rb") as fh:
                        record["files"][name] = [fh.read().decode("latin-1"), os.stat(path).st_mode & 0o777]
            record["sriov"] = os.path.exists(self._p(f"{d}/sriov_numvfs"))
            self._model.setdefault("removed", {})[bdf] = record
            self._save()
        # not a bridge: only the function goes; VFs its driver left enabled stay behind, orphans
        # whose physfn leads nowhere (pci_stop_bus_device() walks a subordinate bus only)
        self._remove_device(bdf, orphan_vfs=True)

    def _rescan(self) -> None:
        """echo 1 > /sys/bus/pci/rescan: every removed function that is not a VF is found and added
        again as at boot (SR-IOV off, autoprobe 1, no override), then probed."""
        removed = self._model.get("removed", {})
        if not removed:
            return
        added = []
        for bdf, record in sorted(removed.items()):
            d = record["dir"]
            if not os.path.isdir(self._p(os.path.dirname(d))):
                continue  # its bridge is gone too
            for name, (text, mode) in record["files"].items():
                self._put(f"{d}/{name}", text, mode)
            self._put(f"{d}/driver_override", "(null)\n")
            self._put(f"{d}/remove", "", 0o200)
            hw = self._model.get("devices", {}).get(bdf, {})
            if record.get("sriov"):
                total = hw.get("cap_total_vfs") or int(record["files"].get("sriov_totalvfs", ["0"])[0] or 0)
                self._put(f"{d}/sriov_totalvfs", f"{total}\n", 0o444)
                self._put(f"{d}/sriov_numvfs", "0\n")
                self._put(f"{d}/sriov_drivers_autoprobe", "1\n")
            self._link(f"sys/bus/pci/devices/{bdf}", d)
            if self._model.get("iommu"):
                group = str(self._model["next_group"])
                self._model["next_group"] += 1
                self._put(f"sys/kernel/iommu_groups/{group}/type", "DMA-FQ\n", 0o444)
                self._link(f"sys/kernel/iommu_groups/{group}/devices/{bdf}", d)
                self._link(f"{d}/iommu_group", f"sys/kernel/iommu_groups/{group}")
            self._pci_event("add", bdf)
            added.append(bdf)
        for bdf in added:
            removed.pop(bdf, None)
        self._save()
        if self._get("sys/bus/pci/drivers_autoprobe") != "0":
            for bdf in added:
                self._autoprobe(bdf)

    def _remove_device(self, bdf: str, orphan_vfs: bool = False) -> None:
        """Stop and remove a device. `orphan_vfs`: VFs its driver left enabled stay (the `remove`
        attribute takes only the function itself; a hot-unplug takes the whole bus with them)."""
        d = self.dev_dir(bdf)
        if d is None:
            return
        drv = self.driver_of(bdf)
        if drv:
            self._detach(bdf, drv)
        for i, vf in ((n, self._link_name(f"{d}/{n}")) for n in self._listdir(d) if n.startswith("virtfn")):
            self._unlink(f"{d}/{i}")
            if vf and not orphan_vfs:
                self._remove_device(vf)
        group = self._link_name(f"{d}/iommu_group")
        if group:
            self._rmtree(f"sys/kernel/iommu_groups/{group}")
        for ifname in self._listdir(f"{d}/net"):
            self._unlink(f"sys/class/net/{ifname}")
        self._pci_event("remove", bdf)
        self._rmtree(d)
        self._unlink(f"sys/bus/pci/devices/{bdf}")

    # ------------------------------------------------------------ modules

    def load_module(self, name: str) -> None:
        with self._transaction():
            model = self._model
            if name in GENERIC_DRIVERS and name not in model["drivers"]:
                model["drivers"][name] = dict(GENERIC_DRIVERS[name])
                self._save()
            spec = model["drivers"].get(name) or model["drivers"].get(name.replace("_", "-"))
            # fault module_missing: the module's file is gone though modules.alias still names it
            if spec is None or self._fault("module_missing", module=name):
                self._log("modprobe", name.encode(), "ENOENT")
                raise _err(errno.ENOENT, f"modprobe: FATAL: Module {name} not found")
            self.register_driver(name if name in model["drivers"] else name.replace("_", "-"))
            self._log("modprobe", name.encode(), "ok")

    def default_drivers(self, pci_id: str) -> Optional[Tuple[str, ...]]:
        """The drivers whose static ID table names `pci_id` (vendor:device), loaded or not, as
        modules.alias lists them; None when the host's module aliases are unknown (a test knob)."""
        model = self._load()
        if model.get("module_aliases") is False:
            return None
        return tuple(drv for drv, spec in sorted(model["drivers"].items()) if pci_id in spec.get("ids", []))

    def pci_aliases(self, drv: str) -> Optional[Tuple[str, ...]]:
        """The `pci:` lines modules.alias has for driver `drv`'s module: one per ID of its static table
        (vendor and device; subsystem and class any, as the NIC drivers' PCI_VDEVICE entries), none for
        the drivers with no table (vfio-pci's entry is override-only, a `vfio_pci:` alias; pci-stub,
        uio_pci_generic) or a module this host does not have; None when the module aliases are unknown."""
        model = self._load()
        if model.get("module_aliases") is False:
            return None
        spec = model["drivers"].get(drv) or model["drivers"].get(drv.replace("_", "-")) \
            or model["drivers"].get(drv.replace("-", "_")) or GENERIC_DRIVERS.get(drv) or {}
        return tuple(f"pci:v0000{ident[:4].upper()}d0000{ident[5:].upper()}sv*sd*bc*sc*i*"
                     for ident in spec.get("ids", []))

    def default_driver(self, pci_id: str) -> Optional[str]:
        """The driver whose ID table names `pci_id` (vendor:device), loaded or not."""
        found = self.default_drivers(pci_id)
        return found[0] if found else None

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        """RTM_GETLINK's IFLA_PROP_LIST: the alternative names of `ifname` (None: no such netdev here).
        They are kept per device: udev gives a netdev its predictable names again each time it appears."""
        self._load()
        bdf = self._link_name(f"sys/class/net/{ifname}/device")
        if bdf is None:
            return None
        return tuple(self._model.get("devices", {}).get(bdf, {}).get("altnames", ()))

    def permanent_mac(self, ifname: str) -> Optional[str]:
        for hw in self._load().get("devices", {}).values():
            if hw.get("ifname") == ifname:
                return hw.get("mac")
        return None

    def register_driver(self, drv: str) -> None:
        """Driver registration: create its sysfs directory, then attach matching unbound devices."""
        base = f"sys/bus/pci/drivers/{drv}"
        if self._journal is not None:
            self._emit("add", "module", f"sys/module/{drv.replace('-', '_')}")
        for op in ("bind", "unbind", "new_id", "remove_id"):
            self._put(f"{base}/{op}", "", 0o200)
        self._put(f"{base}/uevent", "", 0o200)
        if drv == "vfio-pci":
            self._put(VFIO_ENABLE_SRIOV, ("Y" if self._model.get("vfio_enable_sriov") else "N") + "\n", 0o444)
        for bdf in self._listdir("sys/bus/pci/devices"):
            if self.driver_of(bdf) is None and self._matches(bdf, drv) and self._may_autoprobe(bdf):
                try:
                    self._probe(bdf, drv)
                except OSError:
                    pass
