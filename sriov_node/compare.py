"""The one definition of "converged": a pure comparison of a PF's desired spec with what the kernel shows.

The plan is built from its findings, verification is "observe again and find nothing", and
`status` prints them. A new desired attribute is compared here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from sriov_node.model import (
    DRIVER_ANY,
    DRIVER_DEFAULT,
    DRIVER_NONE,
    PfSpec,
    PfState,
    VfSpec,
    VfState,
    describe_driver,
    is_override_only,
)

# Finding attributes
NUM_VFS = "num_vfs"  # sriov_numvfs
VFS_PRESENT = "vfs"  # the virtfnN links / VF devices behind sriov_numvfs
AUTOPROBE = "drivers_autoprobe"  # sriov_drivers_autoprobe
DRIVER = "driver"  # the VF's bound driver
OVERRIDE = "driver_override"  # the VF's driver_override

RECREATE = frozenset({NUM_VFS, VFS_PRESENT})  # findings only a disable + enable can fix


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


@dataclass(frozen=True)
class Finding:
    """One way the kernel differs from the desired state."""

    attr: str
    want: Any
    have: Any
    vf: Optional[int] = None
    text: Optional[str] = None  # the difference in words, when want/have alone say too little

    def describe(self) -> str:
        where = f"VF {self.vf}: " if self.vf is not None else ""
        if self.text:
            return f"{where}{self.text}"
        return f"{where}{self.attr} is {_show(self.have)}, want {_show(self.want)}"

    def to_dict(self) -> Dict[str, Any]:
        return {"attr": self.attr, "vf": self.vf, "want": self.want, "have": self.have, "text": self.describe()}


def compare_vf(want: VfSpec, vf: VfState, default: Optional[str] = None) -> List[Finding]:
    """A present VF against its spec: driver and driver_override. `default`: the kernel's pick, if known."""
    out: List[Finding] = []
    driver = want.driver
    if driver == DRIVER_ANY:
        return out
    if driver is DRIVER_DEFAULT:
        if vf.driver_override is not None:
            out.append(Finding(OVERRIDE, None, vf.driver_override, vf.index,
                               f"driver_override is {vf.driver_override}, want it cleared (the kernel's default driver)"))
        if vf.driver is None:
            out.append(Finding(DRIVER, describe_driver(DRIVER_DEFAULT), None, vf.index,
                               "no driver bound, want the kernel's default driver" + (f" ({default})" if default else "")))
        elif is_override_only(vf.driver) or (vf.driver_override is not None and vf.driver == vf.driver_override):
            out.append(Finding(DRIVER, describe_driver(DRIVER_DEFAULT), vf.driver, vf.index,
                               f"bound to {vf.driver} (by request), want the kernel's default driver"))
        return out
    if driver == DRIVER_NONE:
        if vf.driver_override != DRIVER_NONE:
            out.append(Finding(OVERRIDE, DRIVER_NONE, vf.driver_override, vf.index))
        if vf.driver is not None:
            out.append(Finding(DRIVER, None, vf.driver, vf.index, f"bound to {vf.driver}, want no driver"))
        return out
    if vf.driver_override != driver:
        out.append(Finding(OVERRIDE, driver, vf.driver_override, vf.index))
    if vf.driver != driver:
        out.append(Finding(DRIVER, driver, vf.driver, vf.index,
                           f"bound to {vf.driver or 'no driver'}, want {driver}"))
    return out


def compare(spec: PfSpec, pf: PfState) -> Tuple[Finding, ...]:
    """Everything about `pf` that differs from `spec`; empty means converged.

    `pf` must carry its VFs (observe with the PF in `vfs_of`).
    """
    out: List[Finding] = []
    want = spec.num_vfs
    have = pf.num_vfs or 0
    if pf.autoprobe is not None and pf.autoprobe != spec.drivers_autoprobe:
        out.append(Finding(AUTOPROBE, spec.drivers_autoprobe, pf.autoprobe))
    if have != want:
        out.append(Finding(NUM_VFS, want, have))
        return tuple(out)  # the VFs will be made anew: nothing to say about each one
    present = {vf.index for vf in pf.vfs}
    missing = [i for i in range(want) if i not in present]
    extra = sorted(present - set(range(want)))
    if missing or extra:
        text = f"sriov_numvfs reads {have} but VF(s) {_ranges(missing or extra)} "
        text += "are missing (never appeared, or removed behind the kernel's back)" if missing else "exist beyond it"
        out.append(Finding(VFS_PRESENT, list(range(want)), sorted(present), None, text))
        return tuple(out)
    for vf in pf.vfs:
        out += compare_vf(spec.vf(vf.index), vf, pf.vf_default_driver)
    return tuple(out)


def _ranges(indices: List[int]) -> str:
    """[0, 1, 2, 5] -> '0-2,5'."""
    spans: List[List[int]] = []
    for i in sorted(indices):
        if spans and spans[-1][1] == i - 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)
