"""A simulated host's `mstconfig`: the firmware settings of its mlx5 PFs, in the tool's documented
`query` format (see sriov_node/checks/firmware.py), kept in the model file; `set` changes the next
boot's values only, as the real tool does (they take effect at a power cycle)."""

from __future__ import annotations

import json
import os
import sys

from sriov_node.sim import MARKER

SCRIPT = r'''#!{python}
import json, os, sys
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, {marker!r})
args = sys.argv[1:]
pci = args[args.index("-d") + 1] if "-d" in args else None
model = json.load(open(MODEL))
fw = model.get("devices", {{}}).get(pci, {{}}).get("firmware")
if fw is None:
    sys.exit(f"-E- Failed to open the device: {{pci}}")
if "set" in args:
    for item in args[args.index("set") + 1:]:
        key, _, value = item.partition("=")
        fw[key][1] = int(value)
    json.dump(model, open(MODEL, "w"), indent=1, sort_keys=True)
    print("Apply new Configuration? (y/n) [n] : y\nApplying... Done!\n-I- Please reboot machine to load new configurations.")
    sys.exit(0)
def show(key, v):
    return ("True(1)" if v else "False(0)") if key == "SRIOV_EN" else str(v)
print("\nDevice #1:\n----------\n\nDevice type:    ConnectX5\nName:           MCX556A-ECA_Ax\n"
      f"Description:    ConnectX-5 VPI adapter card\nDevice:         {{pci}}\n")
print("Configurations:                              Default         Current         Next Boot")
for key in ("NUM_OF_VFS", "SRIOV_EN"):
    cur, nxt = fw[key]
    print(f"         {{key:<36}}{{show(key, 8 if key == 'NUM_OF_VFS' else 1):<16}}{{show(key, cur):<16}}{{show(key, nxt)}}")
'''


def install(root: str) -> None:
    """Give every mlx5 PF firmware settings (its TotalVFs as NUM_OF_VFS) and the host the tool."""
    path = os.path.join(root, MARKER)
    with open(path) as fh:
        model = json.load(fh)
    found = False
    for hw in model.get("devices", {}).values():
        if hw.get("model") == "cx5":
            total = hw.get("cap_total_vfs") or 0
            hw["firmware"] = {"SRIOV_EN": [int(bool(total)), int(bool(total))], "NUM_OF_VFS": [total, total]}
            found = True
    if not found:
        return
    with open(path, "w") as fh:
        json.dump(model, fh, indent=1, sort_keys=True)
    tool = os.path.join(root, "usr/bin/mstconfig")
    os.makedirs(os.path.dirname(tool), exist_ok=True)
    with open(tool, "w") as fh:
        fh.write(SCRIPT.format(python=sys.executable, marker=MARKER))
    os.chmod(tool, 0o755)
