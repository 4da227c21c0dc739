"""`check --fix`: boot-loader edits with backups, the regeneration tool, idempotency, reboot-required.

The tools are fakes on PATH that record their arguments; under a --root other than / nothing of
this machine's boot loader is ever run or touched.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import List

import pytest

from sriov_node.checks.diagnose import Scope
from sriov_node.checks.fix import plan_fix
from tests.helpers import open_host
from sriov_node.host.bootloader import replace_file, restore
from sriov_node.host.platform import observe_platform
from sriov_node.sim.platform import MACHINE_ID, RELEASES, RHEL_ARGS, SimPlatform
from tests.helpers import run_cli

ENTRY = f"/boot/loader/entries/{MACHINE_ID}-{RELEASES['rhel']}.conf"

FAKE_GRUBBY = """\
#!{python}
import json, os, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
opts = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
add, drop = opts.get("--args", "").split(), opts.get("--remove-args", "").split()
directory = opts["--bls-directory"]
for name in os.listdir(directory):
    if not name.endswith(".conf"):
        continue
    path = os.path.join(directory, name)
    lines = open(path).read().splitlines(True)
    for i, line in enumerate(lines):
        if line.startswith("options "):
            words = [w for w in line.split()[1:] if w not in drop]
            for arg in add:  # as grubby does: a key already there gets the new value
                keys = [j for j, w in enumerate(words) if w.split("=", 1)[0] == arg.split("=", 1)[0]]
                if keys:
                    words[keys[0]] = arg
                else:
                    words.append(arg)
            lines[i] = "options " + " ".join(words) + "\\n"
    open(path, "w").write("".join(lines))
