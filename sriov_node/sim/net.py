"""The simulated kernel's rtnetlink and devlink side: VF settings, MTUs, the eswitch mode.

Per-driver support follows the drivers' ndo_set_vf_* and devlink ops (kernel-sriov-spec §3):
what each PF driver accepts, the errno it answers otherwise, the kernel's processing order
inside one IFLA_VF_INFO and its stop at the first failing VF (no roll-back).
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from sriov_node import drivers as table
from sriov_node.model import GUID_KEYS, SETTING_ATTR, VF_LINK_ATTRS, VfLinks, split_setting
from sriov_node.sim.kernel import SimKernel, _err

# The PF drivers' VF ndo ops and devlink ops are sriov_node/drivers.py's rows (one table for the
# preflight and this model; tests/test_driver_table.py holds the two to each other). On a disable
# (sriov_numvfs -> 0) in-tree 6.1 ice (ice_free_vfs -> ice_eswitch_release only stops the switchdev
# environment) and mlx5 since 6.0 keep their mode; the fault "eswitch_resets" (device=PF) models the
# drivers that put it back to legacy: mlx5 before 6.0, Intel's out-of-tree ice, and netdevsim.
# mlx5's row says "vfs_unbound" (the order safe on every version): the model is modern mlx5, which
# switches at any time, and the fault "eswitch_needs_vfs" is the old one.
NO_DRIVER = table.Driver("", "pf", mtu=(68, 1500))
# PF drivers that only record a VF's new MAC: its VF driver takes it when it probes the VF again
# (igb_ndo_set_vf_mac: "Reload the VF driver to make this change effective"; the lab's 82576 shows it)
MAC_AT_NEXT_PROBE = frozenset({"igb"})
DEFAULT = {"mac": "00:00:00:00:00:00", "vlan": [0, 0, "802.1Q"], "rate": [0, 0], "spoofchk": True,
           "link_state": "auto", "trust": False}


class SimNet:
    def __init__(self, kernel: SimKernel):
        self.k = kernel

    # ------------------------------------------------------------------ lookups

    def _device_of(self, ifname: str, ifindex: Optional[int] = None) -> Tuple[str, str]:
        """(the netdev's device, its name now): by ifindex when given (rtnl's __dev_get_by_index),
        else by name (rtnl_dev_get); ENODEV when no netdev has it."""
        if ifindex:
            for name in self.k._listdir("sys/class/net"):
                if (self.k._get(f"sys/class/net/{name}/ifindex") or "").strip() == str(ifindex):
                    bdf = self.k._link_name(f"sys/class/net/{name}/device")
                    if bdf is not None:
                        return bdf, name
            raise _err(errno.ENODEV, f"no network interface with ifindex {ifindex} ({ifname!r} when it was read)")
        bdf = self.k._link_name(f"sys/class/net/{ifname}/device")
        if bdf is None:
            raise _err(errno.ENODEV, f"no network interface {ifname!r}")
        return bdf, ifname

    def _pf_driver(self, pf: str) -> table.Driver:
        return table.driver(self.k.driver_of(pf)) or NO_DRIVER

    def _link_speed(self, pf: str) -> Optional[int]:
        """The PF netdev's `speed` attribute (-1: link down), as the drivers read their link."""
        d = self.k.dev_dir(pf)
        for name in self.k._listdir(f"{d}/net") if d else []:
            text = self.k._get(f"{d}/net/{name}/speed")
            if text is not None:
                return int(text.strip())
            flags = self.k._get(f"{d}/net/{name}/flags")  # administratively down: no `speed`, no IFF_UP
            if flags is not None and not int(flags.strip(), 16) & 0x1:
                return -1
        return None

    def _vfs(self, pf: str) -> Dict[str, Dict[str, Any]]:
        return self.k._model.setdefault("net", {}).setdefault(pf, {})

    def vf_state(self, pf: str, index: int) -> Dict[str, Any]:
        return {**DEFAULT, **self._vfs(pf).get(str(index), {})}

    def admin_mac(self, pf: str, index: int) -> Optional[str]:
        mac = self._vfs(pf).get(str(index), {}).get("mac")
        return mac if mac and mac != DEFAULT["mac"] else None

    # ------------------------------------------------------------------ rtnetlink

    def vf_links(self, ifname: str, ifindex: Optional[int] = None) -> Dict[int, VfLinks]:
        self.k._load()
        pf, ifname = self._device_of(ifname, ifindex)
        spec = self._pf_driver(pf)
        count = self.k._num_vfs(pf) if os.path.exists(self.k._p(f"{self.k.dev_dir(pf)}/sriov_numvfs")) else 0
        unreported = spec.unreported
        out = {}
        # ndo_get_vf_guid (5.5+) reports them; a kernel or driver without it reports none
        ib = self._has_vf_guid_ops(pf, ifname) and self.k._model.get("ib_vf_guids", {}).get("netlink", True)
        for i in range(count):
            s = self.vf_state(pf, i)
            guids = {k: self.vf_guid(pf, i, k) for k in GUID_KEYS} if ib else {}
            out[i] = VfLinks(mac=s["mac"], vlan=s["vlan"][0], qos=s["vlan"][1], vlan_proto=s["vlan"][2],
                             spoofchk=s["spoofchk"], trust=None if "trust" in unreported else s["trust"],
                             link_state=s["link_state"], min_tx_rate=s["rate"][0], max_tx_rate=s["rate"][1],
                             **guids)
        return out

    # ------------------------------------------------------------------ InfiniBand VF GUIDs

    def _has_vf_guid_ops(self, pf: str, ifname: str) -> bool:
        """ndo_set_vf_guid/ndo_get_vf_guid: IPoIB's netdev ops (ipoib_set_vf_guid -> ib_set_vf_guid ->
        mlx5_ib_set_vf_guid), on an mlx5 function in InfiniBand mode; mlx5e's Ethernet ops have none."""
        netdev_type = (self.k._get(f"{self.k.dev_dir(pf)}/net/{ifname}/type") or "").strip()
        return self.k.driver_of(pf) == "mlx5_core" and netdev_type == "32"

    def _guids(self, pf: str) -> Dict[str, Dict[str, str]]:
        # mlx5's vfs_ctx: kept across a disable and restored on the next enable (sriov_restore_guids),
        # lost with the PF driver (a reload, a reboot)
        return self.k._model.setdefault("ib_guids", {}).setdefault(pf, {})

    def vf_guid(self, pf: str, index: int, key: str) -> str:
        """mlx5_ib_get_vf_guid: the GUID set for the VF, 0 when none was (node_guid_valid unset)."""
        return self._guids(pf).get(str(index), {}).get(key, "00:00:00:00:00:00:00:00")

    def _set_guid(self, pf: str, ifname: str, vf: int, key: str, value: str, drv: Optional[str]) -> None:
        """do_setvfinfo: no ndo_set_vf_guid (mlx5e, every Ethernet driver) EOPNOTSUPP; handle_vf_guid: a
        netdev whose type is not ARPHRD_INFINIBAND EOPNOTSUPP; mlx5_ib: modify_hca_vport_context."""
        if not self._has_vf_guid_ops(pf, ifname):
            raise _err(errno.EOPNOTSUPP, f"{drv}: {ifname} has no ndo_set_vf_guid (not an InfiniBand netdev)")
        self._guids(pf).setdefault(str(vf), {})[key] = value

    def set_vf_links(self, ifname: str, changes: Sequence[Tuple[int, Dict[str, Any]]],
                     ifindex: Optional[int] = None) -> None:
        with self.k._transaction():
            what = f"RTM_SETLINK {ifname} VF(s) {','.join(str(vf) for vf, _ in changes)}".encode()
            result = "ok"
            guids_of = None  # the PF whose VF GUIDs this request set (one or more)
            applied = False  # do_setlink notifies the link group once a VF setting is applied, error or not
            try:
                pf, ifname = self._device_of(ifname, ifindex)
                spec = self._pf_driver(pf)
                count = self.k._num_vfs(pf)
                drv = self.k.driver_of(pf)
                mode = self.k._model["devices"].get(pf, {}).get("eswitch", "legacy")
                for vf, change in changes:
                    if vf >= count:
                        raise _err(errno.EINVAL, f"Invalid VF Identifier {vf}")
                    for attr in VF_LINK_ATTRS:  # the kernel's order inside one IFLA_VF_INFO
                        if attr in change:
                            self._set(pf, vf, attr, change[attr], spec, drv, mode)
                            applied = True
                    for key in GUID_KEYS:  # each in an IFLA_VF_INFO of its own (vfinfo.encode_vf_info)
                        if key in change:
                            self._set_guid(pf, ifname, vf, key, change[key], drv)
                            guids_of = pf
                            applied = True
            except OSError as exc:
                result = errno.errorcode.get(exc.errno or 0, "?")
                raise
            finally:
                if applied:
                    self.k._notify_link(ifname)
                if guids_of is not None:
                    self.k._sync_ofed_sriov(guids_of)  # MLNX_OFED's sriov/<N>/{node,port}: the vport context
                self.k._save()  # what was applied stays applied: the kernel does not roll back
                self.k._log("netlink", what, result)

    def _set(self, pf: str, vf: int, attr: str, value: Any, spec: table.Driver, drv: Optional[str], mode: str) -> None:
        keys = split_setting(attr, value)
        if not any(SETTING_ATTR[k] == attr for k in spec.settings):
            raise _err(errno.EOPNOTSUPP, f"{drv} has no ndo_set_vf_{attr}")
        if attr == "vlan":
            if keys["vlan_proto"] != "802.1Q" and "vlan_proto" not in spec.settings:
                raise _err(errno.EPROTONOSUPPORT, f"{drv}: VF VLAN protocol {keys['vlan_proto']} not supported")
        if attr == "rate":
            low, high = value
            vendor = (self.k._get(f"{self.k.dev_dir(pf)}/vendor") or "").strip()[2:]
            device = (self.k._get(f"{self.k.dev_dir(pf)}/device") or "").strip()[2:]
            if spec.rate_devices is not None and f"{vendor}:{device}" not in spec.rate_devices:
                raise _err(errno.EOPNOTSUPP, f"{drv}: no VF rate limits on {vendor}:{device}")
            if mode == "switchdev" and not spec.rates_in_switchdev:
                raise _err(errno.EOPNOTSUPP, "legacy VF rate in switchdev mode (use devlink rate)")
            if low and "min_tx_rate" not in spec.settings:
                raise _err(errno.EINVAL, f"{drv}: Invalid min tx rate ({low}) specified for VF {vf}")
            if spec.min_rate_link:  # ice_set_vf_bw: ice_min_tx_rate_oversubscribed, then ice_set_min_bw_limit
                speed = max(self._link_speed(pf) or 0, 0)  # ice_get_link_speed_mbps: 0 with the link down
                others = sum(int(s.get("rate", [0, 0])[0]) for i, s in self._vfs(pf).items() if i != str(vf))
                if others + low > speed:
                    raise _err(errno.EINVAL, f"{drv}: min_tx_rate of {low} Mbps on VF {vf} would cause "
                                             f"oversubscription of {others + low - speed} Mbps based on the "
                                             f"current link speed {speed} Mbps")
            if high and high < spec.max_rate_floor:
                raise _err(errno.EINVAL, f"{drv}: max tx rate {high} below the {spec.max_rate_floor} Mbit/s floor")
            speed = self._link_speed(pf) if spec.rate_link else None
            if speed is not None and speed <= 0 and (high or spec.rate_link == "up"):
                raise _err(errno.EINVAL, f"{drv}: the link is down")
            if speed is not None and high > speed > 0:
                raise _err(errno.EINVAL, f"{drv}: max tx rate {high} above the link speed {speed}")
        if attr == "mac" and int(value[:2], 16) & 1:
            raise _err(errno.EINVAL, "multicast MAC")
        entry = self._vfs(pf).setdefault(str(vf), {})
        entry[attr] = list(value) if isinstance(value, tuple) else value
        if attr == "mac" and drv not in MAC_AT_NEXT_PROBE:  # the VF's driver takes it (i40e resets the VF)
            vf_bdf = self.k._link_name(f"{self.k.dev_dir(pf)}/virtfn{vf}")
            d = self.k.dev_dir(vf_bdf) if vf_bdf else None
            for name in self.k._listdir(f"{d}/net") if d else []:
                self.k._put(f"{d}/net/{name}/address", value + "\n", 0o444)

    def set_link_up(self, ifname: str, up: bool) -> None:
        """`ip link set <ifname> up|down` on a PF netdev: down, its `speed` cannot be read (the kernel
        answers EINVAL: the file is absent here) and its `flags` lack IFF_UP; up, the NIC's speed."""
        with self.k._transaction():
            bdf, ifname = self._device_of(ifname)
            base = f"{self.k.dev_dir(bdf)}/net/{ifname}"
            hw = self.k._model.get("devices", {}).get(bdf, {})
            if up and hw.get("model"):
                from sriov_node.sim.nics import NICS

                self.k._put(f"{base}/speed", f"{NICS[hw['model']].speed}\n", 0o444)
            elif not up:
                self.k._unlink(f"{base}/speed")
            self.k._put(f"{base}/flags", "0x1003\n" if up else "0x1002\n", 0o444)
            self.k._notify_link(ifname)
            self.k._log("netlink", f"link {ifname} {'up' if up else 'down'}".encode(), "ok")

    def set_mtu(self, ifname: str, mtu: int, ifindex: Optional[int] = None) -> None:
        with self.k._transaction():
            bdf, ifname = self._device_of(ifname, ifindex)
            drv = self.k.driver_of(bdf) or ""
            row = table.driver(drv) or NO_DRIVER  # the netdev's driver: the PF's, or the VF's
            low, top = row.mtu or NO_DRIVER.mtu  # type: ignore[misc]
            if not low <= mtu <= top:
                self.k._log("netlink", f"mtu {ifname} {mtu}".encode(), "EINVAL")
                raise _err(errno.EINVAL, f"{ifname}: MTU {mtu} outside {low}-{top} ({drv})")
            self.k._put(f"{self.k.dev_dir(bdf)}/net/{ifname}/mtu", f"{mtu}\n")
            self.k._notify_link(ifname)
            self.k._log("netlink", f"mtu {ifname} {mtu}".encode(), "ok")

    # ------------------------------------------------------------------ devlink

    def _devlink_pf(self, handle: str) -> Tuple[str, table.Driver]:
        bus, _, dev = handle.partition("/")
        if bus != "pci" or self.k.dev_dir(dev) is None or self.k.driver_of(dev) is None:
            raise _err(errno.ENODEV, f"no devlink instance {handle}")
        spec = self._pf_driver(dev)
        if not spec.devlink:
            raise _err(errno.ENODEV, f"{self.k.driver_of(dev)} registers no devlink instance ({handle})")
        return dev, spec

    def eswitch_mode(self, handle: str) -> str:
        self.k._load()
        pf, spec = self._devlink_pf(handle)
        if spec.eswitch is None:
            raise _err(errno.EOPNOTSUPP, f"{self.k.driver_of(pf)} has no eswitch_mode_get")
        if self.k._fault("eswitch_needs_vfs", device=pf) and not self.k._num_vfs(pf):
            raise _err(errno.EOPNOTSUPP, "eswitch mode is NONE while SR-IOV is off (old mlx5)")
        return self.k._model["devices"][pf].get("eswitch", "legacy")

    def set_eswitch_mode(self, handle: str, mode: str) -> None:
        with self.k._transaction():
            pf, spec = self._devlink_pf(handle)
            rule = spec.eswitch
            result = "ok"
            try:
                if rule is None:
                    raise _err(errno.EOPNOTSUPP, f"{self.k.driver_of(pf)} has no eswitch_mode_set")
                if self.k._fault("eswitch_needs_vfs", device=pf) and not self.k._num_vfs(pf):
                    raise _err(errno.EOPNOTSUPP, "eswitch mode is NONE while SR-IOV is off (old mlx5)")
                if self.k._model["devices"][pf].get("eswitch", "legacy") == mode:
                    return  # every driver answers the mode it already has with 0, before its checks
                if rule == "no_vfs" and self.k._num_vfs(pf):
                    raise _err(errno.EOPNOTSUPP, "Changing eswitch mode is allowed only if there is no VFs created")
                if self.k._fault("eswitch_needs_vfs", device=pf) and any(
                        self.k.driver_of(vf) for vf in self.k._vf_addresses(pf)):
                    raise _err(errno.EBUSY, "VFs are bound: unbind them before changing the eswitch mode")
                self.k._model["devices"][pf]["eswitch"] = mode
                self.k._save()
            except OSError as exc:
                result = errno.errorcode.get(exc.errno or 0, "?")
                raise
            finally:
                self.k._log("devlink", f"eswitch {handle} {mode}".encode(), result)


def vfs_disabled(kernel: SimKernel, pf: str) -> None:
    """The PF driver's eswitch once its VFs are gone: legacy again where the driver resets it."""
    hw = kernel._model.get("devices", {}).get(pf)
    if hw and hw.get("eswitch", "legacy") != "legacy" and kernel._fault("eswitch_resets", device=pf):
        hw["eswitch"] = "legacy"  # e.g. nsim_drv_configure_vfs(0) -> nsim_esw_legacy_enable()
        kernel._save()
