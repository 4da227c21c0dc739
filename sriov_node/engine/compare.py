"""The one definition of "converged": a pure comparison of a PF's desired spec with what the kernel shows.

The plan is built from its findings, verification is "observe again and find nothing", and
`status` prints them. A new desired attribute is compared here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Dict, List, Mapping, Optional, Tuple

from sriov_node.model import (
    DRIVER_ANY,
    DRIVER_DEFAULT,
    DRIVER_NONE,
    VF_LINK_ATTRS,
    PfSpec,
    PfState,
    VfSpec,
    VfState,
    describe_driver,
    format_ranges,
    is_override_only,
)

# Finding attributes
NUM_VFS = "num_vfs"  # sriov_numvfs
VFS_PRESENT = "vfs"  # the virtfnN links / VF devices behind sriov_numvfs
AUTOPROBE = "drivers_autoprobe"  # sriov_drivers_autoprobe
DRIVER = "driver"  # the VF's bound driver
OVERRIDE = "driver_override"  # the VF's driver_override
PF_MTU = "mtu"  # the PF netdev's MTU
ESWITCH = "eswitch_mode"  # devlink
VF_MTU = "vf_mtu"  # a VF netdev's MTU
VF_LINKS = "vf_links"  # VF settings could not be read at all
GUIDS = ("node_guid", "port_guid")  # an InfiniBand VF's GUIDs (IFLA_VF_IB_NODE_GUID/PORT_GUID)
GUID_SOURCE = "guid"  # guid = "auto" on a PF with no InfiniBand GUID to derive from
# and one per VF setting, named as VfLinks.wanted() names them: "mac", "vlan", "rate", "spoofchk", ...

DRIVER_UNJUDGED = "driver_unjudged"  # a caveat, not a difference: the kernel's default cannot be known here

RECREATE = frozenset({NUM_VFS, VFS_PRESENT})  # findings only a disable + enable can fix
# A VF's own settings: while the VF is in use (a VM or DPDK has its vfio group or uio device open,
# a CNI moved its netdev into a pod) they are its holder's, "held", neither a difference nor "ok"
HOLDABLE = frozenset(VF_LINK_ATTRS) | {VF_MTU}


def _norm(driver: str) -> str:
    return driver.replace("-", "_")


def is_default_driver(driver: str, override: Optional[str], defaults: Optional[Tuple[str, ...]]) -> Optional[bool]:
    """Is a VF bound to `driver` on the kernel's default driver? True/False, or None: cannot be known.

    Never when it got there by request (an override-only driver such as vfio-pci, or the one its
    driver_override names); else it must be one the kernel's ID tables (modules.alias) give it.
    """
    if is_override_only(driver) or (override is not None and driver == override):
        return False
    if defaults is None:
        return None
    return _norm(driver) in {_norm(d) for d in defaults}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def show_setting(attr: str, value: Any) -> str:
    """A VF setting in words: 'vlan 10 qos 3 (802.1ad)', 'tx rate 0-1000 Mbit/s', 'trust on'."""
    if value is None:
        return f"{attr} not reported"
    if attr == "vlan":
        vlan, qos, proto = value
        return "no vlan" if not vlan and not qos else f"vlan {vlan}" + (f" qos {qos}" if qos else "") + f" ({proto})"
    if attr == "rate":
        return f"tx rate {value[0]}-{value[1]} Mbit/s" if value[1] else (
            f"tx rate {value[0]}- Mbit/s" if value[0] else "no tx rate limit")
    if isinstance(value, bool):
        return f"{attr} {'on' if value else 'off'}"
    return f"{attr} {value}"


@dataclass(frozen=True)
class Finding:
    """One way the kernel differs from the desired state."""

    attr: str
    want: Any
    have: Any
    vf: Optional[int] = None
    text: Optional[str] = None  # the difference in words, when want/have alone say too little
    # A DRIVER finding that wants the kernel's default driver (its `want` is then words, not a name).
    # DRIVER and OVERRIDE findings carry what the plan needs: OVERRIDE's `want` is the driver_override
    # to write (None clears it); DRIVER's `have` the driver to unbind, its `want` the one to bind
    # (None: none), or the default to probe.
    default: bool = False
    # Who holds the VF, for a setting left to its holder ("pid 4242 (qemu-kvm)"): see `hold`
    held_by: Optional[str] = None
    # The remedy, when running again cannot help (a value the kernel cannot report back)
    fix: Optional[str] = None

    def describe(self, where_too: bool = True) -> str:
        where = f"VF {self.vf}: " if self.vf is not None and where_too else ""
        if self.text:
            return f"{where}{self.text}"
        return f"{where}{self.attr} is {_show(self.have)}, want {_show(self.want)}"

    def to_dict(self) -> Dict[str, Any]:
        out = {"attr": self.attr, "vf": self.vf, "want": self.want, "have": self.have, "text": self.describe()}
        if self.held_by is not None:
            out["held_by"] = self.held_by
        return out


def beyond_reach(spec: PfSpec, finding: Finding) -> bool:
    """A difference no action of sriov-node's can fix, whatever else its plan does: an externally
    managed PF's count or missing VFs (the tool that owns it makes them), a value the kernel cannot
    report back (`fix`). A run with one ends failed; its dry run says so (engine/reconcile.py)."""
    return finding.fix is not None or (spec.externally_managed and finding.attr in (NUM_VFS, VFS_PRESENT))


def holdable(finding: Finding) -> bool:
    """A difference in a VF's own settings (what a holder of the VF owns while it holds it)."""
    return finding.vf is not None and finding.attr in HOLDABLE


