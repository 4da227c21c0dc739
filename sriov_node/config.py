"""Load and validate the TOML desired state. Pure: knows nothing of sysfs."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from sriov_node.errors import ConfigError, ConfigProblem
from sriov_node.model import (
    DEFAULT_REPRESENTOR_NAME,
    DEFAULT_RESOURCE_PREFIX,
    DRIVER_ANY,
    DRIVER_NONE,
    ESWITCH_MODES,
    GUID_AUTO,
    MAX_AUTO_GUID_VF,
    GuidSpec,
    LINK_STATES,
    RDMA_NETNS_MODES,
    VF_SETTING_KEYS,
    VLAN_PROTOS,
    DesiredState,
    PfSelector,
    PfSpec,
    PfState,
    VfGroup,
    VfLinks,
    format_ranges,
    is_override_only,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

DEFAULT_CONFIG = "/etc/sriov-node/config.toml"
# where an installed node finds example configs (debian/sriov-node.examples; etc/ and docs/examples/ in the source)
EXAMPLES_DIR = "/usr/share/doc/sriov-node/examples/"
BOM = "\ufeff"
SUPPORTED_VERSIONS = (1,)
MAX_NUM_VFS = 65535  # the kernel parses sriov_numvfs as u16

TOP_KEYS = ("version", "pf", "device_plugin", "metrics", "history", "rdma_netns")
PF_KEYS = ("name", "altname", "pci", "mac", "vendor", "device", "index", "num_vfs", "vfs",
           "mtu", "eswitch_mode", "drivers_autoprobe", "externally_managed", "representor_name")
VF_LINK_KEYS = VF_SETTING_KEYS  # model.VF_SETTINGS lists them once
# the device plugin's options of a group's resource (its selectors' isRdma, needVhostNet; excludeTopology)
RESOURCE_OPTION_KEYS = ("rdma", "vhost_net", "exclude_topology")
VF_KEYS = ("range", "driver", "resource") + RESOURCE_OPTION_KEYS + VF_LINK_KEYS + ("mtu",)
# InfiniBand VF GUIDs (see group_guids)
GUID_CONFIG_KEYS = ("guid", "node_guid", "port_guid")
VF_KEYS += GUID_CONFIG_KEYS
MAX_ALTNAME = 127  # ALTIFNAMSIZ (128) with its NUL
DEVICE_PLUGIN_KEYS = ("resource_prefix", "config_file")
METRICS_KEYS = ("textfile",)
HISTORY_KEYS = ("keep",)
DEFAULT_HISTORY_KEEP, MAX_HISTORY_KEEP = 20, 10000  # applied generations kept under /var/lib/sriov-node
MIN_MTU, MAX_MTU = 68, 65535  # ETH_MIN_MTU; the device's own max_mtu is the kernel's to enforce
MAX_RATE = 0xFFFFFFFF  # Mbit/s, a u32 in IFLA_VF_RATE

_PCI_RE = re.compile(r"^(?:([0-9a-f]{4}):)?([0-9a-f]{2}):([01][0-9a-f])\.([0-7])$")
_MAC_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}\Z")
_GUID_RE = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){7}\Z")
_HEX4_RE = re.compile(r"^(?:0x)?([0-9a-f]{4})$")
_DRIVER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}\Z")
# Module names that differ from the PCI driver name they register (driver_override wants the latter).
DRIVER_SPELLINGS = {"vfio_pci": "vfio-pci", "pci_stub": "pci-stub"}
_RANGE_PART_RE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?\Z", re.ASCII)
# What the SR-IOV device plugin accepts as a resourceName (^[a-zA-Z0-9_-]+$, no '.'), within what
# kubelet accepts after the prefix (a qualified name: alphanumeric at both ends, at most 63 characters).
_RESOURCE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\Z", re.ASCII)
# A resource prefix is a DNS subdomain (kubelet checks "<prefix>/<name>" as an extended resource name).
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\Z", re.ASCII)
# why a VF address may be given to one VF only
_UNIQUE_WHY = {
    "mac": "the PF's switch delivers an address's frames to one VF, so two VFs cannot share one MAC",
    "node_guid": "the subnet manager tells nodes apart by their GUIDs",
    "port_guid": "the subnet manager tells ports apart by their GUIDs",
}
RESOURCE_WORDS = ("letters, digits, '_' and '-', starting and ending with a letter or digit, at most 63 "
                  "characters (the SR-IOV device plugin refuses '.')")


def _type_name(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# isspace() of the kernel's lib/ctype.c, byte by byte: \t \n \v \f \r, the space and 0xa0 (Latin-1's no-break space)
_KERNEL_SPACES = frozenset(b"\t\n\v\f\r \xa0")
_IFNAME_RULE = "Linux interface names hold no '/', ':', whitespace or NUL, and are not '.' or '..'"


def _name_bytes(name: str) -> bytes:
    """The bytes the kernel is given for `name` (a command-line argument's undecodable bytes as they were)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def check_ifname(name: str, most: int = 15) -> Optional[str]:
    """Why `name` cannot be a Linux interface name, or None: the kernel's dev_valid_name (net/core/dev.c),
    byte for byte: not empty, shorter than IFNAMSIZ (16, with its NUL), not "." or "..", no '/', ':' or
    isspace() byte (which counts 0xa0 too); `most`: 15 for a name, MAX_ALTNAME for an alternative name
    (ALTIFNAMSIZ). "a..b" is a valid name."""
    if not name:
        return "is empty"
    raw = _name_bytes(name)
    if len(raw) > most:
        size = f"{len(raw)} characters" if len(raw) == len(name) else f"{len(raw)} bytes (UTF-8)"
        return (f"is {size} long; Linux interface names have at most 15" if most == 15 else
                f"is {size} long; alternative interface names have at most {most}")
    if name in (".", ".."):
        return ("names a directory ('.' and '..' are directories in /sys/class/net), which Linux refuses as an "
                "interface name")
    for c in name:
        if c in "/:\0":
            return f"contains {c!r}: {_IFNAME_RULE}"
        spaces = [b for b in _name_bytes(c) if b in _KERNEL_SPACES]
        if spaces:
            what = "whitespace" if c.isspace() else f"the byte 0x{spaces[0]:02x} in its UTF-8, whitespace to the kernel"
            return f"contains {c!r} ({what}): {_IFNAME_RULE}"
    return None


# ---------------------------------------------------------------------------- switchdev representors' names

# What a representor's name may hold: what udev gives an interface (systemd's ifname_valid_char: printable
# ASCII, no ':', '/' or '%'; dev_valid_name allows all of it), without what a udev rule's value does not
# take as written ('"' ends it, a backslash escapes, '%' and '$' are substitutions). Braces are the template's fields.
_REPRESENTOR_SAFE = frozenset(chr(c) for c in range(33, 127)) - set('"\\%$/:')
REPRESENTOR_CHARS = "printable ASCII without '\"', '\\', '%', '$', '/', ':' or whitespace"


class RepresentorPf:
    """One switchdev PF as its representors' names need it (`udev-rule`, and validate and apply)."""

    def __init__(self, key: str, device: str, name: Optional[str], num_vfs: int, template: str,
                 mac: Optional[str] = None):
        self.key, self.device, self.name, self.num_vfs, self.template, self.mac = key, device, name, num_vfs, template, mac


def representor_names(pfs: Sequence[RepresentorPf], taken: Optional[Mapping[str, str]] = None
                      ) -> Tuple[Dict[str, List[str]], List[Tuple[str, str]]]:
    """({PF device: its representors' names by VF index}, [(key, problem)]): the name of every VF index a
    block can have (0 to num_vfs - 1) a valid interface name (check_ifname) that udev gives as written
    (REPRESENTOR_CHARS, not all digits), none twice, none a PF's (`taken`: netdev name -> whose it is; each
    of `pfs`' own names is taken too): a rename onto an existing name fails with EEXIST. The one check of
    `udev-rule` (service/udev.py), of validate and apply (`check_on_host`), and of the file alone where the
    names do not depend on the host. A PF whose template needs {pf} and that has no netdev now is left out
    (its names are not known)."""
    problems: List[Tuple[str, str]] = []
    names: Dict[str, List[str]] = {}
    used: Dict[str, str] = dict(taken or {})
    for pf in pfs:
        if pf.name:
            used.setdefault(pf.name, f"{pf.key} ({pf.device})'s own name")
    for pf in pfs:
        key = f"{pf.key}.representor_name"
        bad = next((c for c in pf.name or "" if c not in _REPRESENTOR_SAFE), None)
        if bad is not None:  # the rule keeps the PF's own name too, written as is
            problems.append((key, f"{pf.device}: the PF's name {pf.name!r} holds {bad!r}, which a udev rule does not "
                                  f"take as written (names there hold {REPRESENTOR_CHARS}); rename the PF"))
            continue
        if "{pf}" in pf.template and not pf.name:
            continue
        out: List[str] = []
        for vf in range(pf.num_vfs):
            name = pf.template.replace("{pf}", pf.name or "").replace("{vf}", str(vf))
            why = check_ifname(name)
            bad = next((c for c in name if c not in _REPRESENTOR_SAFE), None)
            if why:
                problems.append((key, f"VF {vf} of {pf.device}: {name!r} {why}; " + (
                    "choose a shorter template (representor_name = \"{pf}_{vf}\" adds 2 to 6 characters to the "
                    "PF's name), or rename the PF" if " long;" in why else "change the template")))
            elif bad is not None:
                problems.append((key, f"VF {vf} of {pf.device}: {name!r} holds {bad!r}, and a representor's name may "
                                      f"hold only {REPRESENTOR_CHARS} (what udev gives an interface, written as is in "
                                      "its rule); rename the PF, or leave {pf} out of the template"))
            elif name.isdigit():
                problems.append((key, f"VF {vf} of {pf.device}: {name!r} is all digits, which udev does not give an "
                                      "interface (it reads as an interface index); put a letter in the template, "
                                      "e.g. \"rep{vf}\""))
            elif name in used:
                problems.append((key, f"VF {vf} of {pf.device}: {name!r} is also {used[name]}; give each PF's "
                                      "representors their own names (put {pf} in the template)"))
            else:
                used[name] = f"the representor of VF {vf} of {pf.device} ({pf.key})"
                out.append(name)
                continue
            break
        names[pf.device] = out
    return names, problems


def normalize_pci(text: str) -> Optional[str]:
    """'3b:00.0' or '0000:3B:00.0' -> '0000:3b:00.0'; None when malformed."""
    m = _PCI_RE.match(text.strip().lower())
    if not m:
        return None
    domain, bus, dev, fn = m.groups()
    return f"{domain or '0000'}:{bus}:{dev}.{fn}"


def parse_range(text: str) -> Tuple[int, ...]:
    """'0-3', '5', '0,2,4-6' -> sorted indices. Raises ValueError with a reason."""
    if not text.strip():
        raise ValueError("is empty")
    seen: Set[int] = set()
    for part in text.split(","):
        m = _RANGE_PART_RE.match(part)
        if not m:
            raise ValueError(f"has a malformed part {part.strip()!r}")
        ends = [e.lstrip("0") or "0" for e in (m.group(1), m.group(2) or m.group(1))]
        # Length first: int() of a 5000-digit string raises (sys.get_int_max_str_digits).
        big = [e for e in ends if len(e) > 5 or int(e) > MAX_NUM_VFS]
        if big:
            raise ValueError(f"reaches {big[-1]}, beyond any possible VF index")
        lo, hi = int(ends[0]), int(ends[1])
        if hi < lo:
            raise ValueError(f"has a reversed span {part.strip()!r} (write {hi}-{lo})")
        for i in range(lo, hi + 1):
            if i in seen:
                raise ValueError(f"names VF {i} twice")
            seen.add(i)
    return tuple(sorted(seen))


class _Validator:
    def __init__(self) -> None:
        self.problems: List[ConfigProblem] = []

    def error(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(key, message))

    def unknown_keys(self, key_prefix: str, table: Dict[str, Any], allowed: Tuple[str, ...]) -> None:
        for k in table:
            if k not in allowed:
                # Quote a key that is not bare, as TOML would ("" or one holding '.', ' ', a newline).
                shown = k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)
                where = f"{key_prefix}.{shown}" if key_prefix else shown
                self.error(where, f"unknown key; valid keys here: {', '.join(allowed)}")

    def integer(self, key: str, value: Any, lo: int, hi: int) -> Optional[int]:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be an integer from {lo} to {hi}, got {_type_name(value)}")
            return None
        if not lo <= value <= hi:
            self.error(key, f"must be from {lo} to {hi}, got {value}")
            return None
        return value

    def boolean(self, key: str, value: Any) -> Optional[bool]:
        if not isinstance(value, bool):
            hint = f" (write {str(value).lower()} without quotes)" if str(value).lower() in ("true", "false") else ""
            self.error(key, f"must be true or false, got {_type_name(value)}{hint}")
            return None
        return value

    def choice(self, key: str, value: Any, choices: Tuple[str, ...]) -> Optional[str]:
        text = self.string(key, value)
        if text is None:
            return None
        match = next((c for c in choices if c.lower() == text.lower()), None)
        if match is None:
            self.error(key, f"{text!r} is not one of: {', '.join(choices)}")
        return match

    def string(self, key: str, value: Any) -> Optional[str]:
        if not isinstance(value, str):
            self.error(key, f"must be a string, got {_type_name(value)}")
            return None
        return value

    # -- blocks

    def selector(self, key: str, table: Dict[str, Any]) -> Optional[PfSelector]:
        given = [k for k in ("name", "altname", "pci", "mac") if k in table]
        has_vd = "vendor" in table or "device" in table
        # name and altname together are one selector: the PF that has both
        count = len(given) + (1 if has_vd else 0) - (1 if "name" in given and "altname" in given else 0)
        if count != 1:
            what = "none" if count == 0 else ", ".join(given + (["vendor/device"] if has_vd else []))
            self.error(key, f"needs exactly one selector: name, pci, mac, or vendor+device; or altname, alone or "
                            f"with name (got {what})")
            return None
        fields: Dict[str, Any] = {}
        ok = True
        if "name" in table:
            name = self.string(f"{key}.name", table["name"])
            if name is not None:
                why = check_ifname(name)
                if why:
                    self.error(f"{key}.name", f"{name!r} {why}")
                    ok = False
            fields["name"] = name
        if "altname" in table:
            alt = self.string(f"{key}.altname", table["altname"])
            if alt is not None:
                why = check_ifname(alt, MAX_ALTNAME)
                if why:
                    self.error(f"{key}.altname", f"{alt!r} {why}")
                    ok = False
                elif alt == fields.get("name"):
                    self.error(f"{key}.altname", f"{alt!r} is the name itself: an alternative name is another "
                                                 "name of the interface (ip link show lists it as altname); "
                                                 "drop altname, or write the PF's alternative name")
                    ok = False
            fields["altname"] = alt
        if "pci" in table:
            raw = self.string(f"{key}.pci", table["pci"])
            pci = normalize_pci(raw) if raw is not None else None
            if raw is not None and pci is None:
                self.error(f"{key}.pci", f"{raw!r} is not a PCI address; write it as DDDD:BB:DD.F, e.g. 0000:3b:00.0")
            fields["pci"] = pci
        if "mac" in table:
            raw = self.string(f"{key}.mac", table["mac"])
            if raw is not None and not _MAC_RE.match(raw.lower()):
                self.error(f"{key}.mac", f"{raw!r} is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
                raw = None
            fields["mac"] = raw.lower() if raw else None
        if has_vd:
            for part in ("vendor", "device"):
                if part not in table:
                    other = "device" if part == "vendor" else "vendor"
                    self.error(f"{key}.{part}", f"missing: {other} needs {part} too, as a 4-digit hex string like \"8086\"")
                    ok = False
                    continue
                value = table[part]
                if not isinstance(value, str):
                    self.error(f"{key}.{part}", f"must be a quoted 4-digit hex string like \"8086\", got {_type_name(value)}")
                    ok = False
                    continue
                m = _HEX4_RE.match(value.strip().lower())
                if not m:
                    self.error(f"{key}.{part}", f"{value!r} is not a 4-digit hex PCI ID like \"8086\" or \"159b\"")
                    ok = False
                    continue
                fields[part] = m.group(1)
        if "index" in table:
            if not has_vd:
                self.error(f"{key}.index", "only applies to a vendor+device selector")
                ok = False
            else:
                fields["index"] = self.integer(f"{key}.index", table["index"], 0, 65535)
        if not ok or any(v is None for v in fields.values()):
            return None
        return PfSelector(**fields)

    def group_range(self, gkey: str, table: Dict[str, Any], num_vfs: Optional[int],
                    owner: Dict[int, str]) -> Optional[Tuple[int, ...]]:
        if "range" not in table:
            self.error(f"{gkey}.range", 'missing: name the VFs, e.g. range = "0-3"')
            return None
        text = self.string(f"{gkey}.range", table["range"])
        if text is None:
            return None
        try:
            indices = parse_range(text)
        except ValueError as exc:
            self.error(f"{gkey}.range", f"{text!r} {exc}; write e.g. \"0-3\", \"5\" or \"0,2,4-6\"")
            return None
        if num_vfs is not None:
            beyond = [n for n in indices if n >= num_vfs]
            if beyond:
                self.error(
                    f"{gkey}.range",
                    f"{text!r} reaches VF {beyond[-1]} but num_vfs = {num_vfs} (valid indices 0-{num_vfs - 1})"
                    if num_vfs
                    else f"{text!r} names VFs but num_vfs = 0",
                )
                return None
        clash = sorted({owner[n] for n in indices if n in owner})
        if clash:
            both = [n for n in indices if n in owner]
            self.error(f"{gkey}.range", f"{text!r} overlaps {clash[0]}.range on VF {both[0]}; each VF belongs to one group")
            return None
        for n in indices:
            owner[n] = gkey
        return indices

    def group_driver(self, gkey: str, table: Dict[str, Any]) -> Tuple[bool, Optional[str]]:
        """(ok, driver); driver None: leave the VFs to the kernel's default."""
        if "driver" not in table:
            return True, None
        driver = self.string(f"{gkey}.driver", table["driver"])
        if driver is None:
            return False, None
        if not _DRIVER_RE.match(driver):
            self.error(f"{gkey}.driver", f"{driver!r} is not a kernel driver name (like vfio-pci, iavf, mlx5_core)")
            return False, None
        if driver != driver.lower():
            self.error(f"{gkey}.driver", f"{driver!r}: kernel driver names are lower-case; did you mean {driver.lower()!r}?")
            return False, None
        if driver in DRIVER_SPELLINGS:
            self.error(f"{gkey}.driver", f"{driver!r} is the module's name; the PCI driver is called {DRIVER_SPELLINGS[driver]!r}")
            return False, None
        return True, driver

    def group_links(self, gkey: str, table: Dict[str, Any], count: int) -> Optional[VfLinks]:
        """The VF settings of a group (rtnetlink IFLA_VF_*); None when one of them is wrong."""
        before = len(self.problems)
        got: Dict[str, Any] = {}
        if "mac" in table:
            raw = self.string(f"{gkey}.mac", table["mac"])
            if raw is not None:
                if not _MAC_RE.match(raw.lower()):
                    self.error(f"{gkey}.mac", f"{raw!r} is not a MAC address; write it as aa:bb:cc:dd:ee:ff")
                elif int(raw[:2], 16) & 1:
                    self.error(f"{gkey}.mac", f"{raw!r} is a multicast address; a VF needs a unicast one "
                                              "(the first byte even, e.g. 02:...)")
                elif raw == "00:00:00:00:00:00":
                    self.error(f"{gkey}.mac", f"{raw!r} is all zeros, which the drivers take as \"clear the VF's MAC\" "
                                              "(the VF then makes one up), not as an address; a VF needs a unicast one "
                                              "of its own, e.g. 02:00:00:00:00:01")
                elif count > 1:
                    self.error(f"{gkey}.mac", f"one MAC for {count} VFs: each VF needs its own; "
                                              "give each its own group (range = \"3\")")
                else:
                    got["mac"] = raw.lower()
        if "vlan" in table:
            got["vlan"] = self.integer(f"{gkey}.vlan", table["vlan"], 0, 4095)
        if "qos" in table:
            got["qos"] = self.integer(f"{gkey}.qos", table["qos"], 0, 7)
        if "vlan_proto" in table:
            got["vlan_proto"] = self.choice(f"{gkey}.vlan_proto", table["vlan_proto"], tuple(VLAN_PROTOS))
        for part in ("qos", "vlan_proto"):
            if part in table and "vlan" not in table:
                self.error(f"{gkey}.{part}", "applies to a VLAN: set vlan too (vlan = 0 means none)")
        if got.get("vlan_proto") == "802.1ad" and got.get("vlan") == 0:
            self.error(f"{gkey}.vlan_proto", "802.1ad needs a VLAN id: vlan = 0 means no VLAN (drop vlan_proto)")
        for flag in ("spoofchk", "trust"):
            if flag in table:
                got[flag] = self.boolean(f"{gkey}.{flag}", table[flag])
        if "link_state" in table:
            got["link_state"] = self.choice(f"{gkey}.link_state", table["link_state"], LINK_STATES)
        for rate in ("min_tx_rate", "max_tx_rate"):
            if rate in table:
                got[rate] = self.integer(f"{gkey}.{rate}", table[rate], 0, MAX_RATE)
        low, high = got.get("min_tx_rate"), got.get("max_tx_rate")
        if low and high and low > high:
            self.error(f"{gkey}.min_tx_rate", f"{low} Mbit/s is above max_tx_rate = {high}; the kernel "
                                              "refuses min > max (max_tx_rate = 0 means no limit)")
        if len(self.problems) != before:
            return None
        return VfLinks(**got)

    def group_mtu(self, gkey: str, table: Dict[str, Any], driver: Optional[str]) -> Tuple[bool, Optional[int]]:
        if "mtu" not in table:
            return True, None
        mtu = self.integer(f"{gkey}.mtu", table["mtu"], MIN_MTU, MAX_MTU)
        if mtu is None:
            return False, None
        if driver == DRIVER_NONE or is_override_only(driver):
            self.error(f"{gkey}.mtu", f"a VF MTU is set on the VF's netdev, and driver = {driver!r} gives it none; "
                                      "drop mtu, or use a network driver (iavf, mlx5_core, ...)")
            return False, None
        return True, mtu

    def group_resource(self, gkey: str, table: Dict[str, Any], driver_ok: bool, driver: Optional[str]) -> Tuple[bool, Optional[str]]:
        """(ok, resource name); the device plugin selects a resource's VFs by one driver, so it needs a named one."""
        if "resource" not in table:
            return True, None
        name = self.string(f"{gkey}.resource", table["resource"])
        if name is None:
            return False, None
        if not _RESOURCE_RE.match(name):
            self.error(f"{gkey}.resource", f"{name!r} is not a resource name the device plugin and kubelet accept: "
                                           f"use {RESOURCE_WORDS}, e.g. \"intel_sriov_netdevice\"")
            return False, None
        if not driver_ok:
            return False, None  # the driver's own problem is reported already
        if driver is None:
            self.error(f"{gkey}.resource", f"{name!r} needs a named driver: the device plugin selects a resource's VFs "
                                           "by driver; add driver = \"iavf\" (or the VF driver of this NIC: mlx5_core, "
                                           "ixgbevf, ...; vfio-pci for DPDK)")
            return False, None
        if driver == DRIVER_NONE:
            self.error(f"{gkey}.resource", f"{name!r} with driver = \"none\": the device plugin never exposes unbound "
                                           "VFs; give the VFs a driver or drop resource")
            return False, None
        if driver == DRIVER_ANY:
            self.error(f"{gkey}.resource", f"{name!r} with driver = \"any\": the exported selectors must name the "
                                           "driver the VFs use; write that driver instead of \"any\"")
            return False, None
        return True, name

    def group_resource_options(self, gkey: str, table: Dict[str, Any], resource: Optional[str],
                               driver: Optional[str]) -> Optional[Dict[str, bool]]:
        """rdma, vhost_net, exclude_topology: what the device plugin does with the group's resource; None
        when one of them is wrong."""
        before = len(self.problems)
        got: Dict[str, bool] = {}
        for flag in RESOURCE_OPTION_KEYS:
            if flag not in table:
                continue
            value = self.boolean(f"{gkey}.{flag}", table[flag])
            if value is None:
                continue
            if "resource" not in table:
                self.error(f"{gkey}.{flag}", "is an option of the group's device plugin resource, and the group "
                                             "names none: add resource = \"...\" or drop " + flag)
                continue
            got[flag] = value
        if got.get("rdma") and (driver == DRIVER_NONE or is_override_only(driver)):
            self.error(f"{gkey}.rdma", f"true with driver = {driver!r}: a VF's RDMA device (what the device plugin's "
                                       "isRdma looks for, <VF>/infiniband/) belongs to its network driver "
                                       "(mlx5_core with mlx5_ib, ...), and a VF bound to "
                                       f"{driver} has none; use the VF's network driver, or drop rdma")
        if len(self.problems) != before or (resource is None and "resource" in table):
            return None
        return got

    # ------------------------------------------------------------ InfiniBand VF GUIDs

    def group_guids(self, gkey: str, table: Dict[str, Any],
                    indices: Optional[Tuple[int, ...]]) -> Tuple[bool, Optional[GuidSpec]]:
        """(ok, GUIDs): guid = "auto" (derived from the PF's GUID and the VF index), or node_guid /
        port_guid given for a one-VF group. Whether the PF is InfiniBand is the host's to say (preflight)."""
        if not any(k in table for k in GUID_CONFIG_KEYS):
            return True, None
        before = len(self.problems)
        given = {}
        for key in ("node_guid", "port_guid"):
            if key not in table:
                continue
            raw = self.string(f"{gkey}.{key}", table[key])
            if raw is None:
                continue
            text = raw.lower()
            if not _GUID_RE.match(text):
                self.error(f"{gkey}.{key}", f"{raw!r} is not a GUID; write it as 8 bytes in hex, "
                                            "xx:xx:xx:xx:xx:xx:xx:xx (e.g. 02:00:00:00:00:00:00:01)")
            elif text in ("00:00:00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff:ff:ff"):
                self.error(f"{gkey}.{key}", f"{raw!r} is not a valid GUID (the subnet manager refuses all zeros "
                                            "and all ones); use a unique one, or guid = \"auto\"")
            elif indices is not None and len(indices) > 1:
                self.error(f"{gkey}.{key}", f"one {key} for {len(indices)} VFs: each VF needs its own; give each "
                                            "its own group (range = \"3\"), or use guid = \"auto\"")
            else:
                given[key] = text
        if "guid" in table:
            value = self.choice(f"{gkey}.guid", table["guid"], (GUID_AUTO,))
            if value is not None and any(k in table for k in ("node_guid", "port_guid")):
                self.error(f"{gkey}.guid", "\"auto\" derives node_guid and port_guid: drop node_guid/port_guid, "
                                           "or drop guid to give them yourself")
            elif value is not None and indices and max(indices) > MAX_AUTO_GUID_VF:
                self.error(f"{gkey}.guid", f"\"auto\" derives GUIDs for VF indices up to {MAX_AUTO_GUID_VF}; "
                                           "give these VFs node_guid/port_guid")
        if len(self.problems) != before:
            return False, None
        if "guid" in table:
            return True, GuidSpec(auto=True)
        return True, GuidSpec(node_guid=given.get("node_guid"), port_guid=given.get("port_guid"))

    def vf_groups(self, key: str, value: Any, num_vfs: Optional[int]) -> Tuple[VfGroup, ...]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.error(key, f"must be an array of tables ([[{key.split('[')[0]}.vfs]]), got {_type_name(value)}")
            return ()
        groups: List[VfGroup] = []
        owner: Dict[int, str] = {}
        for i, table in enumerate(value):
            gkey = f"{key}[{i}]"
            self.unknown_keys(gkey, table, VF_KEYS)
            # Check every key independently, so one run reports every problem.
            indices = self.group_range(gkey, table, num_vfs, owner)
            driver_ok, driver = self.group_driver(gkey, table)
            links = self.group_links(gkey, table, len(indices) if indices else 1)
            mtu_ok, mtu = self.group_mtu(gkey, table, driver if driver_ok else None)
            resource_ok, resource = self.group_resource(gkey, table, driver_ok, driver)
            options = self.group_resource_options(gkey, table, resource, driver if driver_ok else None)
            guids_ok, guids = self.group_guids(gkey, table, indices)
            if indices is None or not driver_ok or links is None or not mtu_ok or not resource_ok or options is None:
                continue
            if not guids_ok:
                continue
            groups.append(VfGroup(key=gkey, range_text=table["range"], indices=indices, driver=driver,
                                  links=links, mtu=mtu, resource=resource, guids=guids, **options))
        return tuple(groups)

    def pf(self, key: str, table: Any) -> Optional[PfSpec]:
        if not isinstance(table, dict):
            self.error(key, f"must be a table ([[pf]]), got {_type_name(table)}")
            return None
        self.unknown_keys(key, table, PF_KEYS)
        before = len(self.problems)
        selector = self.selector(key, table)
        num_vfs: Optional[int] = None
        if "num_vfs" not in table:
            self.error(f"{key}.num_vfs", "missing: how many VFs this PF should have (0 disables SR-IOV)")
        else:
            num_vfs = self.integer(f"{key}.num_vfs", table["num_vfs"], 0, MAX_NUM_VFS)
        groups = self.vf_groups(f"{key}.vfs", table.get("vfs", []), num_vfs)
        extra: Dict[str, Any] = {}
        if "mtu" in table:
            extra["mtu"] = self.integer(f"{key}.mtu", table["mtu"], MIN_MTU, MAX_MTU)
        if "eswitch_mode" in table:
            extra["eswitch_mode"] = self.choice(f"{key}.eswitch_mode", table["eswitch_mode"], ESWITCH_MODES)
        for flag in ("drivers_autoprobe", "externally_managed"):
            if flag in table:
                extra[flag] = self.boolean(f"{key}.{flag}", table[flag])
        if "representor_name" in table:
            extra["representor_name"] = self.representor_name(key, table, num_vfs, selector)
        if extra.get("drivers_autoprobe") is False and num_vfs:
            named = {i for g in groups if g.driver is not None for i in g.indices}
            left = [i for i in range(num_vfs) if i not in named]
            if left:
                self.error(f"{key}.drivers_autoprobe",
                           f"false keeps the kernel from binding a VF without a driver_override, and VF(s) "
                           f"{format_ranges(left)} name no driver; give them one: a driver name, \"none\" or \"any\"")
        if len(self.problems) != before or selector is None or num_vfs is None:
            return None
        return PfSpec(key=key, selector=selector, num_vfs=num_vfs, vfs=groups, **extra)

    # -- switchdev representors and the RDMA namespace mode (kept apart from the blocks' other keys)

    def representor_name(self, key: str, table: Dict[str, Any], num_vfs: Optional[int],
                         selector: Optional[PfSelector]) -> Optional[str]:
        """[[pf]] representor_name: a template with {vf} (the VF index) and optionally {pf} (the PF's name),
        holding nothing else than what udev gives an interface as written in its rule; where the names do
        not depend on the host (no {pf}, or a block selecting by name), each VF's is checked here as
        `udev-rule` checks it (`representor_names`)."""
        rkey = f"{key}.representor_name"
        text = self.string(rkey, table["representor_name"])
        if text is None:
            return None
        if str(table.get("eswitch_mode", "")).lower() != "switchdev":
            self.error(rkey, "names switchdev representors: it needs eswitch_mode = \"switchdev\" in this block")
            return None
        fields = re.findall(r"\{([^{}]*)\}", text)
        wrong = [f for f in fields if f not in ("pf", "vf")]
        rest = re.sub(r"\{(pf|vf)\}", "", text)
        if wrong or "{" in rest or "}" in rest:
            self.error(rkey, f"{text!r}: the only fields are {{pf}} (the PF's name) and {{vf}} (the VF index), "
                             "e.g. \"{pf}_{vf}\"")
            return None
        if "vf" not in fields:
            self.error(rkey, f"{text!r} has no {{vf}}: every representor needs its own name, e.g. \"{{pf}}_{{vf}}\"")
            return None
        bad = next((c for c in rest if c not in _REPRESENTOR_SAFE), None)
        if bad is not None:
            self.error(rkey, f"{text!r} holds {bad!r}: besides {{pf}} and {{vf}} a template may hold only "
                             f"{REPRESENTOR_CHARS} (an interface name as udev gives it, written as is in its "
                             "rule), e.g. \"{pf}_{vf}\"")
            return None
        name = selector.name if selector is not None else None
        if num_vfs and ("pf" not in fields or name is not None):
            device = selector.describe() if selector is not None else key
            for _, why in representor_names([RepresentorPf(key, device, name, num_vfs, text)])[1]:
                self.error(rkey, why)
                return None
        return text

    def rdma_netns(self, doc: Dict[str, Any]) -> Optional[str]:
        """rdma_netns: ib_core's network namespace mode (rdma system set netns), or None (left alone)."""
        if "rdma_netns" not in doc:
            return None
        return self.choice("rdma_netns", doc["rdma_netns"], RDMA_NETNS_MODES)

    def table(self, key: str, doc: Dict[str, Any], allowed: Tuple[str, ...]) -> Dict[str, Any]:
        """An optional top-level [table]; {} when absent or not a table (that is reported)."""
        value = doc.get(key, {})
        if not isinstance(value, dict):
            self.error(key, f"must be a table ([{key}]), got {_type_name(value)}")
            return {}
        self.unknown_keys(key, value, allowed)
        return value

    def device_plugin(self, doc: Dict[str, Any]) -> str:
        table = self.table("device_plugin", doc, DEVICE_PLUGIN_KEYS)
        if "resource_prefix" not in table:
            return DEFAULT_RESOURCE_PREFIX
        key = "device_plugin.resource_prefix"
        prefix = self.string(key, table["resource_prefix"])
        if prefix is None:
            return DEFAULT_RESOURCE_PREFIX
        if len(prefix) > 244 or not _DNS_SUBDOMAIN_RE.match(prefix):
            self.error(key, f"{prefix!r} is not a DNS subdomain (lower-case letters, digits, '-' and '.', e.g. "
                            "\"intel.com\" or \"example.org\"); kubelet refuses other resource prefixes")
        elif prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io"):
            self.error(key, f"{prefix!r} is reserved for Kubernetes' own resources; use a domain of yours, "
                            "e.g. \"intel.com\" or \"example.org\"")
        return prefix

    def device_plugin_file(self, doc: Dict[str, Any]) -> Optional[str]:
        table = doc.get("device_plugin")
        if not isinstance(table, dict) or "config_file" not in table:  # a wrong table: device_plugin() says so
            return None
        key = "device_plugin.config_file"
        path = self.string(key, table["config_file"])
        if path is None:
            return None
        parts = path.split("/")
        if not path.startswith("/") or "\0" in path or any(p in (".", "..") for p in parts) or path.endswith("/"):
            self.error(key, f"{path!r} must be an absolute file path without '.' or '..' components, e.g. "
                            "\"/run/sriov-node/device-plugin/config.json\"")
            return None
        if parts[-1].startswith("."):
            self.error(key, f"{path!r}: a hidden name; the file is replaced through a hidden temporary beside it: "
                            "name it e.g. config.json")
            return None
        why = plugin_file_place(path)
        if why:
            self.error(key, why)
            return None
        return path

    def metrics(self, doc: Dict[str, Any]) -> Optional[str]:
        table = self.table("metrics", doc, METRICS_KEYS)
        if "textfile" not in table:
            return None
        key = "metrics.textfile"
        path = self.string(key, table["textfile"])
        if path is None:
            return None
        parts = path.split("/")
        if not path.startswith("/") or "\0" in path or any(p in (".", "..") for p in parts) or path.endswith("/"):
            self.error(key, f"{path!r} must be an absolute file path without '.' or '..' components, e.g. "
                            "\"/var/lib/prometheus/node-exporter/sriov_node.prom\"")
            return None
        if not path.endswith(".prom") or parts[-1].startswith("."):
            self.error(key, f"{path!r}: node_exporter's textfile collector reads only files named *.prom "
                            "(not hidden ones); end the name with .prom")
            return None
        return path

    def history(self, doc: Dict[str, Any]) -> int:
        table = self.table("history", doc, HISTORY_KEYS)
        if "keep" not in table:
            return DEFAULT_HISTORY_KEEP
        keep = self.integer("history.keep", table["keep"], 1, MAX_HISTORY_KEEP)
        return DEFAULT_HISTORY_KEEP if keep is None else keep

    def resource_drivers(self, specs: List[PfSpec]) -> None:
        """A resource may span several PFs, but all its VFs share one driver (the selectors name one)."""
        first: Dict[str, VfGroup] = {}
        for spec in specs:
            for group in spec.vfs:
                if group.resource is None:
                    continue
                seen = first.setdefault(group.resource, group)
                if seen.driver != group.driver:
                    self.error(f"{group.key}.resource",
                               f"{group.resource!r} has driver {group.driver!r} here but {seen.driver!r} in "
                               f"{seen.key}; a resource's VFs share one driver: use one driver, or name a second "
                               f"resource (e.g. \"{group.resource}_{(group.driver or '').replace('-', '_')}\")")
                    continue
                for flag in RESOURCE_OPTION_KEYS:
                    if getattr(seen, flag) != getattr(group, flag):
                        self.error(f"{group.key}.{flag}",
                                   f"{str(getattr(group, flag)).lower()} here but {str(getattr(seen, flag)).lower()} in {seen.key} (resource "
                                   f"{group.resource!r}): the device plugin gives a resource one {flag}; write "
                                   f"{flag} = {str(getattr(seen, flag)).lower()} in both, or name a second resource")

    def document(self, doc: Dict[str, Any]) -> Tuple[Optional[int], List[PfSpec]]:
        self.unknown_keys("", doc, TOP_KEYS)
        version = 1
        if "version" in doc:
            v = doc["version"]
            if isinstance(v, bool) or not isinstance(v, int) or v not in SUPPORTED_VERSIONS:
                self.error("version", f"unsupported version {v!r}; this sriov-node reads version = 1")
        pfs_raw = doc.get("pf", [])
        if not isinstance(pfs_raw, list):
            self.error("pf", f"must be an array of tables ([[pf]]), got {_type_name(pfs_raw)}")
            pfs_raw = []
        specs = [s for s in (self.pf(f"pf[{i}]", t) for i, t in enumerate(pfs_raw)) if s is not None]
        self.duplicate_selectors(specs)
        self.resource_drivers(specs)
        self.duplicate_vf_addresses(specs)
        return version, specs

    def duplicate_vf_addresses(self, specs: List[PfSpec]) -> None:
        """A VF's MAC, node GUID and port GUID are that one VF's: the same value for two VFs anywhere in the
        file (two groups of a PF, blocks of two PFs) is refused, naming both keys. (A block that selects
        several PFs gives each the same value too: that is the host's to show, `check_on_host`.)"""
        seen: Dict[Tuple[str, str], str] = {}
        for spec in specs:
            for group in spec.vfs:
                for attr, value in vf_addresses(group):
                    where = f"{group.key}.{attr}"
                    first = seen.setdefault((attr, value), where)
                    if first != where:
                        self.error(where, f"{value!r} is also {first}: {_UNIQUE_WHY[attr]}; give each VF its own")

    def duplicate_selectors(self, specs: List[PfSpec]) -> None:
        seen: Dict[Tuple[str, str], str] = {}
        for spec in specs:
            sel = spec.selector
            ident = next(
                ((k, getattr(sel, k)) for k in ("name", "altname", "pci", "mac") if getattr(sel, k) is not None),
                ("vendor:device", f"{sel.vendor}:{sel.device}:{sel.index}"),
            )
            if ident in seen:
                self.error(spec.key, f"selects the same PF as {seen[ident]} ({sel.describe()}); merge the two blocks")
            else:
                seen[ident] = spec.key


# ---------------------------------------------------------------------------- [device_plugin] config_file

# Where a converged run must never write the device plugin's JSON (it replaces what is there, atomically):
# sriov-node's own directories and the kernel's and devices' file systems. Under /run/sriov-node only
# device-plugin/ is the plugin's (the documented place, docs/fleet.md and deploy/kubernetes/).
PLUGIN_DIR = "/run/sriov-node/device-plugin"
_OWN_PLACES = (
    ("/etc/sriov-node", "sriov-node's configuration directory (config.toml, its .bak, edits kept as "
                        "config.toml.unapplied-*)"),
    ("/var/lib/sriov-node", "sriov-node's state (state.json, the applied generations)"),
    ("/run/sriov-node", f"sriov-node's runtime directory (the apply lock, agent.pid, reboot-required; only "
                        f"{PLUGIN_DIR}/ is the plugin's)"),
    ("/sys", "sysfs, the kernel's attributes"),
    ("/proc", "procfs, the kernel's processes and settings"),
    ("/dev", "the device nodes"),
)
_PLUGIN_FIX = f"name a file of the plugin's own, e.g. \"{PLUGIN_DIR}/config.json\""


def _plain_path(path: str) -> str:
    """An absolute path as the checks compare it: '//' as '/', /var/run as /run (its symbolic link)."""
    p = re.sub("/+", "/", path)
    return "/run" + p[len("/var/run"):] if p == "/var/run" or p.startswith("/var/run/") else p


def plugin_file_place(path: str) -> Optional[str]:
    """Why [device_plugin] config_file (absolute) must not be `path`, or None: every converged run would
    replace the file there with the plugin's JSON, so none of sriov-node's own files (its directories
    under /etc, /var/lib and /run, its GRUB drop-in and modprobe.d file) nor anything in /sys, /proc, /dev."""
    from sriov_node.platform import GRUB_DROPIN, RDMA_MODPROBE_FILE

    p = _plain_path(path)
    if p.startswith(PLUGIN_DIR + "/"):
        return None
    for own, what in ((GRUB_DROPIN, "sriov-node's GRUB drop-in"), (RDMA_MODPROBE_FILE, "sriov-node's ib_core options")):
        if p == own:
            return (f"{path!r} is {what} (sriov-node check --fix writes it): every converged run would replace it "
                    f"with the device plugin's JSON; {_PLUGIN_FIX}")
    for place, what in _OWN_PLACES:
        if p == place or p.startswith(place + "/"):
            return (f"{path!r} is in {place}, {what}: every converged run would replace the file there with the "
                    f"device plugin's JSON; {_PLUGIN_FIX}")
    return None


def plugin_file_clash(path: str, config: str) -> Optional[str]:
    """Why [device_plugin] config_file `path` would replace the config file `config` itself (its .bak, or
    an edit kept beside it as .unapplied-*), or None. The plugin file is written under the host's root,
    which the config's reader does not know: the config's path (as given and with its links resolved) is
    compared both as it is (the real root) and as a path under a root (one that ends with `path`)."""
    p = _plain_path(path)
    pname = p.rsplit("/", 1)[1]
    for form in dict.fromkeys((os.path.abspath(config), os.path.realpath(config))):
        cdir, cname = form.rsplit("/", 1)
        own = [(form, "the config file itself"), (form + ".bak", "the config's backup (set and unset keep it)")]
        if pname.startswith(cname + ".unapplied-"):
            own.append((f"{cdir}/{pname}", "an unapplied edit of the config, kept beside it"))
        for file, what in own:
            if file == p or file.endswith(p):
                root = file[:-len(p)]
                return (f"{path!r} is {what}, {file}" + (f" (under the root {root})" if root else "") +
                        f": every converged run would replace it with the device plugin's JSON; {_PLUGIN_FIX}")
    return None


def vf_addresses(group: VfGroup) -> List[Tuple[str, str]]:
    """What a group gives its one VF that is that VF's alone: its MAC, its given node and port GUIDs."""
    given = [("mac", group.links.mac)]
    if group.guids is not None and not group.guids.auto:
        given += [("node_guid", group.guids.node_guid), ("port_guid", group.guids.port_guid)]
    return [(attr, value) for attr, value in given if value is not None]


def check_on_host(selected: Sequence[Tuple[PfSpec, PfState]], targets: Sequence[Tuple[PfSpec, PfState]],
                  pfs: Sequence[PfState]) -> List[ConfigProblem]:
    """What is wrong with a block that only a host shows (engine/resolve.py fails the blocks concerned,
    as it does a selector that matches nothing here: exit 1, nothing of theirs written, the other
    blocks converge; validate, the dry run and every run alike): a block that gives one VF address
    (mac, node_guid, port_guid) and selects several PFs here (`selected`: each block with every PF it
    selects), each of which would give it to a VF; the switchdev `targets`' representors' names, over
    the host's `pfs` (none named like one of them), as `udev-rule` checks them (`representor_names`)."""
    problems: List[ConfigProblem] = []
    found: Dict[str, List[PfState]] = {}
    specs: Dict[str, PfSpec] = {}
    for spec, pf in selected:
        found.setdefault(spec.key, []).append(pf)
        specs[spec.key] = spec
    for key, many in found.items():
        if len(many) < 2:
            continue
        spec = specs[key]
        for group in spec.vfs:
            for attr, value in vf_addresses(group):
                problems.append(ConfigProblem(
                    f"{group.key}.{attr}",
                    f"{value!r} would go to VF {group.indices[0]} of each of the {len(many)} PFs {key} "
                    f"({spec.selector.describe()}) selects here: {', '.join(pf.label for pf in many)}; "
                    f"{_UNIQUE_WHY[attr]}: give the block index = N to select one PF, or give each PF a block "
                    f"with its own {attr}"))
    switchdev = [RepresentorPf(spec.key, pf.pci, pf.name, spec.num_vfs,
                               spec.representor_name or DEFAULT_REPRESENTOR_NAME)
                 for spec, pf in targets if spec.eswitch_mode == "switchdev"]
    if switchdev:
        taken = {pf.name: f"the name of PF {pf.pci}" for pf in pfs if pf.name}
        problems += [ConfigProblem(key, why) for key, why in representor_names(switchdev, taken)[1]]
    return problems


def decode_config(data: bytes, source: str) -> str:
    """The text of a config file, for every command that reads one (validate, apply, status, set, ...).

    UTF-8; a leading byte-order mark (written by many Windows editors, forbidden by TOML) is
    dropped. Invalid UTF-8 is one ConfigError naming the byte offset (and line) of the first bad byte.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(source, [ConfigProblem("", f"not UTF-8 text (byte {exc.start}, line {line}); "
                                                     "save the file as UTF-8")])
    return text[1:] if text.startswith(BOM) else text


def parse_toml(text: str, source: str) -> Dict[str, Any]:
    """The TOML document in `text` (from decode_config); ConfigError when it is not valid TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")])
    except RecursionError:  # tomllib recurses once per nested array/inline table
        raise ConfigError(source, [ConfigProblem("", "not valid TOML: arrays or inline tables nested too deeply")])
    except ValueError as exc:  # e.g. an integer beyond int()'s str-digits limit
        raise ConfigError(source, [ConfigProblem("", f"not valid TOML: {exc}")])


def parse_config(data: bytes, source: str, config_path: Optional[str] = None) -> DesiredState:
    """Validate the bytes of a config file; raise ConfigError listing every problem. `config_path`: the
    file's path (default: `source` when it is an absolute path), which [device_plugin] config_file must not
    name."""
    doc = parse_toml(decode_config(data, source), source)
    v = _Validator()
    version, specs = v.document(doc)
    prefix = v.device_plugin(doc)
    plugin_file = v.device_plugin_file(doc)
    textfile = v.metrics(doc)
    if config_path is None and source.startswith("/"):
        config_path = source
    if plugin_file is not None and textfile is not None and _plain_path(plugin_file) == _plain_path(textfile):
        v.error("device_plugin.config_file", f"{plugin_file!r} is [metrics] textfile too: the metrics and the "
                                             f"plugin's config would replace each other; {_PLUGIN_FIX}")
    elif plugin_file is not None and config_path is not None:
        why = plugin_file_clash(plugin_file, config_path)
        if why:
            v.error("device_plugin.config_file", why)
    v.history(doc)
    rdma_netns = v.rdma_netns(doc)
    if v.problems:
        raise ConfigError(source, v.problems)
    return DesiredState(
        source=source,
        raw=data,
        version=version or 1,
        pfs=tuple(specs),
        resource_prefix=prefix,
        device_plugin_file=plugin_file,
        metrics_textfile=textfile,
        rdma_netns=rdma_netns,
    )


def history_keep(data: bytes) -> int:
    """`[history] keep` of a valid config's bytes: how many applied generations to keep (default 20)."""
    try:
        doc = parse_toml(decode_config(data, "<generation>"), "<generation>")
    except ConfigError:
        return DEFAULT_HISTORY_KEEP
    v = _Validator()
    keep = v.history(doc) if isinstance(doc.get("history", {}), dict) else DEFAULT_HISTORY_KEEP
    return DEFAULT_HISTORY_KEEP if v.problems else keep


def check_file_trust(path: str, st: os.stat_result) -> Optional[str]:
    """Why a root daemon must not obey this file, or None."""
    if st.st_uid != 0:
        return f"is owned by uid {st.st_uid}, not root; run: chown root:root {path}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o}); run: chmod go-w {path}"
    return None


def read_config(path: str) -> Tuple[bytes, os.stat_result]:
    """The bytes of the config file and its stat: the one reader of the config (load_config, `set`).

    Opened without blocking (a FIFO answers at once), a regular file only (a device, a FIFO, a
    directory is refused by name), at most CONFIG_LIMIT bytes. The path may be a symlink (a config
    managed elsewhere and linked into /etc): it is followed.
    """
    from sriov_node.files import CONFIG_LIMIT, UnsafeFile, open_regular, read_fd

    try:
        fd = open_regular(path)
        try:
            return read_fd(fd, path, CONFIG_LIMIT), os.fstat(fd)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError(path, [ConfigProblem("", f"no such file; create it (examples: {EXAMPLES_DIR}) or pass --config PATH")])
    except UnsafeFile as exc:
        if exc.reason.startswith("is a directory"):
            raise ConfigError(path, [ConfigProblem("", "is a directory; pass the path of a .toml file")])
        raise ConfigError(path, [ConfigProblem("", exc.reason.replace("replace it with a regular file",
                                                                      "pass the path of a .toml file"))])
    except OSError as exc:
        raise ConfigError(path, [ConfigProblem("", f"cannot be read: {exc.strerror}")])


def check_directory_trust(path: str) -> Optional[str]:
    """Why a root daemon must not obey (nor write) the config at `path` because of its directory, or None:
    the directory (and a symlink's target's) must be root's and writable by nobody else, as the file."""
    from sriov_node.files import config_directory_problem

    return config_directory_problem(path, (0,))


def load_config(path: str, *, enforce_trust: bool = False) -> DesiredState:
    """Read and validate `path`. With enforce_trust, refuse a file (or a directory holding it) non-root
    users could edit."""
    if enforce_trust:
        why = check_directory_trust(path)
        if why:
            raise ConfigError(path, [ConfigProblem("", why)])
    data, st = read_config(path)
    if enforce_trust:
        why = check_file_trust(path, st)
        if why:
            raise ConfigError(path, [ConfigProblem("", why)])
    return parse_config(data, path, config_path=path)
