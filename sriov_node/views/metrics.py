"""Prometheus metrics for node_exporter's textfile collector: what the node has, what it should have, the last apply.

    write_textfile(host, desired, path)     # the daemon, after each reconcile (path: textfile_path(...))
    render(host, desired) -> str            # `sriov-node metrics` without a file

Every value is read when the metrics are made: the PFs and VFs from the kernel (reads only, the
same comparison as `status`), the last apply from the state file. The file is replaced
atomically under a hidden name that does not end in .prom, so the collector never reads half of it.

Metrics (gauges; labels pf = PCI address, name = netdev, block = the config block):

    sriov_node_config_valid                            1 when the config parsed, else 0
    sriov_node_pf_vfs_max{pf,name}                     sriov_totalvfs (a gauge: no _total suffix)
    sriov_node_pf_vfs_actual{pf,name}                  VFs present (sriov_numvfs)
    sriov_node_pf_vfs_desired{pf,name,block}           num_vfs of the block that selects the PF
    sriov_node_pf_converged{pf,name,block}             1 when the PF is as configured, else 0
    sriov_node_pf_differences{pf,name,block}           how many differences the comparison finds
    sriov_node_block_failed{block,kind}                1 per block that cannot apply on this host
    sriov_node_converged                               1 when every configured PF is as configured
    sriov_node_last_apply_timestamp_seconds            when the last apply ran (unix time)
    sriov_node_last_apply_duration_seconds             how long it took
    sriov_node_last_apply_success                      1 when it converged, else 0
    sriov_node_last_apply_writes                       writes it made
    sriov_node_last_apply_errors{pf,name,errno}        the kernel's refusals in the last run, by errno
"""

from __future__ import annotations

import os
from typing import Dict, List, Optional, Tuple

from sriov_node.host import Host
from sriov_node.engine.outcome import CONVERGED
from sriov_node.model import DesiredState

PREFIX = "sriov_node_"


