"""`check --fix`: what to change in the boot loader so the next boot has the IOMMU arguments.

Pure: from the observed boot files it computes the new file texts and the regeneration command;
sriov_node/host/bootloader.py writes them (backup, atomic replace) and runs the command. Only the
boot loader, never firmware.

Debian/Ubuntu: the files grub-mkconfig sources, then `update-grub` (or `grub-mkconfig -o`).
RHEL/Fedora: `grubby --update-kernel=ALL --args=... --remove-args=...` edits the BLS entries;
sriov-node edits /etc/kernel/cmdline (kernels installed later) and GRUB_CMDLINE_LINUX (a later
grub2-mkconfig) itself. Under a --root other than /, grubby gets that root's entry directory and
grubenv; grub-mkconfig cannot be pointed at another root's configuration, so it is only printed.
"""

from __future__ import annotations

import difflib
import shlex
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from sriov_node.checks import bootcfg, kargs
from sriov_node.checks.diagnose import Scope, grub_sources, needed, next_boot, recipe_change, x86
from sriov_node.host.platform import BLS_ENTRIES, BootFiles, PlatformState

Which = Callable[[str], Optional[str]]


@dataclass(frozen=True)
class FileChange:
    path: str  # as the machine sees it
    old: str
    new: str

    def diff(self) -> str:
        return "".join(difflib.unified_diff(self.old.splitlines(True), self.new.splitlines(True),
                                            f"{self.path} (now)", f"{self.path} (fixed)"))


@dataclass(frozen=True)
class Command:
    argv: Tuple[str, ...]  # as shown; argv[0] is the tool's name
    run: bool  # False: printed for a person to run
    why_not: Optional[str] = None
    program: Optional[str] = None  # the tool found on PATH
    backup: Tuple[str, ...] = ()  # files to copy aside before it runs (it edits them itself)

    def display(self) -> str:
        return " ".join(shlex.quote(a) for a in self.argv)


@dataclass(frozen=True)
class FixPlan:
    needed: Tuple[str, ...]
    changes: Tuple[FileChange, ...] = ()
    commands: Tuple[Command, ...] = ()
    problems: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    reboot: bool = False  # the running kernel lacks what the next boot gets
    summary: str = ""

    @property
    def empty(self) -> bool:
        return not self.changes and not self.commands


def _grub_regen(state: PlatformState, which: Which) -> Command:
    boot = state.boot
    cfg = boot.grub_cfg.path if boot is not None and boot.grub_cfg is not None else "/boot/grub/grub.cfg"
    if not state.live:
        return Command(("chroot", state.root, "update-grub"), False,
                       f"grub-mkconfig reads this machine's /etc/default/grub and /boot, not those under {state.root}: "
                       f"run it inside {state.root} (with /dev, /proc and /sys bind-mounted there)")
    found = which("update-grub")
    if found:
        return Command(("update-grub",), True, program=found)
    for tool in ("grub-mkconfig", "grub2-mkconfig"):
        found = which(tool)
        if found:
            return Command((tool, "-o", cfg), True, program=found)
    return Command(("update-grub",), False, "neither update-grub nor grub-mkconfig is on PATH: regenerate "
                                            f"{cfg} with your distribution's tool")


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
        return Command(tuple(argv), False, "grubby is not on PATH (install the grubby package), or edit the "
                                           f"options lines in {BLS_ENTRIES}/*.conf")
    return Command(tuple(argv), True, program=found, backup=backup)


def _file_fix(path: str, text: Optional[str], want: Tuple[str, ...]) -> Optional[FileChange]:
    if text is None:
        return None
    words = kargs.split_cmdline(text)
    if not kargs.wants_change(words, want):
        return None
    new = kargs.join(kargs.fix_words(words, want)) + ("\n" if text.endswith("\n") or not text else "")
    return FileChange(path, text, new)


def plan_fix(state: PlatformState, scope: Scope, which: Which) -> FixPlan:
    """The boot-loader changes that give the next boot the arguments vfio-pci needs."""
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
    before = next_boot(boot, want)
    if boot.flavour == "grub":
        unreadable = [f"{f.path}: {f.problem}" for f in [boot.grub_defaults, *boot.grub_dropins] if f.problem]
        if unreadable:
            return FixPlan(want, problems=tuple(unreadable))
        sources = grub_sources(boot)
        edit = bootcfg.edit_grub(sources, want)
        if edit.problem:
            return FixPlan(want, problems=(edit.problem,))
        changes += [FileChange(s.path, s.text, edit.texts[s.path]) for s in sources if s.path in edit.texts]
        stale = before.words is not None and kargs.wants_change(before.words, want)
        if changes or stale:
            commands.append(_grub_regen(state, which))
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
    return FixPlan(want, tuple(changes), tuple(commands), tuple(problems),
                   reboot=kargs.wants_change(running, want), summary=recipe_change(old_words, want))


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
