"""Runs INSIDE the kernel-lab guest (shell init), as root: deploy/kubernetes/entrypoint.sh as the agent's pod runs
it, in a mount namespace of its own with the guest's root bind-mounted at /host (its own /run, the host's
/etc/sriov-node at the same path, the ConfigMap's keys at /etc/sriov-node-configmap), on the real kernel.
A watcher reads the kernel and the device-plugin file while it converges. Prints `@@RESULTS <json>` for
tests/lab/test_kubernetes_lab.py.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)
SYS = "/sys/bus/pci/devices"
SMALL = "0000:01:00.0"
PLUGIN = "/run/sriov-node/device-plugin/config.json"
NODE = "lab-node-1"
# No `resource`: the device plugin discovers network (0x02) and accelerator (0x12) functions only, and
# the lab's VFs are NVMe (0x0108), so the node's plugin config is an empty resourceList; what is
# proven here is when the agent writes it (only once the node has converged), not what it selects
# (tests/test_export.py and tests/test_kubernetes_plugin_config.py do that on simulated NICs).
CONFIG = (f'[device_plugin]\nresource_prefix = "example.org"\nconfig_file = "{PLUGIN}"\n\n'
          f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "vfio-pci"\n')
DEFAULT = f'[[pf]]\npci = "{SMALL}"\nnum_vfs = 1\n'
results: Dict[str, Any] = {}


def sh(cmd: str, timeout: float = 120) -> Dict[str, Any]:
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=timeout)
        return {"rc": p.returncode, "stdout": p.stdout[-20000:], "stderr": p.stderr[-6000:]}
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": "TIMEOUT"}


def link(path: str) -> Any:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def vfs() -> List[Any]:
    out = []
    for entry in sorted(glob.glob(f"{SYS}/{SMALL}/virtfn*"), key=lambda p: int(p.rsplit("virtfn", 1)[1])):
        vf = link(entry)
        out.append([vf, link(f"{SYS}/{vf}/driver")])
    return out


def converged(view: List[Any]) -> bool:
    return len(view) == 4 and all(d == "vfio-pci" for _, d in view)


def named_vfs(text: str) -> Any:
    """How many VFs the plugin config's selectors name (pfNames/rootDevices "PF#0-3"), or what is wrong with it."""
    try:
        doc = json.loads(text)
        count = 0
        for resource in doc["resourceList"]:
            for entry in resource["selectors"].get("pfNames", []) + resource["selectors"].get("rootDevices", []):
                for part in entry.split("#", 1)[1].split(","):
                    lo, _, hi = part.partition("-")
                    count += int(hi or lo) - int(lo) + 1
        return count
    except (ValueError, KeyError, IndexError) as exc:
        return f"<{exc!r}: {text[:200]}>"


