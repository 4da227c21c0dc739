"""The hot commands (validate, apply, status, boot, daemon) without typer: their bodies, and the fast path
that parses their command lines.

`parse(argv)` accepts only a command line it understands completely: the global --root/--config,
one of the hot commands and that command's options, each value valid (a float, its callback's
range). Anything else (--help, --version, completion, a bad or unknown option, a missing value,
an extra argument, an empty SRIOV_NODE_* variable) returns None and goes to typer, which answers
it as it always did (exit 2 and click's message for a bad option). The typer commands in
`converge.py` and `service.py` call the same bodies, so the two ways in run the same code.
`tests/test_fast_path.py` holds the table below to typer's declarations and the parse to click's.
"""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

from sriov_node.cli.app import (
    Exit,
    Interrupts,
    Options,
    echo,
    echo_problems,
    error_body,
    fail,
    finish,
    open_root,
    valid_timeout,
)
from sriov_node.errors import EXIT_PF_FAILED, SriovNodeError, UsageError

# command -> option -> (parameter, takes a value); every value option is a float of seconds
FLAG, VALUE = False, True
HOT: Dict[str, Dict[str, Tuple[str, bool]]] = {
    "validate": {"--json": ("as_json", FLAG)},
    "apply": {"--dry-run": ("dry_run", FLAG), "--json": ("as_json", FLAG), "--verbose": ("verbose", FLAG),
              "-v": ("verbose", FLAG), "--force": ("force", FLAG), "--timeout": ("timeout", VALUE),
              "--checkpoint": ("checkpoint", VALUE), "--detailed-exitcode": ("detailed_exitcode", FLAG)},
    "status": {"--json": ("as_json", FLAG), "--verbose": ("verbose", FLAG), "-v": ("verbose", FLAG),
               "--exit-code": ("exit_code", FLAG)},
    "boot": {"--wait": ("wait", VALUE), "--timeout": ("timeout", VALUE), "--json": ("as_json", FLAG)},
    "daemon": {"--no-notify": ("no_notify", FLAG), "--debounce": ("debounce", VALUE),
               "--timeout": ("timeout", VALUE)},
}
DEFAULTS: Dict[str, Dict[str, Any]] = {
    "validate": {"as_json": False},
    "apply": {"dry_run": False, "as_json": False, "verbose": False, "force": False, "timeout": 60.0,
              "checkpoint": None, "detailed_exitcode": False},
    "status": {"as_json": False, "verbose": False, "exit_code": False},
    "boot": {"wait": 60.0, "timeout": 60.0, "as_json": False},
    "daemon": {"no_notify": False, "debounce": 0.05, "timeout": 60.0},
}
GLOBAL = {"--root": "root", "--config": "config"}
ENVVARS = {"root": "SRIOV_NODE_ROOT", "config": "SRIOV_NODE_CONFIG"}


def parse(argv: List[str], environ: Any = os.environ) -> Optional[Tuple[str, Options, Dict[str, Any]]]:
    """(command, global options, the command's parameters) for a hot command line; None: typer's."""
    if any(k.startswith("_") and k.endswith("_COMPLETE") for k in environ):
        return None  # shell completion
    given: Dict[str, Any] = {}
    command: Optional[str] = None
    params: Dict[str, Any] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        table = HOT[command] if command else None
        if arg == "--":  # the end of the options: the command may follow, nothing after its own --
            if table is not None or i >= len(argv) or argv[i] not in HOT:
                if table is None or i < len(argv):
                    return None
                break
            continue
        if command is None and not arg.startswith("-"):
            if arg not in HOT:
                return None
            command, params = arg, dict(DEFAULTS[arg])
            continue
        if table is not None and len(arg) > 2 and arg[0] == "-" and arg[1] != "-":  # -vv: short flags together
            shorts = [table.get("-" + ch) for ch in arg[1:]]
            if not all(known and not known[1] for known in shorts):
                return None
            params.update((known[0], True) for known in shorts)
            continue
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        known = GLOBAL.get(name) if table is None else (table[name] if name in table else None)
        if known is None:
            return None
        param, takes_value = (known, VALUE) if table is None else known
        if not takes_value:
            if eq:
                return None  # a flag given a value: click's error
            params[param] = True
            continue
        if not eq:
            if i >= len(argv):
                return None  # the value is missing
            value = argv[i]
            i += 1
        if value.startswith("-"):
            return None  # an option where a value should be: let click decide
        if table is None:
            given[param] = value
            continue
        try:
            seconds = float(value)
        except ValueError:
            return None
        if not valid_timeout(seconds):
            return None
        params[param] = seconds
    if command is None:
        return None
    for param, var in ENVVARS.items():
        if param not in given and var in environ:
            if not environ[var]:
                return None  # an empty variable: click's versions differ; typer decides
            given[param] = environ[var]
    return command, Options(root=given.get("root", "/"), config=given.get("config")), params