"""
RECORDER = "#!/bin/sh\necho \"$0 $*\" >> {log}\n"


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """Fake update-grub, grub-mkconfig and grubby first on PATH; returns the calls they recorded."""
    import sys

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.log"
    log.touch()
    (bindir / "grubby").write_text(FAKE_GRUBBY.format(python=sys.executable, log=str(log)))
    for name in ("update-grub", "grub-mkconfig", "grub2-mkconfig"):
        (bindir / name).write_text(RECORDER.format(log=log))
    for f in bindir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")

    def calls() -> List[str]:
        return [line for line in log.read_text().splitlines() if line]

    return calls


def fix(host, *args, config=None):
    result = run_cli("check", "--json", "--fix", *args, root=host.root, config=config)
    return result.returncode, json.loads(result.stdout), result


def snapshot(root: str) -> dict:
    out = {}
    for base in ("etc", "boot", "run"):
        for path in sorted(Path(root, base).rglob("*")):
            if path.is_file():
                out[str(path.relative_to(root))] = (path.read_bytes(), path.stat().st_mtime_ns)
    return out


DROPIN = "etc/default/grub.d/99-sriov-node.cfg"
DROPIN_TEXT = """\
# Written by sriov-node check --fix: the kernel arguments vfio-pci needs (IOMMU on, passthrough).
# grub-mkconfig (update-grub) sources /etc/default/grub, then /etc/default/grub.d/*.cfg in order:
# this file appends to GRUB_CMDLINE_LINUX after the files before it (50-cloudimg-settings.cfg ...).
# To undo: delete this file, then run update-grub. sriov-node rewrites it only when the next boot
# lacks the arguments.
GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} %s"
"""


def test_debian_fix_writes_its_own_dropin_and_leaves_the_defaults(make_host, tools):
    host = make_host(iommu=False)
    grub = Path(host.root, "etc/default/grub")
    before = grub.read_text()
    code, body, _ = fix(host)
    assert code == 1  # the running kernel still lacks the arguments: reboot
    f = body["fix"]
    assert f["changed"] and f["needed"] == ["intel_iommu=on", "iommu=pt"] and f["problems"] == []
    assert grub.read_text() == before  # nothing to remove there: not one byte changed, no backup
    assert Path(host.root, DROPIN).read_text() == DROPIN_TEXT % "intel_iommu=on iommu=pt"
    assert stat.S_IMODE(Path(host.root, DROPIN).stat().st_mode) == 0o644
    (written,) = f["files"]
    assert written == {"path": "/" + DROPIN, "written": True, "created": True, "backup": None,
                       "diff": written["diff"]} and written["diff"].startswith("--- /dev/null")
    assert f["commands"] == []  # no grub.cfg under the root: the next boot reads the defaults themselves
    assert f["notes"] == [f"the arguments are in /{DROPIN}, sriov-node's own file: to undo, delete it and run "
                          "update-grub",
                          f"no grub.cfg under {host.root}: the next boot is read from the defaults themselves "
                          "(nothing to regenerate)"]
    assert tools() == []  # update-grub and grub-mkconfig are on PATH: neither ran
    assert "reboot to use them" in Path(host.root, "run/sriov-node/reboot-required").read_text()
    assert body["reboot_required"] and body["fix"]["reboot_required"]
    checks = {c["id"]: c for c in body["checks"]}
    assert checks["bootloader"]["status"] == "ok" and "reboot" in checks["bootloader"]["seen"]
    assert "/etc/default/grub.d" in checks["bootloader"]["seen"]  # read back through the drop-in
    assert checks["kernel_args"]["fix"].startswith("reboot: the next boot already has")
    status = run_cli("status", root=host.root)
    assert "reboot required: " in status.stdout and "sriov-node check --fix changed" in status.stdout


def test_the_text_output_says_where_it_wrote_and_how_to_undo(make_host, tools):
    host = make_host(iommu=False)
    text = run_cli("check", "--fix", root=host.root)
    assert f"fix: created /{DROPIN}\n" in text.stdout
    assert f"fix: the arguments are in /{DROPIN}, sriov-node's own file: to undo, delete it and run update-grub" \
        in text.stdout
    Path(host.root, DROPIN).unlink()  # the undo: the next boot is as before the fix
    undone = json.loads(run_cli("check", "--json", root=host.root).stdout)
    assert next(c for c in undone["checks"] if c["id"] == "bootloader")["status"] == "fail"


def test_a_contradicting_argument_is_removed_where_it_stands(make_host, tools):
    host = make_host(iommu=False, platform=SimPlatform(cmdline="intel_iommu=off"))
    grub = Path(host.root, "etc/default/grub")
    before = grub.read_text()
    assert 'GRUB_CMDLINE_LINUX="intel_iommu=off"' in before
    code, body, _ = fix(host)
    assert grub.read_text() == before.replace('GRUB_CMDLINE_LINUX="intel_iommu=off"', 'GRUB_CMDLINE_LINUX=""')
    assert Path(host.root, DROPIN).read_text() == DROPIN_TEXT % "intel_iommu=on iommu=pt"
    by_path = {f["path"]: f for f in body["fix"]["files"]}
    assert sorted(by_path) == ["/etc/default/grub", "/" + DROPIN]
    assert Path(host.root, by_path["/etc/default/grub"]["backup"].lstrip("/")).read_text() == before
    assert body["fix"]["summary"] == "adds intel_iommu=on iommu=pt; removes intel_iommu=off"


def test_a_contradicting_argument_in_a_dropin_is_removed_there_only(make_host, tools):
    host = make_host(iommu=False)
    site = Path(host.root, "etc/default/grub.d/60-site.cfg")
    site.parent.mkdir()
    site.write_text('# site settings\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT  iommu=off nosmt"\n')
    grub = Path(host.root, "etc/default/grub").read_text()
    fix(host)
    assert site.read_text() == '# site settings\nGRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT  nosmt"\n'
    assert Path(host.root, "etc/default/grub").read_text() == grub
    assert Path(host.root, DROPIN).read_text() == DROPIN_TEXT % "intel_iommu=on iommu=pt"
    before = snapshot(host.root)
    _, body, _ = fix(host)
    assert snapshot(host.root) == before and body["fix"]["nothing_to_do"]


CLOUDIMG = """\
# Cloud Image specific Grub settings for Generic Cloud Images
# CLOUD_IMG: This file was created/modified by the Cloud Image build process

# Set the recordfail timeout
GRUB_RECORDFAIL_TIMEOUT=0

# Do not wait on grub prompt
GRUB_TIMEOUT=0

