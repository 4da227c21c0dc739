"""The links capability: rtnetlink questions about netdevs (pyroute2, imported only when asked).

VF settings live in the PF's driver and travel as IFLA_VF_* attributes on the PF's netdev:
one RTM_GETLINK with RTEXT_FILTER_VF reads every VF; one RTM_SETLINK whose IFLA_VFINFO_LIST
carries one IFLA_VF_INFO per VF sets many (the kernel applies them in order and stops at the
first error, keeping what it applied). pyroute2 is the transport; the IFLA_VFINFO_LIST inside
both messages is packed and read by `vfinfo.py`.

A netdev is named by its ifindex when the caller knows it, else by its name: udev renames a PF's
netdev just after its driver probes it (eth1 -> enp4s0), and the kernel gives the freed name to the
next netdev (often a new VF's), so a name read before a write may be gone, or another netdev's, by
then. The ifindex is the netdev's for its whole life, and a new netdev never gets an old one.
"""

from __future__ import annotations

import errno
import os
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sriov_node.host import vfinfo
from sriov_node.host.sysfs import WriteCount
from sriov_node.host.vfinfo import VfChange
from sriov_node.model import VfLinks

# VfChange, one VF's wanted changes: {"mac": str, "vlan": (vlan, qos, proto), "rate": (min, max),
# "spoofchk": bool, "link_state": "auto"|..., "trust": bool}
__all__ = ["LinkListener", "Links", "NetlinkLinks", "VfChange", "newlink_vf_links"]

# with ifi_index 0, RTM_GETLINK and RTM_SETLINK find the netdev by this name (rtnl_dev_get); never
# both: an RTM_SETLINK with an index and a name renames the netdev (do_setlink)
IFLA_IFNAME = 3
RTEXT_FILTER_VF = 1
RTEXT_FILTER_SKIP_STATS = 8  # without it 64+ VFs overflow the 16-bit nest length and the list comes back short


class LinkListener:
    """Where the kernel says a netdev's state moved: rtnetlink's link group (RTNLGRP_LINK). The
    kernel sends an RTM_NEWLINK there for every change of a netdev, a VF setting set on a PF's
    netdev included (do_setlink's netdev_state_change), with no uevent: `ip link set PF vf N vlan
    10` by hand is heard only here. The messages say which netdev, never who changed it.

    `receive` returns the (ifindex, ifname) of each RTM_NEWLINK waiting, [] when none; OSError
    ENOBUFS when the kernel dropped some (the socket's buffer was full), as a uevent socket does."""

    def fileno(self) -> int:  # pragma: no cover - every listener overrides
        raise NotImplementedError

    def receive(self) -> List[Tuple[int, str]]:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass


class NetlinkLinkListener(LinkListener):
    """A netlink socket bound to RTMGRP_LINK, read without blocking; pyroute2 parses what it reads
    (its IPRoute queues notifications inside an event loop of its own, which select() cannot see)."""

    description = "link changes from rtnetlink"

    def __init__(self, receive_buffer: int = 0):
        import socket

        from pyroute2.netlink.rtnl import RTMGRP_LINK
        from pyroute2.netlink.rtnl.marshal import MarshalRtnl

        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                                  socket.NETLINK_ROUTE)
        try:
            if receive_buffer:
                try:  # SO_RCVBUFFORCE: beyond rmem_max, with CAP_NET_ADMIN
                    self.sock.setsockopt(socket.SOL_SOCKET, 33, receive_buffer)
                except OSError:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.bind((0, RTMGRP_LINK))
        except BaseException:
            self.sock.close()
            raise
        self.marshal = MarshalRtnl()
        self.overrun = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> List[Tuple[int, str]]:
        from pyroute2.netlink.rtnl import RTM_NEWLINK

        if self.overrun:
            self.overrun = False
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        out: List[Tuple[int, str]] = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno != errno.ENOBUFS or not out:
                    raise
                self.overrun = True  # said at the next receive, after what was read before it
                return out
            if not data:
                return out
            for msg in self.marshal.parse(data):
                if msg["header"]["type"] == RTM_NEWLINK:
                    out.append((int(msg["index"]), str(msg.get_attr("IFLA_IFNAME") or "")))

    def close(self) -> None:
        self.sock.close()


