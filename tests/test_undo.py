"""Undo that is whole: what a change set, and the next desired state no longer manages, goes back to what
sriov-node found (engine/preimages.py), through rollback, checkpoint expiry, `unset` and an applied edit;
every path that writes goes through one function (generations.Change), and no edit is ever lost.

Each test drives the CLI on a simulated host and reads the kernel back (netlink VF settings, sysfs)."""

from __future__ import annotations

import json
import os

import pytest

from sriov_node import generations
from tests.helpers import open_host, run_cli, sim_writes

X710, E810, CX5 = "0000:20:00.0", "0000:30:00.0", "0000:40:00.0"

BASE = """version = 1

[[pf]]
name = "ens3f0"
num_vfs = 4
"""


@pytest.fixture
def host(make_host):
    # ConnectX-5: every VF setting and the eswitch mode; E810 for an ice PF
    return make_host(("x710", 1, None), ("e810", 1, None), ("cx5", 1, None))


def config_path(host) -> str:
    return host.path("etc/sriov-node/config.toml")


def put(host, text: str) -> None:
    os.makedirs(os.path.dirname(config_path(host)), exist_ok=True)
    with open(config_path(host), "w") as f:
        f.write(text)


def cli(host, *args, ok=(0,)):
    proc = run_cli(*args, root=host.root)
    assert proc.returncode in ok, proc.stdout + proc.stderr
    return proc


def vf(host, ifname: str, index: int):
    return open_host(host.root).links.vf_links(ifname)[index]


def pf_state(host, pci: str):
    from sriov_node.host.observe import Wanted, observe_pf

    return observe_pf(open_host(host.root), pci, want=Wanted(links=True, eswitch=True, vf_mtu=True))


def exit_code_status(host) -> int:
    return run_cli("status", "--exit-code", root=host.root).returncode


# ---------------------------------------------------------------------------- rollback, expiry, unset, edit


SETTINGS = [
    ("vlan=20", "vlan", 0),
    ("trust=true", "trust", False),
    ("max_tx_rate=500", "max_tx_rate", 0),
    ("spoofchk=false", "spoofchk", True),
    ("link_state=disable", "link_state", "auto"),
    ("mac=02:00:00:00:00:08", "mac", None),
]


@pytest.mark.parametrize("assignment,attr,_", SETTINGS, ids=[s[1] for s in SETTINGS])
def test_rollback_puts_back_every_vf_setting_a_newer_generation_set(host, assignment, attr, _):
    put(host, BASE)
    cli(host, "apply")
    found = getattr(vf(host, "ens3f0", 2), attr)
    cli(host, "set", "ens3f0", f"vfs[2].{assignment}")
    assert getattr(vf(host, "ens3f0", 2), attr) != found  # the set took effect
    out = cli(host, "rollback").stdout
    assert getattr(vf(host, "ens3f0", 2), attr) == found, out  # read back as found
    assert "put back" in out
    assert exit_code_status(host) == 0
    # the generation it recorded manages nothing more: a second rollback target is the set
    assert generations.current(host).preimages.get(CX5, {}).get("vfs", {}).get("2", {}).get(attr) is None


@pytest.mark.parametrize("assignment,attr,_", SETTINGS, ids=[s[1] for s in SETTINGS])
@pytest.mark.parametrize("before", [0, 2], ids=["made", "resized"])
def test_a_setting_on_a_vf_the_change_created_is_put_back_to_what_the_kernel_gave_it(host, assignment, attr, _,
                                                                                     before):
    """A VF the same change created (from nothing, or by a resize: the kernel only writes a count from
    0) has no value found before the run: its pre-image is what the kernel gave it, read before the
    run first set it. An edit that keeps the VF and drops the setting puts that back."""
    key, value = assignment.split("=")
    value = value if value in ("true", "false") or value.isdigit() else f'"{value}"'
    if before:
        put(host, BASE.replace("num_vfs = 4", f"num_vfs = {before}"))
        cli(host, "apply")
    put(host, BASE + f'  [[pf.vfs]]\n  range = "3"\n  {key} = {value}\n')
    cli(host, "apply")
    given = getattr(vf(host, "ens3f0", 2), attr)  # a VF the change left alone
    assert getattr(vf(host, "ens3f0", 3), attr) != given  # the setting took effect
    put(host, BASE)
    out = cli(host, "apply").stdout
    assert getattr(vf(host, "ens3f0", 3), attr) == given, out
    assert "put back" in out
    assert exit_code_status(host) == 0


