"""The devlink capability: the eswitch mode of a PF (generic netlink through pyroute2)."""

from __future__ import annotations

import errno
from typing import Optional

from sriov_node.host.sysfs import WriteCount

MODES = ("legacy", "switchdev")  # DEVLINK_ESWITCH_MODE_LEGACY = 0, _SWITCHDEV = 1


class Devlink:
    """No devlink behind this root (a captured tree): the mode is unknown."""

    available = False

    def __init__(self, counter: Optional[WriteCount] = None):
        self.counter = counter or WriteCount()

    def eswitch_mode(self, handle: str) -> str:
        """'legacy' | 'switchdev' for a handle such as 'pci/0000:3b:00.0'. Raises OSError."""
        raise OSError(errno.EOPNOTSUPP, "no devlink: this root is a captured tree")

    def set_eswitch_mode(self, handle: str, mode: str) -> None:
        raise OSError(errno.EROFS, "no devlink: this root is a captured tree")


class NetlinkDevlink(Devlink):
    """The live kernel's devlink. pyroute2 has no eswitch helper: the request is built here."""

    available = True

    def __init__(self, counter: Optional[WriteCount] = None):
        super().__init__(counter)
        self._dl = None

    def _socket(self):
        if self._dl is None:
            from pyroute2 import DL

            try:
                self._dl = DL()
            except Exception as exc:  # no devlink family in this kernel
                raise OSError(getattr(exc, "code", None) or errno.ENOENT, f"devlink is not available: {exc}")
        return self._dl

    @staticmethod
    def _message(cmd: int, handle: str, mode: Optional[str] = None):
        from pyroute2.netlink.devlink import devlinkcmd

        bus, _, dev = handle.partition("/")
        msg = devlinkcmd()
        msg["cmd"] = cmd
        msg["version"] = 1
        msg["attrs"] = [("DEVLINK_ATTR_BUS_NAME", bus), ("DEVLINK_ATTR_DEV_NAME", dev)]
        if mode is not None:
            msg["attrs"].append(("DEVLINK_ATTR_ESWITCH_MODE", MODES.index(mode)))
        return msg

    def eswitch_mode(self, handle: str) -> str:
        from pyroute2.netlink import NLM_F_REQUEST
        from pyroute2.netlink.devlink import DEVLINK_CMD_ESWITCH_GET

        dl = self._socket()
        try:
            (reply,) = dl.nlm_request(self._message(DEVLINK_CMD_ESWITCH_GET, handle),
                                      msg_type=dl.prid, msg_flags=NLM_F_REQUEST)
        except Exception as exc:
            raise OSError(getattr(exc, "code", None) or errno.EIO, str(exc))
        code = reply.get_attr("DEVLINK_ATTR_ESWITCH_MODE")
        if code is None or code >= len(MODES):
            raise OSError(errno.EOPNOTSUPP, f"{handle} reports no eswitch mode")
        return MODES[code]

    def set_eswitch_mode(self, handle: str, mode: str) -> None:
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.devlink import DEVLINK_CMD_ESWITCH_SET

        dl = self._socket()
        self.counter.count += 1
        try:
            dl.nlm_request(self._message(DEVLINK_CMD_ESWITCH_SET, handle, mode),
                           msg_type=dl.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK)
        except Exception as exc:
            raise OSError(getattr(exc, "code", None) or errno.EIO, str(exc))
