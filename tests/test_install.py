"""scripts/install into a DESTDIR tree: files in place, ExecStart where the console script is, idempotent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def install(destdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DESTDIR": str(destdir)}
    return subprocess.run(["bash", str(REPO / "scripts/install"), *args], capture_output=True, text=True,
                          timeout=120, env=env)


def tree(root: Path):
    return sorted((str(p.relative_to(root)), p.read_text() if p.is_file() and not p.is_symlink() else os.readlink(p))
                  for p in root.rglob("*") if p.is_file() or p.is_symlink())


def fake_bin(dest: Path, interpreter: str, where: str = "/opt/sriov-node/bin/sriov-node") -> str:
    """A console script at `where` on the target (inside DESTDIR), run by `interpreter`."""
    path = dest / where.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(f"#!{interpreter}\nimport sys\n")
    path.chmod(0o755)
    return where


def test_install_puts_everything_in_place_and_enables_the_units(tmp_path):
    dest = tmp_path / "root"
    binary = fake_bin(dest, "/usr/bin/python3")
    result = install(dest, "--bin", binary)
    assert result.returncode == 0, result.stderr
    units = dest / "etc/systemd/system"
    for unit, verb in (("sriov-node.service", "boot"), ("sriov-node-agent.service", "daemon")):
        text = (units / unit).read_text()
        directives = [line for line in text.splitlines() if not line.startswith("#")]
        assert f"ExecStart={binary} {verb}" in directives and not [d for d in directives if "/usr/bin/sriov-node" in d]
        assert (units / "multi-user.target.wants" / unit).is_symlink()
        assert not (units / f"{unit}.d").exists()  # /opt and /usr/bin/python3: the whole sandbox stays
    assert (dest / "etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules").read_text() == \
        (REPO / "etc/udev/rules.d/90-sriov-node-vf-unmanaged.rules").read_text()
    # the example, never a live config: the units stay inert until the admin writes one
    assert (dest / "etc/sriov-node/config.toml.example").read_text() == (REPO / "etc/sriov-node/config.toml").read_text()
    assert not (dest / "etc/sriov-node/config.toml").exists()
    assert "do nothing until it exists" in result.stdout
    first = tree(dest)
    again = install(dest, "--bin", binary)
    assert again.returncode == 0 and tree(dest) == first  # idempotent


def drop_in_directives(dest: Path, unit: str) -> list:
    text = (dest / f"etc/systemd/system/{unit}.d/10-interpreter.conf").read_text()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_an_interpreter_under_root_gets_a_read_only_home_drop_in(tmp_path):
    dest = tmp_path / "root"
    assert install(dest, "--bin", fake_bin(dest, "/root/.pyenv/versions/3.11.7/bin/python3")).returncode == 0
    for unit in ("sriov-node.service", "sriov-node-agent.service"):
        assert drop_in_directives(dest, unit) == ["[Service]", "ProtectHome=read-only"]


def test_a_checkout_under_tmp_keeps_the_real_tmp(tmp_path):
    # PrivateTmp=yes would mount an empty /tmp over the venv: 203/EXEC at boot
    dest = tmp_path / "root"
    binary = fake_bin(dest, "/root/.pyenv/versions/3.11.7/bin/python3", "/tmp/checkout/.venv/bin/sriov-node")
    result = install(dest, "--bin", binary)
    assert result.returncode == 0, result.stderr
    assert drop_in_directives(dest, "sriov-node-agent.service") == ["[Service]", "ProtectHome=read-only", "PrivateTmp=no"]
    assert "/tmp/checkout/.venv/bin/sriov-node" in result.stdout


def test_an_existing_config_is_kept_and_uninstall_keeps_it_too(tmp_path):
    dest = tmp_path / "root"
    config = dest / "etc/sriov-node/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("# mine\n")
    binary = fake_bin(dest, "/usr/bin/python3")
    assert install(dest, "--bin", binary).returncode == 0
    assert config.read_text() == "# mine\n"
    assert (dest / "etc/sriov-node/config.toml.example").exists()
    result = install(dest, "--uninstall", "--bin", binary)
    assert result.returncode == 0, result.stderr
    # what is left: the config, and the sriov-node that --bin named (not ours to remove)
    assert [path for path, _ in tree(dest)] == ["etc/sriov-node/config.toml", "opt/sriov-node/bin/sriov-node"]


def test_destdir_without_bin_is_refused(tmp_path):
    result = install(tmp_path / "root")
    assert result.returncode == 2 and "--bin" in result.stderr


def readme_install_examples():
    """The README's `scripts/install` command lines, as written."""
    text = (REPO / "README.md").read_text()
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if "scripts/install" in line and not line.startswith(("|", "`", "-"))]