# Set the default commandline
GRUB_CMDLINE_LINUX="console=tty1 console=ttyS0"
GRUB_CMDLINE_LINUX_DEFAULT="nvme_core.io_timeout=4294967295"
"""


def test_a_cloud_image_override_does_not_hide_the_arguments(make_host, tools):
    """50-cloudimg-settings.cfg sets GRUB_CMDLINE_LINUX after /etc/default/grub (the reboot loop of
    sriov-network-operator issue 1016): the drop-in, sourced after it, appends to what it left."""
    host = make_host(iommu=False, platform=SimPlatform(boot_args="intel_iommu=on iommu=pt"))
    cloud = Path(host.root, "etc/default/grub.d/50-cloudimg-settings.cfg")
    cloud.parent.mkdir()
    cloud.write_text(CLOUDIMG)
    grub = Path(host.root, "etc/default/grub").read_text()
    checked = json.loads(run_cli("check", "--json", root=host.root).stdout)
    assert next(c for c in checked["checks"] if c["id"] == "bootloader")["status"] == "fail"  # the override wins
    code, body, _ = fix(host)
    assert cloud.read_text() == CLOUDIMG and Path(host.root, "etc/default/grub").read_text() == grub
    assert Path(host.root, DROPIN).read_text() == DROPIN_TEXT % "intel_iommu=on iommu=pt"
    bootloader = next(c for c in body["checks"] if c["id"] == "bootloader")
    assert bootloader["status"] == "ok"
    assert "next boot will have intel_iommu=on iommu=pt" in bootloader["seen"]
    script = ('. ./etc/default/grub; for x in ./etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; '
              'printf "%s|%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"')
    import subprocess
    shell = subprocess.run(["/bin/sh", "-c", script], cwd=host.root, capture_output=True, text=True, timeout=30)
    assert shell.stdout == "console=tty1 console=ttyS0 intel_iommu=on iommu=pt|nvme_core.io_timeout=4294967295"


def test_a_file_sourced_after_the_dropin_that_overrides_it_is_named(make_host, tools):
    host = make_host(iommu=False)
    late = Path(host.root, "etc/default/grub.d/99-zz-site.cfg")
    late.parent.mkdir()
    late.write_text('GRUB_CMDLINE_LINUX="console=ttyS1"\n')
    before = snapshot(host.root)
    code, body, _ = fix(host)
    assert code == 1 and snapshot(host.root) == before
    (problem,) = body["fix"]["problems"]
    assert "/etc/default/grub.d/99-zz-site.cfg:1 sets GRUB_CMDLINE_LINUX after /" + DROPIN in problem


@pytest.mark.parametrize("kind", ["directory", "fifo", "symlink", "dangling-symlink"])
def test_a_dropin_path_that_is_not_a_regular_file_is_refused(make_host, tools, kind):
    host = make_host(iommu=False, platform=SimPlatform(cmdline="intel_iommu=off"))
    path = Path(host.root, DROPIN)
    path.parent.mkdir()
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        Path(host.root, "etc/default/elsewhere.cfg").write_text("# x\n")
        path.symlink_to("../elsewhere.cfg")
    else:
        path.symlink_to("../missing.cfg")
    before = snapshot(host.root)
    code, body, result = fix(host)
    assert code == 1 and snapshot(host.root) == before  # nothing written: not the removal in /etc/default/grub
    assert not body["fix"]["changed"] and body["fix"]["reboot_required"] is None
    (problem,) = body["fix"]["problems"]
    assert problem.startswith(f"/{DROPIN}") and "sriov-node writes only a regular file of its own there; remove " \
        "what stands in its place" in problem and problem.endswith("nothing was changed")
    assert ("symbolic link" if "symlink" in kind else kind.replace("fifo", "FIFO")) in problem


def test_a_second_fix_changes_nothing(make_host, tools):
    host = make_host(iommu=False, platform=SimPlatform(cmdline="intel_iommu=off"))
    fix(host)
    before = snapshot(host.root)
    code, body, result = fix(host)
    assert snapshot(host.root) == before  # no byte, no mtime, no new backup
    assert body["fix"]["nothing_to_do"] and body["fix"]["files"] == [] and body["fix"]["commands"] == []
    assert tools() == []
    text = run_cli("check", "--fix", root=host.root)
    assert "fix: nothing to change: the next boot already has intel_iommu=on iommu=pt" in text.stdout


def test_without_debian_or_grub_d_the_effective_assignment_is_edited_in_place(make_host, tools):
    """grub.d is sourced by Debian's grub-mkconfig only: elsewhere a drop-in would be ignored."""
    host = make_host(iommu=False)
    Path(host.root, "etc/debian_version").unlink()
    code, body, _ = fix(host)
    assert 'GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"' in Path(host.root, "etc/default/grub").read_text()
    assert not Path(host.root, "etc/default/grub.d").exists()
    (written,) = body["fix"]["files"]
    assert written["path"] == "/etc/default/grub" and written["backup"] and not written["created"]


