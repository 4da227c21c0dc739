"""mlx5 firmware's SR-IOV settings, as `mstconfig -e -d <pci> query` (or MFT's `mlxconfig`) prints
them: parsed and judged. Read-only: the fix is a command for a person (a firmware setting takes
effect only at the next power cycle).

The tool's documented output (mstflint's mlxconfig `query`; `-e` adds the Default and Current
columns to Next Boot, a `*` marks a value changed from the default):

    Device #1:
    ----------

    Device type:    ConnectX5
    Name:           MCX556A-ECA_Ax
    Description:    ConnectX-5 VPI adapter card; ...
    Device:         0000:3b:00.0

    Configurations:                              Default         Current         Next Boot
    *        NUM_OF_VFS                          8               16              16
             SRIOV_EN                            True(1)         True(1)         True(1)
"""

from __future__ import annotations

import re
from typing import Dict, Optional

from sriov_node.checks.diagnose import FAIL, OK, SKIP, WARN, CheckResult
from sriov_node.drivers import firmware_fix

CHECK_ID = "firmware_sriov"
PARAMS = ("SRIOV_EN", "NUM_OF_VFS")
_SPLIT = re.compile(r"\s{2,}")


def parse_query(text: str) -> Dict[str, Dict[str, str]]:
    """{parameter: {column: value}} of the Configurations table (columns: Default, Current, Next Boot;
    `query` without -e prints only Next Boot)."""
    out: Dict[str, Dict[str, str]] = {}
    columns = None
    for line in text.splitlines():
        if line.startswith("Configurations:"):
            columns = [c for c in _SPLIT.split(line[len("Configurations:"):].strip()) if c]
            continue
        if columns is None or not line.strip():
            continue
        fields = _SPLIT.split(line.strip().lstrip("*").strip())
        if len(fields) < 1 + len(columns) or not re.match(r"^[A-Z0-9_]+(\[\d+\])?$", fields[0]):
            continue
        out[fields[0]] = dict(zip(columns, fields[1:1 + len(columns)]))
    return out


def _value(text: Optional[str]) -> Optional[int]:
    """'True(1)' -> 1, 'False(0)' -> 0, '16' -> 16; None when absent or unreadable."""
    if text is None:
        return None
    m = re.search(r"\((\d+)\)$", text) or re.match(r"^(\d+)$", text)
    return int(m.group(1)) if m else None


def check_mlx_firmware(pci: str, label: str, block: Optional[str], num_vfs: Optional[int], tool: Optional[str],
                       output: Optional[str], error: Optional[str] = None) -> CheckResult:
    """The firmware's SRIOV_EN and NUM_OF_VFS (current and next boot) against the VFs the block wants."""
    def result(status: str, seen: str, fix: Optional[str] = None) -> CheckResult:
        return CheckResult(CHECK_ID, status, seen, fix, subject=label, block=block)

    want = num_vfs or 0
    if tool is None:
        return result(SKIP, "mstconfig/mlxconfig is not installed: the firmware's SRIOV_EN and NUM_OF_VFS "
                            "were not read", "install mstflint (mstconfig) to have them checked")
    if output is None:
        return result(SKIP, f"{tool} could not query {pci}: {error or 'no answer'}",
                      f"run {tool} -d {pci} query as root")
    params = parse_query(output)
    if not all(p in params for p in PARAMS):
        return result(SKIP, f"{tool} -d {pci} query names no SRIOV_EN/NUM_OF_VFS", None)
    now = {p: _value(params[p].get("Current", params[p].get("Next Boot"))) for p in PARAMS}
    later = {p: _value(params[p].get("Next Boot")) for p in PARAMS}
    known_now = all("Current" in params[p] for p in PARAMS)

    def words(v: Dict[str, Optional[int]]) -> str:
        return f"SRIOV_EN {'True' if v['SRIOV_EN'] else 'False'}, NUM_OF_VFS {v['NUM_OF_VFS']}"

    def enough(v: Dict[str, Optional[int]]) -> bool:
        return not want or (bool(v["SRIOV_EN"]) and (v["NUM_OF_VFS"] or 0) >= want)

    shown = (f"now {words(now)}" if known_now else f"{words(now)} (current values not shown)") + \
        ("" if later == now else f"; next boot {words(later)}")
    target = max(want, now["NUM_OF_VFS"] or 0, later["NUM_OF_VFS"] or 0)
    if not enough(now):
        if enough(later):
            return result(FAIL, f"firmware: {shown}: the block wants {want} VF(s); set for the next boot, "
                                "needs a power cycle", "power cycle the host (the firmware reads it at power-on)")
        return result(FAIL, f"firmware: {shown}: the block wants {want} VF(s)", firmware_fix(pci, target))
    if not enough(later):
        return result(WARN, f"firmware: {shown}: after the next power cycle the PF cannot make {want} VF(s)",
                      firmware_fix(pci, target))
    return result(OK, f"firmware: {shown}")