def run(command: str, opts: Options, params: Dict[str, Any]) -> int:
    """A parsed hot command, ended as typer ends one (sriov_node.cli._run maps the rest)."""
    import sys

    try:
        try:
            globals()[command](opts, **params)
        except EOFError as exc:
            echo(err=True)
            raise _Abort() from exc
        except KeyboardInterrupt:
            return 130
        except OSError as exc:
            import errno

            if exc.errno != errno.EPIPE:
                raise
            sys.stdout = _Pacified(sys.stdout)  # as click: the reader went away (`| head`): exit 1, quietly
            sys.stderr = _Pacified(sys.stderr)
            sys.exit(1)
    except Exit as exc:
        return exc.exit_code
    except _Abort:
        return 130
    return 0


class _Abort(Exception):
    pass


class _Pacified:
    """click's PacifyFlushWrapper: a stream whose flush ignores EPIPE."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        import errno

        try:
            self.wrapped.flush()
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.wrapped, attr)


def validate(opts: Options, as_json: bool = False) -> None:
    from sriov_node.engine.reconcile import reconcile, unsupported
    from sriov_node.engine.survey import config_path, load_desired

    host = open_root(opts, as_json)
    try:
        desired = load_desired(host, config_path(host, opts.config))
        # the plans judged as apply judges them before its first write (a dry run: nothing written),
        # on the one survey that run takes
        planned = reconcile(host, desired, dry_run=True)
    except SriovNodeError as exc:
        fail(exc, as_json)
    assert planned.view is not None
    resolution = planned.view.resolution
    failures = list(resolution.failures)
    refused = [o for o in planned.outcomes if unsupported(o)]
    notices = list(planned.notices)

    def text() -> None:
        for notice in notices:
            echo(f"note: {notice}", err=True)
        for f in failures:
            echo(f"error: {desired.source}: {f.render()}", err=True)
        for o in refused:
            for line in (o.error or "").splitlines():
                echo(f"error: {desired.source}: {line}", err=True)
        problems = len(failures) + len(refused)
        verdict = "valid" if not problems else f"valid, but {problems} block problem(s) on this host"
        echo(f"{desired.source}: {verdict}; {len(desired.pfs)} [[pf]] block(s) select "
             f"{len(resolution.targets)} PF(s)")

    finish(EXIT_PF_FAILED if failures or refused else 0, as_json=as_json, text=text,
           body={"valid": not failures and not refused, "pfs": [t.pf.pci for t in resolution.targets],
                 "failures": [f.to_dict() for f in failures], "notices": notices,
                 "refused": [{"pf": o.pci, "block": o.key, "error": o.error, "refusals": (o.detail or {})["refusals"]}
                             for o in refused]})


def apply(opts: Options, dry_run: bool = False, as_json: bool = False, verbose: bool = False, force: bool = False,
          timeout: float = 60.0, checkpoint: Optional[float] = None, detailed_exitcode: bool = False) -> None:
    from sriov_node.views.progress import terminal_progress
    from sriov_node.engine.reconcile import config_path, load_desired

    from sriov_node import generations

    host = open_root(opts, as_json)
    if detailed_exitcode and not dry_run:
        fail(UsageError("--detailed-exitcode goes with --dry-run"), as_json)
    if checkpoint is not None and dry_run:
        fail(UsageError("--checkpoint makes no sense with --dry-run"), as_json)
    gen = None
    rdma: Optional[Dict[str, Any]] = None
    with Interrupts() as interrupts:
        try:
            if dry_run:  # reads only: no lock; what apply would do, from the same generation
                now = generations.current(host)
                desired = load_desired(host, config_path(host, opts.config))
                change = generations.Change(host, desired, now, command="apply", record=False, force=force,
                                            timeout=timeout, cancelled=interrupts.cancelled)
                report = change.run(dry_run=True)
                rdma = _rdma_netns(host, desired, report, dry_run=True)
            else:
                with generations.locked(host, timeout, interrupts.cancelled) as now:
                    desired = load_desired(host, config_path(host, opts.config))  # read under the lock
                    if checkpoint is not None and now is None:
                        raise UsageError("--checkpoint: no applied generation to fall back to; run sriov-node "
                                         "apply first")
                    change = generations.Change(host, desired, now, command="apply", checkpoint_seconds=checkpoint,
                                                force=force, timeout=timeout, cancelled=interrupts.cancelled)
                    with terminal_progress(host, desired, as_json=as_json) as progress:
                        change.progress = progress
                        report = change.run()
                    gen = change.record()
                    rdma = _rdma_netns(host, desired, report, dry_run=False)
        except SriovNodeError as exc:
            if detailed_exitcode:
                exc.exit_code = EXIT_PF_FAILED  # an invalid config is an error (1), not "changes pending" (2)
            fail(exc, as_json)
        # still inside the signal region: a signal from here until finish() decides the exit is
        # the report's "interrupted", never an exception between the run and its report
        unapplied = _file_not_applied(now, desired) if dry_run else None
        if unapplied:
            report.notices.append(unapplied)
        armed = generations.arm_expiry(host, gen, config=opts.config) if gen is not None and gen.pending else None
        body = report.to_dict()
        if dry_run:
            body = {"actions": body["actions"], "on_failure": body["on_failure"], "pfs": body["pfs"],
                    "result": body["result"]}  # what apply would answer (finish adds exit_code)
        else:
            body["generation"] = gen.number if gen else None
            body["checkpoint"] = dict(gen.checkpoint, expiry=armed) if gen is not None and gen.pending else None
        if rdma is not None:
            body["rdma_netns"] = rdma

        def text() -> None:
            _print_report(report, verbose)
            if gen is not None:
                echo(f"generation {gen.number} ({gen.command}, {gen.outcome})" + (
                    f": checkpoint; run sriov-node commit within {checkpoint:g} s to keep it ({armed})" if armed else ""))

        code = _detailed_exit_code(report, bool(unapplied)) if detailed_exitcode else report.exit_code
        if rdma is not None and rdma["problems"]:
            code = max(code, EXIT_PF_FAILED) if code != 2 else EXIT_PF_FAILED
        elif rdma is not None and detailed_exitcode and code == 0 and rdma["action"] not in ("nothing", "pending"):
            code = 2  # the dry run of a mode to change: changes pending
        finish(code, as_json=as_json, body=body, text=text, notes=lambda: echo_problems(report.notices, report.outcomes))


def _rdma_netns(host, desired, report, dry_run: bool) -> Optional[Dict[str, Any]]:
    """The config's rdma_netns, brought about as `check --fix` does (engine/rdma_netns.py); its notes
    and problems join the run's notices. None when the config names no mode."""
    if desired.rdma_netns is None:
        return None
    from sriov_node.engine.rdma_netns import converge_rdma_netns

    out = converge_rdma_netns(host, desired.rdma_netns, dry_run)
    report.notices.extend(out["notes"] + out["problems"] + ([out["reboot_required"]] if out["reboot_required"] else []))
    return out