def hold(findings: Tuple[Finding, ...], held: Mapping[int, str]) -> Tuple[Tuple[Finding, ...], Tuple[Finding, ...]]:
    """(the differences, the settings left to their holders): each VF setting of a VF in `held`
    (VF index -> who holds it) is its holder's while it holds it; nothing else is."""
    kept: List[Finding] = []
    left: List[Finding] = []
    for f in findings:
        if holdable(f) and f.vf in held:
            left.append(replace(f, held_by=held[f.vf]))
        else:
            kept.append(f)
    return tuple(kept), tuple(left)


def compare_driver(want: VfSpec, vf: VfState, default: Optional[str] = None,
                   defaults: Optional[Tuple[str, ...]] = None, caveats: Optional[List[Finding]] = None) -> List[Finding]:
    """A present VF's driver and driver_override against its spec. `default`: the kernel's pick, if
    known; `defaults`: every driver its ID tables give the VF (None: not known here). What cannot
    be judged (a driver bound without a request, the default unknown) goes to `caveats`."""
    out: List[Finding] = []
    driver = want.driver
    if driver == DRIVER_ANY:
        return out
    if driver is DRIVER_DEFAULT:
        if defaults is None and default is not None:
            defaults = (default,)
        shown = f" ({', '.join(defaults)})" if defaults else ""
        if vf.driver_override is not None:
            out.append(Finding(OVERRIDE, None, vf.driver_override, vf.index,
                               f"driver_override is {vf.driver_override}, want it cleared (the kernel's default driver)"))
        if vf.driver is None:
            out.append(Finding(DRIVER, describe_driver(DRIVER_DEFAULT), None, vf.index,
                               "no driver bound, want the kernel's default driver" + shown, default=True))
            return out
        verdict = is_default_driver(vf.driver, vf.driver_override, defaults)
        if verdict is False:
            why = " (by request)" if is_override_only(vf.driver) or vf.driver == vf.driver_override else ""
            none = " (no driver of this kernel takes it by its IDs)" if defaults == () else shown
            out.append(Finding(DRIVER, describe_driver(DRIVER_DEFAULT), vf.driver, vf.index,
                               f"bound to {vf.driver}{why}, want the kernel's default driver{none}", default=True))
        elif verdict is None and caveats is not None:
            caveats.append(Finding(DRIVER_UNJUDGED, describe_driver(DRIVER_DEFAULT), vf.driver, vf.index,
                                   f"bound to {vf.driver}: cannot tell whether that is the kernel's default driver "
                                   "(its module aliases, modules.alias, cannot be read here); name the driver "
                                   f"(driver = \"{vf.driver}\") or use driver = \"any\" to say it is meant"))
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
        out.append(Finding(DRIVER, driver, vf.driver, vf.index, f"bound to {vf.driver or 'no driver'}, want {driver}"))
    return out


