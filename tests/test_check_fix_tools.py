"""`check --fix` never claims a next boot it will not get: every boot-loader shape of the corpus
(tests/data/grub, tests/data/bls, the simulated RHEL host) with its tool present, missing, failing,
and present but doing nothing.

A missing tool: the tool and its package are named, nothing is written, exit 1. A tool that fails
or does nothing: what the next boot gets is read back as `check` reads it, the file that still
disagrees is named, no reboot-required note, exit 1. Only a next boot read back with the
arguments is a success.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional

import pytest

from sriov_node.checks.diagnose import Scope, next_boot
from sriov_node.checks import kargs
from sriov_node.cli.check import fix_boot
from tests.helpers import open_host
from sriov_node.host.platform import observe_boot, observe_platform
from sriov_node.sim.platform import SimPlatform
from tests.helpers import run_cli

DATA = Path(__file__).resolve().parent / "data"
GRUB_CASES = sorted(p.name for p in (DATA / "grub").iterdir())
BLS_CASES = ["sim-rhel9"] + sorted(p.name for p in (DATA / "bls").iterdir())
MODES = ("present", "missing", "failing", "noop")
INTEL, AMD = ("intel_iommu=on", "iommu=pt"), ("iommu=pt",)

# update-grub as Debian's: sources the defaults the way grub-mkconfig does, writes grub.cfg's first entry
UPDATE_GRUB = """\
#!/bin/sh
cd {root} || exit 1
. ./etc/default/grub
for x in ./etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done
printf "menuentry 'Debian GNU/Linux' {{\\n\\tlinux\\t/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0c1a6b42 ro %s %s\\n}}\\n" \\
    "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" > ./boot/grub/grub.cfg.new
mv ./boot/grub/grub.cfg.new ./boot/grub/grub.cfg
"""
# grubby as RHEL's: every entry's options; entries that take $kernelopts get it changed in grubenv (RHEL 8)
GRUBBY = """\
#!{python}
import os, sys
opts = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
add, drop = opts.get("--args", "").split(), opts.get("--remove-args", "").split()
directory, env = opts["--bls-directory"], opts.get("--env")

def edit(words):
    words = [w for w in words if w not in drop]
    for arg in add:
        keys = [j for j, w in enumerate(words) if w.split("=", 1)[0] == arg.split("=", 1)[0]]
        if keys:
            words[keys[0]] = arg
        else:
            words.append(arg)
    return words

kernelopts = False
for name in os.listdir(directory):
    if not name.endswith(".conf"):
        continue
    path = os.path.join(directory, name)
    lines = open(path).read().splitlines(True)
    for i, line in enumerate(lines):
        if line.startswith("options "):
            if "$kernelopts" in line.split():
                kernelopts = True
                continue
            lines[i] = "options " + " ".join(edit(line.split()[1:])) + "\\n"
    open(path, "w").write("".join(lines))
if kernelopts and env:
    lines = open(env).read().split("\\n")
    for i, line in enumerate(lines):
        if line.startswith("kernelopts="):
            lines[i] = "kernelopts=" + " ".join(edit(line[len("kernelopts="):].split())) + " "
    text = "\\n".join(l for l in lines if not l.startswith("#") or l.startswith("# GRUB")) + "\\n"
    open(env, "w").write(text + "#" * max(0, 1024 - len(text)))