def _file_not_applied(gen, desired) -> Optional[str]:
    """A dry run's note when the file is not the applied generation `gen` (apply would record it)."""
    import os

    if gen is not None and gen.sha256 == desired.digest:
        return None
    name = os.path.basename(desired.source)
    if gen is None:
        return f"no generation applied yet: sriov-node apply records {name} as generation 1"
    return f"{name} differs from the applied generation {gen.number}: sriov-node apply records it"


def _detailed_exit_code(report, unapplied: bool) -> int:
    """terraform plan's convention: 0 nothing to do, 2 changes pending, 1 an error; 3 apply would refuse."""
    from sriov_node.engine.outcome import PLANNED

    if report.exit_code:  # what apply would exit with: failed (1), refused (3)
        return report.exit_code
    return 2 if unapplied or any(o.status == PLANNED for o in report.outcomes) else 0


def _print_report(report, verbose: bool = False) -> None:
    from sriov_node.views.render import plan_lines, put_back_lines

    if not report.outcomes:
        echo("no PFs selected")
    width = max([len(o.name or "-") for o in report.outcomes] + [4])
    plans = {p.pf: p for p in report.plans}
    for o in report.outcomes:
        head = f"{o.pci or '-':<12}  {(o.name or '-'):<{width}}  {o.key:<6} {o.status:<11}"
        if report.dry_run and o.pci in plans and plans[o.pci].actions:
            plan = plans[o.pci]
            echo(head + f" {len(plan.actions)} action(s)")
            for line in plan_lines(plan, verbose=verbose):
                echo(line)
        else:
            echo((head + (f" {o.writes} write(s)" if o.writes else "")).rstrip())
    for line in put_back_lines(report):
        echo(line)