def driver_key(vf: VfState, default: Optional[str], autoprobe: Optional[bool]) -> Tuple[Optional[str], Optional[str]]:
    """The inverse of `compare_driver`: the `driver` key under which this VF, as it is, shows no
    difference (None: the key left out, the kernel's default), and a comment when that key is
    "any" (what to write to pin it). `default`: the kernel's pick for the VF, if known; `autoprobe`:
    the PF's sriov_drivers_autoprobe (a default driver bound while it is 0 was not the kernel's doing)."""
    override = vf.driver_override
    if vf.driver is None:
        if override == DRIVER_NONE:
            return DRIVER_NONE, None
        why = f"unbound, driver_override {override}" if override else "unbound, no driver_override"
        return DRIVER_ANY, f"{why}: \"any\" leaves them so (write driver = \"none\" to keep them unbound)"
    if override == vf.driver:
        return vf.driver, None
    if override is not None:
        return DRIVER_ANY, (f"bound to {vf.driver} but driver_override says {override}: \"any\" leaves them so "
                            f"(write the driver they should have)")
    if is_override_only(vf.driver) or (default is not None and vf.driver != default):
        return DRIVER_ANY, (f"bound to {vf.driver} by hand (no driver_override): \"any\" leaves them so "
                            f"(write driver = \"{vf.driver}\" to pin them)")
    if autoprobe is False:
        return DRIVER_ANY, (f"bound to {vf.driver}, the kernel's default, while sriov_drivers_autoprobe is 0: "
                            f"\"any\" leaves them so (write driver = \"{vf.driver}\" to pin them)")
    return None, None


def compare_settings(want: VfSpec, vf: VfState, pf: PfState, held: Optional[List[Finding]] = None) -> List[Finding]:
    """The VF's settings held by the PF driver (MAC, VLAN, rates, ...) and its netdev's MTU. A netdev
    in another network namespace shows no MTU here: its holder's (to `held`, when given)."""
    out: List[Finding] = []
    wanted = want.links.wanted()
    if wanted:
        if vf.links is None:
            out.append(Finding(VF_LINKS, wanted, None, vf.index,
                               f"its settings cannot be read ({pf.links_error or 'no netlink'}), want "
                               + ", ".join(show_setting(a, v) for a, v in wanted.items())))
        else:
            for attr, value in wanted.items():
                have = vf.links.observed(attr)
                if have != value:
                    out.append(Finding(attr, value, have, vf.index,
                                       f"{show_setting(attr, have)}, want {show_setting(attr, value)}"))
    if want.mtu is not None and vf.netdev_elsewhere:  # in a pod, the CNI owns the netdev
        if held is not None:
            held.append(Finding(VF_MTU, want.mtu, None, vf.index, f"MTU not visible here, want {want.mtu}",
                                held_by="netdev in another network namespace"))
    elif want.mtu is not None:
        if not vf.netdevs:
            out.append(Finding(VF_MTU, want.mtu, None, vf.index,
                               f"no netdev to set MTU {want.mtu} on (bound to {vf.driver or 'no driver'})"))
        elif vf.mtu != want.mtu:
            out.append(Finding(VF_MTU, want.mtu, vf.mtu, vf.index, f"netdev {vf.netdevs[0]} MTU is {vf.mtu}, want {want.mtu}"))
    return out


GUIDS_UNREADABLE_FIX = ("boot Linux 5.5 or later (its netlink VF info reports VF GUIDs), or use an MLNX_OFED "
                        "mlx5_core (whose sriov/<N>/node and port files sriov-node reads), or drop "
                        "guid/node_guid/port_guid from this PF's VF groups")


def compare_guids(want: VfSpec, vf: VfState, pf: PfState) -> List[Finding]:
    """An InfiniBand VF's node and port GUIDs, as the PF's driver reports them: netlink's VF info, else
    MLNX_OFED's sriov/<N>/{node,port} (host/observe.py). Where neither does, the GUIDs cannot be read
    back: a difference that says so (never "ok": what cannot be read is not converged)."""
    if want.guids is None:
        return []
    wanted = want.guids.wanted(vf.index, pf.ib_guid)
    if wanted is None:
        return [Finding(GUID_SOURCE, "auto", None, vf.index,
                        "guid = \"auto\" and the PF has no InfiniBand GUID to derive from")]
    out: List[Finding] = []
    for key, value in wanted.items():
        have = None if vf.links is None else getattr(vf.links, key)
        if have != value:
            if have is None:
                why = pf.links_error or pf.vf_guids_error or "the PF driver reports no VF GUIDs"
                # the kernel's or the config's to mend only when the VF's info was read and has no
                # GUIDs anywhere; a netlink read that failed (links_error) may well succeed next time
                unreported = vf.links is not None and pf.vf_guids_error is not None
                out.append(Finding(key, value, None, vf.index, f"{key} cannot be read back: {why}; want {value}",
                                   fix=GUIDS_UNREADABLE_FIX if unreported else None))
            else:
                out.append(Finding(key, value, have, vf.index, f"{key} is {have}, want {value}"))
    return out