# Every family the agent can write (name without PREFIX, HELP); all gauges.
FAMILIES: Tuple[Tuple[str, str], ...] = (
    ("config_valid", "1 when the sriov-node config parsed and passed its schema, else 0."),
    ("pf_vfs_max", "VFs the PF can have (sriov_totalvfs)."),
    ("pf_vfs_actual", "VFs the PF has (sriov_numvfs)."),
    ("pf_vfs_desired", "VFs the config asks of the PF (num_vfs)."),
    ("pf_converged", "1 when the PF is as the config wants it, else 0."),
    ("pf_differences", "Differences between the PF and the config (sriov-node status lists them)."),
    ("block_failed", "1 for each config block that cannot apply on this host."),
    ("converged", "1 when every configured PF is as configured and every block applies, else 0."),
    ("last_apply_timestamp_seconds", "When the last sriov-node apply ran (unix time)."),
    ("last_apply_duration_seconds", "How long the last sriov-node apply took."),
    ("last_apply_success", "1 when the last apply converged every PF it handled, else 0."),
    ("last_apply_writes", "Writes the last apply made to the kernel."),
    ("last_apply_errors", "Kernel refusals in the last apply, per PF and errno."),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


class _Family:
    def __init__(self, name: str, help_text: str):
        self.name = PREFIX + name
        self.help = help_text
        self.samples: List[Tuple[Dict[str, str], float]] = []

    def add(self, value: float, **labels: Optional[str]) -> None:
        self.samples.append(({k: v or "" for k, v in labels.items()}, value))

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        for labels, value in self.samples:
            inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{self.name}{{{inner}}} {_num(value)}" if inner else f"{self.name} {_num(value)}")
        return "\n".join(lines) + "\n"


def render(host: Host, desired: Optional[DesiredState], *, config_valid: bool = True) -> str:
    """The metrics in Prometheus text format (version 0.0.4)."""
    from sriov_node.engine.compare import compare
    from sriov_node.host.observe import observe
    from sriov_node.engine.reconcile import observe_target
    from sriov_node.engine.resolve import resolve
    from sriov_node.engine.state import read_state

    f = {name: _Family(name, text) for name, text in FAMILIES}
    f["config_valid"].add(1 if config_valid else 0)
    sels = [s.selector for s in desired.pfs] if desired else []
    heads = observe(host, vfs_of=(), macs=any(s.mac for s in sels), ifnames=[s.name for s in sels if s.name],
                    devices=[s.pci for s in sels if s.pci])
    for pf in heads.pfs:
        if pf.total_vfs is not None:
            f["pf_vfs_max"].add(pf.total_vfs, pf=pf.pci, name=pf.name)
        f["pf_vfs_actual"].add(pf.num_vfs or 0, pf=pf.pci, name=pf.name)
    if desired is not None:
        resolution = resolve(desired, heads)
        all_converged = not resolution.failures
        for target in resolution.targets:
            findings = compare(target.spec, observe_target(host, target))
            labels = {"pf": target.pf.pci, "name": target.pf.name, "block": target.spec.key}
            f["pf_vfs_desired"].add(target.spec.num_vfs, **labels)
            f["pf_converged"].add(0 if findings else 1, **labels)
            f["pf_differences"].add(len(findings), **labels)
            all_converged = all_converged and not findings
        for failure in resolution.failures:
            f["block_failed"].add(1, block=failure.key, kind=failure.kind)
        f["converged"].add(1 if all_converged else 0)
    state = read_state(host)
    if state:
        for key, family in (("unix_time", "last_apply_timestamp_seconds"),
                            ("duration_seconds", "last_apply_duration_seconds"), ("writes", "last_apply_writes")):
            value = state.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                f[family].add(value)
        if state.get("result"):
            f["last_apply_success"].add(1 if state.get("result") == CONVERGED else 0)
        for pci, record in sorted((state.get("pfs") or {}).items()):
            if not isinstance(record, dict):
                continue
            counts: Dict[str, int] = {}
            for name in record.get("errnos") or []:
                counts[str(name)] = counts.get(str(name), 0) + 1
            for name, count in sorted(counts.items()):
                f["last_apply_errors"].add(count, pf=pci, name=record.get("name"), errno=name)
    return "".join(family.render() for family in f.values() if family.samples)


def textfile_path(host: Host, desired: Optional[DesiredState]) -> Optional[str]:
    """The config's [metrics] textfile, under the host's root (None when the config names none)."""
    if desired is None or desired.metrics_textfile is None:
        return None
    rel = desired.metrics_textfile.lstrip("/")
    return host.path(os.path.dirname(rel), os.path.basename(rel))


# node_exporter's textfile directory as docs/guide.md sets it up; sriov-node-agent.service makes it
# writable (ReadWritePaths=-...), everything else under ProtectSystem=strict stays read-only
UNIT_TEXTFILE_DIR = "/var/lib/node_exporter/textfile"


def read_only_hint(path: str) -> Optional[str]:
    """Why `path` cannot be written when its directory is on a read-only mount (as ProtectSystem=strict
    leaves every directory the unit does not list), with the fix; None otherwise."""
    directory = os.path.dirname(path) or "."
    try:
        if not os.statvfs(directory).f_flag & os.ST_RDONLY:
            return None
    except OSError:
        return None
    return (f"{directory} is read-only to sriov-node: sriov-node-agent.service (ProtectSystem=strict) makes only "
            f"{UNIT_TEXTFILE_DIR} writable for metrics (it must exist before the agent starts); for another "
            f"directory add `[Service]` `ReadWritePaths={directory}` in a drop-in (systemctl edit "
            "sriov-node-agent.service) and restart the agent")


def write_textfile(host: Host, desired: Optional[DesiredState], path: str, *, config_valid: bool = True) -> str:
    """Render and atomically replace `path` (its directory must exist: node_exporter's). Returns `path`.

    Raises sriov_node.atomic.OutputError when the file cannot be written (with the unit's fix when
    its directory is read-only).
    """
    from sriov_node.atomic import OutputError, write_atomic

    try:
        write_atomic(path, render(host, desired, config_valid=config_valid).encode(), mode=0o644)
    except OutputError as exc:
        hint = read_only_hint(path)
        if hint is None:
            raise
        raise OutputError(f"{exc}; {hint}") from None
    return path
