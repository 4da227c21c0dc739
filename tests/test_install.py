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
    assert (dest / "etc/sriov-node/config.toml").read_text() == (REPO / "etc/sriov-node/config.toml").read_text()
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
    result = install(dest, "--uninstall", "--bin", binary)
    assert result.returncode == 0, result.stderr
    # what is left: the config, and the sriov-node that --bin named (not ours to remove)
    assert [path for path, _ in tree(dest)] == ["etc/sriov-node/config.toml", "opt/sriov-node/bin/sriov-node"]


def test_destdir_without_bin_is_refused(tmp_path):
    result = install(tmp_path / "root")
    assert result.returncode == 2 and "--bin" in result.stderr