def test_a_vf_mtu_on_a_vf_the_change_created_is_put_back(host):
    put(host, BASE + '  [[pf.vfs]]\n  range = "1"\n  mtu = 9000\n')
    cli(host, "apply")
    assert pf_state(host, CX5).vfs[1].mtu == 9000
    given = pf_state(host, CX5).vfs[0].mtu
    put(host, BASE)
    out = cli(host, "apply").stdout
    assert pf_state(host, CX5).vfs[1].mtu == given, out
    assert exit_code_status(host) == 0


def test_rollback_of_vlan_and_trust_is_whole_and_status_agrees(host):
    put(host, BASE)
    cli(host, "apply")
    cli(host, "set", "ens3f0", "vfs[3].vlan=20", "vfs[3].trust=true")
    assert (vf(host, "ens3f0", 3).vlan, vf(host, "ens3f0", 3).trust) == (20, True)
    cli(host, "rollback")
    assert (vf(host, "ens3f0", 3).vlan, vf(host, "ens3f0", 3).trust) == (0, False)
    assert exit_code_status(host) == 0
    # capture (what an operator reads) shows no VLAN, no trust
    assert "vlan =" not in cli(host, "capture").stdout


def test_unset_of_a_vf_key_puts_back_the_value_found(host):
    put(host, BASE)
    cli(host, "apply")
    cli(host, "set", "ens3f0", "vfs[1].vlan=20")
    assert vf(host, "ens3f0", 1).vlan == 20
    cli(host, "unset", "ens3f0", "vfs[1].vlan")
    assert vf(host, "ens3f0", 1).vlan == 0
    assert exit_code_status(host) == 0


def test_an_applied_edit_that_drops_a_key_puts_back_the_value_found(host):
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE + "  [[pf.vfs]]\n  range = \"0\"\n  vlan = 30\n")
    cli(host, "apply")
    assert vf(host, "ens3f0", 0).vlan == 30
    put(host, BASE)
    out = cli(host, "apply").stdout
    assert vf(host, "ens3f0", 0).vlan == 0, out


def test_pf_mtu_and_eswitch_a_candidate_added_are_put_back(host):
    put(host, BASE)
    cli(host, "apply")
    before = pf_state(host, CX5)
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 4\nmtu = 9000\neswitch_mode = \"switchdev\""))
    cli(host, "apply", "--checkpoint", "60")
    after = pf_state(host, CX5)
    assert (after.mtu, after.eswitch_mode) == (9000, "switchdev")
    cli(host, "rollback", "--if-uncommitted", str(generations.current(host).number))
    back = pf_state(host, CX5)
    assert (back.mtu, back.eswitch_mode) == (before.mtu, before.eswitch_mode)
    assert exit_code_status(host) == 0


def test_checkpoint_expiry_puts_back_vlan_and_rate(host):
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE + "  [[pf.vfs]]\n  range = \"1\"\n  vlan = 40\n  max_tx_rate = 800\n")
    cli(host, "apply", "--checkpoint", "60")
    number = generations.current(host).number
    assert (vf(host, "ens3f0", 1).vlan, vf(host, "ens3f0", 1).max_tx_rate) == (40, 800)
    result = generations.expire_checkpoint(open_host(host.root), number)
    assert result is not None and result.generation is not None
    assert (vf(host, "ens3f0", 1).vlan, vf(host, "ens3f0", 1).max_tx_rate) == (0, 0)
    assert exit_code_status(host) == 0


def test_a_pf_block_a_change_added_is_taken_back_whole(host):
    put(host, BASE)
    cli(host, "apply")
    e810 = pf_state(host, E810)
    put(host, BASE + '\n[[pf]]\nname = "ens2f0"\nnum_vfs = 3\n  [[pf.vfs]]\n  range = "0"\n  driver = "vfio-pci"\n')
    cli(host, "apply")
    assert pf_state(host, E810).num_vfs == 3
    cli(host, "rollback")
    assert pf_state(host, E810).num_vfs == e810.num_vfs
    assert exit_code_status(host) == 0


def test_values_the_agent_never_touched_are_left_alone(host):
    """Omitted still means "not managed": rollback writes nothing a generation did not set."""
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 4\nmtu = 9000"))
    cli(host, "apply")
    before = len(sim_writes(host))
    cli(host, "rollback")
    writes = sim_writes(host)[before:]
    assert writes and all("mtu" in str(w).lower() or "IFLA_MTU" in str(w) for w in writes), writes


