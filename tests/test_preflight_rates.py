"""ice VF rate limits, as ice_set_vf_bw refuses them (ice_sriov.c; ice_lib.c): a max_tx_rate or a
min_tx_rate above the link speed is EINVAL (ice_set_max_bw_limit, ice_set_min_bw_limit against
ice_get_link_speed_kbps, 0 with the link down), and so are min_tx_rates that add up, over the PF's VFs,
to more than the link speed (ice_min_tx_rate_oversubscribed). `validate`, `apply --dry-run` and `apply`
refuse them alike before any write (exit 1), with the kernel's reason; the simulated ice refuses the
same requests. mlx5's legacy VF rates (mlx5_eswitch_set_vport_rate, esw/qos.c) are not checked against
the link by the driver: taken as given, and not refused here."""

from __future__ import annotations

import errno
import json

import pytest

from sriov_node import drivers
from sriov_node.sim.build import create_host
from tests.helpers import open_host, run_cli, sim_digest

PF = "0000:20:00.0"  # ens1f0: an E810 port at 25000 Mbit/s
U32_MAX = 4294967295


@pytest.fixture
def node(tmp_path):
    root = str(tmp_path / "node")
    create_host(root, (("e810", 2, 64), ("x710", 1, None), ("i350", 1, None), ("cx5", 1, None)))
    return root


def _config(tmp_path, groups: str, pf: str = "ens1f0", num_vfs: int = 2, name: str = "config.toml") -> str:
    path = tmp_path / name
    path.write_text(f'version = 1\n[[pf]]\nname = "{pf}"\nnum_vfs = {num_vfs}\n' + groups)
    return str(path)


def _generations(root: str, config: str) -> list:
    return json.loads(run_cli("history", "--json", root=root, config=config).stdout)["generations"]


def _refused_by_all_three(root: str, config: str, *words: str) -> None:
    before = sim_digest(root)
    recorded = _generations(root, config)
    for argv in (["validate"], ["apply", "--dry-run"], ["apply", "--dry-run", "--detailed-exitcode"], ["apply"]):
        done = run_cli(*argv, root=root, config=config)
        assert done.returncode == 1, (argv, done.stdout, done.stderr)
        for word in words:
            assert word in done.stderr, (argv, word, done.stderr)
        assert "EINVAL" in done.stderr and "Fix:" in done.stderr and "nothing was written" in done.stderr
    assert sim_digest(root) == before  # not one write
    assert _generations(root, config) == recorded  # apply recorded nothing


def test_the_ice_row_holds_its_rate_rules():
    ice = drivers.DRIVERS["ice"]
    assert ice.rate_link == "speed" and ice.min_rate_link
    assert "ice_min_tx_rate_oversubscribed" in ice.sources and "ice_set_max_bw_limit" in ice.sources
    mlx5 = drivers.DRIVERS["mlx5_core"]
    assert mlx5.rate_link is None and not mlx5.min_rate_link  # no link check in the legacy ndo
    refusals = drivers.setting_refusals(ice, 0, {"min_tx_rate": U32_MAX, "max_tx_rate": 0}, link_speed=25000)
    assert [(r.key, r.errno) for r in refusals] == [("min_tx_rate", "EINVAL")]
    refusals = drivers.setting_refusals(ice, 0, {"min_tx_rate": 0, "max_tx_rate": U32_MAX}, link_speed=25000)
    assert [(r.key, r.errno) for r in refusals] == [("max_tx_rate", "EINVAL")]
    assert drivers.setting_refusals(ice, 0, {"min_tx_rate": 25000, "max_tx_rate": 25000}, link_speed=25000) == []
    down = drivers.setting_refusals(ice, 0, {"min_tx_rate": 10, "max_tx_rate": 0}, link_speed=-1)
    assert [(r.key, r.errno) for r in down] == [("min_tx_rate", "EINVAL")]
    assert drivers.setting_refusals(ice, 0, {"min_tx_rate": 10, "max_tx_rate": 0}, link_speed=None) == []


def test_the_sum_of_min_rates_is_judged_as_the_driver_does():
    ice = drivers.DRIVERS["ice"]
    assert drivers.min_rate_sum_refusals(ice, [(0, 12500), (1, 12500)], {}, 25000) == []
    over = drivers.min_rate_sum_refusals(ice, [(0, 20000), (1, 20000), (2, 20000)], {}, 25000)
    assert [(r.vf, r.key, r.errno) for r in over] == [(1, "min_tx_rate", "EINVAL"), (2, "min_tx_rate", "EINVAL")]
    assert "60000" in over[0].why and "25000" in over[0].fix
    # what the other VFs hold counts; what is lowered first makes room
    assert [r.vf for r in drivers.min_rate_sum_refusals(ice, [(1, 10000)], {0: 20000, 1: 0}, 25000)] == [1]
    assert drivers.min_rate_sum_refusals(ice, [(0, 20000), (1, 5000)], {0: 5000, 1: 20000}, 25000) == []
    # a VF above the link alone is refused by setting_refusals, not twice
    assert drivers.min_rate_sum_refusals(ice, [(0, U32_MAX)], {}, 25000) == []
    assert drivers.min_rate_sum_refusals(drivers.DRIVERS["mlx5_core"], [(0, 20000), (1, 20000)], {}, 25000) == []
    assert drivers.min_rate_sum_refusals(ice, [(0, 20000), (1, 20000)], {}, None) == []


