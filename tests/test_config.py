"""Config validation: the pure parsers, whole documents, the file-trust rule, and `sriov-node validate`."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest

from tests.helpers import run_cli, sim_writes
from sriov_node.engine.reconcile import load_desired
from sriov_node.config import (
    MAX_NUM_VFS,
    check_file_trust,
    check_ifname,
    load_config,
    normalize_pci,
    parse_config,
    parse_range,
)
from sriov_node.errors import ConfigError
from tests.helpers import open_host
from sriov_node.model import DesiredState, PfSelector

EXAMPLE = Path(__file__).resolve().parent.parent / "etc/sriov-node/config.toml"


def parse(text: str, source: str = "/etc/sriov-node/config.toml") -> DesiredState:
    return parse_config(text.encode("utf-8"), source)


def problems(text: str):
    with pytest.raises(ConfigError) as info:
        parse(text)
    return {p.key: p.message for p in info.value.problems}


# ---------------------------------------------------------------------------- parse_range


@pytest.mark.parametrize(
    "text, indices",
    [
        ("0-3", (0, 1, 2, 3)),
        ("5", (5,)),
        ("0,2,4-6", (0, 2, 4, 5, 6)),
        ("6,4-5,0", (0, 4, 5, 6)),
        (" 1 - 2 , 7 ", (1, 2, 7)),
        ("0-0", (0,)),
        ("007", (7,)),
    ],
)
def test_parse_range_valid(text, indices):
    assert parse_range(text) == indices


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("0-", "malformed part '0-'"),
        ("-3", "malformed part '-3'"),
        ("a-b", "malformed part 'a-b'"),
        ("1,,2", "malformed part ''"),
        ("1,", "malformed part ''"),
        ("1-2-3", "malformed part"),
        ("0x3", "malformed part"),
        ("+3", "malformed part"),
        ("1.5", "malformed part"),
        ("\u0663", "malformed part"),  # ARABIC-INDIC DIGIT THREE: int() would accept it
        ("\uff13", "malformed part"),  # FULLWIDTH DIGIT THREE
        ("3-1", "reversed span '3-1' (write 1-3)"),
        ("1,1", "names VF 1 twice"),
        ("0-3,2", "names VF 2 twice"),
        ("65536", "beyond any possible VF index"),
        ("0-70000", "reaches 70000"),
        ("9" * 5000, "beyond any possible VF index"),
        ("99999999999999999999-1", "beyond any possible VF index"),
    ],
)
def test_parse_range_invalid(text, reason):
    with pytest.raises(ValueError) as info:
        parse_range(text)
    assert reason in str(info.value)


class _CountedIndex(int):
    """A VF index that counts how often it is hashed or compared: the work parse_range does per index."""

    ops = 0
    limit = 0

    def _tick(self) -> None:
        cls = _CountedIndex
        cls.ops += 1
        if cls.ops > cls.limit:
            raise AssertionError(f"more than {cls.limit} hashes/comparisons of VF indices: not linear")

    def __hash__(self) -> int:
        self._tick()
        return int.__hash__(self)

    def __eq__(self, other: object) -> bool:
        self._tick()
        return int.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._tick()
        return int.__ne__(self, other)

    def __lt__(self, other: int) -> bool:
        self._tick()
        return int.__lt__(self, other)

    def __gt__(self, other: int) -> bool:
        self._tick()
        return int.__gt__(self, other)

    def __le__(self, other: int) -> bool:
        self._tick()
        return int.__le__(self, other)

    def __ge__(self, other: int) -> bool:
        self._tick()
        return int.__ge__(self, other)


@pytest.mark.parametrize("text, indices", [
    (f"0-{MAX_NUM_VFS}", tuple(range(MAX_NUM_VFS + 1))),
    ("0-999", tuple(range(1000))),
    (",".join(map(str, range(0, MAX_NUM_VFS + 1, 2))), tuple(range(0, MAX_NUM_VFS + 1, 2))),  # 32768 parts
    ("7,0-3,5,9-20", (0, 1, 2, 3, 5, 7) + tuple(range(9, 21))),
])
def test_parse_range_is_linear_in_the_number_of_indices(monkeypatch, text, indices):
    # Regression: membership in a list made "0-65535" take minutes. Counted, not timed: every index the
    # spans produce is hashed or compared a bounded number of times (a list lookup compares it with every
    # index before it; a sort of unordered indices costs log n each: both exceed the bound at 65536).
    from sriov_node import config

    monkeypatch.setattr(config, "range", lambda lo, hi: map(_CountedIndex, range(lo, hi)), raising=False)
    monkeypatch.setattr(_CountedIndex, "ops", 0)
    monkeypatch.setattr(_CountedIndex, "limit", 4 * len(indices) + 8)
    assert parse_range(text) == indices
    assert 0 < _CountedIndex.ops <= 4 * len(indices) + 8  # the spans went through the counted indices


def test_parse_range_reads_a_long_index_by_its_digits():
    assert parse_range("0" * 5000) == (0,)  # int() of 5000 digits would raise (sys.get_int_max_str_digits)


# ---------------------------------------------------------------------------- normalize_pci / check_ifname


@pytest.mark.parametrize(
    "text, pci",
    [
        ("0000:3b:00.0", "0000:3b:00.0"),
        ("3b:00.0", "0000:3b:00.0"),
        ("0000:3B:00.1", "0000:3b:00.1"),
        (" 0000:3b:1f.7 ", "0000:3b:1f.7"),
        ("0001:00:02.0", "0001:00:02.0"),
    ],
)
def test_normalize_pci_valid(text, pci):
    assert normalize_pci(text) == pci


@pytest.mark.parametrize(
    "text",
    ["", "0000:3b:00", "0000:3b:00.8", "0000:3b:20.0", "00000:3b:00.0", "3b.00.0", "0000-3b-00.0",
     "zz:00.0", "0000:3b:00.0.0", "0000:3b:00.0/../x", "3b:00.0\n0000:3b:00.1"],
)
def test_normalize_pci_invalid(text):
    assert normalize_pci(text) is None


@pytest.mark.parametrize("name", ["ens1f0", "eth0", "a", "x" * 15, "bond0.100", "enp59s0f1np1", "vlan@5", "a..b"])
def test_check_ifname_valid(name):
    assert check_ifname(name) is None


@pytest.mark.parametrize(
    "name, reason",
    [
        ("", "empty"),
        ("x" * 16, "16 characters"),
        ("ens1/f0", "'/'"),
        ("a:b", "':'"),
        ("a b", "whitespace"),
        ("a\tb", "whitespace"),
        ("a\nb", "whitespace"),
        ("a\0b", "'\\x00'"),
        ("..", "names a directory"),
        (".", "names a directory"),
        ("../ens1f0", "'/'"),
    ],
)
def test_check_ifname_invalid(name, reason):
    why = check_ifname(name)
    assert why is not None and reason in why


# ---------------------------------------------------------------------------- whole documents


def test_the_shipped_example_parses():
    data = EXAMPLE.read_bytes()
    desired = parse_config(data, str(EXAMPLE))
    assert desired.version == 1
    assert desired.source == str(EXAMPLE)
    assert desired.digest == hashlib.sha256(data).hexdigest()
    first, fleet = desired.pfs
    assert first.key == "pf[0]" and first.selector == PfSelector(name="ens1f0") and first.num_vfs == 8
    assert [(g.key, g.indices, g.driver) for g in first.vfs] == [
        ("pf[0].vfs[0]", (0, 1, 2, 3), "vfio-pci"),
        ("pf[0].vfs[1]", (4, 5, 6, 7), "iavf"),
    ]
    assert fleet.selector == PfSelector(vendor="8086", device="159b", index=0) and fleet.num_vfs == 16
    assert fleet.vfs == ()


def test_an_empty_document_is_valid_and_selects_nothing():
    desired = parse("")
    assert desired.pfs == () and desired.version == 1


def test_version_may_be_omitted():
    assert parse('[[pf]]\nname = "ens1f0"\nnum_vfs = 2\n').version == 1


def test_selectors_are_normalized():
    desired = parse(
        """
        [[pf]]
        pci = "20:00.1"
        num_vfs = 0
        [[pf]]
        mac = "3C:FD:FE:00:20:00"
        num_vfs = 1
        [[pf]]
        vendor = "0x8086"
        device = "159B"
        num_vfs = 2
        """.replace("\n        ", "\n")
    )
    assert [s.selector for s in desired.pfs] == [
        PfSelector(pci="0000:20:00.1"),
        PfSelector(mac="3c:fd:fe:00:20:00"),
        PfSelector(vendor="8086", device="159b"),
    ]


def test_inline_tables_are_the_same_as_array_of_tables():
    inline = parse('pf = [{name = "ens1f0", num_vfs = 4, vfs = [{range = "0-1", driver = "vfio-pci"}]}]')
    blocks = parse('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-1"\ndriver = "vfio-pci"\n')
    assert inline.pfs == blocks.pfs


def test_a_group_without_driver_wants_the_kernels_default():
    desired = parse('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-3"\n')
    assert desired.pfs[0].vfs[0].driver is None
    assert desired.pfs[0].named_drivers() == frozenset()
    assert desired.pfs[0].vf(2).driver is None and desired.pfs[0].vf(2).group == "pf[0].vfs[0]"


def test_none_and_any_are_driver_choices_not_driver_names():
    desired = parse('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0-1"\ndriver = "none"\n'
                    '[[pf.vfs]]\nrange = "2"\ndriver = "any"\n[[pf.vfs]]\nrange = "3"\ndriver = "vfio-pci"\n')
    spec = desired.pfs[0]
    assert [spec.vf(i).driver for i in range(4)] == ["none", "none", "any", "vfio-pci"]
    assert spec.named_drivers() == frozenset({"vfio-pci"})


def test_num_vfs_zero_and_the_maximum_are_valid():
    assert parse('[[pf]]\nname = "ens1f0"\nnum_vfs = 0\n').pfs[0].num_vfs == 0
    assert parse(f'[[pf]]\nname = "ens1f0"\nnum_vfs = {MAX_NUM_VFS}\n').pfs[0].num_vfs == MAX_NUM_VFS


def test_every_problem_is_reported_in_one_run():
    found = problems(
        """
        versoin = 1
        [[pf]]
        name = "ens1f0"
        num_vfs = -1
        [[pf]]
        name = "this-name-is-far-too-long"
        num_vfs = 8
        [[pf.vfs]]
        range = "6-9"
        driver = "vfio_pci"
        [[pf]]
        vendor = "8086"
        num_vfs = "4"
        """.replace("\n        ", "\n")
    )
    assert set(found) == {
        "versoin",
        "pf[0].num_vfs",
        "pf[1].name",
        "pf[1].vfs[0].range",
        "pf[1].vfs[0].driver",  # reported even though the same group's range is wrong too
        "pf[2].device",
        "pf[2].num_vfs",
    }
    assert "valid keys here: version, pf" in found["versoin"]
    assert "(valid indices 0-7)" in found["pf[1].vfs[0].range"]
    assert "'vfio-pci'" in found["pf[1].vfs[0].driver"]


def test_unknown_keys_that_are_not_bare_are_quoted():
    found = problems('"" = 1\n"a.b" = 2\n"x\\ny" = 3\n[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n"my key" = 4\n')
    assert set(found) == {'""', '"a.b"', '"x\\ny"', 'pf[0]."my key"'}


def test_a_group_with_a_bad_driver_still_claims_its_vfs():
    found = problems(
        '[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n'
        '[[pf.vfs]]\nrange = "0-3"\ndriver = "no/such"\n'
        '[[pf.vfs]]\nrange = "2-5"\n'
    )
    assert set(found) == {"pf[0].vfs[0].driver", "pf[0].vfs[1].range"}
    assert "overlaps pf[0].vfs[0].range on VF 2" in found["pf[0].vfs[1].range"]


def test_every_problem_is_reported_by_the_cli(make_host, write_config):
    host = make_host(("x710", 2, None), ("e810", 1, None))
    path = write_config(
        """
        [[pf]]
        name = "ens1f0"
        num_vfs = 8
        typo = 1
        [[pf.vfs]]
        range = "0-3"
        [[pf.vfs]]
        range = "3-4"
        [[pf]]
        pci = "0000:20:00"
        num_vfs = 2.5
        """
    )
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 2, result.stderr
    for key in ("pf[0].typo", "pf[0].vfs[1].range", "pf[1].pci", "pf[1].num_vfs"):
        assert f"error: {path}: {key}: " in result.stderr
    assert sim_writes(host) == []


def test_host_dependent_problems_are_all_reported_too(make_host, write_config):
    host = make_host(("x710", 2, None), ("e810", 1, None))
    path = write_config(
        """
        [[pf]]
        name = "ens9f9"
        num_vfs = 1
        [[pf]]
        pci = "0000:20:00.1"
        num_vfs = 65
        [[pf]]
        mac = "02:00:00:00:00:01"
        num_vfs = 1
        """
    )
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 1, result.stderr  # valid in itself; these blocks cannot apply here
    for key in ("pf[0].name", "pf[1].num_vfs", "pf[2].mac"):
        assert f"error: {path}: {key}: " in result.stderr
    assert sim_writes(host) == []


# ---------------------------------------------------------------------------- messages say what would be valid


@pytest.mark.parametrize(
    "text, key, hint",
    [
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "4-8"\n', "pf[0].vfs[0].range", "0-7"),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "0-"\n', "pf[0].vfs[0].range", '"0,2,4-6"'),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "3-1"\n', "pf[0].vfs[0].range", "write 1-3"),
        ('[[pf]]\nname = "ens1f0"\nnum_vf = 8\n', "pf[0].num_vf", "num_vfs"),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = -3\n', "pf[0].num_vfs", "from 0 to 65535"),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = "8"\n', "pf[0].num_vfs", "integer"),
        ('[[pf]]\npci = "3b:00"\nnum_vfs = 1\n', "pf[0].pci", "0000:3b:00.0"),
        ('[[pf]]\nmac = "3c:fd:fe"\nnum_vfs = 1\n', "pf[0].mac", "aa:bb:cc:dd:ee:ff"),
        ('[[pf]]\nvendor = "intel"\ndevice = "159b"\nnum_vfs = 1\n', "pf[0].vendor", '"8086"'),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0"\ndriver = "vfio_pci"\n',
         "pf[0].vfs[0].driver", "'vfio-pci'"),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\n[[pf.vfs]]\nrange = "0"\nflavour = 1\n',
         "pf[0].vfs[0].flavour", "range, driver"),
        ('version = 2\n', "version", "version = 1"),
        ('[[pf]]\nnum_vfs = 4\n', "pf[0]", "name, pci, mac, or vendor+device"),
        ('[[pf]]\nname = "ens1f0"\nnum_vfs = 4\nvfs = "0-3"\n', "pf[0].vfs", "[[pf.vfs]]"),
    ],
)
def test_messages_suggest_what_would_be_valid(text, key, hint):
    found = problems(text)
    assert key in found, found
    assert hint in found[key], found[key]


def test_cli_message_suggests_the_valid_range(make_host, write_config):
    host = make_host(("x710", 2, None))
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 8\n[[pf.vfs]]\nrange = "0-8"\n')
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 2
    assert f"error: {path}: pf[0].vfs[0].range: '0-8' reaches VF 8 but num_vfs = 8 (valid indices 0-7)" in result.stderr


def test_cli_message_suggests_at_most_totalvfs(make_host, write_config):
    host = make_host(("x710", 2, None))
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = 100\n')
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 1
    assert f"error: {path}: pf[0].num_vfs: " in result.stderr and "use at most 64" in result.stderr


def test_cli_message_lists_the_pfs_that_exist(make_host, write_config):
    host = make_host(("x710", 2, None), ("e810", 1, None))
    path = write_config('[[pf]]\nname = "ens9f0"\nnum_vfs = 1\n')
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 1
    assert "0000:20:00.0 (ens1f0), 0000:20:00.1 (ens1f1), 0000:30:00.0 (ens2f0)" in result.stderr


def test_json_output_lists_each_problem(make_host, write_config):
    host = make_host(("x710", 2, None))
    path = write_config('[[pf]]\nname = "ens1f0"\nnum_vfs = -1\ntypo = 1\n')
    result = run_cli("validate", "--json", root=host.root, config=path)
    assert result.returncode == 2
    body = json.loads(result.stdout)["error"]
    assert body["type"] == "ConfigError" and body["exit_code"] == 2
    assert {p["key"] for p in body["problems"]} == {"pf[0].num_vfs", "pf[0].typo"}
    assert all(p["message"] for p in body["problems"])


# ---------------------------------------------------------------------------- against a host


def test_the_shipped_example_validates_on_a_matching_host(make_host):
    host = make_host(("x710", 2, None), ("e810", 2, None))
    result = run_cli("validate", root=host.root, config=str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "error" not in result.stderr
    assert sim_writes(host) == []


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_a_fleet_rule_matching_nothing_is_a_note_not_an_error(make_host, write_config, command):
    host = make_host(("x710", 2, None))
    path = write_config(
        """
        [[pf]]
        name = "ens1f0"
        num_vfs = 0
        [[pf]]
        vendor = "15b3"   # ConnectX-5: not on this host
        device = "1017"
        num_vfs = 4
        """
    )
    result = run_cli(command, root=host.root, config=path)
    assert result.returncode == 0, result.stderr
    assert "note: pf[1]: no PF matches vendor:device=15b3:1017" in result.stderr
    assert "error" not in result.stderr
    assert sim_writes(host) == []


def test_a_fleet_rule_index_beyond_the_matches_is_a_note(make_host, write_config):
    host = make_host(("e810", 2, None))
    path = write_config('[[pf]]\nvendor = "8086"\ndevice = "159b"\nindex = 2\nnum_vfs = 4\n')
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 0, result.stderr
    assert "note: pf[0]: no PF matches vendor:device=8086:159b index=2" in result.stderr


def test_a_fleet_rule_may_cover_pfs_no_other_block_selects(make_host, write_config):
    host = make_host(("x710", 2, None), ("e810", 2, None))
    path = write_config(
        """
        [[pf]]
        name = "ens2f0"
        num_vfs = 4
        [[pf]]
        vendor = "8086"
        device = "159b"
        index = 1
        num_vfs = 8
        """
    )
    result = run_cli("validate", root=host.root, config=path)
    assert result.returncode == 0, result.stderr
    assert "select 2 PF(s)" in result.stdout


# ---------------------------------------------------------------------------- the file


@pytest.mark.parametrize("command", ["validate", "apply"])
def test_a_missing_config_names_the_path(make_host, tmp_path, command):
    host = make_host(("x710", 2, None))
    path = str(tmp_path / "nowhere" / "config.toml")
    result = run_cli(command, root=host.root, config=path)
    assert result.returncode == 2
    assert f"error: {path}: no such file" in result.stderr
    assert "Traceback" not in result.stderr
    assert sim_writes(host) == []


def test_the_default_config_path_is_named_when_missing(make_host):
    host = make_host(("x710", 2, None))
    result = run_cli("validate", root=host.root)
    assert result.returncode == 2
    assert os.path.join(host.root, "etc/sriov-node/config.toml") in result.stderr


def test_a_directory_is_not_a_config(make_host, tmp_path):
    host = make_host(("x710", 2, None))
    result = run_cli("validate", root=host.root, config=str(tmp_path))
    assert result.returncode == 2
    assert f"error: {tmp_path}: is a directory" in result.stderr


def test_syntax_and_encoding_errors_name_the_file(tmp_path):
    bad_toml = tmp_path / "a.toml"
    bad_toml.write_text('[[pf]\nname = "x"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(bad_toml))
    assert str(info.value).startswith(f"{bad_toml}: not valid TOML")
    latin1 = tmp_path / "b.toml"
    latin1.write_bytes(b'[[pf]]\nname = "caf\xe9"\nnum_vfs = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(latin1))
    assert str(info.value).startswith(f"{latin1}: not UTF-8 text")


def _stat(mode: int, uid: int) -> os.stat_result:
    # (st_mode, st_ino, st_dev, st_nlink, st_uid, st_gid, st_size, st_atime, st_mtime, st_ctime)
    return os.stat_result((stat.S_IFREG | mode, 1, 1, 1, uid, 0, 100, 0, 0, 0))


@pytest.mark.parametrize(
    "mode, uid, reason",
    [
        (0o644, 1000, "owned by uid 1000, not root"),
        (0o600, 65534, "chown root:root"),
        (0o666, 0, "writable by group or others (mode 0666)"),
        (0o664, 0, "chmod go-w"),
        (0o646, 0, "writable by group or others"),
        (0o2664, 0, "writable by group or others"),
    ],
)
def test_check_file_trust_refuses(mode, uid, reason):
    why = check_file_trust("/etc/sriov-node/config.toml", _stat(mode, uid))
    assert why is not None and reason in why
    assert "/etc/sriov-node/config.toml" in why or "mode" in why


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o444, 0o755, 0o4644])
def test_check_file_trust_accepts_root_owned_files_only_root_can_write(mode):
    assert check_file_trust("/etc/sriov-node/config.toml", _stat(mode, 0)) is None


def test_load_config_enforces_trust_only_when_asked(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n')
    path.chmod(0o666)
    assert load_config(str(path)).pfs  # a simulated root or a non-root user: no trust rule
    with pytest.raises(ConfigError) as info:
        load_config(str(path), enforce_trust=True)
    assert str(info.value).startswith(f"{path}: ")
    assert info.value.exit_code == 2


def test_the_trust_rule_applies_to_root_against_the_real_root_only(tmp_path, make_host, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('[[pf]]\nname = "ens1f0"\nnum_vfs = 1\n')
    path.chmod(0o666)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(ConfigError) as info:
        load_desired(open_host("/"), str(path))  # reads the file only; writes nothing
    assert "writable by group or others" in str(info.value) or "not root" in str(info.value)
    assert load_desired(make_host(("x710", 2, None)), str(path)).pfs  # a simulated root: not enforced
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert load_desired(open_host("/"), str(path)).pfs  # not root: nothing to protect