def test_dry_run_shows_the_diff_and_writes_nothing(make_host, tools):
    host = make_host(iommu=False)
    before = snapshot(host.root)
    code, body, _ = fix(host, "--dry-run")
    assert snapshot(host.root) == before and code == 1
    (f,) = body["fix"]["files"]
    assert f["backup"] is None and '+GRUB_CMDLINE_LINUX="${GRUB_CMDLINE_LINUX} intel_iommu=on iommu=pt"' in f["diff"]
    assert not body["fix"]["changed"] and body["fix"]["reboot_required"] is None
    text = run_cli("check", "--fix", "--dry-run", root=host.root)
    assert f"fix: would create /{DROPIN}" in text.stdout and "fix: run" not in text.stdout


def test_rhel_fix_runs_grubby_on_the_roots_entries(make_host, tools):
    host = make_host(iommu=False, platform=SimPlatform(bootloader="rhel", cmdline="intel_iommu=off"))
    code, body, _ = fix(host)
    (call,) = tools()
    assert json.loads(call) == ["--update-kernel=ALL", "--args=intel_iommu=on iommu=pt",
                                "--remove-args=intel_iommu=off", f"--bls-directory={host.root}/boot/loader/entries",
                                f"--env={host.root}/boot/grub2/grubenv"]
    entry = Path(host.root, ENTRY.lstrip("/")).read_text()
    assert f"options root=/dev/mapper/rhel-root ro {RHEL_ARGS} $tuned_params intel_iommu=on iommu=pt\n" in entry
    (cmd,) = body["fix"]["commands"]
    assert cmd["ran"] and cmd["exit_code"] == 0 and len(cmd["backups"]) == 2
    assert sorted(f["path"] for f in body["fix"]["files"]) == ["/etc/default/grub", "/etc/kernel/cmdline"]
    assert Path(host.root, "etc/kernel/cmdline").read_text().rstrip().endswith("intel_iommu=on iommu=pt")
    bootloader = next(c for c in body["checks"] if c["id"] == "bootloader")
    assert bootloader["status"] == "ok" and bootloader["subject"] == "bls"
    before = snapshot(host.root)
    fix(host)
    assert len(tools()) == 1 and snapshot(host.root) == before