class Watcher(threading.Thread):
    """Reads the kernel's VFs and the plugin file until stopped: the file must never be there before convergence."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.samples = 0
        self.differs_without_file = 0
        self.file_while_differs: List[Any] = []
        self.first_file: Any = None
        self.contents: List[Any] = []  # each new content of the file: the VFs it names, and the kernel's then

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            present = os.path.exists(PLUGIN)
            view = vfs()
            self.samples += 1
            try:
                with open(PLUGIN) as fh:
                    text = fh.read()
            except OSError:
                text = None
            if text is not None and text != last:
                last = text
                self.contents.append({"named": named_vfs(text), "vfs": view})
            if present and self.first_file is None:
                self.first_file = {"vfs": view, "t": time.monotonic()}
            if present and not converged(view):
                self.file_while_differs.append(view)
            if not present and not converged(view):
                self.differs_without_file += 1
            time.sleep(0.005)


def checkpoint(in_pod: str) -> None:
    """On the host, beside the pod: a new layout applied with --checkpoint and never committed. The host's apply
    finds the pod's agent by its pid (hostPID) and leaves the expiry to it; the pod's agent follows the new
    generation, then restores the previous one at the deadline. The plugin file follows each converged layout."""
    with open("/etc/sriov-node/config.toml") as fh:
        results["config_before_checkpoint"] = fh.read()
    two = results["config_before_checkpoint"].replace("num_vfs = 4", "num_vfs = 2").replace('"0-3"', '"0-1"')
    with open("/etc/sriov-node/config.toml", "w") as fh:
        fh.write(two)
    start = time.monotonic()
    results["checkpoint"] = sh(f"{VENV_BIN}/sriov-node apply --checkpoint 20", timeout=300)
    results["after_checkpoint"] = vfs()
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(vfs()) != 4:
        time.sleep(0.1)
    while time.monotonic() < deadline and not converged(vfs()):
        time.sleep(0.1)
    results["rolled_back_seconds"] = round(time.monotonic() - start, 2)
    results["after_rollback"] = vfs()
    wait_file = time.monotonic() + 60  # the file follows once the restore run has converged
    while time.monotonic() < wait_file and not os.path.exists(PLUGIN):
        time.sleep(0.05)
    time.sleep(1)  # one more second of watching after the roll-back
    with open("/etc/sriov-node/config.toml") as fh:
        results["config_after_rollback"] = fh.read()
    results["history_after_rollback"] = sh(f"{VENV_BIN}/sriov-node history --json")
    results["pod_ready_after_rollback"] = sh(
        f"{in_pod}sriov-node --root /host --config /etc/sriov-node/config.toml status --exit-code")["rc"]


def scenario_pod() -> None:
    results["setup"] = sh("modprobe nvme")
    deadline = time.monotonic() + 60
    while not link(f"{SYS}/{SMALL}/driver") and time.monotonic() < deadline:
        time.sleep(0.1)
    results["vfs_before"] = vfs()
    os.makedirs("/tmp/configmap")
    with open(f"/tmp/configmap/{NODE}.toml", "w") as fh:
        fh.write(CONFIG)
    with open("/tmp/configmap/default.toml", "w") as fh:
        fh.write(DEFAULT)
    for d in ("/host", "/etc/sriov-node", "/etc/sriov-node-configmap"):
        os.makedirs(d, exist_ok=True)  # the kubelet's mount points; hostPath /etc/sriov-node: DirectoryOrCreate
    # The pod: its own mount namespace, the host's / at /host, its own /run, the host's /etc/sriov-node at
    # the same path, the ConfigMap mounted; env as the DaemonSet gives it. The same pid namespace (hostPID).
    pod = ("mount --rbind / /host && mount -t tmpfs tmpfs /run "
           "&& mount --bind /host/etc/sriov-node /etc/sriov-node "
           "&& mount --bind /tmp/configmap /etc/sriov-node-configmap "
           f"&& exec sh {REPO}/deploy/kubernetes/entrypoint.sh")
    env = {"PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}", "HOME": "/root",
           "LANG": "C.UTF-8", "NODE_NAME": NODE, "SRIOV_NODE_ROOT": "/host",
           "SRIOV_NODE_CONFIGS": "/etc/sriov-node-configmap", "SRIOV_NODE_CONFIG": "/etc/sriov-node/config.toml"}
    watcher = Watcher()
    watcher.start()
    log = open("/tmp/pod.log", "w")
    start = time.monotonic()
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", pod],
                            stdout=log, stderr=subprocess.STDOUT, env=env)
    in_pod = f"nsenter --target {proc.pid} --mount -- env PATH={env['PATH']} "
    results["pod_pid"] = proc.pid
    probe = f"{in_pod}sriov-node --root /host --config /etc/sriov-node/config.toml status --exit-code"
    ready = None
    probes = []
    while time.monotonic() - start < 400 and proc.poll() is None:
        r = sh(probe, timeout=120)
        probes.append(r["rc"])
        if r["rc"] == 0:
            ready = round(time.monotonic() - start, 2)
            break
        time.sleep(1)
    results["ready_seconds"] = ready
    results["probes"] = probes
    results["exited_early"] = proc.poll()
    # the plugin file: when it first appeared, what the kernel showed then
    wait_file = time.monotonic() + 60
    while watcher.first_file is None and time.monotonic() < wait_file:
        time.sleep(0.05)
    results["watch"] = {"samples": watcher.samples, "differs_without_file": watcher.differs_without_file,
                        "file_while_differs": watcher.file_while_differs[:5],
                        "first_file_vfs": (watcher.first_file or {}).get("vfs")}
    if ready is not None:
        checkpoint(in_pod)
    watcher.stop.set()
    watcher.join()
    results["contents"] = watcher.contents
    try:
        with open(PLUGIN) as fh:
            results["plugin_config"] = json.load(fh)
    except (OSError, ValueError) as exc:
        results["plugin_config"] = f"<{exc}>"
    results["vfs_ready"] = vfs()
    results["host_config"] = open("/etc/sriov-node/config.toml").read() if os.path.exists(
        "/etc/sriov-node/config.toml") else None
    results["history"] = sh(f"{VENV_BIN}/sriov-node history --json")  # on the host, its own root
    results["host_run"] = sorted(os.listdir("/run/sriov-node")) if os.path.isdir("/run/sriov-node") else None
    results["agent_pid"] = open("/run/sriov-node/agent.pid").read().strip() if os.path.exists(
        "/run/sriov-node/agent.pid") else None
    results["pod_pid"] = proc.pid
    results["pod_run"] = sh(f"{in_pod}ls -A /run")
    results["host_status"] = sh(f"{VENV_BIN}/sriov-node status --exit-code")  # the host's view agrees
    # SIGTERM, as the kubelet stops the pod
    t = time.monotonic()
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
    try:
        results["term_rc"] = proc.wait(90)
    except subprocess.TimeoutExpired:
        results["term_rc"] = None
        proc.kill()
    results["term_seconds"] = round(time.monotonic() - t, 2)
    results["agent_pid_after"] = os.path.exists("/run/sriov-node/agent.pid")
    results["vfs_after_stop"] = vfs()
    log.close()
    results["log"] = open("/tmp/pod.log").read()[-20000:]


if __name__ == "__main__":
    begin = time.monotonic()
    {"pod": scenario_pod}[sys.argv[1]]()
    results["guest_seconds"] = round(time.monotonic() - begin, 1)
    print("@@RESULTS " + json.dumps(results), flush=True)
