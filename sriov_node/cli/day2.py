"""history, commit, rollback: the applied generations (sriov_node/generations.py) on the command line."""

from __future__ import annotations

import json
import time
from typing import Optional

import typer

from sriov_node.cli.app import Interrupts, app, check_timeout, echo_problems, examples, fail, open_root
from sriov_node.errors import SriovNodeError, UsageError


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _checkpoint_words(gen) -> str:
    from sriov_node.views.status import checkpoint_view

    cp = gen.checkpoint
    if not cp:
        return ""
    view = checkpoint_view(gen)
    if view is not None and view["overdue"]:
        return f"checkpoint {view['words']}"
    if view is not None:
        return f"checkpoint pending until {time.strftime('%H:%M:%S', time.localtime(view['deadline']))} " \
               f"(else back to {view['previous']})"
    return f"checkpoint {cp.get('state')}"


@app.command(epilog=examples("sriov-node history", "sriov-node history --diff 3", "sriov-node history --json"))
def history(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
    diff: Optional[int] = typer.Option(None, "--diff", metavar="N",
                                       help="The TOML diff of generation N against the current one."),
) -> None:
    """The applied generations, oldest first; the newest is current (what the node converges to)."""
    from sriov_node import generations

    host = open_root(ctx, as_json)
    try:
        gens = generations.history(host)
        if diff is not None:
            _print_diff(host, generations.get(host, diff), gens, as_json)
            return
    except SriovNodeError as exc:
        fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps({"current": gens[-1].number if gens else None,
                               "generations": [g.to_dict() for g in gens]}, indent=2))
        return
    if not gens:
        typer.echo("no generation applied yet: run sriov-node apply")
        return
    typer.echo(f"{'GEN':>5}  {'TIME':<19}  {'COMMAND':<18} {'OUTCOME':<11} {'SHA256':<12}  NOTE")
    for g in gens:
        mark = "*" if g is gens[-1] else " "
        note = "; ".join(x for x in (f"restores {g.restored_from}" if g.restored_from else "",
                                     _checkpoint_words(g), "current" if g is gens[-1] else "") if x)
        typer.echo(f"{mark}{g.number:>4}  {_when(g.time):<19}  {g.command:<18} {g.outcome:<11} {g.sha256[:12]}  "
                   f"{note}".rstrip())


def _print_diff(host, old, gens, as_json: bool) -> None:
    import difflib

    new = gens[-1]
    a = old.config.decode("utf-8", "replace").splitlines(keepends=True)
    b = new.config.decode("utf-8", "replace").splitlines(keepends=True)
    lines = list(difflib.unified_diff(a, b, f"generation {old.number} ({old.command}, {_when(old.time)})",
                                      f"generation {new.number} (current)"))
    if as_json:
        typer.echo(json.dumps({"from": old.number, "to": new.number, "same": not lines, "diff": "".join(lines)},
                              indent=2))
        return
    if not lines:
        typer.echo(f"generation {old.number} has the same config as the current generation {new.number}")
        return
    for line in lines:
        typer.echo(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n", nl=False)


@app.command(epilog=examples("sriov-node apply --checkpoint 120 && sriov-node commit"))
def commit(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
           timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout,
                                         help="How long to wait for a run holding the apply lock.")) -> None:
    """Keep the pending checkpoint (apply --checkpoint): it becomes permanent, no rollback follows."""
    from sriov_node import generations
    from sriov_node.engine.state import ApplyLock

    host = open_root(ctx, as_json)
    try:
        host.check_writable()
        with ApplyLock(host, timeout):
            gen = generations.commit(host)
    except SriovNodeError as exc:
        fail(exc, as_json)
    generations.disarm_expiry(host, gen)
    if as_json:
        typer.echo(json.dumps({"committed": gen.number}, indent=2))
    else:
        typer.echo(f"generation {gen.number} committed: it stays")


@app.command(epilog=examples("sriov-node rollback", "sriov-node rollback 3", "sriov-node rollback --force"))
def rollback(
    ctx: typer.Context,
    number: Optional[int] = typer.Argument(None, metavar="[N]", help="The generation to restore [default: the previous one]."),
    force: bool = typer.Option(False, "--force", help="Disable or rebind VFs even while in use."),
    if_uncommitted: Optional[int] = typer.Option(
        None, "--if-uncommitted", metavar="N",
        help="Only if checkpoint generation N is still current and uncommitted: restore its previous one "
             "(what the checkpoint timer runs). Otherwise do nothing and exit 0."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document on stdout (errors included) instead of text."),
    timeout: float = typer.Option(60.0, "--timeout", metavar="SECONDS", callback=check_timeout, help="Deadline in seconds for each wait."),
) -> None:
    """Restore an earlier generation: the host (converged and read back) and the config file; recorded as a new
    generation. The previous one is a pending checkpoint's fallback, else the newest whose config differs.

    Exit as apply: 0 converged, 1 a PF failed, 2 invalid, 3 refused (VFs in use: nothing changed; --force).
    """
    from sriov_node import generations

    host = open_root(ctx, as_json)
    if number is not None and if_uncommitted is not None:
        fail(UsageError("give N or --if-uncommitted N, not both"), as_json)
    with Interrupts() as interrupts:
        try:
            if if_uncommitted is not None:
                result = generations.expire_checkpoint(host, if_uncommitted, timeout=timeout, force=force,
                                                       cancelled=interrupts.cancelled)
                if result is None:
                    gen = generations.current(host)
                    words = (f"generation {if_uncommitted} is not an uncommitted current checkpoint "
                             f"(current: {gen.number if gen else 'none'}): nothing to do")
                    typer.echo(json.dumps({"restored": None, "message": words}, indent=2) if as_json else words)
                    raise typer.Exit(0)
            else:
                if number is None:
                    discarded = generations.discard_edit(host, ctx.obj.config, timeout=timeout,
                                                         cancelled=interrupts.cancelled)
                    if discarded is not None:
                        words = (f"{discarded.config_path} held an edit that was never applied: it is taken back "
                                 f"(kept as {discarded.saved}); the file is generation {discarded.current.number} "
                                 "again and the host was not touched")
                        typer.echo(json.dumps({"restored": None, "discarded_edit": discarded.saved,
                                               "generation": discarded.current.number, "message": words}, indent=2)
                                   if as_json else words)
                        raise typer.Exit(0)
                target = generations.rollback_target(host, number)
                result = generations.restore(host, target, config_path=ctx.obj.config, force=force, timeout=timeout,
                                             cancelled=interrupts.cancelled)
        except SriovNodeError as exc:
            fail(exc, as_json)
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        from sriov_node.cli.hot import _print_report

        _print_report(result.report)
        if result.already:
            typer.echo(f"generation {result.target.number}'s config is already the current one: nothing new "
                       f"recorded ({result.result})")
        elif result.generation is not None:
            typer.echo(f"restored generation {result.target.number} as generation {result.generation.number}"
                       + (f"; {result.config_path} holds its config" if result.config_path else ""))
        else:
            typer.echo(f"generation {result.target.number} not restored: nothing was changed")
    echo_problems(result.notices, result.outcomes)
    raise interrupts.exit(result.exit_code)