def status(opts: Options, as_json: bool = False, verbose: bool = False, exit_code: bool = False) -> None:
    import os

    from sriov_node.engine.state import load_state
    from sriov_node.views.status import build_status, generation_status
    from sriov_node.engine.survey import config_path, load_desired

    host = open_root(opts, as_json)
    path = config_path(host, opts.config)
    problem: Optional[SriovNodeError] = None
    desired = None
    try:
        if opts.config is not None or os.path.exists(path):
            desired = load_desired(host, path)
    except SriovNodeError as exc:
        problem = exc  # show the host anyway, then the error
    applied, lines = generation_status(host, path)
    unreadable = "generation_error" in applied["body"]  # never judged against a guess (an older one, the file)
    body = build_status(host, None if unreadable else
                        applied["desired"] if applied["desired"] is not None else desired,
                        restore=None if unreadable else applied.get("restore"))
    if unreadable:
        body["converged"] = None
    body.update(applied["body"])
    _, unusable = load_state(host)
    if unusable:
        body["notices"].append(unusable)
    if problem is not None:
        body["error"] = error_body(problem)

    def text() -> None:
        _print_status(body, False, verbose)
        for line in lines:
            echo(line)

    def errors() -> None:
        for line in str(problem or "").splitlines():
            echo(f"error: {line}", err=True)

    if exit_code:
        overdue = bool((body.get("checkpoint") or {}).get("overdue"))  # a rollback is due and nobody ran it
        code = 0 if body["applied_generation"] is not None and body["converged"] is True \
            and body["config_differs"] is False and problem is None and not overdue else 1
    else:
        code = problem.exit_code if problem is not None else 0
    finish(code, as_json=as_json, body=body, text=text, notes=errors)


def _print_status(body, as_json: bool, verbose: bool = False) -> None:
    if as_json:
        import json

        echo(json.dumps(body, indent=2))
        return
    from sriov_node.views.render import status_lines, use_colour

    for line in status_lines(body, verbose=verbose, colour=use_colour()):
        echo(line)
    for notice in body["notices"]:
        echo(f"note: {notice}", err=True)


def boot(opts: Options, wait: float = 60.0, timeout: float = 60.0, as_json: bool = False) -> None:
    from sriov_node.service.boot import run_boot
    from sriov_node.service.journal import setup_logging
    from sriov_node.engine.survey import config_path

    host = open_root(opts, as_json)
    log = setup_logging()
    with Interrupts() as interrupts:
        code, report = run_boot(host, config_path(host, opts.config), wait=wait, timeout=timeout, log=log,
                                cancelled=interrupts.cancelled, as_json=as_json)
    code = interrupts.decide(code)  # a signal before the report: 130/143, in the document too
    if as_json:
        import json

        if report is None:
            body = {"error": {"exit_code": code}}
        else:
            body = {**report.to_dict(), "exit_code": code}
            body["interrupted"] = body["interrupted"] or interrupts.signum is not None
        echo(json.dumps(body, indent=2))
    elif report is not None:
        for pci, o in report.outcomes.items():
            echo(f"{pci}  {o.name or '-'}  {o.key}  {o.status}" + (f" {o.writes} write(s)" if o.writes else ""))
        for why in report.missing:
            echo(f"not there after {report.waited:.0f} s: {why}")
    raise Exit(code)



def daemon(opts: Options, no_notify: bool = False, debounce: float = 0.05, timeout: float = 60.0) -> None:
    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier, setup_logging
    from sriov_node.engine.survey import config_path

    host = open_root(opts)
    log = setup_logging()
    try:
        notifier = Notifier(enabled=not no_notify)
    except RuntimeError as exc:
        log.error(str(exc))
        raise Exit(1)
    if not no_notify and not notifier.enabled:
        log.info("not started by systemd as a notify service (no NOTIFY_SOCKET): running in the foreground")
    raise Exit(Daemon(host, config_path(host, opts.config), notifier=notifier, log=log,
                            debounce=debounce, timeout=timeout).run())

