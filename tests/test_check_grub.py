"""GRUB defaults as /bin/sh reads them, and the edits `check --fix` makes, on real-world shapes.

Each case in tests/data/grub/ is a root with /etc/default/grub (and /etc/default/grub.d/*.cfg).
The shell itself is the oracle: the values sriov-node computes, before and after its edit, are the
ones /bin/sh gets by sourcing the files the way grub-mkconfig does.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from sriov_node.checks import bootcfg, kargs

DATA = Path(__file__).resolve().parent / "data"
CASES = sorted(p.name for p in (DATA / "grub").iterdir())
INTEL = ("intel_iommu=on", "iommu=pt")
AMD = ("iommu=pt",)

# case -> (files the fix changes, GRUB_CMDLINE_LINUX | GRUB_CMDLINE_LINUX_DEFAULT as /bin/sh sees them after it)
EXPECTED: Dict[str, Tuple[List[str], str]] = {
    "debian12": (["/etc/default/grub"], "intel_iommu=on iommu=pt|quiet"),
    "ubuntu2204": (["/etc/default/grub"], "intel_iommu=on iommu=pt|quiet splash"),
    "unquoted": (["/etc/default/grub"], "console=ttyS0,115200n8 intel_iommu=on iommu=pt|"),
    "empty": (["/etc/default/grub"], "intel_iommu=on iommu=pt|"),
    "existing-iommu-pt": (["/etc/default/grub"], "iommu=pt hugepagesz=1G hugepages=16 intel_iommu=on|quiet"),
    "intel-iommu-off": (["/etc/default/grub"], "console=tty0 console=ttyS0,115200n8 intel_iommu=on iommu=pt|quiet"),
    "default-only": (["/etc/default/grub"], "intel_iommu=on iommu=pt|quiet splash"),
    "ubuntu-cloudimg": (["/etc/default/grub"],
                        "intel_iommu=on iommu=pt|console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295"),
    "dropin-overrides": (["/etc/default/grub.d/90-site.cfg"], "console=ttyS1,115200 intel_iommu=on iommu=pt|quiet"),
    "dropin-appends": (["/etc/default/grub.d/60-iommu.cfg"], "net.ifnames=0 intel_iommu=on iommu=pt|quiet"),
    "rhel9": (["/etc/default/grub"], "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap "
                                     "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet intel_iommu=on iommu=pt|"),
    "single-quoted-export": (["/etc/default/grub"], "audit=1 iommu=pt intel_iommu=on|quiet"),
    "continuation": (["/etc/default/grub"], "crashkernel=auto   rd.lvm.lv=vg0/root   rd.lvm.lv=vg0/swap "
                                            "intel_iommu=on iommu=pt|quiet"),
    "amd-off": (["/etc/default/grub"], "iommu=soft iommu=pt|quiet"),
    "command-substitution": (["/etc/default/grub"], " net.ifnames=0 intel_iommu=on iommu=pt| quiet"),
    "conditional": ([], "|quiet"),
}


# Debian (grub-mkconfig sources grub.d): the arguments land in sriov-node's own drop-in; contradicting
# arguments are removed where they stand (the only edit of the other files)
DROPIN = "/etc/default/grub.d/99-sriov-node.cfg"
EXPECTED_DROPIN: Dict[str, Tuple[List[str], str]] = {
    "debian12": ([DROPIN], " intel_iommu=on iommu=pt|quiet"),
    "ubuntu2204": ([DROPIN], " intel_iommu=on iommu=pt|quiet splash"),
    "unquoted": ([DROPIN], "console=ttyS0,115200n8 intel_iommu=on iommu=pt|"),
    "empty": ([DROPIN], " intel_iommu=on iommu=pt|"),
    "existing-iommu-pt": ([DROPIN], "iommu=pt hugepagesz=1G hugepages=16 intel_iommu=on|quiet"),
    "intel-iommu-off": (["/etc/default/grub", DROPIN], "console=tty0 console=ttyS0,115200n8 intel_iommu=on iommu=pt|quiet"),
    "default-only": ([DROPIN], " intel_iommu=on iommu=pt|quiet splash"),
    "ubuntu-cloudimg": ([DROPIN], " intel_iommu=on iommu=pt|console=tty1 console=ttyS0 nvme_core.io_timeout=4294967295"),
    "dropin-overrides": ([DROPIN], "console=ttyS1,115200 intel_iommu=on iommu=pt|quiet"),
    "dropin-appends": (["/etc/default/grub.d/60-iommu.cfg", DROPIN], "net.ifnames=0 intel_iommu=on iommu=pt|quiet"),
    "rhel9": ([DROPIN], "crashkernel=1G-4G:192M,4G-64G:256M,64G-:512M resume=/dev/mapper/rhel-swap "
                        "rd.lvm.lv=rhel/root rd.lvm.lv=rhel/swap rhgb quiet intel_iommu=on iommu=pt|"),
    "single-quoted-export": (["/etc/default/grub", DROPIN], "audit=1 intel_iommu=on iommu=pt|quiet"),
    "continuation": ([DROPIN], "crashkernel=auto   rd.lvm.lv=vg0/root   rd.lvm.lv=vg0/swap intel_iommu=on iommu=pt|quiet"),
    "amd-off": (["/etc/default/grub", DROPIN], "iommu=soft iommu=pt|quiet"),
    "command-substitution": ([DROPIN], " net.ifnames=0 intel_iommu=on iommu=pt| quiet"),
    "conditional": ([], "|quiet"),
}


def sources(root: Path) -> List[bootcfg.GrubSource]:
    dropins = sorted((root / "etc/default/grub.d").glob("*.cfg")) if (root / "etc/default/grub.d").is_dir() else []
    return [bootcfg.GrubSource("/" + str(f.relative_to(root)), f.read_text())
            for f in [root / "etc/default/grub", *dropins]]


def sh(root: Path) -> str:
    """GRUB_CMDLINE_LINUX|GRUB_CMDLINE_LINUX_DEFAULT after sourcing as grub-mkconfig does."""
    script = ('. ./etc/default/grub; for x in ./etc/default/grub.d/*.cfg; do if [ -e "$x" ]; then . "$x"; fi; done; '
              'printf "%s|%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT"')
    return subprocess.run(["/bin/sh", "-c", script], cwd=str(root), env={"PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30).stdout


def needed_for(case: str) -> Tuple[str, ...]:
    return AMD if case.startswith("amd") else INTEL


def test_the_corpus_has_every_case_expected():
    assert sorted(EXPECTED) == CASES and sorted(EXPECTED_DROPIN) == CASES


@pytest.mark.parametrize("case", CASES)
def test_evaluation_matches_the_shell(case):
    root = DATA / "grub" / case
    ev = bootcfg.evaluate_grub(sources(root))
    if case == "conditional":
        assert ev.uncertain == ["/etc/default/grub:4 sets GRUB_CMDLINE_LINUX conditionally"]
        return
    assert not ev.uncertain
    assert f"{ev.values[bootcfg.LINUX]}|{ev.values[bootcfg.LINUX_DEFAULT]}" == sh(root)


@pytest.mark.parametrize("case", CASES)
def test_the_fix_edits_the_right_files_and_the_shell_agrees(case, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(DATA / "grub" / case, root)
    before = {s.path: s.text for s in sources(root)}
    edit = bootcfg.edit_grub(sources(root), needed_for(case))
    files, after = EXPECTED[case]
    assert sorted(edit.texts) == files
    for path, text in edit.texts.items():
        (root / path.lstrip("/")).write_text(text)
    assert sh(root) == after
    if case == "conditional":
        assert "conditionally" in edit.problem and "edit it by hand" in edit.problem
        return
    words = kargs.split_cmdline(after.replace("|", " "))
    assert not kargs.missing(words, needed_for(case)) and not kargs.contradicting(words)
    old_words = kargs.split_cmdline(sh(DATA / "grub" / case).replace("|", " "))
    kept = [w for w in old_words if w not in kargs.CONTRADICTING]
    assert [w for w in words if w in kept] == kept  # every other argument stays, in order
    for path, text in before.items():  # bytes outside the edited assignment are untouched
        if path not in edit.texts:
            assert (root / path.lstrip("/")).read_text() == text
    again = bootcfg.edit_grub(sources(root), needed_for(case))
    assert again.texts == {} and again.problem is None


@pytest.mark.parametrize("case", CASES)
def test_the_dropin_fix_adds_only_its_own_file_and_the_shell_agrees(case, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(DATA / "grub" / case, root)
    before = {s.path: s.text for s in sources(root)}
    edit = bootcfg.edit_grub_dropin(sources(root), needed_for(case), DROPIN)
    files, after = EXPECTED_DROPIN[case]
    assert sorted(edit.texts) == files
    for path, text in edit.texts.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(text)
    assert sh(root) == after  # /bin/sh sources the drop-in as grub-mkconfig does
    if case == "conditional":
        assert "conditionally" in edit.problem and "edit it by hand" in edit.problem
        return
    words = kargs.split_cmdline(after.replace("|", " "))
    assert not kargs.missing(words, needed_for(case)) and not kargs.contradicting(words)
    old_words = kargs.split_cmdline(sh(DATA / "grub" / case).replace("|", " "))
    kept = [w for w in old_words if w not in kargs.CONTRADICTING]
    assert [w for w in words if w in kept] == kept  # every other argument stays, in order
    for path, text in before.items():  # another file loses its contradicting arguments, nothing else
        new = (root / path.lstrip("/")).read_text()
        removed = "".join(text.split()) != "".join(new.split())
        assert not removed or kargs.contradicting(kargs.split_cmdline(text.replace('"', " ").replace("'", " ")))
        for word in sorted(kargs.CONTRADICTING, key=len, reverse=True):
            new = new.replace(word, "")
            text = text.replace(word, "")
        assert "".join(new.split()) == "".join(text.split())
    assert edit.texts.get(DROPIN, "").startswith(bootcfg.DROPIN_HEADER)
    again = bootcfg.edit_grub_dropin(sources(root), needed_for(case), DROPIN)
    assert again.texts == {} and again.problem is None  # a re-run writes nothing


def test_the_dropin_is_rewritten_when_the_next_boot_lacks_the_arguments_with_it():
    grub = bootcfg.GrubSource("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet"\n')
    stale = bootcfg.GrubSource(DROPIN, bootcfg.dropin_text(["iommu=pt"]))  # written for an AMD machine
    edit = bootcfg.edit_grub_dropin([grub, stale], INTEL, DROPIN)
    assert edit.texts == {DROPIN: bootcfg.dropin_text(["intel_iommu=on", "iommu=pt"])}
    late = bootcfg.GrubSource("/etc/default/grub.d/99-zz.cfg", 'GRUB_CMDLINE_LINUX="x"\n')
    edit = bootcfg.edit_grub_dropin([grub, late], INTEL, DROPIN)
    assert edit.texts == {} and "/etc/default/grub.d/99-zz.cfg:1 sets GRUB_CMDLINE_LINUX after " + DROPIN in edit.problem
    early = bootcfg.GrubSource("/etc/default/grub.d/50-cloudimg-settings.cfg", 'GRUB_CMDLINE_LINUX="console=ttyS0"\n')
    edit = bootcfg.edit_grub_dropin([grub, early], INTEL, DROPIN)
    assert list(edit.texts) == [DROPIN]
    placed = bootcfg.with_dropin([grub, early], DROPIN, edit.texts[DROPIN])
    assert [s.path for s in placed] == [grub.path, early.path, DROPIN]  # sourced after the cloud image's file
    assert bootcfg.evaluate_grub(placed).values[bootcfg.LINUX] == "console=ttyS0 intel_iommu=on iommu=pt"


def test_quoting_is_kept():
    texts = {
        'GRUB_CMDLINE_LINUX="quiet"\n': 'GRUB_CMDLINE_LINUX="quiet intel_iommu=on iommu=pt"\n',
        "GRUB_CMDLINE_LINUX='quiet'\n": "GRUB_CMDLINE_LINUX='quiet intel_iommu=on iommu=pt'\n",
        'GRUB_CMDLINE_LINUX=""\n': 'GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"\n',
        "GRUB_CMDLINE_LINUX=\n": 'GRUB_CMDLINE_LINUX="intel_iommu=on iommu=pt"\n',
        "GRUB_CMDLINE_LINUX=quiet\n": 'GRUB_CMDLINE_LINUX="quiet intel_iommu=on iommu=pt"\n',
        'GRUB_CMDLINE_LINUX=$X"a b"\n': 'GRUB_CMDLINE_LINUX=$X"a b intel_iommu=on iommu=pt"\n',
        'GRUB_CMDLINE_LINUX="a \\"b\\""\n': 'GRUB_CMDLINE_LINUX="a \\"b\\" intel_iommu=on iommu=pt"\n',
        'GRUB_CMDLINE_LINUX="quiet iommu=pt"  # keep\n': 'GRUB_CMDLINE_LINUX="quiet iommu=pt intel_iommu=on"  # keep\n',
    }
    for text, want in texts.items():
        assert bootcfg.edit_grub([bootcfg.GrubSource("/etc/default/grub", text)], INTEL).texts == \
            {"/etc/default/grub": want}, text


def test_statements_the_shell_does_not_perform_are_not_assignments():
    text = ("GRUB_CMDLINE_LINUX=a true\n"  # an environment for one command
            "# GRUB_CMDLINE_LINUX=commented\n"
            "echo GRUB_CMDLINE_LINUX=b\n"
            "GRUB_CMDLINE_LINUX_DEFAULT=c\n")
    names = [(a.name, a.conditional) for a in bootcfg.parse_assignments(text)]
    assert names == [("GRUB_CMDLINE_LINUX_DEFAULT", False)]


@pytest.mark.parametrize("text", [
    "[ -e /x ] && GRUB_CMDLINE_LINUX=a\n",
    "test -e /x || GRUB_CMDLINE_LINUX=a\n",
    "case $x in a) GRUB_CMDLINE_LINUX=a;; esac\n",
    "for i in 1; do GRUB_CMDLINE_LINUX=a; done\n",
    "f() { GRUB_CMDLINE_LINUX=a; }\n",
    "echo | GRUB_CMDLINE_LINUX=a\n",
])
def test_conditional_assignments_are_reported_not_guessed(text):
    (a,) = [a for a in bootcfg.parse_assignments(text) if a.name == "GRUB_CMDLINE_LINUX"]
    assert a.conditional
    ev = bootcfg.evaluate_grub([bootcfg.GrubSource("/etc/default/grub", text)])
    assert ev.uncertain and ev.values[bootcfg.LINUX] == ""


def test_a_file_the_shell_would_refuse_is_reported():
    ev = bootcfg.evaluate_grub([bootcfg.GrubSource("/etc/default/grub", 'GRUB_CMDLINE_LINUX="quiet\n')])
    assert ev.uncertain == ["/etc/default/grub: unterminated double quote (a shell would refuse the file)"]


def test_bls_entries_expand_grubenv_and_follow_saved_entry():
    root = DATA / "bls" / "rhel9"
    env = bootcfg.parse_grubenv((root / "boot/grub2/grubenv").read_text())
    files = [(f"/boot/loader/entries/{p.name}", p.read_text()) for p in (root / "boot/loader/entries").iterdir()]
    entries = bootcfg.bls_entries(files, env)
    assert [e.id.split("-", 1)[1] for e in entries] == ["5.14.0-362.8.1.el9_3.x86_64", "5.14.0-284.30.1.el9_2.x86_64",
                                                        "0-rescue"]
    default = bootcfg.default_bls(entries, env)
    assert default is entries[0]
    assert default.words[-2:] == ("skew_tick=1", "nohz=on")  # $tuned_params from grubenv
    assert "intel_iommu=off" in entries[1].words


def test_rhel8_kernelopts_live_in_grubenv():
    root = DATA / "bls" / "rhel8"
    env = bootcfg.parse_grubenv((root / "boot/grub2/grubenv").read_text())
    files = [(f"/boot/loader/entries/{p.name}", p.read_text()) for p in (root / "boot/loader/entries").iterdir()]
    (entry,) = bootcfg.bls_entries(files, env)
    assert "iommu=off" in entry.words and entry.words[0] == "root=/dev/mapper/rhel-root"


def test_without_saved_entry_the_newest_entry_boots():
    files = [("/boot/loader/entries/m-5.14.0-70.el9.conf", "options a\n"),
             ("/boot/loader/entries/m-5.14.0-362.el9.conf", "options b\n")]
    entries = bootcfg.bls_entries(files, {})
    assert bootcfg.default_bls(entries, {}).words == ("b",)  # 362 > 70 numerically, not as text


def test_the_generated_grub_cfg_first_entry():
    text = (DATA / "grub-cfg" / "debian12-grub.cfg").read_text()
    kernel, words = bootcfg.grub_cfg_first_entry(text)
    assert kernel == "/boot/vmlinuz-6.1.0-18-amd64" and words[-1] == "quiet" and "single" not in words


@pytest.mark.parametrize("value", ["`uname -r`x", '"a `echo "b"` c"', '"$(echo `date`) d"', "$(x `y)` z)"])
def test_backquotes_are_one_unknown_segment_wherever_they_stand(value):
    (a,) = bootcfg.parse_assignments(f"GRUB_CMDLINE_LINUX={value}\n")
    assert a.raw(f"GRUB_CMDLINE_LINUX={value}\n") == value
    unknown = [s for s in a.segments if s.kind == "unknown"]
    assert len(unknown) == 1 and "`" in unknown[0].value
    assert bootcfg._literal(a.segments) is None  # nothing computed at run time is taken for a literal


def test_an_unterminated_backquote_is_a_syntax_error():
    with pytest.raises(bootcfg.ShellSyntaxError, match="backquote"):
        bootcfg.parse_assignments('GRUB_CMDLINE_LINUX="`uname\n')