"""
FAILING = "#!/bin/sh\necho 'error: cannot open /boot/grub/grub.cfg.new: Read-only file system' >&2\nexit 1\n"
NOOP = "#!/bin/sh\nexit 0\n"


def tool(path: Path, mode: str, real: str) -> None:
    if mode == "missing":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text({"present": real, "failing": FAILING, "noop": NOOP}[mode])
    path.chmod(0o755)


def snapshot(root: str) -> Dict[str, bytes]:
    out = {}
    for base in ("etc", "boot", "run"):
        for path in sorted(Path(root, base).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def grub_host(make_host, case: str):
    host = make_host(iommu=False, platform=SimPlatform(cpu="amd" if case.startswith("amd") else "intel"))
    root = Path(host.root)
    shutil.rmtree(root / "etc/default")
    shutil.copytree(DATA / "grub" / case / "etc/default", root / "etc/default")
    return host


# ---------------------------------------------------------------------------- GRUB (Debian): the tool runs on the live root


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", GRUB_CASES)
def test_grub_shapes_with_update_grub_in_every_state(make_host, tmp_path, case, mode):
    host = grub_host(make_host, case)
    root = Path(host.root)
    (root / "boot/grub").mkdir(parents=True)
    generator = tmp_path / "real-update-grub"
    generator.write_text(UPDATE_GRUB.format(root=host.root))
    generator.chmod(0o755)
    import subprocess
    subprocess.run([str(generator)], check=True, timeout=30)  # grub.cfg as the installed defaults make it
    update_grub = tmp_path / "bin" / "update-grub"
    tool(update_grub, mode, UPDATE_GRUB.format(root=host.root))
    found = {"update-grub": str(update_grub)} if mode != "missing" else {}
    # the live root's plan (update-grub runs), carried out under the simulated root
    state = replace(observe_platform(host), live=True)
    want = INTEL if state.cpu_vendor == "GenuineIntel" else AMD
    before = snapshot(host.root)
    fix = fix_boot(host, state, Scope(False), False, which=found.get, root_which=lambda name: None)
    nb = next_boot(observe_boot(host), want)
    got = not kargs.wants_change(nb.words or (), want) and nb.words is not None
    if case == "conditional":  # not evaluable: nothing touched whatever the tool
        assert fix["problems"] and snapshot(host.root) == before and not got
        return
    if mode == "present":
        assert fix["problems"] == [] and got and "first entry of /boot/grub/grub.cfg" in nb.source
        assert fix["reboot_required"] and "reboot to use them" in (root / "run/sriov-node/reboot-required").read_text()
        return
    assert not got and fix["reboot_required"] is None and not (root / "run/sriov-node/reboot-required").exists()
    if mode == "missing":
        assert snapshot(host.root) == before and not fix["changed"]
        (problem,) = fix["problems"]
        assert "none of update-grub, grub-mkconfig, grub2-mkconfig is found" in problem
        assert "install grub2-common" in problem and problem.endswith("nothing was changed")
        return
    disagrees = [p for p in fix["problems"] if "first entry of /boot/grub/grub.cfg" in p and "still disagrees" in p]
    assert len(disagrees) == 1, fix["problems"]
    assert "no reboot gives it the arguments" in disagrees[0]
    assert "changed (with backups): " in disagrees[0] and "only once update-grub regenerates" in disagrees[0]
    if mode == "failing":
        assert any("update-grub failed (exit 1)" in p for p in fix["problems"])


# ---------------------------------------------------------------------------- GRUB under a --root: chroot ROOT update-grub


@pytest.mark.parametrize("present", [True, False])
@pytest.mark.parametrize("case", [c for c in GRUB_CASES if c != "conditional"])
def test_grub_shapes_under_a_root_look_for_the_tool_inside_it(make_host, tmp_path, case, present):
    host = grub_host(make_host, case)
    root = Path(host.root)
    (root / "boot/grub").mkdir(parents=True)
    generator = tmp_path / "gen"
    generator.write_text(UPDATE_GRUB.format(root=host.root))
    generator.chmod(0o755)
    import subprocess
    subprocess.run([str(generator)], check=True, timeout=30)
    if present:
        tool(root / "usr/sbin/update-grub", "present", UPDATE_GRUB.format(root="/"))
    before = snapshot(host.root)
    result = run_cli("check", "--json", "--fix", root=host.root)
    body = json.loads(result.stdout)
    assert result.returncode == 1 and body["reboot_required"] is None
    (cmd,) = body["fix"]["commands"]
    assert cmd["command"] == f"chroot {host.root} update-grub" and not cmd["ran"]
    if not present:
        assert snapshot(host.root) == before
        assert "none of update-grub, grub-mkconfig, grub2-mkconfig is found under" in body["fix"]["problems"][0]
        return
    # the drop-in is written (other files backed up where a contradicting argument is removed); grub.cfg is
    # not (the command is for a person): said so, exit 1
    files = body["fix"]["files"]
    assert [f["path"] for f in files if f["created"]] == ["/etc/default/grub.d/99-sriov-node.cfg"]
    assert all(f["backup"] for f in files if not f["created"])
    (problem,) = body["fix"]["problems"]
    assert "first entry of /boot/grub/grub.cfg" in problem and "still disagrees" in problem
    assert ("/etc/default/grub (with /etc/default/grub.d) has the arguments but /boot/grub/grub.cfg was not "
            "regenerated") in problem  # the drop-in is where they are
    assert "the next boot gets the arguments from them only once update-grub regenerates" in problem


# ---------------------------------------------------------------------------- BLS (RHEL, Fedora): grubby


def bls_host(make_host, case: str):
    host = make_host(iommu=False, platform=SimPlatform(bootloader="rhel", cmdline="intel_iommu=off"))
    if case != "sim-rhel9":
        root = Path(host.root)
        shutil.rmtree(root / "boot/loader/entries")
        shutil.copytree(DATA / "bls" / case / "boot/loader/entries", root / "boot/loader/entries")
        shutil.copy(DATA / "bls" / case / "boot/grub2/grubenv", root / "boot/grub2/grubenv")
    return host


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", BLS_CASES)
def test_bls_shapes_with_grubby_in_every_state(make_host, tmp_path, monkeypatch, case, mode):
    host = bls_host(make_host, case)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool(bindir / "grubby", mode, GRUBBY.format(python=sys.executable))
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    before = snapshot(host.root)
    result = run_cli("check", "--json", "--fix", root=host.root)
    body = json.loads(result.stdout)
    fix = body["fix"]
    bootloader = next(c for c in body["checks"] if c["id"] == "bootloader")
    nb = next_boot(observe_boot(open_host(host.root)), INTEL)
    if mode == "present":
        assert fix["problems"] == [] and not kargs.wants_change(nb.words, INTEL), fix
        assert bootloader["status"] == "ok" and fix["reboot_required"]
        assert result.returncode == 1  # only because the running kernel lacks them: reboot
        assert {c["id"] for c in body["checks"] if c["status"] == "fail"} <= {"iommu", "kernel_args"}
        return
    assert result.returncode == 1 and kargs.wants_change(nb.words, INTEL)
    assert fix["reboot_required"] is None and body["reboot_required"] is None
    assert "reboot to use them" not in result.stdout and bootloader["status"] == "fail"
    if mode == "missing":
        assert snapshot(host.root) == before and not fix["changed"]
        (problem,) = fix["problems"]
        assert "grubby is not found on PATH: install grubby" in problem and "nothing was changed" in problem
        return
    entry = nb.source.split(" ", 2)[-1]
    (disagrees,) = [p for p in fix["problems"] if "still disagrees" in p]
    assert f"default entry {entry} still disagrees" in disagrees and "no reboot gives it" in disagrees
    assert "changed (with backups): /etc/kernel/cmdline, /etc/default/grub: kernels installed later" in disagrees
    if mode == "failing":
        assert any(p.startswith("grubby --update-kernel=ALL") and "failed (exit 1)" in p for p in fix["problems"])
    text = run_cli("check", root=host.root)
    assert text.returncode == 1 and "FAIL  bootloader" in text.stdout


def test_a_tool_found_only_where_the_fix_would_not_run_it_does_not_count(make_host, tmp_path):
    """grubby inside the --root is not what the fix runs (it runs this machine's grubby on the root's
    entries), and update-grub on this machine is not what `chroot ROOT update-grub` runs."""
    host = grub_host(make_host, "debian12")
    root = Path(host.root)
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text("menuentry 'x' {\n\tlinux\t/vmlinuz ro quiet\n}\n")
    bindir = tmp_path / "bin"
    tool(bindir / "update-grub", "present", NOOP)
    state = observe_platform(host)
    fix: Optional[dict] = fix_boot(host, state, Scope(False), True, which={"update-grub": str(bindir / "update-grub")}.get)
    assert fix["problems"] and "found under" in fix["problems"][0]


@pytest.mark.parametrize("mode", ["failing", "noop", "present"])
def test_without_grub_cfg_a_failing_update_grub_records_no_reboot(make_host, tmp_path, mode):
    """No grub.cfg: the next boot is read from the defaults, as check reads it; a tool that failed
    still leaves no reboot-required claim."""
    host = grub_host(make_host, "debian12")
    update_grub = tmp_path / "bin" / "update-grub"
    tool(update_grub, mode, NOOP)
    state = replace(observe_platform(host), live=True)
    fix = fix_boot(host, state, Scope(False), False, which={"update-grub": str(update_grub)}.get)
    note = Path(host.root, "run/sriov-node/reboot-required")
    if mode == "failing":
        assert fix["problems"] == ["update-grub failed (exit 1): error: cannot open /boot/grub/grub.cfg.new: "
                                   "Read-only file system"]
        assert fix["reboot_required"] is None and not note.exists()
    else:
        assert fix["problems"] == [] and fix["reboot_required"] and note.exists()