def test_the_dry_run_says_what_a_change_puts_back(host):
    put(host, BASE)
    cli(host, "apply")
    cli(host, "set", "ens3f0", "vfs[0].trust=true")
    put(host, BASE)
    out = run_cli("apply", "--dry-run", root=host.root).stdout
    assert "VF 0: back to trust off" in out or "VF 0: back to" in out, out
    assert vf(host, "ens3f0", 0).trust is True  # a dry run writes nothing


# ---------------------------------------------------------------------------- exact rollback targets


def test_bare_rollback_after_a_refused_apply_discards_the_edit_and_touches_nothing(host):
    put(host, BASE)
    cli(host, "apply")
    applied = generations.current(host)
    edited = BASE.replace("num_vfs = 4", "num_vfs = 6")
    put(host, edited)
    before = len(sim_writes(host))
    out = cli(host, "rollback").stdout
    assert len(sim_writes(host)) == before  # host untouched
    assert open(config_path(host), "rb").read() == applied.config
    assert generations.current(host).number == applied.number
    kept = [n for n in os.listdir(os.path.dirname(config_path(host))) if ".unapplied-" in n]
    assert len(kept) == 1 and kept[0] in out
    assert open(os.path.join(os.path.dirname(config_path(host)), kept[0])).read() == edited


def test_rollback_to_the_current_generation_adds_nothing(host):
    put(host, BASE)
    cli(host, "apply")
    number = generations.current(host).number
    out = cli(host, "rollback", str(number)).stdout
    assert generations.current(host).number == number
    assert "already" in out


# ---------------------------------------------------------------------------- nothing lost, nothing silent


def test_expiry_keeps_an_edit_made_in_the_window(host):
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 5"))
    cli(host, "apply", "--checkpoint", "60")
    number = generations.current(host).number
    mine = BASE.replace("num_vfs = 4", "num_vfs = 7")
    put(host, mine)  # an edit made in the checkpoint's window, never applied
    result = generations.expire_checkpoint(open_host(host.root), number)
    assert result.saved is not None and open(result.saved).read() == mine
    assert open(config_path(host)).read() == BASE


def test_boot_keeps_an_edit_made_while_the_node_was_down(host):
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 5"))
    cli(host, "apply", "--checkpoint", "600")
    mine = BASE.replace("num_vfs = 4", "num_vfs = 7")
    put(host, mine)
    proc = run_cli("boot", "--wait", "5", root=host.root)
    kept = [n for n in os.listdir(os.path.dirname(config_path(host))) if ".unapplied-" in n]
    assert len(kept) == 1, proc.stderr
    assert kept[0] in proc.stderr
    assert open(os.path.join(os.path.dirname(config_path(host)), kept[0])).read() == mine
    assert pf_state(host, CX5).num_vfs == 4


def test_a_damaged_newest_record_is_never_guessed_past(host):
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 6"))
    cli(host, "apply")
    newest = os.path.join(generations.directory(host), "00000002.json")
    body = json.load(open(newest))
    body["config"] = body["config"].replace("6", "5")
    json.dump(body, open(newest, "w"))
    status = run_cli("status", "--exit-code", root=host.root)
    assert status.returncode != 0 and "converged" not in status.stdout.split("\n")[0].lower(), status.stdout
    assert "00000002.json" in status.stdout + status.stderr
    dry = run_cli("apply", "--dry-run", "--detailed-exitcode", root=host.root)
    assert dry.returncode == 1, dry.stdout + dry.stderr


