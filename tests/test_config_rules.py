"""Config rules a review found missing, each held at its rule and through the commands (validate, apply
--dry-run, apply, udev-rule on a simulated host: exit 2, the key named, nothing written):

- `[device_plugin] config_file` never names sriov-node's own files (the config itself, as --config gives
  it, its .bak; /etc/sriov-node, /var/lib/sriov-node, /run/sriov-node but its device-plugin/ directory,
  the GRUB drop-in and the modprobe.d file) nor anything in /sys, /proc, /dev;
- `representor_name` holds only what udev gives an interface as written in its rule, and every name
  of every VF index is checked by validate and apply with udev-rule's one check (length, digits, no
  PF's name on the host, none twice);
- a VF MAC, node GUID or port GUID is one VF's: twice in the file, or in a block that selects several
  PFs on the host, is refused; an all-zero MAC is refused;
- a PF name is what the kernel's dev_valid_name accepts ("a..b" is one, "." and ".." are not).
"""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from sriov_node.config import check_ifname, parse_config
from sriov_node.errors import ConfigError
from tests.helpers import PF0, PF1, run_cli, sim_writes

GOOD_PLUGIN_FILE = "/run/sriov-node/device-plugin/config.json"


def problems(text: str, source: str = "config.toml", config_path=None):
    """{key: message} of the ConfigError parse_config raises for `text` ({} when it is valid)."""
    try:
        if config_path is None:
            parse_config(textwrap.dedent(text).encode(), source)
        else:
            parse_config(textwrap.dedent(text).encode(), source, config_path=config_path)
    except ConfigError as exc:
        return {p.key: p.message for p in exc.problems}
    return {}


def plugin_config(path: str, pf: str = 'name = "ens1f0"') -> str:
    return textwrap.dedent(f"""\
        version = 1
        [device_plugin]
        config_file = "{path}"
        [[pf]]
        {pf}
        num_vfs = 2
          [[pf.vfs]]
          range = "0-1"
          driver = "iavf"
          resource = "r1"
        """)


def generations(host) -> list:
    try:
        return os.listdir(os.path.join(host.root, "var/lib/sriov-node/generations"))
    except FileNotFoundError:
        return []


def refused_everywhere(host, config: str, key: str, *words: str) -> None:
    """validate, apply --dry-run and apply all exit 2 naming `key` (and `words`); nothing is written: not
    the kernel, not the config, no generation."""
    with open(config, "rb") as fh:
        before = fh.read()
    for command in (["validate"], ["apply", "--dry-run"], ["apply"]):
        proc = run_cli(*command, root=host.root, config=config)
        out = f"{command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 2, out
        assert f"{config}: {key}: " in proc.stderr, out
        assert all(w in proc.stderr for w in words), out
        assert "Traceback" not in proc.stderr, out
    with open(config, "rb") as fh:
        assert fh.read() == before
    assert sim_writes(host) == []
    assert generations(host) == []


def refused_on_this_host(host, config: str, key: str, *words: str) -> None:
    """A block valid in itself that is wrong on this host fails alone, as a selector that matches no PF
    does (tests/host_configs/): validate, apply --dry-run and apply exit 1 naming `key` (and `words`);
    nothing of the block is written (it is the config's only block here: nothing is)."""
    with open(config, "rb") as fh:
        before = fh.read()
    for command in (["validate"], ["apply", "--dry-run"], ["apply"]):
        proc = run_cli(*command, root=host.root, config=config)
        out = f"{command}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert proc.returncode == 1, out
        assert f"{config}: {key}: " in proc.stderr, out
        assert all(w in proc.stderr for w in words), out
        assert "Traceback" not in proc.stderr, out
    with open(config, "rb") as fh:
        assert fh.read() == before
    assert sim_writes(host) == []


# ---------------------------------------------------------------------------- [device_plugin] config_file


