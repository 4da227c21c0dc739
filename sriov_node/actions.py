"""Actions are data: small frozen values the planner returns and the executor runs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar, Dict, Optional


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
        for f in fields(self):
            if f.name != "pf":
                out[f.name] = getattr(self, f.name)
        return out


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
