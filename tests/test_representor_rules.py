"""`sriov-node udev-rule` for switchdev PFs: representors named from phys_port_name (`{pf}_{vf}` or the
block's representor_name), kept off NetworkManager like VFs, the PF's own name pinned across the eswitch
change; bad templates are refused naming the key, the PF and the VF, with nothing printed. The printed
rules are parsed by udevd's own parser (and `udevadm verify` where systemd has it, >= 255)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import PF0, PF1, run_cli

SWITCHDEV = f"""
    [[pf]]
    pci = "{PF0}"
    num_vfs = 3
    eswitch_mode = "switchdev"
    [[pf]]
    pci = "{PF1}"
    num_vfs = 2
    eswitch_mode = "switchdev"
    representor_name = "r{{pf}}v{{vf}}"
"""


def rule_lines(out: str, pf: str):
    return [ln for ln in out.splitlines() if f'KERNELS=="{pf}"' in ln]


def test_representors_are_named_from_phys_port_name_and_kept_off_networkmanager(make_host, write_config):
    host = make_host(("cx5", 2, None))
    proc = run_cli("udev-rule", root=host.root, config=write_config(SWITCHDEV))
    assert proc.returncode == 0, proc.stderr
    reps = [ln for ln in rule_lines(proc.stdout, PF0) if "pf*vf" in ln and "GOTO" not in ln]
    assert [ln.split('phys_port_name}=="')[1].split('"')[0] for ln in reps] == ["pf*vf0", "pf*vf1", "pf*vf2"]
    assert ['NAME="ens1f0_0"' in reps[0], 'NAME="ens1f0_2"' in reps[2]] == [True, True]
    assert all('ENV{NM_UNMANAGED}="1"' in ln and 'ENV{SRIOV_NODE_REPRESENTOR}="1"' in ln for ln in reps)
    templated = [ln for ln in rule_lines(proc.stdout, PF1) if "pf*vf" in ln and "GOTO" not in ln]
    assert [ln.split('NAME="')[1].split('"')[0] for ln in templated] == ["rens1f1v0", "rens1f1v1"]
    # the PF keeps its name: matched by its PCI path and permanent MAC, representors skipped past it
    (pin,) = [ln for ln in rule_lines(proc.stdout, PF0) if 'NAME="ens1f0"' in ln]
    assert pin.startswith('ACTION=="add"') and 'ATTR{address}=="0c:42:a1:00:20:00"' in pin
    skip = rule_lines(proc.stdout, PF0)[0]
    assert 'ATTR{phys_port_name}=="pf*vf*|pf*sf*|c*pf*", GOTO="sriov_node_rep_pf0"' in skip
    assert proc.stdout.index(skip) < proc.stdout.index(pin) < proc.stdout.index('LABEL="sriov_node_rep_pf0"')
    # the VFs' own rule is there as before
    assert 'RESULT=="*/0000:20:00.0|*/0000:20:00.1", ENV{NM_UNMANAGED}="1"' in proc.stdout


def test_legacy_blocks_print_no_representor_rules(make_host, write_config):
    host = make_host(("cx5", 2, None))
    proc = run_cli("udev-rule", root=host.root, config=write_config(SWITCHDEV.replace("switchdev", "legacy").replace(
        'representor_name = "r{pf}v{vf}"', "")))
    assert proc.returncode == 0, proc.stderr
    assert "phys_port_name" not in proc.stdout and "sriov_node_rep" not in proc.stdout


@pytest.mark.parametrize("template, words", [
    ("{pf}_representor_{vf}", "'ens1f1_representor_0' is 20 characters long"),
    ("rep{vf}", "'rep0' is also the representor of VF 0 of 0000:20:00.0"),
    ("ens1f0", "has no {vf}"),
    ("{pf}-{port}{vf}", "the only fields are {pf}"),
])
def test_a_bad_template_is_refused_naming_the_key_and_nothing_is_printed(make_host, write_config, template, words):
    host = make_host(("cx5", 2, None))
    text = SWITCHDEV.replace('representor_name = "r{pf}v{vf}"', f'representor_name = "{template}"')
    if template == "rep{vf}":
        text = text.replace('eswitch_mode = "switchdev"\n    [[pf]]',
                            'eswitch_mode = "switchdev"\n    representor_name = "rep{vf}"\n    [[pf]]', 1)
    proc = run_cli("udev-rule", root=host.root, config=write_config(text))
    assert proc.returncode == 2 and proc.stdout == "", proc
    assert "representor_name" in proc.stderr and words in proc.stderr, proc.stderr


def test_representor_name_needs_switchdev(make_host, write_config):
    host = make_host(("cx5", 2, None))
    proc = run_cli("validate", root=host.root, config=write_config(SWITCHDEV.replace(
        'eswitch_mode = "switchdev"\n    representor_name', 'eswitch_mode = "legacy"\n    representor_name')))
    assert proc.returncode == 2 and 'pf[1].representor_name: names switchdev representors' in proc.stderr, proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("udevadm"),
                    reason="needs root, unshare and udevadm")
def test_the_printed_rules_parse_clean(make_host, write_config, tmp_path):
    host = make_host(("cx5", 2, None))
    proc = run_cli("udev-rule", root=host.root, config=write_config(SWITCHDEV))
    rules = tmp_path / "90-sriov-node-vf-unmanaged.rules"
    rules.write_text(proc.stdout)
    verify = subprocess.run(["udevadm", "verify", str(rules)], capture_output=True, text=True, timeout=60)
    if "Unknown command" not in verify.stderr:  # systemd >= 255
        assert verify.returncode == 0, verify.stdout + verify.stderr
    script = "\n".join(["set -e", "mount -t tmpfs tmpfs /run", "mkdir -p /run/udev/rules.d",
                        f"cp {rules} /run/udev/rules.d/", "udevadm test --action=add /sys/class/net/lo 2>&1 || true"])
    out = subprocess.run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
                         capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert f"Reading rules file: /run/udev/rules.d/{rules.name}" in text, text[-3000:]
    assert f"/run/udev/rules.d/{rules.name}:" not in text, text[-3000:]  # udevd names the file on any complaint


def add_representor(root: str, pf_netdev: str, name: str, port: str) -> None:
    """A representor as the lab kernel (netdevsim on Linux 6.1) shows it: a netdev of the PF's own device,
    in its net/ folder beside the PF's, with phys_port_name pfMvfN."""
    pf_dir = os.path.realpath(os.path.join(root, "sys/class/net", pf_netdev))
    rep = os.path.join(os.path.dirname(pf_dir), name)
    os.makedirs(rep)
    for attr, value in (("phys_port_name", port), ("address", "a6:1f:00:00:00:01"), ("type", "1"), ("mtu", "1500")):
        with open(os.path.join(rep, attr), "w") as fh:
            fh.write(value + "\n")
    os.symlink(os.path.join(pf_dir, "device"), os.path.join(rep, "device"))
    os.symlink(os.path.relpath(rep, os.path.join(root, "sys/class/net")), os.path.join(root, "sys/class/net", name))


def test_the_pf_keeps_its_name_beside_representors_that_sort_before_it(make_host, write_config):
    """Once in switchdev the PF's device lists its representors too; a representor named before the PF
    ("dev0" < "ens1f0") is not the PF's name: udev-rule prints the same rules, status names the PF."""
    host = make_host(("cx5", 1, None))
    config = write_config(f"""
        [[pf]]
        pci = "{PF0}"
        num_vfs = 2
        eswitch_mode = "switchdev"
        representor_name = "dev{{vf}}"
    """)
    before = run_cli("udev-rule", root=host.root, config=config)
    assert before.returncode == 0 and 'NAME="dev0"' in before.stdout, before.stderr
    for vf in range(2):
        add_representor(host.root, "ens1f0", f"dev{vf}", f"pf0vf{vf}")
    after = run_cli("udev-rule", root=host.root, config=config)
    assert after.returncode == 0 and after.stdout == before.stdout, after.stderr
    status = run_cli("status", "--json", root=host.root, config=config)
    assert [pf["name"] for pf in json.loads(status.stdout)["pfs"]] == ["ens1f0"], status.stdout