@pytest.mark.parametrize("path, place", [
    ("/etc/sriov-node/config.toml", "/etc/sriov-node"),
    ("/etc/sriov-node/config.toml.bak", "/etc/sriov-node"),
    ("/etc/sriov-node/plugin.json", "/etc/sriov-node"),
    ("/var/lib/sriov-node/state.json", "/var/lib/sriov-node"),
    ("/var/lib/sriov-node/generations/00000001.json", "/var/lib/sriov-node"),
    ("/run/sriov-node/apply.lock", "/run/sriov-node"),
    ("/run/sriov-node/agent.pid", "/run/sriov-node"),
    ("/run/sriov-node/reboot-required", "/run/sriov-node"),
    ("/run/sriov-node/config.json", "/run/sriov-node"),
    ("/run/sriov-node/device-plugin", "/run/sriov-node"),  # the directory itself
    ("/var/run/sriov-node/apply.lock", "/run/sriov-node"),  # /var/run is /run
    ("//run//sriov-node/apply.lock", "/run/sriov-node"),
    ("/dev/null", "/dev"),
    ("/dev/shm/config.json", "/dev"),
    ("/sys/bus/pci/rescan", "/sys"),
    ("/proc/sys/kernel/panic", "/proc"),
    ("/etc/default/grub.d/99-sriov-node.cfg", "GRUB drop-in"),
    ("/etc/modprobe.d/sriov-node-rdma.conf", "ib_core options"),
])
def test_config_file_never_names_sriov_nodes_own_files_or_the_kernels(path, place):
    found = problems(plugin_config(path))
    assert list(found) == ["device_plugin.config_file"], found
    why = found["device_plugin.config_file"]
    assert repr(path) in why and place in why and "replace" in why and GOOD_PLUGIN_FILE in why, why


@pytest.mark.parametrize("path", [
    GOOD_PLUGIN_FILE,
    "/run/sriov-node/device-plugin/node/config.json",
    "/run/sriovdp/config.json",
    "/run/sriov-node-plugin/config.json",  # another directory, not /run/sriov-node's
    "/etc/pcidp/config.json",
    "/var/lib/sriov-node-plugin.json",
    "/system/config.json",
    "/devices.json",
])
def test_config_file_elsewhere_is_accepted(path):
    assert problems(plugin_config(path)) == {}


def test_config_file_is_not_the_config_itself_nor_its_backup(tmp_path):
    config = tmp_path / "node.toml"
    for path, what in ((str(config), "the config file itself"), (f"{config}.bak", "backup"),
                       (f"{config}.unapplied-20240101-120000", "unapplied edit")):
        found = problems(plugin_config(path), str(config))
        assert "device_plugin.config_file" in found and what in found["device_plugin.config_file"], (path, found)
        # the path as --config gives it, relative: the same file
        cwd = os.getcwd()
        try:
            os.chdir(tmp_path)
            assert "device_plugin.config_file" in problems(plugin_config(path), "node.toml", config_path="node.toml")
        finally:
            os.chdir(cwd)
    # a symbolic link to the config: the file it names is the config
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    found = problems(plugin_config(str(config)), str(link), config_path=str(link))
    assert "the config file itself" in found.get("device_plugin.config_file", ""), found
    # under a root (--root R, the config at R/srv/node.toml): the plugin's "/srv/node.toml" is R/srv/node.toml
    under = tmp_path / "root/srv/node.toml"
    found = problems(plugin_config("/srv/node.toml"), str(under))
    assert f"under the root {tmp_path / 'root'}" in found.get("device_plugin.config_file", ""), found
    assert problems(plugin_config("/srv/other.toml"), str(under)) == {}


def test_config_file_is_not_the_metrics_textfile():
    text = plugin_config("/var/lib/prometheus/node-exporter/sriov_node.prom") + textwrap.dedent("""\
        [metrics]
        textfile = "/var/lib/prometheus/node-exporter/sriov_node.prom"
        """)
    assert "[metrics] textfile" in problems(text).get("device_plugin.config_file", "")