def test_the_readme_install_examples_work_as_written(tmp_path):
    """Those that write into a tree run as written; those that install on this machine are checked
    against --help (each option they use is documented there) and run into a DESTDIR instead."""
    examples = readme_install_examples()
    assert any(e.startswith("DESTDIR=") for e in examples), examples
    usage = subprocess.run(["bash", str(REPO / "scripts/install"), "--help"], capture_output=True, text=True).stdout
    for number, example in enumerate(examples):
        words = example.split()
        for word in words:
            if word.startswith("--"):
                assert word in usage, f"{example}: {word} is not in scripts/install --help"
        cwd = tmp_path / f"example{number}"
        cwd.mkdir()
        (cwd / "scripts").symlink_to(REPO / "scripts")
        if example.startswith("DESTDIR="):
            proc = subprocess.run(example, shell=True, cwd=cwd, capture_output=True, text=True, timeout=120)
            assert proc.returncode == 0, f"{example}: {proc.stderr}"
            dest = cwd / example.split()[0].split("=", 1)[1]
            assert (dest / "etc/systemd/system/sriov-node.service").exists()
        elif "--bin" in words and "PATH" in words:
            binary = fake_bin(cwd / "root", "/usr/bin/python3")
            proc = install(cwd / "root", *[binary if w == "PATH" else w for w in words[1:]])
            assert proc.returncode == 0, f"{example}: {proc.stderr}"
        elif "--uninstall" in words:
            proc = install(cwd / "root", *words[1:])
            assert proc.returncode == 0, f"{example}: {proc.stderr}"


def test_help_documents_every_option_the_script_takes():
    text = (REPO / "scripts/install").read_text()
    usage = subprocess.run(["bash", str(REPO / "scripts/install"), "--help"], capture_output=True, text=True).stdout
    import re

    parsed = set(re.findall(r"^\s+(--[a-z-]+)\)", text, re.M))
    assert parsed >= {"--bin", "--venv", "--uninstall", "--no-enable"}
    for option in parsed:
        assert option in usage, option


def test_the_man_pages_are_installed_and_named_by_the_units(tmp_path):
    """With an sriov-node that runs here, its man pages are made from its CLI and the units name
    them; `systemd-analyze verify` then finds them (it checks every man: page a unit names)."""
    import shutil
    import sys

    dest = tmp_path / "root"
    binary = os.path.join(os.path.dirname(sys.executable), "sriov-node")
    result = install(dest, "--bin", binary)
    assert result.returncode == 0, result.stderr
    man = dest / "usr/local/share/man"
    assert "SRIOV-NODE" in (man / "man8/sriov-node.8").read_text()
    assert (man / "man5/sriov-node.toml.5").exists()
    for unit in ("sriov-node.service", "sriov-node-agent.service"):
        path = dest / "etc/systemd/system" / unit
        assert "Documentation=man:sriov-node(8) man:sriov-node.toml(5) " in path.read_text()
        proc = subprocess.run([shutil.which("systemd-analyze") or "systemd-analyze", "verify", "--man=yes", str(path)],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MANPATH": f"{man}:"})
        assert "man sriov-node" not in proc.stderr, proc.stderr
    assert install(dest, "--uninstall", "--bin", binary).returncode == 0
    assert not (man / "man8/sriov-node.8").exists()