def compare_pf(spec: PfSpec, pf: PfState) -> List[Finding]:
    out: List[Finding] = []
    autoprobe = spec.autoprobe_wanted
    if autoprobe is not None and pf.autoprobe is not None and pf.autoprobe != autoprobe:
        out.append(Finding(AUTOPROBE, autoprobe, pf.autoprobe))
    if spec.mtu is not None:
        if not pf.netdevs:
            out.append(Finding(PF_MTU, spec.mtu, None, None, f"no PF netdev to set MTU {spec.mtu} on"))
        elif pf.mtu != spec.mtu:
            out.append(Finding(PF_MTU, spec.mtu, pf.mtu, None, f"PF netdev {pf.name} MTU is {pf.mtu}, want {spec.mtu}"))
    if spec.eswitch_mode is not None and pf.eswitch_mode != spec.eswitch_mode:
        have = pf.eswitch_mode or f"unknown ({pf.eswitch_error or 'not read'})"
        out.append(Finding(ESWITCH, spec.eswitch_mode, pf.eswitch_mode, None,
                           f"eswitch mode is {have}, want {spec.eswitch_mode}"))
    return out


def remakes_vfs(spec: PfSpec, findings: Tuple[Finding, ...]) -> bool:
    """The findings are fixed by making every VF anew (a count that differs, VFs missing behind it):
    the comparison then says nothing of each VF. Never for an externally managed PF."""
    return not spec.externally_managed and any(f.attr in RECREATE for f in findings)


Assessment = Tuple[Tuple[Finding, ...], Tuple[Finding, ...], Tuple[Finding, ...]]


def compare(spec: PfSpec, pf: PfState) -> Tuple[Finding, ...]:
    """Everything about `pf` that differs from `spec`; empty means converged.

    `pf` must carry its VFs (observe with the PF in `vfs_of`) and what the spec asks about
    (VF settings, MTUs, eswitch mode).
    """
    return assess(spec, pf)[0]


def unjudged(spec: PfSpec, pf: PfState) -> Tuple[Finding, ...]:
    """What the comparison could not judge either way (a VF on a driver when the kernel's default
    is not known here): not a difference, never "ok" either; said wherever the PF is reported."""
    return assess(spec, pf)[1]


def assess(spec: PfSpec, pf: PfState) -> Assessment:
    """(differences, what could not be judged, what is held): held here are only settings that
    cannot even be read while held (the MTU of a netdev in another namespace); the survey's `judge`
    asks who holds the VFs whose settings differ and moves those settings there too (`hold`)."""
    caveats: List[Finding] = []
    held: List[Finding] = []
    return _compare(spec, pf, caveats, held), tuple(caveats), tuple(held)


def _compare(spec: PfSpec, pf: PfState, caveats: List[Finding], held: List[Finding]) -> Tuple[Finding, ...]:
    out = compare_pf(spec, pf)
    want = spec.num_vfs
    have = pf.num_vfs or 0
    if spec.externally_managed:
        if have < want:
            out.append(Finding(NUM_VFS, want, have, None,
                               f"sriov_numvfs is {have}, the config needs at least {want} (externally managed: "
                               "the tool that owns this PF must create them)"))
        want = min(want, have)  # configure what exists, never change the count
    elif have != want:
        out.append(Finding(NUM_VFS, want, have))
        return tuple(out)  # the VFs will be made anew: nothing to say about each one
    pci = pf.bus == "pci"
    if pci:
        present = {vf.index for vf in pf.vfs}
        missing = [i for i in range(want) if i not in present]
        extra = sorted(present - set(range(have)))
        if missing or extra:
            text = f"sriov_numvfs reads {have} but VF(s) {format_ranges(missing or extra)} "
            text += "are missing (never appeared, or removed behind the kernel's back)" if missing else "exist beyond it"
            if pf.stale_virtfns:
                text += (f"; virtfn{'/'.join(str(i) for i in pf.stale_virtfns)} lead(s) to no VF of this PF "
                         "(a VF removed with echo 1 > .../remove leaves its link behind)")
            out.append(Finding(VFS_PRESENT, list(range(want)), sorted(present), None, text))
            if not spec.externally_managed:
                return tuple(out)
    for vf in pf.vfs:
        if vf.index >= want:
            continue
        vf_spec = spec.vf(vf.index)
        if pci:  # VFs without PCI functions (netdevsim) have no driver to bind
            out += compare_driver(vf_spec, vf, pf.vf_default_driver, pf.vf_default_drivers, caveats)
        out += compare_settings(vf_spec, vf, pf, held)
        out += compare_guids(vf_spec, vf, pf)
    return tuple(out)