def test_a_config_naming_itself_is_refused_and_never_overwritten(make_host):
    """The review's case: the config at /etc/sriov-node/config.toml names itself; apply used to write JSON over it."""
    host = make_host(("e810", 2, None))
    path = os.path.join(host.root, "etc/sriov-node/config.toml")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(plugin_config("/etc/sriov-node/config.toml"))
    refused_everywhere(host, path, "device_plugin.config_file", "'/etc/sriov-node/config.toml'", GOOD_PLUGIN_FILE)


@pytest.mark.parametrize("path", ["/var/lib/sriov-node/state.json", "/run/sriov-node/apply.lock", "/dev/null"])
def test_own_files_are_refused_before_anything_is_written(make_host, write_config, path):
    host = make_host(("e810", 2, None))
    refused_everywhere(host, write_config(plugin_config(path)), "device_plugin.config_file", repr(path))


def test_a_config_outside_etc_naming_itself_under_the_root_is_refused(make_host):
    host = make_host(("e810", 2, None))
    path = os.path.join(host.root, "srv/node.toml")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as fh:
        fh.write(plugin_config("/srv/node.toml"))
    refused_everywhere(host, path, "device_plugin.config_file", "the config file itself")


def test_the_documented_plugin_file_is_still_written(make_host, write_config):
    host = make_host(("e810", 2, None))
    proc = run_cli("apply", root=host.root, config=write_config(plugin_config(GOOD_PLUGIN_FILE)))
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(host.root, GOOD_PLUGIN_FILE.lstrip("/"))) as fh:
        assert json.load(fh)["resourceList"][0]["resourceName"] == "r1"


# ---------------------------------------------------------------------------- representor_name


def switchdev(template: str, num_vfs: int = 2, selector: str = f'pci = "{PF0}"') -> str:
    return f"""
        [[pf]]
        {selector}
        num_vfs = {num_vfs}
        eswitch_mode = "switchdev"
        representor_name = {json.dumps(template)}
    """


@pytest.mark.parametrize("template, bad", [
    ('{vf}",RUN+="/bin/reboot', '\'"\''),
    ("{pf}\\{vf}", "'\\\\'"),
    ("rep%k{vf}", "'%'"),
    ("rep$kernel{vf}", "'$'"),
    ("rep {vf}", "' '"),
    ("rep\t{vf}", "'\\t'"),
    ("rep/{vf}", "'/'"),
    ("rep:{vf}", "':'"),
    ("ré{vf}", "'é'"),
])
def test_a_template_holds_only_what_udev_takes_as_written(template, bad):
    found = problems(switchdev(template))
    assert list(found) == ["pf[0].representor_name"], found
    assert f"holds {bad}" in found["pf[0].representor_name"], found


@pytest.mark.parametrize("template", ["{pf}_{vf}", "r{pf}v{vf}", "rep-{vf}.x", "{pf}@{vf}", "vf{vf}#{pf}", "..{vf}"])
def test_templates_of_valid_names_are_accepted(template):
    assert problems(switchdev(template)) == {}


def test_every_vf_index_a_block_can_have_is_checked_in_the_file_alone():
    """Without {pf} (or with a name selector) the names do not depend on the host: the file is refused for the
    highest index's name (num_vfs - 1), as udev-rule would refuse it."""
    assert problems(switchdev("representor_{vf}", num_vfs=1000)) == {}  # up to representor_999: 15 characters
    found = problems(switchdev("representor_{vf}", num_vfs=1001))
    assert "VF 1000" in found["pf[0].representor_name"] and "16 characters" in found["pf[0].representor_name"]
    named = 'name = "enp59s0f0"'
    assert problems(switchdev("{pf}_rep{vf}", num_vfs=100, selector=named)) == {}  # up to enp59s0f0_rep99
    found = problems(switchdev("{pf}_rep{vf}", num_vfs=101, selector=named))
    assert "VF 100 of name=enp59s0f0: 'enp59s0f0_rep100' is 16 characters" in found["pf[0].representor_name"], found
    found = problems(switchdev("{vf}"))
    assert "is all digits" in found["pf[0].representor_name"], found
    assert problems(switchdev("{vf}", selector='name = "ens1f0"')) != {}