class Links:
    """No netlink behind this root (a captured tree): every answer is "unknown"."""

    available = False

    def __init__(self, counter: Optional[WriteCount] = None):
        self.counter = counter or WriteCount()

    def listen(self, receive_buffer: int = 0) -> LinkListener:
        """A listener for the netdevs whose state moves from now on (`LinkListener`). OSError when this
        root's kernel sends none."""
        raise OSError(errno.EOPNOTSUPP, "no netlink: this root is a captured tree")

    def permanent_mac(self, ifname: str) -> Optional[str]:
        """IFLA_PERM_ADDRESS of `ifname`, lower-case, or None when unknown."""
        return None

    def vf_links(self, ifname: str, ifindex: Optional[int] = None) -> Dict[int, VfLinks]:
        """Every VF's settings, read in one request. Raises OSError when they cannot be read.
        `ifindex`: the netdev by its index (`ifname` then only names it in messages)."""
        raise OSError(errno.EOPNOTSUPP, "no netlink: this root is a captured tree")

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        """The alternative names of `ifname` (IFLA_PROP_LIST's IFLA_ALT_IFNAME), () none, None unknown."""
        return None

    def set_vf_links(self, ifname: str, changes: Sequence[VfChange], ifindex: Optional[int] = None) -> None:
        """All changes in one request; raises OSError(errno) at the kernel's first refusal."""
        raise OSError(errno.EROFS, "no netlink: this root is a captured tree")

    def set_mtu(self, ifname: str, mtu: int, ifindex: Optional[int] = None) -> None:
        raise OSError(errno.EROFS, "no netlink: this root is a captured tree")


_SETLINK: list = []  # the message class, made on first use


def _setlink_class():
    """An RTM_SETLINK for pyroute2 to send: ifinfomsg and one IFLA_VFINFO_LIST whose payload is
    already packed (`vfinfo.encode_vfinfo_list`); pyroute2 writes the headers, the sequence number
    and reads the kernel's answer."""
    if not _SETLINK:
        from pyroute2.netlink import nlmsg
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        class vf_setlink(nlmsg):
            fields = ifinfmsg.fields
            nla_map = ((IFLA_IFNAME, "IFLA_IFNAME", "asciiz"), (vfinfo.IFLA_VFINFO_LIST, "IFLA_VFINFO_LIST", "cdata"))

        _SETLINK.append(vf_setlink)
    return _SETLINK[0]


def newlink_vf_links(msg: Any) -> Tuple[Optional[int], Optional[Dict[int, VfLinks]]]:
    """IFLA_NUM_VF and every VF's settings (None: no IFLA_VFINFO_LIST) of an RTM_NEWLINK as pyroute2
    received it, read from the message's bytes: pyroute2 decodes an attribute only when asked, and
    IFLA_VFINFO_LIST is never asked."""
    data = msg.data if isinstance(msg.data, bytes) else bytes(msg.data)
    count, span = vfinfo.newlink_vf_list(data, msg.offset)
    return count, (None if span is None else vfinfo.parse_vfinfo_list(data, *span))


def altnames_of(msg: Any) -> Tuple[str, ...]:
    """The alternative names in one RTM_NEWLINK (IFLA_PROP_LIST, one IFLA_ALT_IFNAME each; kernel 5.5+)."""
    props = msg.get("IFLA_PROP_LIST")
    return tuple(props.get_attrs("IFLA_ALT_IFNAME")) if props is not None else ()