def test_rhel_without_grubby_changes_nothing_and_names_the_tool(make_host, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    host = make_host(iommu=False, platform=SimPlatform(bootloader="rhel", cmdline="amd_iommu=off", cpu="amd",
                                                       boot_args="amd_iommu=off"))
    before = snapshot(host.root)
    code, body, _ = fix(host)
    assert code == 1 and snapshot(host.root) == before  # not /etc/kernel/cmdline, not /etc/default/grub either
    (cmd,) = body["fix"]["commands"]
    assert not cmd["ran"] and "grubby is not found on PATH: install grubby (RHEL" in cmd["why_not"]
    (problem,) = body["fix"]["problems"]
    assert "grubby is not found" in problem and problem.endswith("nothing was changed")
    assert not body["fix"]["changed"] and body["fix"]["reboot_required"] is None and body["reboot_required"] is None
    bootloader = next(c for c in body["checks"] if c["id"] == "bootloader")
    assert bootloader["status"] == "fail" and "amd_iommu=off" in bootloader["seen"]
    assert [f["written"] for f in body["fix"]["files"]] == [False, False]
    text = run_cli("check", "--fix", root=host.root)
    assert "reboot to use them" not in text.stdout + text.stderr and "error: " in text.stderr
    assert "fix: did not change /etc/kernel/cmdline" in text.stdout and "fix: changed" not in text.stdout


def test_a_grubby_that_mangles_the_entries_is_undone(make_host, tools, tmp_path):
    host = make_host(iommu=False, platform=SimPlatform(bootloader="rhel"))
    bad = tmp_path / "bin" / "grubby"
    bad.write_text(f"#!/bin/sh\nsed -i 's/^options .*/options intel_/' {host.root}/boot/loader/entries/*.conf\n")
    before = Path(host.root, ENTRY.lstrip("/")).read_text()
    code, body, _ = fix(host)
    assert code == 1 and any("put back from their backups" in p for p in body["fix"]["problems"])
    assert Path(host.root, ENTRY.lstrip("/")).read_text() == before


def test_amd_gets_passthrough_only_and_loses_amd_iommu_off(make_host, tools):
    host = make_host(iommu=False, platform=SimPlatform(cpu="amd", boot_args="amd_iommu=off"))
    code, body, _ = fix(host)
    grub = Path(host.root, "etc/default/grub").read_text()
    assert 'GRUB_CMDLINE_LINUX=""' in grub and "amd_iommu" not in grub  # removed where it stood
    assert Path(host.root, DROPIN).read_text() == DROPIN_TEXT % "iommu=pt"
    assert body["fix"]["summary"] == "adds iommu=pt; removes amd_iommu=off"


def test_nothing_to_fix_when_no_vf_wants_vfio(make_host, tools, write_config):
    host = make_host(iommu=False)
    before = snapshot(host.root)
    code, body, _ = fix(host, config=write_config('[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 2\n'))
    assert snapshot(host.root) == before and code == 0
    assert body["fix"]["notes"] == ["no VF group wants vfio-pci: the boot loader needs no IOMMU argument"]


def test_a_configuration_it_cannot_evaluate_is_left_alone(make_host, tools):
    host = make_host(iommu=False)
    grub = Path(host.root, "etc/default/grub")
    grub.write_text(grub.read_text() + 'if [ -e /x ]; then GRUB_CMDLINE_LINUX="a"; fi\n')
    before = snapshot(host.root)
    code, body, result = fix(host)
    assert code == 1 and snapshot(host.root) == before
    assert "sets GRUB_CMDLINE_LINUX conditionally" in body["fix"]["problems"][0]
    assert "error: cannot evaluate" in run_cli("check", "--fix", root=host.root).stderr


def test_a_symlinked_defaults_file_is_refused(make_host, tools, tmp_path):
    host = make_host(iommu=False, platform=SimPlatform(cmdline="intel_iommu=off"))  # to be removed there
    grub = Path(host.root, "etc/default/grub")
    target = Path(host.root, "etc/default/grub.real")
    grub.rename(target)
    grub.symlink_to("grub.real")
    code, body, _ = fix(host)
    assert code == 1 and "is a symbolic link; edit the file it points to" in body["fix"]["problems"][0]
    assert "intel_iommu=off" in target.read_text() and grub.is_symlink()
    assert not Path(host.root, DROPIN).exists()  # nothing written when one file may not be


def test_replace_file_refuses_a_file_changed_since_it_was_read(tmp_path):
    host = open_host(str(tmp_path))
    path = tmp_path / "etc/kernel/cmdline"
    path.parent.mkdir(parents=True)
    path.write_text("ro\n")
    os.chmod(path, 0o640)
    with pytest.raises(OSError, match="changed while sriov-node was reading it"):
        replace_file(host, "/etc/kernel/cmdline", "quiet\n", "ro iommu=pt\n", "20260101T000000Z")
    backup = replace_file(host, "/etc/kernel/cmdline", "ro\n", "ro iommu=pt\n", "20260101T000000Z")
    assert backup == "/etc/kernel/cmdline.sriov-node-20260101T000000Z.bak"
    assert path.read_text() == "ro iommu=pt\n" and stat.S_IMODE(path.stat().st_mode) == 0o640
    again = replace_file(host, "/etc/kernel/cmdline", "ro iommu=pt\n", "ro\n", "20260101T000000Z")
    assert again == "/etc/kernel/cmdline.sriov-node-20260101T000000Z-1.bak"  # a backup is never overwritten
    assert not list(tmp_path.glob("etc/kernel/.*tmp"))


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_backup_is_read_back_as_a_regular_file_only(tmp_path, kind):
    """restore() and replace_file() re-read through files.read_regular: never wait on a FIFO, never
    follow a link put where a backup or the file itself was."""
    host = open_host(str(tmp_path))
    path = tmp_path / "etc/kernel/cmdline"
    path.parent.mkdir(parents=True)
    path.write_text("ro iommu=pt\n")
    backup = tmp_path / "etc/kernel/cmdline.sriov-node-20260101T000000Z.bak"
    if kind == "fifo":
        os.mkfifo(backup)
    else:
        (tmp_path / "elsewhere").write_text("ro\n")
        backup.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError, match="FIFO|symbolic link"):
        restore(host, "/etc/kernel/cmdline", "/etc/kernel/cmdline.sriov-node-20260101T000000Z.bak")
    assert path.read_text() == "ro iommu=pt\n"