@pytest.fixture
def small_disk():
    """mount(8) a small tmpfs at a directory (a full disk on demand); skipped where mounting is not allowed."""
    import subprocess

    mounted = []

    def _mount(path: str, size: str = "256k") -> str:
        os.makedirs(path, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path], capture_output=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield _mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(directory: str) -> None:
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_state_disk_refuses_the_run_before_any_write(host, small_disk):
    state = small_disk(host.path("var/lib/sriov-node"))
    put(host, BASE)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", "num_vfs = 6"))
    fill(state)
    before = len(sim_writes(host))
    proc = run_cli("apply", root=host.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(sim_writes(host)) == before  # nothing written to the host
    assert "no space left on the device" in proc.stderr + proc.stdout
    assert pf_state(host, CX5).num_vfs == 4
    assert generations.current(host).number == 1


def test_a_full_config_disk_refuses_set_before_any_write(host, small_disk):
    put(host, BASE)
    cli(host, "apply")
    etc = small_disk(os.path.dirname(config_path(host)) + "-mnt", size="64k")
    import shutil

    shutil.copy(config_path(host), os.path.join(etc, "config.toml"))
    shutil.rmtree(os.path.dirname(config_path(host)))
    os.symlink(etc, os.path.dirname(config_path(host)))
    fill(etc)
    before = len(sim_writes(host))
    proc = run_cli("set", "ens3f0", "num_vfs=6", root=host.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert len(sim_writes(host)) == before, proc.stdout + proc.stderr
    assert pf_state(host, CX5).num_vfs == 4
    assert open(config_path(host)).read() == BASE


def test_a_daemon_reload_that_drops_a_key_puts_it_back_as_apply_does(host):
    """The daemon's reload (SIGHUP) is one more way in: it puts back what the followed generation set
    and the reloaded file drops, exactly as `apply` of that file does."""
    import logging

    from sriov_node.service.daemon import Daemon
    from sriov_node.service.journal import Notifier

    put(host, BASE + "  [[pf.vfs]]\n  range = \"2\"\n  vlan = 20\n  trust = true\n")
    cli(host, "apply")
    assert (vf(host, "ens3f0", 2).vlan, vf(host, "ens3f0", 2).trust) == (20, True)
    put(host, BASE)
    d = Daemon(open_host(host.root), config_path(host), notifier=Notifier(enabled=False),
               log=logging.getLogger("sriov-node-test"))
    assert d._start() == 0
    d._reload_config()
    assert (vf(host, "ens3f0", 2).vlan, vf(host, "ens3f0", 2).trust) == (0, False)
    assert generations.current(host).command == "reload"
    assert exit_code_status(host) == 0


def test_a_put_back_the_driver_refuses_in_the_new_mode_waits_and_never_refuses_the_change(host):
    """A value to put back is never what refuses the operator's desired state: dropping VF rates while
    going to switchdev (mlx5 takes no legacy VF rate there) applies, names the rate it could not put
    back yet, keeps it in the generation's restores, and puts it back once the PF is legacy again."""
    put(host, BASE + '  [[pf.vfs]]\n  range = "0"\n  max_tx_rate = 100\n')
    cli(host, "apply")
    assert vf(host, "ens3f0", 0).max_tx_rate == 100
    put(host, BASE.replace("num_vfs = 4", 'num_vfs = 4\neswitch_mode = "switchdev"'))
    cli(host, "validate")
    proc = cli(host, "apply", "--dry-run", ok=(0, 2))
    assert "not put back yet" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    out = cli(host, "apply")
    assert "max_tx_rate not put back yet" in out.stdout + out.stderr
    assert pf_state(host, CX5).eswitch_mode == "switchdev"
    gen = generations.current(host)
    assert gen.outcome == "converged"
    assert gen.restores[CX5]["vfs"]["0"]["rate"] == [0, 0]
    assert exit_code_status(host) == 0
    put(host, BASE.replace("num_vfs = 4", 'num_vfs = 4\neswitch_mode = "legacy"'))
    cli(host, "apply")
    assert vf(host, "ens3f0", 0).max_tx_rate == 0  # put back now that it can be
    assert CX5 not in generations.current(host).restores


def test_a_key_taken_over_again_while_its_put_back_waits_keeps_the_first_value(host):
    """Legacy -> switchdev dropping a rate (it waits), then legacy again setting the rate: the rate's
    pre-image is still the value from before sriov-node ever set it, so a later drop puts that back."""
    rated = BASE + '  [[pf.vfs]]\n  range = "0"\n  max_tx_rate = 100\n'
    put(host, rated)
    cli(host, "apply")
    put(host, BASE.replace("num_vfs = 4", 'num_vfs = 4\neswitch_mode = "switchdev"'))
    cli(host, "apply")
    put(host, rated.replace("num_vfs = 4", 'num_vfs = 4\neswitch_mode = "legacy"'))
    cli(host, "apply")
    assert vf(host, "ens3f0", 0).max_tx_rate == 100
    assert generations.current(host).preimages[CX5]["vfs"]["0"]["rate"] == [0, 0]
    put(host, BASE)
    cli(host, "apply")
    assert vf(host, "ens3f0", 0).max_tx_rate == 0


# ---------------------------------------------------------------------------- a put-back that did not happen


def _vm(host, kernel, vf_pci):
    kernel.hold_vf(vf_pci, 4242, "qemu-kvm")
    return lambda: kernel.release(4242)


def _pod(host, kernel, vf_pci):
    kernel.move_netdev_out(vf_pci)
    return lambda: kernel.move_netdev_back(vf_pci)


HOLDERS = {"vm": ("vfio-pci", _vm), "pod": ("mlx5_core", _pod)}


def _take_back(host, path: str, config: str) -> str:
    """Take VF 1's vlan back by `path`: its generation is the newest, the one before manages no vlan."""
    if path == "rollback":
        return cli(host, "rollback").stdout
    if path == "unset":
        return cli(host, "unset", "ens3f0", "vfs[1].vlan").stdout
    put(host, config)  # an edit that drops the key, applied
    return cli(host, "apply").stdout


@pytest.mark.parametrize("path", ["rollback", "unset", "edit"])
@pytest.mark.parametrize("holder", sorted(HOLDERS))
def test_a_put_back_on_a_held_vf_is_kept_until_it_is_read_back(make_host, holder, path):
    """A value to put back on a VF a VM or a pod holds is the holder's while it holds it: the run
    says it is not put back yet, the generation keeps it to put back, status says the host differs
    once the VF is free, and the next run puts it back and reads it back. Before, it was reported as
    put back, dropped from the generation, and never put back."""
    from sriov_node.sim.kernel import SimKernel

    driver, hold = HOLDERS[holder]
    host = make_host(("x710", 1, None), ("e810", 1, None), ("cx5", 1, None), vfio_loaded=True)
    config = BASE + f'  [[pf.vfs]]\n  range = "1"\n  driver = "{driver}"\n'
    put(host, config)
    cli(host, "apply")
    found = vf(host, "ens3f0", 1).vlan
    cli(host, "set", "ens3f0", "vfs[1].vlan=20")
    assert vf(host, "ens3f0", 1).vlan == 20
    free = hold(host, SimKernel(host.root), host.sysfs.vf_address(CX5, 1))
    out = _take_back(host, path, config)
    assert vf(host, "ens3f0", 1).vlan == 20  # the holder's: not touched
    assert "not put back yet" in out and "VF 1: back to no vlan" in out, out
    assert "put back as it was found" not in out, out
    assert generations.current(host).restores[CX5]["vfs"]["1"]["vlan"][0] == found
    free()
    assert exit_code_status(host) == 1  # the applied generation still owes the put-back
    assert "\nsriov_node_converged 0\n" in cli(host, "metrics").stdout  # and so do the metrics
    out = cli(host, "apply").stdout
    assert vf(host, "ens3f0", 1).vlan == found, out
    assert "put back as it was found" in out and "VF 1: back to no vlan" in out, out
    assert not generations.current(host).restores
    assert exit_code_status(host) == 0
    assert "\nsriov_node_converged 1\n" in cli(host, "metrics").stdout


# ---------------------------------------------------------------------------- history


def test_failing_reruns_that_write_nothing_add_no_generation_and_keep_the_rollback_target(host):
    """An apply (or a boot) of the current generation's config that writes nothing (a PF gone, the
    run refused again) records its outcome in that generation: history holds changes of the desired
    state, so repeating a failing run never prunes the generation a rollback goes back to."""
    first = BASE.replace("num_vfs = 4", "num_vfs = 2") + f'\n[[pf]]\npci = "{E810}"\nnum_vfs = 2\n\n[history]\nkeep = 3\n'
    second = first.replace("num_vfs = 2\n", "num_vfs = 3\n", 1)
    put(host, first)
    cli(host, "apply")
    put(host, second)
    cli(host, "apply")
    assert [g.number for g in generations.history(host)] == [1, 2]
    host.sysfs.write("sys/bus/pci/devices", (E810, "remove"), "1\n")  # the NIC taken out by hand
    for _ in range(4):
        cli(host, "apply", ok=(1,))
    cli(host, "boot", "--wait", "0.2", ok=(1,))
    gens = generations.history(host)
    assert [g.number for g in gens] == [1, 2]
    assert gens[-1].outcome == "failed"  # the rerun's outcome, in the generation it reran
    out = cli(host, "rollback", ok=(1,)).stdout
    assert "restored generation 1 as generation 3" in out, out
    assert open_host(host.root).sysfs.num_vfs(CX5) == 2