def rule_check(*pfs, taken=None):
    """The problems of the one representor-name check (udev-rule's, validate's and apply's)."""
    from sriov_node.config import RepresentorPf, representor_names

    return representor_names([RepresentorPf(*pf) for pf in pfs], taken)[1]


def test_the_one_check_refuses_pf_names_and_names_twice():
    assert rule_check(("pf[0]", PF0, "ens1f0", 2, "ens1f{vf}"))  # VF 0 would be the PF itself
    (why,) = rule_check(("pf[0]", PF0, "ens1f0", 3, "x{vf}"), taken={"x2": "the name of PF 0000:30:00.0"})
    assert why[1].startswith("VF 2 of 0000:20:00.0: 'x2' is also the name of PF 0000:30:00.0"), why
    assert rule_check(("pf[0]", PF0, "a", 1, "r{vf}"), ("pf[1]", PF1, "b", 1, "r{vf}"))
    assert rule_check(("pf[0]", PF0, 'a"b', 1, "r{vf}"))  # the PF's own name goes into the rule as well
    assert rule_check(("pf[0]", PF0, "a", 1, "{pf}{vf}"), ("pf[1]", PF1, "b", 1, "{pf}{vf}")) == []


@pytest.mark.parametrize("template, words, on_host", [
    ("{pf}_representor_{vf}", "'ens1f1_representor_0' is 20 characters long", True),  # the PF's name: the host's
    ("ens2f{vf}", "'ens2f0' is also the name of PF 0000:30:00.0", True),  # a PF this config does not name
    ("{vf}", "'0' is all digits", False),  # the file alone says so
])
def test_validate_and_apply_check_the_names_as_udev_rule_does(make_host, write_config, template, words, on_host):
    host = make_host(("cx5", 2, None), ("e810", 1, None))
    config = write_config(switchdev(template, selector=f'pci = "{PF1}"'))
    rule = run_cli("udev-rule", root=host.root, config=config)
    assert rule.returncode == 2 and rule.stdout == "" and words in rule.stderr, rule
    (refused_on_this_host if on_host else refused_everywhere)(host, config, "pf[0].representor_name", words)
    # one check: validate says what udev-rule says
    said = [line for line in run_cli("validate", root=host.root, config=config).stderr.splitlines()
            if line.startswith("error: ")]
    assert said == rule.stderr.splitlines()


def test_the_reviewed_udev_injection_is_refused_and_nothing_printed(make_host, write_config):
    host = make_host(("cx5", 2, None))
    config = write_config(switchdev('{vf}",RUN+="reboot'))
    rule = run_cli("udev-rule", root=host.root, config=config)
    assert rule.returncode == 2 and rule.stdout == "" and "pf[0].representor_name" in rule.stderr, rule
    refused_everywhere(host, config, "pf[0].representor_name", "holds '\"'")


# ---------------------------------------------------------------------------- one VF address, one VF


@pytest.mark.parametrize("text, key, first", [
    ("""
        [[pf]]
        name = "ens1f0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0"
          mac = "02:00:00:00:00:01"
          [[pf.vfs]]
          range = "1"
          mac = "02:00:00:00:00:01"
     """, "pf[0].vfs[1].mac", "pf[0].vfs[0].mac"),
    ("""
        [[pf]]
        name = "ens1f0"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          mac = "02:00:00:00:00:AB"
        [[pf]]
        name = "ens1f1"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          mac = "02:00:00:00:00:ab"
     """, "pf[1].vfs[0].mac", "pf[0].vfs[0].mac"),
    ("""
        [[pf]]
        name = "ib0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0"
          node_guid = "02:11:22:33:44:55:66:77"
          [[pf.vfs]]
          range = "1"
          node_guid = "02:11:22:33:44:55:66:77"
     """, "pf[0].vfs[1].node_guid", "pf[0].vfs[0].node_guid"),
    ("""
        [[pf]]
        name = "ib0"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          port_guid = "02:11:22:33:44:55:66:78"
        [[pf]]
        name = "ib1"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          port_guid = "02:11:22:33:44:55:66:78"
     """, "pf[1].vfs[0].port_guid", "pf[0].vfs[0].port_guid"),
])
def test_a_vf_address_given_twice_is_refused_naming_both_keys(text, key, first):
    found = problems(text)
    assert list(found) == [key], found
    assert f"is also {first}" in found[key] and "give each VF its own" in found[key], found


