"""ib_core's network namespace mode (RDMA devices shared by every netns, or each in one): read from the
module parameter, set at run time through iproute2's `rdma system set netns` (RDMA_NLDEV_CMD_SYS_SET),
given to the next load of ib_core through a modprobe.d option, and the record of a mode left for the
next boot. Judged by `checks/rdma.py`; carried out by `check --fix`.

The kernel (drivers/infiniband/core/device.c): `netns_mode` is `module_param_named(netns_mode,
ib_devices_shared_netns, bool, 0444)`, the same variable `rdma system set` changes, so the parameter
file shows the mode now. `rdma_compatdev_set()` returns 0 when the mode is already the one asked for,
and -EBUSY while any network namespace besides init_net exists (a pod, a container): then only the
next load of ib_core (a reboot) can change it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import List, Optional, Tuple

from sriov_node.errors import describe_os_error
from sriov_node.files import UnsafeFile, open_own_directory, read_regular
from sriov_node.host import Host
from sriov_node.platform import (BOOT_ID, IB_CORE_NETNS_MODE, RDMA_MODPROBE_FILE, RDMA_NETNS_RECORD,
                                 RdmaNetnsState)

# modprobe.d's directories, first wins for a file name; the files are then read in name order
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")
_TOOL_DIRS = ("usr/sbin", "sbin", "usr/bin", "bin")


def _full(host: Host, path: str) -> str:
    return os.path.join(host.root, path.lstrip("/"))


def _read(host: Host, path: str, limit: int = 65536) -> Optional[str]:
    try:
        return read_regular(_full(host, path), limit=limit).decode("utf-8", "replace")
    except (OSError, ValueError):
        return None


def _bool(text: str) -> Optional[bool]:
    """kstrtobool, as param_set_bool reads a bool parameter: y/t/1/on true, n/f/0/off false."""
    low = text.strip().lower()
    if low[:1] in ("y", "t", "1") or low[:2] == "on":
        return True
    if low[:1] in ("n", "f", "0") or low[:2] == "of":
        return False
    return None


def mode_of(shared: bool) -> str:
    return "shared" if shared else "exclusive"


def read_now(host: Host) -> Optional[str]:
    """The running ib_core's mode, None when ib_core is not loaded (no parameter file)."""
    text = _read(host, IB_CORE_NETNS_MODE, 64)
    value = _bool(text) if text is not None else None
    return None if value is None else mode_of(value)


def modprobe_files(host: Host) -> List[str]:
    """The modprobe.d files modprobe reads, in its order (root-relative paths)."""
    chosen = {}
    for directory in MODPROBE_DIRS:
        try:
            names = os.listdir(_full(host, directory))
        except OSError:
            continue
        for name in names:
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = f"{directory}/{name}"
    return [chosen[name] for name in sorted(chosen)]


def read_next_load(host: Host) -> Tuple[str, Optional[str]]:
    """(the mode ib_core gets at its next load, the file whose option gives it; None: no option, the
    module's default). Options accumulate in modprobe's order and the kernel takes the last value."""
    mode, source = "shared", None
    for path in modprobe_files(host):
        text = _read(host, path) or ""
        for line in text.replace("\\\n", " ").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "options" or words[1].replace("-", "_") != "ib_core":
                continue
            for word in words[2:]:
                key, _, value = word.partition("=")
                if key.replace("-", "_") == "netns_mode":
                    parsed = _bool(value)
                    if parsed is not None:
                        mode, source = mode_of(parsed), path
    return mode, source


def read_record(host: Host) -> Optional[dict]:
    text = _read(host, RDMA_NETNS_RECORD)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def find_tool(host: Host) -> Optional[str]:
    """The root's `rdma` (iproute2); a simulated host brings its own; a captured tree runs nothing."""
    if host.kind == "capture":
        return None
    for where in _TOOL_DIRS:
        path = os.path.join(host.root, where, "rdma")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def observe_rdma_netns(host: Host, wanted: Optional[str]) -> RdmaNetnsState:
    next_load, source = read_next_load(host)
    boot = _read(host, BOOT_ID, 128)
    return RdmaNetnsState(wanted=wanted, now=read_now(host), next_load=next_load, option_file=source,
                          pending=read_record(host), boot_id=boot.strip() if boot else None, tool=find_tool(host))


def set_now(host: Host, mode: str, timeout: float = 30.0) -> Optional[str]:
    """`rdma system set netns MODE`; None when it succeeded, else what it said (EBUSY: another netns
    exists). The caller reads the mode back."""
    tool = find_tool(host)
    if tool is None:
        return "the rdma tool (iproute2) is not installed"
    host.sysfs.counter.count += 1
    try:
        proc = subprocess.run([tool, "system", "set", "netns", mode], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        return (proc.stderr or proc.stdout).strip()[-500:] or f"exit {proc.returncode}"
    return None


def option_text(mode: str) -> str:
    return ("# Written by sriov-node check --fix (rdma_netns in its config): ib_core's network namespace mode\n"
            "# at its next load (1 shared, 0 exclusive).\n"
            f"options ib_core netns_mode={1 if mode == 'shared' else 0}\n")


def write_option(host: Host, mode: str) -> bool:
    """Give ib_core's next load `mode` (sriov-node's own modprobe.d file); False when it already had it."""
    from sriov_node.atomic import write_atomic

    full = _full(host, RDMA_MODPROBE_FILE)
    data = option_text(mode)
    if _read(host, RDMA_MODPROBE_FILE) == data:
        return False
    os.makedirs(os.path.dirname(full), mode=0o755, exist_ok=True)
    write_atomic(full, data.encode(), mode=0o644, follow=False)
    host.sysfs.counter.count += 1
    return True


def write_record(host: Host, record: Optional[dict]) -> None:
    """Keep (or, with None, drop) the record of a mode left for the next boot, under /var/lib/sriov-node."""
    from sriov_node.atomic import replace_at

    fd = open_own_directory(host.path("var/lib"), "sriov-node", create=record is not None)
    try:
        name = os.path.basename(RDMA_NETNS_RECORD)
        if record is None:
            try:
                os.unlink(name, dir_fd=fd)
            except FileNotFoundError:
                pass
            return
        replace_at(fd, _full(host, RDMA_NETNS_RECORD), (json.dumps(record, sort_keys=True) + "\n").encode(),
                   mode=0o644)
    finally:
        os.close(fd)


def note_reboot(host: Host, text: str) -> None:
    """Add `text` to /run/sriov-node/reboot-required (what status and check show), keeping what else is there."""
    from sriov_node.host.bootloader import write_reboot_required
    from sriov_node.platform import REBOOT_REQUIRED

    old = _read(host, REBOOT_REQUIRED) or ""
    lines = [ln for ln in old.splitlines() if ln.strip() and "rdma_netns" not in ln]
    write_reboot_required(host, "\n".join(lines + [text]))


def clear_record_quietly(host: Host) -> Optional[str]:
    try:
        write_record(host, None)
    except (OSError, UnsafeFile) as exc:
        return f"{RDMA_NETNS_RECORD}: {describe_os_error(exc)}"
    return None


def stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
