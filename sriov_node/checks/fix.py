"""`check --fix`: what to change in the boot loader so the next boot has the IOMMU arguments.

Pure: from the observed boot files it computes the new file texts and the regeneration command;
sriov_node/host/bootloader.py writes them (backup, atomic replace) and runs the command. Only the
boot loader, never firmware.

Debian/Ubuntu: the arguments go into sriov-node's own drop-in /etc/default/grub.d/99-sriov-node.cfg
(sourced after /etc/default/grub and the other grub.d files, so it wins over a cloud image's
50-cloudimg-settings.cfg); a contradicting argument is removed where it stands, the only edit of
the files grub-mkconfig sources; then `update-grub` (or `grub-mkconfig -o`).
RHEL/Fedora: `grubby --update-kernel=ALL --args=... --remove-args=...` edits the BLS entries;
sriov-node edits /etc/kernel/cmdline (kernels installed later) and GRUB_CMDLINE_LINUX (a later
grub2-mkconfig) itself. Under a --root other than /, grubby gets that root's entry directory and
grubenv; grub-mkconfig cannot be pointed at another root's configuration, so it is only printed.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

from sriov_node.checks import bootcfg, kargs
from sriov_node.checks.diagnose import Scope, grub_sources, needed, next_boot, recipe_change, x86
from sriov_node.platform import BLS_ENTRIES, GRUB_DROPIN, BootFiles, Command, FileChange, FixPlan, PlatformState

Which = Callable[[str], Optional[str]]

# the package that brings each tool the fix needs
TOOL_PACKAGES = {
    "grubby": "grubby (RHEL, Fedora, CentOS: dnf install grubby)",
    "update-grub": "grub2-common (Debian, Ubuntu: apt install grub2-common)",
    "grub-mkconfig": "grub2-common (Debian, Ubuntu: apt install grub2-common)",
    "grub2-mkconfig": "grub2-tools (RHEL, Fedora: dnf install grub2-tools; grub2 on SUSE)",
}
GRUB_REGEN = ("update-grub", "grub-mkconfig", "grub2-mkconfig")
OWN_PROBLEM = (": sriov-node writes only a regular file of its own there; remove what stands in its place and run "
               "sriov-node check --fix again; nothing was changed")


def _missing(tools: Sequence[str], where: str, why: str) -> str:
    """'<why>, and <tool> is not found <where>: install <package>'."""
    packages = " or ".join(dict.fromkeys(TOOL_PACKAGES[t] for t in tools))
    names = f"{tools[0]} is not" if len(tools) == 1 else f"none of {', '.join(tools)} is"
    return f"{why}, and {names} found {where}: install {packages}"


def _grub_regen(state: PlatformState, which: Which, root_which: Which) -> Optional[Command]:
    """The command that turns the edited defaults into what the next boot reads (None: nothing to
    regenerate, the next boot reads the defaults themselves, as check does without a grub.cfg)."""
    boot = state.boot
    cfg = boot.grub_cfg.path if boot is not None and boot.grub_cfg is not None else "/boot/grub/grub.cfg"
    why = f"the next boot reads {cfg}, which only {' or '.join(GRUB_REGEN)} regenerates"
    if not state.live:
        if boot is None or boot.grub_cfg is None:
            return None
        for tool in GRUB_REGEN:
            if root_which(tool):
                argv = ("chroot", state.root, tool) + (() if tool == "update-grub" else ("-o", cfg))
                return Command(argv, False, f"grub-mkconfig reads this machine's /etc/default/grub and /boot, not "
                                            f"those under {state.root}: run it inside {state.root} (with /dev, "
                                            "/proc and /sys bind-mounted there)")
        missing = _missing(GRUB_REGEN, f"under {state.root} (in its PATH directories)", why)
        return Command(("chroot", state.root, "update-grub"), False, missing, missing=missing)
    found = which("update-grub")
    if found:
        return Command(("update-grub",), True, program=found)
    for tool in ("grub-mkconfig", "grub2-mkconfig"):
        found = which(tool)
        if found:
            return Command((tool, "-o", cfg), True, program=found)
    missing = _missing(GRUB_REGEN, "on PATH or in the sbin directories", why)
    return Command(("update-grub",), False, missing, missing=missing)


def _grubby(state: PlatformState, entries: List[bootcfg.BlsEntry], want: Tuple[str, ...], which: Which
            ) -> Optional[Command]:
    add = tuple(a for a in want if any(not kargs.satisfied(e.words, a) for e in entries))
    drop = tuple(sorted({w for e in entries for w in kargs.contradicting(e.words)}))
    if not add and not drop:
        return None
    argv = ["grubby", "--update-kernel=ALL"]
    if add:
        argv.append(f"--args={' '.join(add)}")
    if drop:
        argv.append(f"--remove-args={' '.join(drop)}")
    if not state.live:
        boot = state.boot
        argv.append(f"--bls-directory={state.root.rstrip('/')}{BLS_ENTRIES}")
        if boot is not None and boot.grubenv is not None:
            argv.append(f"--env={state.root.rstrip('/')}{boot.grubenv.path}")
    found = which("grubby")
    backup = tuple(e.path for e in entries)
    if not found:
        where = "on PATH or in the sbin directories" if state.live else "on PATH"
        missing = _missing(("grubby",), where, f"the next boot reads the options lines of {BLS_ENTRIES}/*.conf, "
                                               "which sriov-node changes only through grubby")
        return Command(tuple(argv), False, missing, missing=missing)
    return Command(tuple(argv), True, program=found, backup=backup)


def _file_fix(path: str, text: Optional[str], want: Tuple[str, ...]) -> Optional[FileChange]:
    if text is None:
        return None
    words = kargs.split_cmdline(text)
    if not kargs.wants_change(words, want):
        return None
    new = kargs.join(kargs.fix_words(words, want)) + ("\n" if text.endswith("\n") or not text else "")
    return FileChange(path, text, new)


def plan_fix(state: PlatformState, scope: Scope, which: Which, root_which: Optional[Which] = None) -> FixPlan:
    """The boot-loader changes that give the next boot the arguments vfio-pci needs.

    `which` finds a tool the fix runs (on PATH); `root_which` one it prints to run inside a --root
    other than / (chroot ROOT tool: under that root's PATH directories). When a tool the next boot
    depends on is missing, the plan is blocked: it names the tool and its package, and nothing is
    written (files edited without it would claim a next boot that will not happen)."""
    want = needed(state)
    if scope.has_config and not scope.vfio:
        return FixPlan((), notes=("no VF group wants vfio-pci: the boot loader needs no IOMMU argument",))
    if not x86(state):
        return FixPlan((), problems=("not an x86 machine (no Intel or AMD CPU, no DMAR/IVRS table): the kernel "
                                     "argument recipe does not apply; nothing was changed",))
    boot = state.boot
    if boot is None or boot.flavour is None:
        return FixPlan(want, problems=("no boot loader configuration found (/etc/default/grub, "
                                       "/boot/loader/entries): add the arguments to your boot loader by hand: "
                                       + " ".join(want),))
    running = kargs.split_cmdline(state.cmdline.text or "")
    changes: List[FileChange] = []
    commands: List[Command] = []
    problems: List[str] = []
    notes: List[str] = []
    before = next_boot(boot, want)
    if boot.flavour == "grub":
        unreadable = [f"{f.path}: {f.problem.partition(';')[0]}{OWN_PROBLEM}" if f.path == GRUB_DROPIN else
                      f"{f.path}: {f.problem}"
                      for f in [boot.grub_defaults, *boot.grub_dropins] if f.problem]
        if unreadable:
            return FixPlan(want, problems=tuple(unreadable))
        sources = grub_sources(boot)
        if boot.dropins_sourced:
            edit = bootcfg.edit_grub_dropin(sources, want, GRUB_DROPIN)
        else:
            edit = bootcfg.edit_grub(sources, want)
        if edit.problem:
            return FixPlan(want, problems=(edit.problem,))
        changes += [FileChange(s.path, s.text, edit.texts[s.path], own=s.path == GRUB_DROPIN)
                    for s in sources if s.path in edit.texts]
        if GRUB_DROPIN in edit.texts and all(s.path != GRUB_DROPIN for s in sources):
            changes.append(FileChange(GRUB_DROPIN, "", edit.texts[GRUB_DROPIN], own=True, created=True))
        if any(c.path == GRUB_DROPIN for c in changes):
            notes.append(f"the arguments are in {GRUB_DROPIN}, sriov-node's own file: to undo, delete it and run "
                         "update-grub")
        stale = before.words is not None and kargs.wants_change(before.words, want)
        if changes or stale:
            regen = _grub_regen(state, which, root_which or (lambda name: None))
            if regen is not None:
                commands.append(regen)
            else:
                notes.append(f"no grub.cfg under {state.root}: the next boot is read from the defaults themselves "
                             "(nothing to regenerate)")
        old_words = before.words or ()
    else:
        if boot.bls_problem:
            return FixPlan(want, problems=(f"{BLS_ENTRIES}: {boot.bls_problem}",))
        env = bootcfg.parse_grubenv(boot.grubenv.text or "") if boot.grubenv else {}
        entries = list(bootcfg.bls_entries([(f.path, f.text) for f in boot.bls_entries if f.text is not None], env))
        unreadable = [f"{f.path}: {f.problem}" for f in boot.bls_entries if f.problem]
        if unreadable:
            return FixPlan(want, problems=tuple(unreadable))
        grubby = _grubby(state, entries, want, which)
        if grubby is not None:
            commands.append(grubby)
        change = _file_fix(boot.kernel_cmdline.path, boot.kernel_cmdline.text, want)
        if change is not None:
            changes.append(change)
        if boot.grub_defaults.text is not None:
            edit = bootcfg.edit_grub(grub_sources(boot), want)
            if edit.problem:
                problems.append(edit.problem)
            changes += [FileChange(s.path, s.text, edit.texts[s.path]) for s in grub_sources(boot)
                        if s.path in edit.texts]
        old_words = before.words or ()
    missing = [c.missing for c in commands if c.missing]
    if missing:
        problems += [f"{m}; nothing was changed" for m in missing]
    return FixPlan(want, tuple(changes), tuple(commands), tuple(problems),
                   notes=tuple(notes), reboot=kargs.wants_change(running, want),
                   summary=recipe_change(old_words, want), blocked=bool(missing))


def grubby_result(before: BootFiles, after: BootFiles, want: Tuple[str, ...]) -> List[str]:
    """Entries grubby did not leave as the recipe says (the words of each entry, order aside)."""
    env_before = bootcfg.parse_grubenv(before.grubenv.text or "") if before.grubenv else {}
    env_after = bootcfg.parse_grubenv(after.grubenv.text or "") if after.grubenv else {}
    old = {e.path: e for e in bootcfg.bls_entries([(f.path, f.text) for f in before.bls_entries
                                                   if f.text is not None], env_before)}
    wrong = []
    for e in bootcfg.bls_entries([(f.path, f.text) for f in after.bls_entries if f.text is not None], env_after):
        expected = kargs.fix_words(old[e.path].words, want) if e.path in old else None
        if expected is not None and sorted(expected) != sorted(e.words):
            wrong.append(f"{e.path}: options became {kargs.join(e.words)!r}, expected {kargs.join(expected)!r}")
    return wrong
