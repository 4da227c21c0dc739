"""The Debian package as users get it: built by scripts/package with the Debian tools, clean for
lintian, the files where Debian puts them, no live config, maintainer scripts that keep the boot
oneshot out of upgrades, and the packaged program running on Debian's own Python libraries
(typer 0.7 on Debian 12). The lab boots a real kernel from the packaged units
(tests/lab/test_package_lab.py)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict

import pytest

REPO = Path(__file__).resolve().parent.parent

SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([str(REPO / "scripts" / "package"), "--no-lint", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = glob.glob(str(out / "sriov-node_*_all.deb"))
    assert len(found) == 1, found
    return Path(found[0])


@pytest.fixture(scope="module")
def tree(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("installed")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


@pytest.fixture(scope="module")
def control(deb, tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(directory)], check=True)
    return directory


def files_of(deb: Path):
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].lstrip(".") for line in listing.splitlines() if not line.startswith("d")}


def test_the_version_is_the_programs(deb):
    from sriov_node import __version__

    assert deb.name == f"sriov-node_{__version__}_all.deb"


def test_lintian_reports_no_error_and_no_warning(deb):
    proc = subprocess.run(["lintian", "-I", "-E", "--pedantic", str(deb)], capture_output=True, text=True)
    tags = [line for line in proc.stdout.splitlines() if line[:2] in ("E:", "W:", "I:", "P:", "X:")]
    assert not [t for t in tags if t.startswith(("E:", "W:"))], proc.stdout
    # the informational tags we keep, each explained in docs/packaging.md
    kept = (REPO / "docs" / "packaging.md").read_text()
    for tag in tags:
        name = tag.split()[2]
        assert f"`{name}`" in kept, f"{tag}: not explained in docs/packaging.md"


def test_the_files_are_where_debian_puts_them(deb):
    files = files_of(deb)
    for path in ("/usr/bin/sriov-node",
                 "/lib/systemd/system/sriov-node.service", "/lib/systemd/system/sriov-node-agent.service",
                 "/lib/udev/rules.d/90-sriov-node-vf-unmanaged.rules",
                 "/usr/share/man/man8/sriov-node.8.gz", "/usr/share/man/man5/sriov-node.toml.5.gz",
                 "/usr/share/bash-completion/completions/sriov-node",
                 "/usr/share/doc/sriov-node/copyright",
                 "/usr/lib/python3/dist-packages/sriov_node/cli/__init__.py"):
        assert path in files, path
    for example in (REPO / "docs" / "examples").glob("*.toml"):
        assert f"/usr/share/doc/sriov-node/examples/{example.name}" in files
    # inert until the admin writes a config: no live config, nothing under /etc at all
    assert not [f for f in files if f.startswith("/etc/")]


def test_the_units_do_nothing_without_a_config(tree):
    for unit in ("sriov-node.service", "sriov-node-agent.service"):
        text = (tree / "lib/systemd/system" / unit).read_text()
        assert "ConditionPathExists=/etc/sriov-node/config.toml" in text
        assert "ExecStart=/usr/bin/sriov-node " in text


def _script(control: Path, name: str) -> str:
    path = control / name
    return path.read_text() if path.exists() else ""


def test_upgrades_restart_the_agent_but_never_rerun_the_boot_oneshot(control):
    postinst, prerm = _script(control, "postinst"), _script(control, "prerm")
    # both enabled on install
    assert "deb-systemd-helper enable 'sriov-node.service'" in postinst
    assert "deb-systemd-helper enable 'sriov-node-agent.service'" in postinst
    # after an upgrade ($2 = the old version) the agent is restarted ...
    assert "_dh_action=restart" in postinst and "deb-systemd-invoke $_dh_action 'sriov-node-agent.service'" in postinst
    # ... the oneshot only started, a no-op for an active RemainAfterExit oneshot (the lab checks it is not re-run)
    assert "deb-systemd-invoke start 'sriov-node.service'" in postinst
    assert "restart 'sriov-node.service'" not in postinst and "$_dh_action 'sriov-node.service'" not in postinst
    # neither is stopped before an upgrade: only on remove
    assert prerm.count("deb-systemd-invoke stop") == 2 and prerm.count('[ "$1" = remove ]') == 2


def test_purge_removes_the_generations_and_keeps_the_admins_config(control, tmp_path):
    postrm = control / "postrm"
    fake = tmp_path / "var/lib/sriov-node"
    (fake / "generations").mkdir(parents=True)
    # run the purge branch with /var/lib pointed at a scratch tree
    # the helpers it calls are stubs here: this machine's systemd state is not touched
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
        (stubs / tool).write_text("#!/bin/sh\nexit 0\n")
        (stubs / tool).chmod(0o755)
    text = (postrm.read_text().replace("/var/lib/sriov-node", str(fake))
            .replace("/usr/bin/deb-systemd-helper", str(stubs / "deb-systemd-helper")))
    script = tmp_path / "postrm"
    script.write_text(text)
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    assert subprocess.run(["sh", str(script), "remove"], env=env).returncode == 0 and fake.exists()
    assert subprocess.run(["sh", str(script), "purge"], env=env).returncode == 0 and not fake.exists()
    assert "/etc/sriov-node" not in postrm.read_text()


def _run(tree: Path, *args: str, env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    return subprocess.run([SYSTEM_PYTHON, str(tree / "usr/bin/sriov-node"), *args], capture_output=True, text=True,
                          timeout=120, cwd="/",
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tree / "usr/lib/python3/dist-packages"),
                               **(env or {})})


def test_the_packaged_program_runs_on_debians_own_libraries(tree, tmp_path):
    """Debian's python3 with python3-typer (0.7 on Debian 12), -pyroute2, -pyudev, -systemd, -tomlkit."""
    versions = subprocess.run([SYSTEM_PYTHON, "-c", "import typer, tomlkit, pyroute2, pyudev, systemd; print(typer.__version__)"],
                              capture_output=True, text=True, cwd="/", env={"PATH": "/usr/bin:/bin"})
    assert versions.returncode == 0, "scripts/setup installs Debian's python3-* runtime packages: " + versions.stderr
    from sriov_node import __version__

    assert _run(tree, "--version").stdout.strip() == f"sriov-node {__version__}"
    host, config = tmp_path / "host", tmp_path / "config.toml"
    assert _run(tree, "sim", "create", str(host), "--nic", "x710:2").returncode == 0
    config.write_text((REPO / "docs/examples/intel-x710.toml").read_text())
    common = ("--root", str(host), "--config", str(config))
    assert _run(tree, *common, "validate").returncode == 0
    first = _run(tree, *common, "apply")
    assert first.returncode == 0, first.stderr
    again = _run(tree, *common, "apply", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["result"] == "converged" and report["writes"] == 0, report
    assert "converged" in _run(tree, *common, "status").stdout
    edited = _run(tree, *common, "set", "ens1f1", "num_vfs=12")
    assert edited.returncode == 0, edited.stderr
    assert "num_vfs = 12" in config.read_text()
    # completion, as the packaged script asks for it: commands, then this host's PF names
    words = _run(tree, env={"_SRIOV_NODE_COMPLETE": "complete_bash", "COMP_WORDS": "sriov-node se", "COMP_CWORD": "1"})
    assert "set" in words.stdout.split()
    pfs = _run(tree, env={"_SRIOV_NODE_COMPLETE": "complete_bash", "COMP_CWORD": "4",
                          "COMP_WORDS": f"sriov-node --root {host} set ens"})
    assert {"ens1f0", "ens1f1"} <= set(pfs.stdout.split()), pfs.stdout + pfs.stderr


def test_the_man_pages_render_without_warnings_and_cover_every_command(tree):
    import typer

    from sriov_node.cli import register
    from sriov_node.cli.app import app

    register([])
    page = tree / "usr/share/man/man8/sriov-node.8.gz"
    proc = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True,
                          env={**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
    command = typer.main.get_command(app)
    for name in command.commands:
        assert f"sriov-node {name}" in proc.stdout, name
    config_page = subprocess.run(["man", "--warnings", "-l", str(tree / "usr/share/man/man5/sriov-node.toml.5.gz")],
                                 capture_output=True, text=True, env={**os.environ, "MANWIDTH": "100"})
    assert config_page.returncode == 0 and not config_page.stderr.strip(), config_page.stderr
    from sriov_node import config as schema

    for key in schema.PF_KEYS:
        assert f"pf.{key}" in config_page.stdout, key


def test_systemd_analyze_verify_of_the_packaged_units_is_clean_with_their_man_pages(tree, tmp_path):
    """As packagers run it (man pages checked): the packaged units in a root holding the package."""
    root = tmp_path / "root"
    shutil.copytree(tree, root, symlinks=True)
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True, dirs_exist_ok=True)
    for unit in ("sriov-node.service", "sriov-node-agent.service"):
        shutil.copy(root / "lib/systemd/system" / unit, root / "usr/lib/systemd/system" / unit)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    shutil.copy(shutil.which("kill") or "/usr/bin/kill", root / "usr/bin/kill")
    (root / "bin").exists() or os.symlink("usr/bin", root / "bin")
    for unit in ("sriov-node.service", "sriov-node-agent.service"):
        proc = subprocess.run(["systemd-analyze", "verify", "--man=yes", f"--root={root}", f"/usr/lib/systemd/system/{unit}"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MANPATH": str(tree / "usr/share/man") + ":"})
        assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    # the same without the package's man pages: the check is real
    proc = subprocess.run(["systemd-analyze", "verify", "--man=yes", f"--root={root}", "/usr/lib/systemd/system/sriov-node.service"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MANPATH": str(tmp_path) + ":"})
    assert "sriov-node(8)" in proc.stderr