class NetlinkLinks(Links):
    """The live kernel's rtnetlink, in this process's network namespace."""

    available = True

    def __init__(self, counter: Optional[WriteCount] = None):
        super().__init__(counter)
        self._ipr = None

    def listen(self, receive_buffer: int = 0) -> LinkListener:
        return NetlinkLinkListener(receive_buffer)

    def _route(self):
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def _index(self, ifname: str) -> int:
        found = self._route().link_lookup(ifname=ifname)
        if not found:
            raise OSError(errno.ENODEV, f"no network interface {ifname!r}")
        return found[0]

    @staticmethod
    def _oserror(exc: Exception, ifname: Optional[str] = None, ifindex: Optional[int] = None) -> OSError:
        code = getattr(exc, "code", None)
        if isinstance(exc, OSError):
            return exc
        if code == errno.ENODEV and ifindex:
            return OSError(errno.ENODEV, f"network interface {ifname!r} (ifindex {ifindex}) is gone: removed, or "
                                         "its driver reloaded, since it was read")
        if code == errno.ENODEV and ifname is not None:
            return OSError(errno.ENODEV, f"no network interface {ifname!r}")
        return OSError(code or errno.EIO, str(exc))

    def permanent_mac(self, ifname: str) -> Optional[str]:
        try:
            links = self._route().link("get", ifname=ifname)
            mac = links[0].get_attr("IFLA_PERM_ADDRESS") if links else None
            return mac.lower() if mac else None
        except Exception:  # netlink errors: the MAC is simply unknown
            return None

    def altnames(self, ifname: str) -> Optional[Tuple[str, ...]]:
        try:
            links = self._route().link("get", ifname=ifname)
        except Exception:  # gone, or netlink refused: unknown
            return None
        return altnames_of(links[0]) if links else None

    def vf_links(self, ifname: str, ifindex: Optional[int] = None) -> Dict[int, VfLinks]:
        # the netdev in the request itself, by index or by name: one round trip, no index to look
        # up first (under emulation a round trip through pyroute2 is tens of ms)
        where = {"index": ifindex} if ifindex else {"ifname": ifname}
        try:
            (msg,) = self._route().link("get", **where, ext_mask=RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS)
        except Exception as exc:
            raise self._oserror(exc, ifname, ifindex)
        try:
            count, found = newlink_vf_links(msg)
        except (ValueError, struct.error) as exc:
            raise OSError(errno.EPROTO, f"{ifname}: an RTM_NEWLINK whose VF list cannot be read: {exc}")
        if found is None:
            if count:
                raise OSError(errno.EOPNOTSUPP, f"the driver of {ifname} does not report VF settings")
            return {}
        if count is not None and len(found) != count:
            raise OSError(errno.EMSGSIZE, f"{ifname} reported {len(found)} of {count} VFs (a list too long for "
                                          "one netlink attribute, or a VF its driver could not describe)")
        return found

    def set_vf_links(self, ifname: str, changes: Sequence[VfChange], ifindex: Optional[int] = None) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.rtnl import RTM_SETLINK

        try:
            payload = vfinfo.encode_vfinfo_list(changes)
        except ValueError as exc:
            raise OSError(errno.EMSGSIZE, f"{ifname}: {exc}; set fewer VFs' settings per run")
        msg = _setlink_class()()
        msg["header"]["type"] = RTM_SETLINK
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK
        if ifindex:
            msg["index"] = ifindex
            msg["attrs"] = [("IFLA_VFINFO_LIST", payload)]
        else:  # the kernel finds the netdev by IFLA_IFNAME (index 0: a lookup, never a rename)
            msg["index"] = 0
            msg["attrs"] = [("IFLA_IFNAME", ifname), ("IFLA_VFINFO_LIST", payload)]
        self.counter.count += 1
        try:
            # nlm_request_batch: IPRoute.nlm_request of pyroute2 0.9.7 fails on a plain request
            for _ in self._route().nlm_request_batch([msg]):
                pass
        except Exception as exc:
            raise self._oserror(exc, ifname, ifindex)

    def set_mtu(self, ifname: str, mtu: int, ifindex: Optional[int] = None) -> None:
        self.counter.count += 1
        try:
            self._route().link("set", index=ifindex or self._index(ifname), mtu=mtu)
        except Exception as exc:
            raise self._oserror(exc, ifname if ifindex else None, ifindex)
