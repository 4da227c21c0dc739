"""sriov-node benchmarks: start-up, no-op re-apply and full convergence at 16 PFs x 256 VFs."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.path.join(os.path.dirname(sys.executable), "sriov-node")
QUICK = "--quick" in sys.argv


def timed(argv, repeat):
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def report(name, value, baseline, base_name):
    print(f"{name:<38} {value * 1000:9.1f} ms   {base_name:<30} {baseline * 1000:9.1f} ms   ratio {value / baseline:6.2f}")


def main() -> None:
    work = tempfile.mkdtemp(prefix="sriov-bench-")
    try:
        repeat = 5 if QUICK else 15
        python = timed([sys.executable, "-c", "pass"], repeat)
        report("sriov-node --help", timed([BIN, "--help"], repeat), python, "python -c pass")

        nics, pfs, vfs = (2, 2, 64) if QUICK else (4, 4, 256)
        root = os.path.join(work, "host")
        args = [BIN, "sim", "create", root] + sum((["--nic", f"e810:{pfs}:{vfs}"] for _ in range(nics)), [])
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
        config = os.path.join(work, "config.toml")
        with open(config, "w") as fh:
            fh.write(f'[[pf]]\nvendor = "8086"\ndevice = "159b"\nnum_vfs = {vfs}\n'
                     f'  [[pf.vfs]]\n  range = "0-{vfs // 2 - 1}"\n  driver = "vfio-pci"\n')
        cli = [BIN, "--root", root, "--config", config]
        report("validate", timed(cli + ["validate"], repeat), python, "python -c pass")

        # Full convergence vs the floor: the same writes straight into the simulated kernel.
        start = time.perf_counter()
        out = subprocess.run(cli + ["apply", "--json"], check=True, capture_output=True, text=True).stdout
        converge = time.perf_counter() - start
        writes = json.loads(out)["writes"]
        floor_root = os.path.join(work, "floor")
        subprocess.run(args[:3] + [floor_root] + args[4:], check=True, stdout=subprocess.DEVNULL)
        floor = _floor(floor_root, vfs)
        report(f"apply: {nics * pfs} PFs x {vfs} VFs ({writes} writes)", converge, floor, "same writes, no checks")

        # No-op re-apply vs reading the same state with a bare loop.
        noop = timed(cli + ["apply"], 3)
        reads = timed([sys.executable, "-c", _READ_ALL, root], 3)
        report("no-op re-apply (zero writes)", noop, reads, "bare read of all VF links")
    finally:
        shutil.rmtree(work, ignore_errors=True)


_READ_ALL = """
import os, sys
base = os.path.join(sys.argv[1], 'sys/bus/pci/devices')
for d in os.listdir(base):
    p = os.path.join(base, d)
    if os.path.exists(os.path.join(p, 'sriov_totalvfs')):
        open(os.path.join(p, 'sriov_numvfs')).read()
        for n in os.listdir(p):
            if n.startswith('virtfn'):
                vf = os.path.join(base, os.path.basename(os.readlink(os.path.join(p, n))))
                os.path.islink(os.path.join(vf, 'driver')) and os.readlink(os.path.join(vf, 'driver'))
                open(os.path.join(vf, 'driver_override')).read()
"""


def _floor(root: str, vfs: int) -> float:
    from sriov_node.host import open_host
    from sriov_node.host.observe import observe

    host = open_host(root)
    pfs = [pf.pci for pf in observe(host).pfs]
    start = time.perf_counter()
    host.modules.load("vfio-pci")
    for pf in pfs:
        host.sysfs.set_autoprobe(pf, False)
        host.sysfs.set_num_vfs(pf, vfs)
        for i in range(vfs // 2):
            vf = host.sysfs.vf_address(pf, i)
            host.sysfs.set_driver_override(vf, "vfio-pci")
            host.sysfs.drivers_probe(vf)
        host.sysfs.set_autoprobe(pf, True)
        for i in range(vfs // 2, vfs):
            host.sysfs.drivers_probe(host.sysfs.vf_address(pf, i))
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
