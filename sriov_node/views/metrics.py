"""Prometheus metrics for node_exporter's textfile collector: what the node has, what it should have, the last apply.

    write_textfile(host, desired, path)     # the daemon, after each reconcile (path: textfile_path(...):
                                            # [metrics] textfile, else DEFAULT_TEXTFILE when its directory exists)
    render(host, desired) -> str            # `sriov-node metrics` without a file

The PF values come from a survey (the same comparison as `status`): taken when the metrics are
made, or, in the daemon after a run of some PFs, those PFs' values from the run's report (the
others kept from the survey before); the last apply from the state file. The file is replaced
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
    sriov_node_applied_generation                      the applied generation's number (0: none yet)
    sriov_node_config_differs                          1 when the config file is not the applied generation
    sriov_node_checkpoint_pending                      1 while a checkpoint waits for commit or its deadline
    sriov_node_checkpoint_overdue                      1 when its deadline passed and nothing restored it

With the config file named (`config_file`), the PFs are compared with the applied generation, as
`status` compares them (before the first apply: with the file), and the generation families are
written; the daemon converges to that generation, so its values are already taken against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, FrozenSet, List, Optional, Tuple

from sriov_node.host import Host
from sriov_node.engine.outcome import CONVERGED, host_converged
from sriov_node.model import DesiredState

if TYPE_CHECKING:  # pragma: no cover
    from sriov_node.engine.reconcile import Report
    from sriov_node.engine.survey import Survey

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
    ("applied_generation", "The applied generation (sriov-node history), what the node converges to; 0 before the first."),
    ("config_differs", "1 when the config file is not the applied generation (edited, not applied), else 0."),
    ("checkpoint_pending", "1 while a checkpoint (apply --checkpoint) waits for sriov-node commit, else 0."),
    ("checkpoint_overdue", "1 when a pending checkpoint's deadline passed and nothing restored the previous "
                           "generation (sriov-node status says what to run), else 0."),
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


@dataclass
class Values:
    """What the PF metrics say, taken from a survey (or kept from one and updated from a run's report)."""

    pfs: Dict[str, Tuple[Optional[str], Optional[int], Optional[int]]]  # PF -> (name, sriov_totalvfs, sriov_numvfs)
    targets: Dict[str, Tuple[Optional[str], str, int, int]]  # PF -> (name, block, num_vfs wanted, differences)
    failures: Tuple[Tuple[str, str], ...]  # (block, kind) of each block that cannot apply here
    configured: bool  # a config was given: the target, block and node-wide metrics are written

    @property
    def converged(self) -> bool:
        return host_converged((t[3] for t in self.targets.values()), self.failures)


def values_of(seen: Survey, configured: bool = True) -> Values:
    """The metrics of a survey (taken with the targets' VFs)."""
    pfs = {pf.pci: (pf.name, pf.total_vfs, pf.num_vfs) for pf in seen.heads.pfs}
    if not configured:
        return Values(pfs, {}, (), False)
    targets = {j.target.pf.pci: (j.target.pf.name, j.target.spec.key, j.target.spec.num_vfs, len(j.findings))
               for j in seen.judged}
    return Values(pfs, targets, tuple((f.key, f.kind) for f in seen.resolution.failures), True)


def survey_values(host: Host, desired: Optional[DesiredState],
                  restore: Optional[Dict[str, Dict[str, Any]]] = None) -> Values:
    """Every PF read now (what `sriov-node metrics` and a run of every PF write); `restore`: what the
    applied generation still has to put back, judged as a difference (status does the same)."""
    from sriov_node.engine.survey import survey

    return values_of(survey(host, desired, restore=restore or None), desired is not None)


def after_run(kept: Values, host: Host, desired: DesiredState, report: "Report",
              only: FrozenSet[str]) -> Optional[Values]:
    """`kept` with the PFs of a per-PF run (`only`) taken from its report (the PF as the run read
    it back: nothing is read here); None when the report cannot say (a PF that is no target, a block
    that failed, a PF that vanished mid-run): survey every PF then."""
    outcomes = {o.pci: o for o in report.outcomes if o.pci is not None}
    if not kept.configured or len(outcomes) != len(report.outcomes) or set(outcomes) != set(only):
        return None
    specs = {spec.key: spec for spec in desired.pfs}
    values = Values(dict(kept.pfs), dict(kept.targets), kept.failures, True)
    for pci, o in outcomes.items():
        spec = specs.get(o.key)
        if spec is None or pci not in kept.targets or (not o.converged and not o.findings):
            return None
        head = report.states.get(pci)
        if head is None:
            return None
        values.pfs[pci] = (head.name, head.total_vfs, head.num_vfs)
        values.targets[pci] = (head.name, spec.key, spec.num_vfs, 0 if o.converged else len(o.findings))
    return values


def render(host: Host, desired: Optional[DesiredState], *, config_valid: bool = True,
           values: Optional[Values] = None, config_file: Optional[str] = None) -> str:
    """The metrics in Prometheus text format (version 0.0.4): `values`, else every PF read now,
    compared with the applied generation when there is one and `config_file` (the config file's
    path) is given, as `status` compares them; then the generation families too."""
    from sriov_node.engine.state import read_state

    applied = None
    restore = None
    if config_file is not None:
        from sriov_node.views.status import generation_status

        applied = generation_status(host, config_file)[0]
        if values is None and applied["desired"] is not None:
            desired = applied["desired"]  # what the node converges to, not the file (status does the same)
            restore = applied.get("restore")
    if values is None:
        values = survey_values(host, desired, restore)
    f = {name: _Family(name, text) for name, text in FAMILIES}
    f["config_valid"].add(1 if config_valid else 0)
    if applied is not None and "generation_error" not in applied["body"]:
        body = applied["body"]
        checkpoint = body.get("checkpoint") or {}
        f["applied_generation"].add(body["applied_generation"] or 0)
        # before the first apply the file is not applied (apply would record it), when there is one
        f["config_differs"].add(1 if body["config_differs"] or (
            body["applied_generation"] is None and desired is not None) else 0)
        f["checkpoint_pending"].add(1 if checkpoint else 0)
        f["checkpoint_overdue"].add(1 if checkpoint.get("overdue") else 0)
    for pci, (name, total, actual) in values.pfs.items():
        if total is not None:
            f["pf_vfs_max"].add(total, pf=pci, name=name)
        f["pf_vfs_actual"].add(actual or 0, pf=pci, name=name)
    if values.configured:
        for pci, (name, block, want, differences) in values.targets.items():
            labels = {"pf": pci, "name": name, "block": block}
            f["pf_vfs_desired"].add(want, **labels)
            f["pf_converged"].add(0 if differences else 1, **labels)
            f["pf_differences"].add(differences, **labels)
        for block, kind in values.failures:
            f["block_failed"].add(1, block=block, kind=kind)
        f["converged"].add(1 if values.converged else 0)
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


# The directory Debian's and Ubuntu's prometheus-node-exporter reads: its compiled-in
# --collector.textfile.directory (the package creates it; /etc/default/prometheus-node-exporter adds
# no other). Without [metrics] textfile, the metrics go there when it exists.
DISTRO_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
DEFAULT_TEXTFILE = DISTRO_TEXTFILE_DIR + "/sriov_node.prom"


def textfile_path(host: Host, desired: Optional[DesiredState]) -> Optional[str]:
    """Where the metrics file goes, under the host's root: the config's [metrics] textfile; without
    one, DEFAULT_TEXTFILE when the distribution's node exporter directory exists (else None: a node
    without the exporter gets no file and no complaint)."""
    if desired is None:
        return None
    if desired.metrics_textfile is None:
        rel = DEFAULT_TEXTFILE.lstrip("/")
        return host.path(os.path.dirname(rel), os.path.basename(rel)) \
            if os.path.isdir(host.path(DISTRO_TEXTFILE_DIR.lstrip("/"))) else None
    rel = desired.metrics_textfile.lstrip("/")
    return host.path(os.path.dirname(rel), os.path.basename(rel))


# The textfile directories sriov-node-agent.service makes writable (ReadWritePaths=-...), everything
# else under ProtectSystem=strict stays read-only: the distribution's, then the one the guide named
# before 0.1 (/var/lib/node_exporter/textfile), so that a node configured for it keeps its metrics.
UNIT_TEXTFILE_DIRS = (DISTRO_TEXTFILE_DIR, "/var/lib/node_exporter/textfile")
UNIT_TEXTFILE_DIR = UNIT_TEXTFILE_DIRS[0]


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
            f"{' and '.join(UNIT_TEXTFILE_DIRS)} writable for metrics (when they exist as the agent starts); for another "
            f"directory add `[Service]` `ReadWritePaths={directory}` in a drop-in (systemctl edit "
            "sriov-node-agent.service) and restart the agent")


def write_textfile(host: Host, desired: Optional[DesiredState], path: str, *, config_valid: bool = True,
                   values: Optional[Values] = None, config_file: Optional[str] = None) -> str:
    """Render and atomically replace `path` (its directory must exist: node_exporter's). Returns `path`.

    Raises sriov_node.atomic.OutputError when the file cannot be written (with the unit's fix when
    its directory is read-only).
    """
    from sriov_node.atomic import OutputError, write_atomic

    try:
        write_atomic(path, render(host, desired, config_valid=config_valid, values=values,
                                  config_file=config_file).encode(), mode=0o644)
    except OutputError as exc:
        hint = read_only_hint(path)
        if hint is None:
            raise
        raise OutputError(f"{exc}; {hint}") from None
    return path