def test_a_node_guid_may_equal_a_port_guid_and_distinct_addresses_pass():
    assert problems("""
        [[pf]]
        name = "ib0"
        num_vfs = 2
          [[pf.vfs]]
          range = "0"
          mac = "02:00:00:00:00:01"
          node_guid = "02:11:22:33:44:55:66:77"
          port_guid = "02:11:22:33:44:55:66:77"
          [[pf.vfs]]
          range = "1"
          mac = "02:00:00:00:00:02"
    """) == {}


FLEET_MAC = """
    [[pf]]
    vendor = "8086"
    device = "159b"
    num_vfs = 2
      [[pf.vfs]]
      range = "1"
      mac = "02:00:00:00:00:01"
"""


def test_a_mac_in_a_block_that_selects_two_pfs_is_refused_on_the_host(make_host, write_config):
    host = make_host(("e810", 2, None), ("x710", 1, None))
    config = write_config(FLEET_MAC)
    refused_on_this_host(host, config, "pf[0].vfs[0].mac", "pf[0] (vendor:device=8086:159b)", "0000:20:00.0 (ens1f0)",
                         "0000:20:00.1 (ens1f1)", "index")


def test_a_mac_in_a_fleet_rule_that_selects_one_pf_here_applies(make_host, write_config):
    one = make_host(("e810", 1, None))
    assert run_cli("apply", root=one.root, config=write_config(FLEET_MAC)).returncode == 0
    two = make_host(("e810", 2, None))
    indexed = write_config(FLEET_MAC.replace('device = "159b"', 'device = "159b"\n    index = 1'))
    proc = run_cli("apply", root=two.root, config=indexed)
    assert proc.returncode == 0, proc.stderr


def test_a_given_guid_in_a_block_that_selects_two_pfs_is_refused_on_the_host(make_host, write_config):
    host = make_host(("cx6-ib", 1, None), ("cx6-ib", 1, None))
    config = write_config("""
        [[pf]]
        vendor = "15b3"
        device = "101b"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          node_guid = "02:11:22:33:44:55:66:77"
    """)
    refused_on_this_host(host, config, "pf[0].vfs[0].node_guid", "2 PFs")


def test_an_all_zero_vf_mac_is_refused():
    found = problems("""
        [[pf]]
        name = "ens1f0"
        num_vfs = 1
          [[pf.vfs]]
          range = "0"
          mac = "00:00:00:00:00:00"
    """)
    assert "all zeros" in found["pf[0].vfs[0].mac"] and "clear" in found["pf[0].vfs[0].mac"], found


# ---------------------------------------------------------------------------- PF names: dev_valid_name


@pytest.mark.parametrize("name", ["a..b", "..a", "a..", "...", "x.y", "vlan@5", "é" * 7])
def test_names_linux_accepts_are_accepted(name):
    assert check_ifname(name) is None
    assert problems(f'[[pf]]\nname = {json.dumps(name)}\nnum_vfs = 1\n') == {}


@pytest.mark.parametrize("name, words", [
    (".", "names a directory"),
    ("..", "names a directory"),
    ("é" * 8, "16 bytes (UTF-8) long"),  # IFNAMSIZ counts bytes
    ("à", "0xa0"),  # its UTF-8 (c3 a0) holds the byte the kernel's isspace() counts
    ("a/b", "contains '/'"),
])
def test_names_linux_refuses_are_refused_saying_why(name, words):
    found = problems(f'[[pf]]\nname = {json.dumps(name)}\nnum_vfs = 1\n')
    assert words in found["pf[0].name"], found
    assert "must not contain '..'" not in found["pf[0].name"]
