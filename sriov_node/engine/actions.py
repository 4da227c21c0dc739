"""Actions are data: small frozen values the planner returns and the executor runs.

Each action says which writes it makes (`writes()`: kinds of write, see `WRITE_KINDS`) and under
which named retry rules (`retries()`) the executor may write again within it. The executor writes
nothing else, and `apply --dry-run` shows every rule with its action (`retry` in the JSON).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any, ClassVar, Dict, Optional, Tuple


# The kinds of write a host receives: a sysfs write is named by its file (sriov_numvfs,
# sriov_drivers_autoprobe, driver_override, unbind, bind, drivers_probe, remove, rescan); a module
# load is "modprobe"; netlink VF settings "vf_links", a netdev MTU "mtu"; devlink's eswitch "eswitch".
WRITE_KINDS = ("modprobe", "sriov_numvfs", "remove", "rescan", "sriov_drivers_autoprobe", "driver_override",
               "unbind", "drivers_probe", "bind", "mtu", "eswitch", "vf_links")


@dataclass(frozen=True)
class Retry:
    """A named rule under which the executor writes again within one action (at most once each per
    action, `SEND_REST` once per setting left), shown with the action's plan."""

    name: str
    text: str
    writes: Tuple[str, ...]  # the kinds of write the rule may add
    short: str = ""  # the rule in a few words, for a plan folded to fit a terminal


NUMVFS_AGAIN = Retry("numvfs_again", "once more if the PF reads 0 VFs after 1 s (NVMe right after probe)",
                     ("sriov_numvfs",), "once more if 0 VFs after 1 s")
PROBE_RACE = Retry("probe_race", "if a probe raced it to another driver: unbind that one and probe again",
                   ("unbind", "drivers_probe"), "unbind a racing driver, probe again")
BIND_FILE = Retry("bind_file", "if the probe left it unbound: write the driver's bind file, which reports "
                  "the probe's error", ("bind",), "its bind file if left unbound")
DEFAULT_TAKEN = Retry("default_taken", "if a driver with a dynamic ID (new_id) takes it: unbind that one and "
                      "write the default driver's bind file", ("unbind", "bind"),
                      "a new_id driver unbound for the default")
LOAD_DEFAULT = Retry("load_default", "if nothing binds and its default driver (modules.alias) is not loaded: "
                     "modprobe it and probe again", ("modprobe", "drivers_probe"),
                     "modprobe the default")
DEFAULT_BIND_FILE = Retry("default_bind_file", "if nothing binds: write the default driver's bind file, which "
                          "reports the probe's error", ("bind",), "the default's bind file")
SEND_REST = Retry("send_rest", "after a refusal: read back, name the VF and setting refused, send the rest "
                  "in a new request", ("vf_links",), "the rest after a refusal")


@dataclass(frozen=True)
class Action:
    pf: str  # PCI address of the PF the action belongs to
    op: ClassVar[str] = ""
    own_writes: ClassVar[Tuple[str, ...]] = ()  # the writes the action makes, at most, without a retry

    def writes(self) -> Tuple[str, ...]:
        """The writes this action makes (their kinds, one entry per write), retries aside."""
        return self.own_writes

    def retries(self) -> Tuple[Retry, ...]:
        """The rules under which the executor may write again within this action."""
        return ()

    def retry_text(self) -> Optional[str]:
        return _joined(self.retries())

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
        return _with_retry(self, out)


@lru_cache(maxsize=None)  # a handful of rule combinations, asked for every action of a plan
def _joined(rules: Tuple[Retry, ...]) -> Optional[str]:
    return "; ".join(r.text for r in rules) if rules else None


def _with_retry(action: Action, out: Dict[str, Any]) -> Dict[str, Any]:
    text = action.retry_text()
    if text:
        out["retry"] = text
    return out


@lru_cache(maxsize=None)  # every action of a plan is turned into a dict: ask once per class
def _field_names(cls: type) -> Tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name != "pf" and f.metadata.get("shown", True))


@dataclass(frozen=True)
class LoadDriver(Action):
    driver: str = ""
    # the kernel's default for VFs probed later in the plan, named by no block: its failure is
    # those VFs' (each fails with the reason), not the PF's, so the rest of the plan goes on
    default: bool = field(default=False, metadata={"shown": False})
    op: ClassVar[str] = "load_driver"
    own_writes: ClassVar[Tuple[str, ...]] = ("modprobe",)  # none when the driver is there already

    def describe(self) -> str:
        return f"load the {self.driver} driver (modprobe {self.driver})"


@dataclass(frozen=True)
class SetNumVfs(Action):
    value: int = 0
    current: int = 0
    op: ClassVar[str] = "set_num_vfs"
    own_writes: ClassVar[Tuple[str, ...]] = ("sriov_numvfs",)

    def retries(self) -> Tuple[Retry, ...]:
        return (NUMVFS_AGAIN,) if self.value else ()

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
    own_writes: ClassVar[Tuple[str, ...]] = ("sriov_numvfs", "remove", "rescan")  # the 0 only when VFs exist

    def describe(self) -> str:
        links = ", ".join(f"virtfn{i}" for i in self.stale)
        return (f"disable the VFs, remove the PF and rescan the PCI bus (drops the stale {links} link(s) the kernel keeps "
                "for VFs removed by hand; the PF netdev goes away and comes back)")


