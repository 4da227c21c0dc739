"""Pre-images: what a host value was before sriov-node took it over, so that undoing a change is whole.

Omitted means "not managed": a value no generation ever set is the operator's and stays as it is.
A value the agent set itself is different: when a change stops managing it (a rollback to a
generation without it, an expired checkpoint, `unset`, an applied edit that drops the key), the
value goes back to what the agent found before it first took it over.

    managed(spec)              the keys a block manages on its PF: the PF's count, autoprobe, MTU,
                               eswitch mode; per VF its driver, each VF setting and its netdev MTU
    found(spec, pf)            the values of those keys as the kernel showed them before a run
    carry(old, found, now)     a new generation's pre-images: a key it manages keeps the value the
                               older generation found; a key it takes over gets the value found now
    overlay(resolution, ...)   the values to put back, merged into the targets' blocks (a PF no
                               block selects any more gets a block of its own, "restore(PCI)")

Values are JSON (they live in the generation records): per PF address

    {"num_vfs": 0, "drivers_autoprobe": true, "mtu": 1500, "eswitch_mode": "legacy",
     "vfs": {"8": {"driver": null, "vlan": [0, 0, "802.1Q"], "trust": false, "mtu": 1500,
                   "node_guid": "00:00:00:00:00:00:00:00", "port_guid": "00:00:00:00:00:00:00:00"}}}

A VF's `driver` is the config's own key for it (null: the kernel's default, "none", or a name:
what `compare.driver_key` says of the VF as it was); a VF whose driver can only be written "any"
gets no driver pre-image. A VF the change itself created was not there to be found: its settings
and netdev MTU get what the kernel gave it, read by the executor just before the run first changes
them (`Executor.fresh`, added to `found` by the reconcile); its driver goes with the count that
made it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from sriov_node.engine.compare import driver_key
from sriov_node.engine.resolve import ABSENT, NOT_A_PF, Resolution, Target
from sriov_node.model import (
    DRIVER_ANY,
    DRIVER_DEFAULT,
    GUID_KEYS,
    GuidSpec,
    PfSelector,
    PfSpec,
    PfState,
    VfGroup,
    VfLinks,
    VF_LINK_ATTRS,
)

Values = Dict[str, Dict[str, Any]]  # PF address -> its entry (see the module's doc)

PF_KEYS = ("num_vfs", "drivers_autoprobe", "mtu", "eswitch_mode")
VF_KEYS = ("driver", "mtu") + VF_LINK_ATTRS + GUID_KEYS  # GUIDs: an InfiniBand VF's, as the PF reports them
RESTORE_KEY = "restore"  # the block name of a PF that only a restore selects: "restore(0000:01:00.0)"


# ---------------------------------------------------------------------------- what a block manages


def managed(spec: PfSpec) -> Tuple[Set[str], Dict[int, Set[str]]]:
    """(the PF keys, {VF index: its keys}) that `spec` manages on its PF."""
    pf: Set[str] = set()
    if not spec.externally_managed:
        pf.add("num_vfs")
    if spec.autoprobe_wanted is not None:
        pf.add("drivers_autoprobe")
    if spec.mtu is not None:
        pf.add("mtu")
    if spec.eswitch_mode is not None:
        pf.add("eswitch_mode")
    vfs: Dict[int, Set[str]] = {}
    for vf in spec.vf_specs():
        keys = set(vf.links.wanted())
        if vf.driver != DRIVER_ANY:
            keys.add("driver")
        if vf.mtu is not None:
            keys.add("mtu")
        if vf.guids is not None:
            keys.update(GUID_KEYS if vf.guids.auto else
                        (k for k in GUID_KEYS if getattr(vf.guids, k) is not None))
        if keys:
            vfs[vf.index] = keys
    return pf, vfs


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def found(spec: PfSpec, pf: PfState) -> Dict[str, Any]:
    """The values of what `spec` manages, as `pf` (read before a run) shows them; keys that were not
    read (a VF that did not exist yet, settings not read because the VFs are made anew) are absent."""
    pf_keys, vf_keys = managed(spec)
    entry: Dict[str, Any] = {}
    if "num_vfs" in pf_keys and pf.num_vfs is not None:
        entry["num_vfs"] = pf.num_vfs
    if "drivers_autoprobe" in pf_keys and pf.autoprobe is not None:
        entry["drivers_autoprobe"] = pf.autoprobe
    if "mtu" in pf_keys and pf.mtu is not None:
        entry["mtu"] = pf.mtu
    if "eswitch_mode" in pf_keys and pf.eswitch_mode is not None:
        entry["eswitch_mode"] = pf.eswitch_mode
    vfs: Dict[str, Dict[str, Any]] = {}
    for vf in pf.vfs:
        keys = vf_keys.get(vf.index)
        if not keys:
            continue
        values: Dict[str, Any] = {}
        if "driver" in keys and pf.bus == "pci":
            key, _ = driver_key(vf, pf.vf_default_driver, pf.autoprobe)
            if key != DRIVER_ANY:
                values["driver"] = key
        if "mtu" in keys and vf.mtu is not None and not vf.netdev_elsewhere:
            values["mtu"] = vf.mtu
        if vf.links is not None:
            for attr in VF_LINK_ATTRS:
                if attr in keys:
                    have = vf.links.observed(attr)
                    if have is not None:
                        values[attr] = _jsonable(have)
            for key in GUID_KEYS:  # reported by drivers with ndo_get_vf_guid; else never found, never put back
                if key in keys and getattr(vf.links, key) is not None:
                    values[key] = getattr(vf.links, key)
        if values:
            vfs[str(vf.index)] = values
    if vfs:
        entry["vfs"] = vfs
    return entry


def keys_of(entry: Mapping[str, Any]) -> Set[Tuple[Optional[int], str]]:
    """Every (VF index or None for the PF, key) an entry holds a value for."""
    out = {(None, k) for k in PF_KEYS if k in entry}
    for index, values in (entry.get("vfs") or {}).items():
        out |= {(int(index), k) for k in values}
    return out


def _get(entry: Mapping[str, Any], vf: Optional[int], key: str) -> Any:
    if vf is None:
        return entry[key]
    return entry["vfs"][str(vf)][key]


def _put(entry: Dict[str, Any], vf: Optional[int], key: str, value: Any) -> None:
    if vf is None:
        entry[key] = value
    else:
        entry.setdefault("vfs", {}).setdefault(str(vf), {})[key] = value


def held_keys(held: Iterable[Mapping[str, Any]]) -> Set[Tuple[Optional[int], str]]:
    """The (VF index, key) of each setting a run left to the VF's holder (its `held` findings, as
    dicts): a value to put back there was not put back."""
    from sriov_node.engine.compare import VF_MTU

    return {(int(h["vf"]), "mtu" if h["attr"] == VF_MTU else h["attr"]) for h in held if h.get("vf") is not None}


def _managed_keys(spec: PfSpec) -> Set[Tuple[Optional[int], str]]:
    pf_keys, vf_keys = managed(spec)
    return {(None, k) for k in pf_keys} | {(i, k) for i, keys in vf_keys.items() for k in keys}


def pick(entry: Mapping[str, Any], keys: Iterable[Tuple[Optional[int], str]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for vf, key in keys:
        _put(out, vf, key, _get(entry, vf, key))
    return out


def carry(old: Mapping[str, Mapping[str, Any]], seen: Mapping[str, Mapping[str, Any]],
          specs: Mapping[str, PfSpec]) -> Values:
    """A new generation's pre-images. `old`: the applied generation's; `seen`: what the run found
    before it wrote, per PF it manages; `specs`: the block each PF it manages is run under.

    A key the new generation manages keeps its older pre-image (the value before sriov-node first
    took it over), else gets the value found now. Pre-images of PFs the run did not look at (absent
    now, or outside a per-PF run) are kept as they were."""
    out: Values = {}
    for pci, spec in specs.items():
        keys = _managed_keys(spec)
        before = old.get(pci) or {}
        have = keys_of(before)
        now = seen.get(pci) or {}
        now_keys = keys_of(now)
        entry: Dict[str, Any] = {}
        for vf, key in sorted(keys, key=lambda k: (-1 if k[0] is None else k[0], k[1])):
            if (vf, key) in have:
                _put(entry, vf, key, _get(before, vf, key))
            elif (vf, key) in now_keys:
                _put(entry, vf, key, _get(now, vf, key))
        if entry:
            out[pci] = entry
    for pci, entry in old.items():
        if pci not in specs and pci not in out:
            out[pci] = dict(entry)
    return out


def merge(*entries: Mapping[str, Mapping[str, Any]]) -> Values:
    """Pre-image maps merged, the first to name a key wins."""
    out: Values = {}
    for values in entries:
        for pci, entry in values.items():
            mine = out.setdefault(pci, {})
            taken = keys_of(mine)
            for vf, key in keys_of(entry):
                if (vf, key) not in taken:
                    _put(mine, vf, key, _get(entry, vf, key))
    return {pci: entry for pci, entry in out.items() if entry}


def describe(pci: str, entry: Mapping[str, Any]) -> List[str]:
    """One line per value a restore puts back, for people."""
    from sriov_node.engine.compare import show_setting

    lines = []
    for key in PF_KEYS:
        if key in entry:
            lines.append(f"PF {pci}: {key} back to {entry[key]}")
    for index, values in sorted((entry.get("vfs") or {}).items(), key=lambda kv: int(kv[0])):
        parts = []
        for key, value in values.items():
            if key == "driver":
                parts.append(f"driver {_driver_words(value)}")
            elif key in ("mtu",) + GUID_KEYS:
                parts.append(f"{key} {value}")
            else:
                parts.append(show_setting(key, tuple(value) if isinstance(value, list) else value))
        lines.append(f"PF {pci} VF {index}: back to " + ", ".join(parts))
    return lines


def _driver_words(value: Optional[str]) -> str:
    return "the kernel's default" if value is None else value


# ---------------------------------------------------------------------------- what a run puts back


def _links(values: Mapping[str, Any]) -> VfLinks:
    fields: Dict[str, Any] = {}
    for attr in VF_LINK_ATTRS:
        if attr not in values:
            continue
        value = values[attr]
        if attr == "vlan":
            fields["vlan"], fields["qos"], fields["vlan_proto"] = value[0], value[1], value[2]
        elif attr == "rate":
            fields["min_tx_rate"], fields["max_tx_rate"] = value[0], value[1]
        else:
            fields[attr] = value
    return VfLinks(**fields)


def _filled(base: VfLinks, extra: VfLinks) -> VfLinks:
    """`base` with each attribute group it leaves unmanaged taken from `extra`."""
    changes: Dict[str, Any] = {}
    have = base.wanted()
    for attr, value in extra.wanted().items():
        if attr in have:
            continue
        if attr == "vlan":
            changes.update(vlan=extra.vlan, qos=extra.qos, vlan_proto=extra.vlan_proto)
        elif attr == "rate":
            changes.update(min_tx_rate=extra.min_tx_rate, max_tx_rate=extra.max_tx_rate)
        else:
            changes[attr] = getattr(extra, attr)
    return replace(base, **changes) if changes else base


def _restore_groups(spec_key: str, vfs: Mapping[str, Mapping[str, Any]], base: Optional[PfSpec],
                    count: int) -> List[VfGroup]:
    groups = []
    for index_text, values in sorted(vfs.items(), key=lambda kv: int(kv[0])):
        index = int(index_text)
        if index >= count:
            continue  # gone with the count
        mine = base.vf(index) if base is not None else None
        driver = mine.driver if mine is not None else DRIVER_ANY
        if driver == DRIVER_ANY and "driver" in values:
            driver = values["driver"] if values["driver"] is not None else DRIVER_DEFAULT
        links = _links(values)
        if mine is not None:
            links = _filled(mine.links, links)
        mtu = mine.mtu if mine is not None and mine.mtu is not None else values.get("mtu")
        guids = mine.guids if mine is not None and mine.guids is not None else None
        if guids is None and any(k in values for k in GUID_KEYS):
            guids = GuidSpec(node_guid=values.get("node_guid"), port_guid=values.get("port_guid"))
        groups.append(VfGroup(key=f"{spec_key}.{RESTORE_KEY}", range_text=str(index), indices=(index,),
                              driver=driver, links=links, mtu=mtu, guids=guids))
    return groups


def _restored_spec(spec: PfSpec, entry: Mapping[str, Any]) -> PfSpec:
    """`spec` with what `entry` puts back merged in (only keys `spec` leaves unmanaged)."""
    changes: Dict[str, Any] = {}
    if spec.drivers_autoprobe is None and spec.externally_managed and "drivers_autoprobe" in entry:
        changes["drivers_autoprobe"] = entry["drivers_autoprobe"]
    if spec.mtu is None and "mtu" in entry:
        changes["mtu"] = entry["mtu"]
    if spec.eswitch_mode is None and "eswitch_mode" in entry:
        changes["eswitch_mode"] = entry["eswitch_mode"]
    groups = _restore_groups(spec.key, entry.get("vfs") or {}, spec, spec.num_vfs)
    if groups:
        changes["vfs"] = tuple(groups) + spec.vfs
    return replace(spec, **changes) if changes else spec


def _own_spec(pf: PfState, entry: Mapping[str, Any]) -> PfSpec:
    """A block for a PF that no block selects any more: the values to put back, nothing else."""
    key = f"{RESTORE_KEY}({pf.pci})"
    external = "num_vfs" not in entry
    count = int(entry["num_vfs"]) if not external else (pf.num_vfs or 0)
    groups = _restore_groups(key, entry.get("vfs") or {}, None, count)
    if count:
        groups.append(VfGroup(key=key, range_text=f"0-{count - 1}", indices=tuple(range(count)), driver=DRIVER_ANY))
    return PfSpec(key=key, selector=PfSelector(pci=pf.pci), num_vfs=count, vfs=tuple(groups),
                  drivers_autoprobe=entry.get("drivers_autoprobe"), mtu=entry.get("mtu"),
                  eswitch_mode=entry.get("eswitch_mode"), externally_managed=external)


def unmanaged(values: Mapping[str, Mapping[str, Any]], resolution: Resolution) -> Values:
    """The part of `values` that no target of `resolution` manages: what a run must put back."""
    specs = {t.pf.pci: t.spec for t in resolution.targets}
    out: Values = {}
    for pci, entry in values.items():
        spec = specs.get(pci)
        keys = keys_of(entry) - (_managed_keys(spec) if spec is not None else set())
        if keys:
            out[pci] = pick(entry, keys)
    return out


def writable(entry: Mapping[str, Any], pf: PfState, spec: Optional[PfSpec]) -> Tuple[Dict[str, Any], Dict[str, Any], List[str]]:
    """(the part of `entry` the PF's driver takes in the mode it will be in, the part it is known to
    refuse there, one notice per VF refused). A value to put back is never what refuses the operator's
    desired state: a legacy VF rate under switchdev (the eswitch change the new state asks for, or the
    PF's mode) waits in the generation's `restores` until it can be written."""
    from sriov_node import drivers
    from sriov_node.model import split_setting

    row = drivers.driver(pf.driver)
    if row is None or not entry.get("vfs"):
        return dict(entry), {}, []
    mode = (spec.eswitch_mode if spec is not None else None) or entry.get("eswitch_mode") or pf.eswitch_mode
    ok: Dict[str, Any] = {k: v for k, v in entry.items() if k != "vfs"}
    refused: Dict[str, Any] = {}
    notices: List[str] = []
    for index, values in entry["vfs"].items():
        keep: Dict[str, Any] = {}
        for key, value in values.items():
            if key not in VF_LINK_ATTRS:
                keep[key] = value
                continue
            no = drivers.setting_refusals(row, int(index), split_setting(key, tuple(value) if isinstance(value, list) else value),
                                          pf_id=f"{pf.vendor}:{pf.device}", switchdev=mode == "switchdev")
            if no:
                refused.setdefault("vfs", {}).setdefault(index, {})[key] = value
                notices.append(f"PF {pf.label} VF {index}: {no[0].key} not put back yet: {no[0].why} ({no[0].errno}); "
                               f"it stays to put back when it can be. Fix: {no[0].fix}")
            else:
                keep[key] = value
        if keep:
            ok.setdefault("vfs", {})[index] = keep
    return ok, refused, notices


def overlay(resolution: Resolution, restore: Mapping[str, Mapping[str, Any]],
            pfs: Mapping[str, PfState]) -> Tuple[Resolution, Values, List[str], Values]:
    """Merge the values to put back into the targets: (the resolution with them, what is put back,
    notices, what waits: values the PF's driver is known to refuse in the mode it will be in, see
    `writable`). A PF that no block selects gets a block of its own, unless a block of the desired
    state could not be placed (it may be that very PF, under a name it does not have yet: nothing
    is put back on a guess), or the PF is not here."""
    todo = unmanaged(restore, resolution)
    if not todo:
        return resolution, {}, [], {}
    targets = []
    done: Values = {}
    waiting: Values = {}
    notices: List[str] = []
    for t in resolution.targets:
        entry = todo.pop(t.pf.pci, None)
        if entry:
            entry, refused, why = writable(entry, t.pf, t.spec)
            notices += why
            if refused:
                waiting[t.pf.pci] = refused
        if entry:
            targets.append(Target(_restored_spec(t.spec, entry), t.pf))
            done[t.pf.pci] = entry
        else:
            targets.append(t)
    unplaced = [f for f in resolution.failures if f.kind in (ABSENT, NOT_A_PF)]
    for pci, entry in sorted(todo.items()):  # the PFs no target selects
        pf = pfs.get(pci)
        if pf is None:
            notices.append(f"PF {pci} is not here: what sriov-node set on it is put back when it is "
                           "(" + "; ".join(describe(pci, entry)) + ")")
            continue
        if unplaced:
            notices.append(f"PF {pf.label}: not put back, because block(s) "
                           + ", ".join(f.key for f in unplaced) + " select no PF here and may mean it")
            continue
        entry, refused, why = writable(entry, pf, None)
        notices += why
        if refused:
            waiting[pci] = refused
        if entry:
            targets.append(Target(_own_spec(pf, entry), pf))
            done[pci] = entry
    return (Resolution(tuple(targets), resolution.failures, resolution.notices + tuple(notices)), done, notices,
            waiting)
