"""Actions are data: small frozen values the planner returns and the executor runs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any, ClassVar, Dict, Optional, Tuple


@dataclass(frozen=True)
class Action:
    pf: str  # PCI address of the PF the action belongs to
    op: ClassVar[str] = ""

    @property
    def target_vf(self) -> Optional[int]:
        """The VF index a VF-scoped action is about; None for PF-wide actions."""
        return getattr(self, "vf", None)

    def describe(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"pf": self.pf, "op": self.op}
        for name in _field_names(type(self)):
            out[name] = getattr(self, name)
        return out


@lru_cache(maxsize=None)  # every action of a plan is turned into a dict: ask once per class
def _field_names(cls: type) -> Tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "pf")


@dataclass(frozen=True)
class LoadDriver(Action):
    driver: str = ""
    op: ClassVar[str] = "load_driver"

    def describe(self) -> str:
        return f"load the {self.driver} driver (modprobe {self.driver})"


@dataclass(frozen=True)
class SetNumVfs(Action):
    value: int = 0
    current: int = 0
    op: ClassVar[str] = "set_num_vfs"

    def describe(self) -> str:
        return f"sriov_numvfs {self.current} -> {self.value}"


@dataclass(frozen=True)
class ReplugPf(Action):
    """Remove the PF and rescan the bus: the only way the kernel drops a stale virtfnN link (a VF
    removed by hand leaves it, and the kernel will not create that VF again while it is there).
    The PF comes back as at boot: no VFs, autoprobe 1, its netdev made anew."""

    ifname: Optional[str] = None  # the PF netdev to wait for (udev gives it its name again)
    stale: Tuple[int, ...] = ()
    op: ClassVar[str] = "replug_pf"

    def describe(self) -> str:
        links = ", ".join(f"virtfn{i}" for i in self.stale)
        return (f"disable the VFs, remove the PF and rescan the PCI bus (drops the stale {links} link(s) the kernel keeps "
                "for VFs removed by hand; the PF netdev goes away and comes back)")


@dataclass(frozen=True)
class SetAutoprobe(Action):
    value: bool = True
    op: ClassVar[str] = "set_autoprobe"

    def describe(self) -> str:
        why = "" if self.value else " (so no default driver grabs the new VFs first)"
        return f"sriov_drivers_autoprobe -> {int(self.value)}{why}"


@dataclass(frozen=True)
class SetDriverOverride(Action):
    vf: int = 0
    driver: Optional[str] = None  # None clears the override
    op: ClassVar[str] = "set_driver_override"

    def describe(self) -> str:
        return f"VF {self.vf}: driver_override -> {self.driver or '(clear)'}"


@dataclass(frozen=True)
class UnbindDriver(Action):
    vf: int = 0
    driver: str = ""
    op: ClassVar[str] = "unbind_driver"

    def describe(self) -> str:
        return f"VF {self.vf}: unbind from {self.driver}"


@dataclass(frozen=True)
class BindDriver(Action):
    vf: int = 0
    driver: str = ""
    op: ClassVar[str] = "bind_driver"

    def describe(self) -> str:
        return f"VF {self.vf}: bind to {self.driver}"


@dataclass(frozen=True)
class ProbeVf(Action):
    """Let the kernel attach its default driver to an unbound VF."""

    vf: int = 0
    op: ClassVar[str] = "probe_default_driver"

    def describe(self) -> str:
        return f"VF {self.vf}: probe the kernel's default driver"


@dataclass(frozen=True)
class SetPfMtu(Action):
    """The PF netdev's MTU, set before its VFs are created (VF drivers size their buffers from it)."""

    ifname: str = ""
    value: int = 0
    current: Optional[int] = None
    op: ClassVar[str] = "set_pf_mtu"

    def describe(self) -> str:
        return f"{self.ifname} MTU {self.current} -> {self.value}"


@dataclass(frozen=True)
class SetEswitchMode(Action):
    handle: str = ""  # devlink handle, "pci/0000:3b:00.0"
    value: str = ""
    current: Optional[str] = None
    op: ClassVar[str] = "set_eswitch_mode"

    def describe(self) -> str:
        return f"devlink {self.handle} eswitch mode {self.current or '?'} -> {self.value}"


@dataclass(frozen=True)
class SetVfSetting(Action):
    """One VF setting (MAC, VLAN, rate, ...) for several VFs of a PF.

    The executor sends every consecutive SetVfSetting of a PF in one RTM_SETLINK.
    """

    ifname: str = ""
    attr: str = ""  # "mac" | "vlan" | "rate" | "spoofchk" | "link_state" | "trust"
    values: Tuple[Tuple[int, Any], ...] = ()  # (VF index, value)

    @property
    def op(self) -> str:  # type: ignore[override]
        return f"set_vf_{self.attr}"

    def describe(self) -> str:
        from sriov_node.engine.compare import show_setting

        from sriov_node.model import format_ranges

        by_value: Dict[str, list] = {}
        for i, v in self.values:
            by_value.setdefault(show_setting(self.attr, v), []).append(i)
        return "; ".join(f"VF {format_ranges(vfs)}: {shown}" for shown, vfs in by_value.items()) + f" (through {self.ifname})"

    def to_dict(self) -> Dict[str, Any]:
        return {"pf": self.pf, "op": self.op, "ifname": self.ifname,
                "vfs": [{"vf": i, "value": list(v) if isinstance(v, tuple) else v} for i, v in self.values]}


@dataclass(frozen=True)
class SetVfMtu(Action):
    """A VF netdev's MTU, once the VF's driver has made its netdev."""

    vf: int = 0
    value: int = 0
    op: ClassVar[str] = "set_vf_mtu"

    def describe(self) -> str:
        return f"VF {self.vf}: netdev MTU -> {self.value}"