@pytest.mark.parametrize("key", ["min_tx_rate", "max_tx_rate"])
def test_a_rate_above_the_link_speed_is_refused_by_all_three(node, tmp_path, key):
    config = _config(tmp_path, f'[[pf.vfs]]\nrange = "0-1"\n{key} = {U32_MAX}\n')
    _refused_by_all_three(node, config, f"PF {PF} (ens1f0): VF(s) 0-1: pf[0].vfs[0].{key} = {U32_MAX}",
                          f"ice takes no {key} above the link speed (25000 Mbit/s)", f"set {key} to at most 25000")


def test_min_rates_that_oversubscribe_the_link_are_refused_by_all_three(node, tmp_path):
    config = _config(tmp_path, '[[pf.vfs]]\nrange = "0-1"\nmin_tx_rate = 20000\n')
    _refused_by_all_three(node, config, "VF(s) 1: pf[0].vfs[0].min_tx_rate = 20000",
                          "would add up to 40000 Mbit/s, above the link speed (25000 Mbit/s)")


def test_min_rates_within_the_link_are_applied_and_converge(node, tmp_path):
    config = _config(tmp_path, '[[pf.vfs]]\nrange = "0-1"\nmin_tx_rate = 12500\nmax_tx_rate = 25000\n')
    assert run_cli("validate", root=node, config=config).returncode == 0
    done = run_cli("apply", root=node, config=config)
    assert done.returncode == 0, done.stdout + done.stderr
    links = open_host(node).links.vf_links("ens1f0")
    assert [(links[i].min_tx_rate, links[i].max_tx_rate) for i in (0, 1)] == [(12500, 25000)] * 2
    assert run_cli("status", "--exit-code", root=node, config=config).returncode == 0


def test_what_the_other_vfs_hold_counts(node, tmp_path):
    """VF 0 keeps the 20000 Mbit/s it was given; VF 1 asking for 10000 more would oversubscribe."""
    first = _config(tmp_path, '[[pf.vfs]]\nrange = "0"\nmin_tx_rate = 20000\n', name="a.toml")
    assert run_cli("apply", root=node, config=first).returncode == 0
    second = _config(tmp_path, '[[pf.vfs]]\nrange = "0"\nmin_tx_rate = 20000\n'
                               '[[pf.vfs]]\nrange = "1"\nmin_tx_rate = 10000\n', name="b.toml")
    _refused_by_all_three(node, second, "VF(s) 1: pf[0].vfs[1].min_tx_rate = 10000", "30000 Mbit/s")


def test_mlx5_takes_legacy_rates_the_link_does_not_bound(node, tmp_path):
    config = _config(tmp_path, f'[[pf.vfs]]\nrange = "0-1"\nmax_tx_rate = {U32_MAX}\n', pf="ens4f0")
    assert run_cli("validate", root=node, config=config).returncode == 0


@pytest.mark.parametrize("change,words", [
    ({"rate": (U32_MAX, 0)}, "oversubscription"),
    ({"rate": (0, U32_MAX)}, "above the link speed"),
])
def test_the_simulated_ice_refuses_the_same(node, change, words):
    host = open_host(node)
    host.sysfs.set_num_vfs(PF, 2)
    with pytest.raises(OSError) as exc:
        host.links.set_vf_links("ens1f0", [(0, change)])
    assert exc.value.errno == errno.EINVAL and words in str(exc.value)
    host.links.set_vf_links("ens1f0", [(0, {"rate": (20000, 0)})])
    with pytest.raises(OSError) as exc:  # VF 1's 10000 on top of VF 0's 20000
        host.links.set_vf_links("ens1f0", [(1, {"rate": (10000, 0)})])
    assert exc.value.errno == errno.EINVAL and "oversubscription" in str(exc.value)
    host.links.set_vf_links("ens1f0", [(1, {"rate": (5000, 0)})])
    assert host.links.vf_links("ens1f0")[1].min_tx_rate == 5000


def test_two_vfs_swapping_their_minimums_on_a_full_link_converge_in_one_apply(node, tmp_path):
    """The end state fits the link, so validate passes; the run sends the VF that lowers its minimum
    before the one that raises it (ice judges each VF against what the others hold then), so the
    first apply converges, as validate promised."""
    before = _config(tmp_path, '[[pf.vfs]]\nrange = "0"\nmin_tx_rate = 5000\n'
                               '[[pf.vfs]]\nrange = "1"\nmin_tx_rate = 20000\n')
    assert run_cli("apply", root=node, config=before).returncode == 0
    swapped = _config(tmp_path, '[[pf.vfs]]\nrange = "0"\nmin_tx_rate = 20000\n'
                                '[[pf.vfs]]\nrange = "1"\nmin_tx_rate = 5000\n', name="swapped.toml")
    assert run_cli("validate", root=node, config=swapped).returncode == 0
    done = run_cli("apply", root=node, config=swapped)
    assert done.returncode == 0, done.stdout + done.stderr
    links = open_host(node).links.vf_links("ens1f0")
    assert [links[i].min_tx_rate for i in (0, 1)] == [20000, 5000]