def test_a_captured_tree_is_not_fixed(tmp_path):
    root = tmp_path / "capture"
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX=""\n')
    (root / "proc").mkdir()
    (root / "proc/cpuinfo").write_text("processor\t: 0\nvendor_id\t: GenuineIntel\n")
    result = run_cli("check", "--json", "--fix", root=str(root))
    assert result.returncode == 1 and json.loads(result.stdout)["error"]["type"] == "ReadOnlyRoot"
    assert (root / "etc/default/grub").read_text() == 'GRUB_CMDLINE_LINUX=""\n'
    dry = run_cli("check", "--json", "--fix", "--dry-run", root=str(root))
    assert '+GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"' in json.loads(dry.stdout)["fix"]["files"][0]["diff"]


# ---------------------------------------------------------------------------- the live root: planned, never run here


def live_state(host):
    return replace(observe_platform(host), live=True, root="/")


def test_on_the_live_root_update_grub_is_run(make_host):
    state = live_state(make_host(iommu=False))
    found = {"update-grub": "/usr/sbin/update-grub", "grub-mkconfig": "/usr/sbin/grub-mkconfig"}
    plan = plan_fix(state, Scope(False), found.get)
    (cmd,) = plan.commands
    assert (cmd.argv, cmd.run, cmd.program) == (("update-grub",), True, "/usr/sbin/update-grub")
    plan = plan_fix(state, Scope(False), {"grub-mkconfig": "/usr/sbin/grub-mkconfig"}.get)
    assert plan.commands[0].argv == ("grub-mkconfig", "-o", "/boot/grub/grub.cfg") and plan.commands[0].run
    plan = plan_fix(state, Scope(False), lambda name: None)
    assert not plan.commands[0].run and plan.blocked
    assert "none of update-grub, grub-mkconfig, grub2-mkconfig is found on PATH" in plan.commands[0].missing
    assert "install grub2-common (Debian, Ubuntu: apt install grub2-common) or grub2-tools" in plan.problems[0]


def test_on_the_live_root_grubby_edits_every_entry(make_host):
    state = live_state(make_host(iommu=False, platform=SimPlatform(bootloader="rhel")))
    (cmd,) = plan_fix(state, Scope(False), {"grubby": "/usr/sbin/grubby"}.get).commands
    assert cmd.argv == ("grubby", "--update-kernel=ALL", "--args=intel_iommu=on iommu=pt") and cmd.run
    assert len(cmd.backup) == 2


def test_a_stale_grub_cfg_is_regenerated_even_without_edits(make_host):
    host = make_host()
    cfg = Path(host.root, "boot/grub/grub.cfg")
    cfg.parent.mkdir(parents=True)
    cfg.write_text(textwrap.dedent("""\
        menuentry 'Debian GNU/Linux' {
        \tlinux\t/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0c1a6b42 ro  quiet
        }
        """))
    plan = plan_fix(live_state(host), Scope(False), {"update-grub": "/usr/sbin/update-grub"}.get)
    assert plan.changes == () and plan.commands[0].argv == ("update-grub",)