@dataclass(frozen=True)
class SetAutoprobe(Action):
    value: bool = True
    op: ClassVar[str] = "set_autoprobe"
    own_writes: ClassVar[Tuple[str, ...]] = ("sriov_drivers_autoprobe",)

    def describe(self) -> str:
        why = "" if self.value else " (so no default driver grabs the new VFs first)"
        return f"sriov_drivers_autoprobe -> {int(self.value)}{why}"


@dataclass(frozen=True)
class SetDriverOverride(Action):
    vf: int = 0
    driver: Optional[str] = None  # None clears the override
    op: ClassVar[str] = "set_driver_override"
    own_writes: ClassVar[Tuple[str, ...]] = ("driver_override",)

    def describe(self) -> str:
        return f"VF {self.vf}: driver_override -> {self.driver or '(clear)'}"


@dataclass(frozen=True)
class UnbindDriver(Action):
    vf: int = 0
    driver: str = ""
    op: ClassVar[str] = "unbind_driver"
    own_writes: ClassVar[Tuple[str, ...]] = ("unbind",)

    def describe(self) -> str:
        return f"VF {self.vf}: unbind from {self.driver}"


@dataclass(frozen=True)
class BindDriver(Action):
    vf: int = 0
    driver: str = ""
    op: ClassVar[str] = "bind_driver"
    own_writes: ClassVar[Tuple[str, ...]] = ("drivers_probe",)  # the override names the driver

    def retries(self) -> Tuple[Retry, ...]:
        return (PROBE_RACE, BIND_FILE)

    def describe(self) -> str:
        return f"VF {self.vf}: bind to {self.driver}"


@dataclass(frozen=True)
class ProbeVf(Action):
    """Let the kernel attach its default driver to an unbound VF."""

    vf: int = 0
    # The VF's default driver was not known when planning (VFs this run creates): if it is not
    # loaded, modprobe it here (LOAD_DEFAULT). A known one that is not loaded is a planned LoadDriver.
    load_default: bool = field(default=False, metadata={"shown": False})
    op: ClassVar[str] = "probe_default_driver"
    own_writes: ClassVar[Tuple[str, ...]] = ("drivers_probe",)

    def retries(self) -> Tuple[Retry, ...]:
        return (DEFAULT_TAKEN,) + ((LOAD_DEFAULT,) if self.load_default else ()) + (DEFAULT_BIND_FILE,)

    def describe(self) -> str:
        return f"VF {self.vf}: probe the kernel's default driver"


@dataclass(frozen=True)
class SetPfMtu(Action):
    """The PF netdev's MTU, set before its VFs are created (VF drivers size their buffers from it)."""

    ifname: str = ""
    value: int = 0
    current: Optional[int] = None
    op: ClassVar[str] = "set_pf_mtu"
    own_writes: ClassVar[Tuple[str, ...]] = ("mtu",)

    def describe(self) -> str:
        return f"{self.ifname} MTU {self.current} -> {self.value}"


@dataclass(frozen=True)
class SetEswitchMode(Action):
    handle: str = ""  # devlink handle, "pci/0000:3b:00.0"
    value: str = ""
    current: Optional[str] = None
    op: ClassVar[str] = "set_eswitch_mode"
    own_writes: ClassVar[Tuple[str, ...]] = ("eswitch",)

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
    own_writes: ClassVar[Tuple[str, ...]] = ("vf_links",)  # consecutive ones share one request

    def retries(self) -> Tuple[Retry, ...]:
        return (SEND_REST,)

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
        return _with_retry(self, {"pf": self.pf, "op": self.op, "ifname": self.ifname,
                                  "vfs": [{"vf": i, "value": list(v) if isinstance(v, tuple) else v}
                                          for i, v in self.values]})


@dataclass(frozen=True)
class SetVfGuids(Action):
    """InfiniBand VF GUIDs (IFLA_VF_IB_NODE_GUID/PORT_GUID) through the PF's IPoIB netdev, one request
    for every VF of the plan; planned while the VFs are unbound (mlx5_ib reads a VF's GUIDs when it
    probes it), their drivers bound after it."""

    ifname: str = ""
    values: Tuple[Tuple[int, str, str], ...] = ()  # (VF index, "node_guid" | "port_guid", GUID)
    op: ClassVar[str] = "set_vf_guids"
    own_writes: ClassVar[Tuple[str, ...]] = ("vf_links",)

    def describe(self) -> str:
        from sriov_node.model import format_ranges

        vfs = sorted({vf for vf, _, _ in self.values})
        shown = "; ".join(f"VF {vf} {key} {guid}" for vf, key, guid in self.values[:4])
        more = f"; ... ({len(self.values)} GUIDs)" if len(self.values) > 4 else ""
        return f"InfiniBand GUIDs of VF(s) {format_ranges(vfs)}: {shown}{more} (through {self.ifname})"

    def to_dict(self) -> Dict[str, Any]:
        return _with_retry(self, {"pf": self.pf, "op": self.op, "ifname": self.ifname,
                                  "vfs": [{"vf": i, "attr": k, "value": v} for i, k, v in self.values]})


@dataclass(frozen=True)
class SetVfMtu(Action):
    """A VF netdev's MTU, once the VF's driver has made its netdev."""

    vf: int = 0
    value: int = 0
    op: ClassVar[str] = "set_vf_mtu"
    own_writes: ClassVar[Tuple[str, ...]] = ("mtu",)

    def describe(self) -> str:
        return f"VF {self.vf}: netdev MTU -> {self.value}"
