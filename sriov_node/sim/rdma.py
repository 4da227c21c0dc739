"""A simulated host's ib_core and iproute2 `rdma`, and what a reboot does to them.

ib_core (drivers/infiniband/core/device.c) is loaded on a host with an mlx5 NIC (mlx5_ib pulls it
in). Its `netns_mode` parameter (bool, shown Y/N: shared/exclusive) is the mode now; `rdma system set
netns MODE` changes it through `rdma_compatdev_set()`: 0 and nothing changed when it is already MODE,
EBUSY while any network namespace besides the initial one exists (the model's `ib_core.netns`: pods
and containers), else the mode. `rdma system show` prints `netns shared copy-on-fork on` as iproute2
6.x does (`-j`: `[{"netns":"shared","copy-on-fork":true}]`).

`reboot(root)`: /run emptied (a tmpfs), a new boot id, no other network namespace yet, and ib_core
loaded anew with the modprobe.d options (`options ib_core netns_mode=0|1`, the last one wins), unless
the model says ib_core comes from an initramfs made earlier (`ib_core.initramfs`: the mode it gives,
whatever /etc says). Nothing else of the host changes (its PFs keep their VFs): tests that need those
gone say so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from typing import Any, Dict, Optional

from sriov_node.sim import MARKER

PARAM = "sys/module/ib_core/parameters/netns_mode"
BOOT_ID = "proc/sys/kernel/random/boot_id"

SCRIPT = r'''#!{python}
import errno, json, os, sys
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARAM = os.path.join(ROOT, {param!r})
model = json.load(open(os.path.join(ROOT, {marker!r})))
args = [a for a in sys.argv[1:] if a not in ("-j", "-json", "--json", "-p", "-pretty")]
as_json = len(args) != len(sys.argv) - 1
if not args or args[0] not in ("system", "sys"):
    sys.exit("simulated rdma: only `rdma system show` and `rdma system set netns MODE`")
if not os.path.exists(PARAM):  # no ib_core: the RDMA netlink family is not there
    sys.exit("error: " + os.strerror(errno.EOPNOTSUPP))
shared = open(PARAM).read().strip() == "Y"
if args[1:2] in (["show"], []):
    mode = "shared" if shared else "exclusive"
    print(json.dumps([{{"netns": mode, "copy-on-fork": True}}]) if as_json else f"netns {{mode}} copy-on-fork on")
    sys.exit(0)
if args[1:3] == ["set", "netns"] and len(args) == 4 and args[3] in ("shared", "exclusive"):
    enable = args[3] == "shared"
    if enable == shared:
        sys.exit(0)
    if model.get("ib_core", {{}}).get("netns", 0):
        sys.exit("error: " + os.strerror(errno.EBUSY))
    with open(PARAM, "w") as fh:
        fh.write("Y\n" if enable else "N\n")
    log = os.path.join(ROOT, ".sriov-node-sim.log")
    with open(log, "a") as fh:
        fh.write(json.dumps(["rdma system set netns", args[3], "ok"]) + "\n")
    sys.exit(0)
sys.exit("Usage: rdma system set netns {{ shared | exclusive }}")
'''


def _model(root: str) -> Dict[str, Any]:
    with open(os.path.join(root, MARKER)) as fh:
        return json.load(fh)


def _save(root: str, model: Dict[str, Any]) -> None:
    with open(os.path.join(root, MARKER), "w") as fh:
        json.dump(model, fh, indent=1, sort_keys=True)


def _put(root: str, rel: str, text: str, mode: int = 0o444) -> None:
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def install(root: str) -> None:
    """The host's boot id and `rdma` tool; ib_core loaded (shared, its default) when an mlx5 NIC is there."""
    _put(root, BOOT_ID, str(uuid.uuid4()) + "\n")
    tool = os.path.join(root, "usr/sbin/rdma")
    os.makedirs(os.path.dirname(tool), exist_ok=True)
    with open(tool, "w") as fh:
        fh.write(SCRIPT.format(python=sys.executable, marker=MARKER, param=PARAM))
    os.chmod(tool, 0o755)
    model = _model(root)
    if any(hw.get("model") in ("cx5", "cx6-ib") for hw in model.get("devices", {}).values()):
        _put(root, PARAM, "Y\n")
    model.setdefault("ib_core", {"netns": 0, "initramfs": None})
    _save(root, model)


def set_network_namespaces(root: str, count: int) -> None:
    """How many network namespaces besides the initial one exist (pods, containers)."""
    model = _model(root)
    model.setdefault("ib_core", {})["netns"] = count
    _save(root, model)


def set_initramfs_mode(root: str, mode: Optional[str]) -> None:
    """ib_core loads from an initramfs whose modprobe.d gives it `mode` (None: from the root's /etc)."""
    model = _model(root)
    model.setdefault("ib_core", {})["initramfs"] = mode
    _save(root, model)


def _options_mode(root: str) -> Optional[bool]:
    """netns_mode from the root's modprobe.d, as modprobe reads it (None: no option)."""
    from sriov_node.host.rdma import read_next_load
    from sriov_node.sim.host import open_sim_host

    mode, source = read_next_load(open_sim_host(root))
    return None if source is None else mode == "shared"


def reboot(root: str) -> None:
    """A reboot, as far as the model carries one (see the module's docstring)."""
    run = os.path.join(root, "run")
    if os.path.isdir(run):
        for name in os.listdir(run):
            path = os.path.join(run, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.unlink(path)
    _put(root, BOOT_ID, str(uuid.uuid4()) + "\n")
    model = _model(root)
    ib = model.setdefault("ib_core", {})
    ib["netns"] = 0
    _save(root, model)
    if os.path.exists(os.path.join(root, PARAM)):
        if ib.get("initramfs"):
            shared = ib["initramfs"] == "shared"
        else:
            found = _options_mode(root)
            shared = True if found is None else found
        _put(root, PARAM, "Y\n" if shared else "N\n")
