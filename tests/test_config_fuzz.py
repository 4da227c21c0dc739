"""Property-based: no document, however broken, makes validation crash.

parse_config either returns a DesiredState or raises ConfigError (exit 2 with a message); any other
exception would reach the user as a traceback. The structured strategy builds TOML documents from
the real keys plus junk, with values of every TOML type, and serializes them with a small emitter
below (no TOML-writing dependency).
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from typing import Any, Dict, List

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sriov_node.config import MAX_NUM_VFS, PF_KEYS, TOP_KEYS, VF_KEYS, parse_config
from sriov_node.errors import ConfigError
from sriov_node.model import DesiredState

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SOURCE = "/etc/sriov-node/config.toml"
# Under CI the examples are derandomized, so a run is reproducible; set HYPOTHESIS_EXPLORE=1 to roam.
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                derandomize=os.environ.get("HYPOTHESIS_EXPLORE") != "1" and bool(os.environ.get("CI")))


def check(data: bytes) -> None:
    """The property: a DesiredState that holds together, or a ConfigError that explains itself."""
    try:
        desired = parse_config(data, SOURCE)
    except ConfigError as exc:
        assert exc.source == SOURCE
        assert exc.exit_code == 2
        assert exc.problems
        for problem in exc.problems:
            assert isinstance(problem.key, str)
            assert isinstance(problem.message, str) and problem.message.strip()
            # A key path for everything but a file that is not TOML at all.
            assert problem.key or problem.message.startswith(("not valid TOML", "not UTF-8")), problem
            rendered = problem.render(SOURCE)
            assert rendered.startswith(SOURCE)
            assert len(rendered.splitlines()) == 1, rendered  # one problem, one `error:` line
        assert str(exc).startswith(SOURCE)
        return
    assert isinstance(desired, DesiredState)
    assert desired.version == 1
    for spec in desired.pfs:
        sel = spec.selector
        assert sum(x is not None for x in (sel.name, sel.pci, sel.mac, sel.vendor)) == 1
        assert (sel.vendor is None) == (sel.device is None)
        assert sel.index is None or sel.vendor is not None
        assert 0 <= spec.num_vfs <= MAX_NUM_VFS
        owned: List[int] = [i for group in spec.vfs for i in group.indices]
        assert len(owned) == len(set(owned)), "VF groups overlap"
        assert all(0 <= i < spec.num_vfs for i in owned)
        for group in spec.vfs:
            assert group.driver is None or (group.driver and "/" not in group.driver and "\n" not in group.driver)


# ---------------------------------------------------------------------------- (a) arbitrary input

FRAGMENTS = [
    "version = 1\n", "version = ", "[[pf]]\n", "[pf]\n", "[[pf.vfs]]\n", "[pf.vfs]\n", "\n", " ", "=", ",",
    "name = ", "pci = ", "mac = ", "vendor = ", "device = ", "index = ", "num_vfs = ", "vfs = ", "range = ",
    "driver = ", '"ens1f0"', '"0000:20:00.0"', '"3c:fd:fe:00:20:00"', '"8086"', '"159b"', '"0-3"', '"5"',
    '"0,2,4-6"', '"vfio-pci"', '"vfio_pci"', "8", "0", "-1", "65536", "1.5", "true", "inf", "nan", "1979-05-27",
    "[", "]", "{", "}", '"', "'", "'''", '"""', "#", "\\", "\\u0000", "\t", "\r\n", "é", "\x00", "\ud7ff",
]


@FUZZ
@given(st.binary(max_size=400))
@example(b"\xff\xfe[[pf]]")
@example(b'[[pf]]\nname = "caf\xe9"\n')
def test_arbitrary_bytes_never_crash(data):
    check(data)


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_never_crash(text):
    check(text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join))
@example("x = " + "[" * 3000 + "]" * 3000)  # tomllib recursion
@example("num_vfs = " + "9" * 5000)  # beyond int()'s str-digits limit
@example('[[pf]]\nname = "ens1f0"\nnum_vfs = 65535\n[[pf.vfs]]\nrange = "0-65534"\n')  # big but valid
def test_toml_shaped_text_never_crash(text):
    check(text.encode("utf-8", "surrogatepass"))


# ---------------------------------------------------------------------------- (b) structured documents

_BARE = re.compile(r"\A[A-Za-z0-9_-]+\Z")


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_key(k: str) -> str:
    return k if _BARE.match(k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _is_array_of_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def emit_table(path: List[str], table: Dict[str, Any], lines: List[str]) -> None:
    """Plain and inline values first, then each array of tables as [[a.b]] blocks (recursively)."""
    for k, v in table.items():
        if not _is_array_of_tables(v):
            lines.append(f"{toml_key(k)} = {toml_value(v)}")
    for k, v in table.items():
        if _is_array_of_tables(v):
            header = ".".join(toml_key(p) for p in path + [k])
            for sub in v:
                lines.append(f"[[{header}]]")
                emit_table(path + [k], sub, lines)


def emit_document(doc: Dict[str, Any]) -> str:
    lines: List[str] = []
    emit_table([], doc, lines)
    return "\n".join(lines) + "\n"


junk_keys = st.text(min_size=0, max_size=8)
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([-1, 0, 1, 3, 7, 8, 15, 16, 63, 64, 65, 128, 129, 65535, 65536]),
    st.floats(allow_nan=True),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.dates(),
)
# One level of nesting is enough to hit every type check; st.recursive costs ~10x the time per example.
any_value = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(junk_keys, scalars, max_size=3),
    st.lists(st.dictionaries(junk_keys, scalars, max_size=2), min_size=1, max_size=2),
)

PLAUSIBLE: Dict[str, st.SearchStrategy] = {
    "version": st.sampled_from([1, 2, 0, "1", 1.0]),
    "name": st.sampled_from(["ens1f0", "ens2f0", "eno1", "", "x" * 16, "a/b", "..", "ens1f0 ", "a:b"]),
    "pci": st.sampled_from(["0000:20:00.0", "20:00.1", "0000:02:00.0", "0000:20:00", "zz:00.0", " 0000:30:00.0\n"]),
    "mac": st.sampled_from(["3c:fd:fe:00:20:00", "3C:FD:FE:00:20:01", "3c:fd:fe:00:20", "aa-bb-cc-dd-ee-ff"]),
    "vendor": st.sampled_from(["8086", "0x8086", "15b3", "80g6", "808", 8086]),
    "device": st.sampled_from(["159b", "1572", "159B", "159", "xyz", 0x159B]),
    "index": st.sampled_from([0, 1, 2, -1, 65536, "0"]),
    "num_vfs": st.sampled_from([0, 1, 4, 8, 16, 64, 65, 65535, 65536, -1, "8", 8.0, True]),
    "range": st.one_of(
        st.sampled_from(["0-3", "5", "0,2,4-6", "4-7", "0-", "a-b", "3-1", "", "1,,2", "1,1", "0-300", "\u0663"]),
        st.text(alphabet="0123456789 ,-", max_size=12),
    ),
    "driver": st.sampled_from(["vfio-pci", "iavf", "vfio_pci", "pci_stub", "a/b", "vfio-pci\n", "", "mlx5_core"]),
}


VALUES: Dict[str, st.SearchStrategy] = {k: st.one_of(v, any_value) for k, v in PLAUSIBLE.items()}


@st.composite
def tables(draw, valid_keys, nested=None):
    """Each valid key present or not, plus up to two junk keys; a plausible or an arbitrary value each."""
    keys = [k for k in valid_keys if draw(st.booleans())] + draw(st.lists(junk_keys, max_size=2))
    table: Dict[str, Any] = {}
    for key in draw(st.permutations(keys)):
        if key in table:
            continue
        if nested and key in nested and draw(st.integers(0, 4)):
            table[key] = draw(nested[key])
        else:
            table[key] = draw(VALUES.get(key, any_value))
    return table


vf_tables = st.lists(tables(VF_KEYS), max_size=4)
pf_tables = st.lists(tables(PF_KEYS, nested={"vfs": vf_tables}), max_size=4)
documents = tables(TOP_KEYS, nested={"pf": pf_tables})


@FUZZ
@given(documents)
def test_structured_documents_are_valid_or_explained(doc):
    text = emit_document(doc)
    if not _has_nan(doc):  # nan != nan
        assert tomllib.loads(text) == doc, text  # the emitter wrote what the strategy meant
    check(text.encode("utf-8"))


def _has_nan(v: Any) -> bool:
    if isinstance(v, float):
        return v != v
    if isinstance(v, list):
        return any(_has_nan(x) for x in v)
    if isinstance(v, dict):
        return any(_has_nan(x) for x in v.values())
    return False


@st.composite
def valid_pf(draw, n: int) -> Dict[str, Any]:
    """A [[pf]] block that parse_config must accept; `n` keeps selectors distinct across blocks."""
    kind = draw(st.sampled_from(["name", "pci", "mac", "vendor"]))
    table: Dict[str, Any] = {
        "name": lambda: {"name": f"ens{n}f{draw(st.integers(0, 9))}"},
        "pci": lambda: {"pci": draw(st.sampled_from(["0000:{:02x}:00.{}", "{:02x}:00.{}"])).format(n, draw(st.integers(0, 7)))},
        "mac": lambda: {"mac": f"02:00:00:00:{n:02x}:{draw(st.integers(0, 255)):02x}"},
        "vendor": lambda: {"vendor": draw(st.sampled_from(["8086", "0x15B3"])), "device": f"{n:04x}"},
    }[kind]()
    if kind == "vendor" and draw(st.booleans()):
        table["index"] = draw(st.integers(0, 3))
    num_vfs = draw(st.integers(0, 64))
    table["num_vfs"] = num_vfs
    if num_vfs and draw(st.booleans()):
        cuts = draw(st.lists(st.integers(0, num_vfs), min_size=2, max_size=6, unique=True).map(sorted))
        table["vfs"] = []
        for lo, hi in zip(cuts, cuts[1:]):
            group: Dict[str, Any] = {"range": str(lo) if hi - 1 == lo else f"{lo}-{hi - 1}"}
            driver = draw(st.sampled_from([None, "vfio-pci", "iavf", "mlx5_core", "pci-stub"]))
            if driver:
                group["driver"] = driver
            table["vfs"].append(group)
    return table


def _tables_in(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The document, its [[pf]] tables and their [[pf.vfs]] tables (as far as mutations left them)."""
    found = [doc]
    for pf in doc.get("pf") if isinstance(doc.get("pf"), list) else []:
        if isinstance(pf, dict):
            found.append(pf)
            found += [g for g in (pf.get("vfs") if isinstance(pf.get("vfs"), list) else []) if isinstance(g, dict)]
    return found


@st.composite
def near_valid_documents(draw):
    """(document, number of mutations): a valid document, then up to 3 random breakages."""
    count = draw(st.integers(1, 3))
    doc: Dict[str, Any] = {"version": 1, "pf": [draw(valid_pf(n)) for n in range(count)]}
    mutations = draw(st.integers(0, 3))
    for _ in range(mutations):
        tables_ = _tables_in(doc)
        table = draw(st.sampled_from(tables_))
        op = draw(st.sampled_from(["drop", "junk", "replace", "plausible"]))
        keys = sorted(table)
        if op == "junk" or not keys:
            table[draw(junk_keys)] = draw(any_value)
        elif op == "drop":
            del table[draw(st.sampled_from(keys))]
        else:
            key = draw(st.sampled_from(keys))
            table[key] = draw(PLAUSIBLE[key] if op == "plausible" and key in PLAUSIBLE else any_value)
    return doc, mutations


@FUZZ
@given(near_valid_documents())
def test_near_valid_documents_are_valid_or_explained(case):
    doc, mutations = case
    text = emit_document(doc)
    if mutations == 0:
        desired = parse_config(text.encode("utf-8"), SOURCE)  # a valid document must be accepted
        assert len(desired.pfs) == len(doc["pf"])
    check(text.encode("utf-8"))


def test_the_emitter_round_trips_a_known_document():
    doc = {
        "version": 1,
        "pf": [
            {"name": "ens1f0", "num_vfs": 8, "vfs": [{"range": "0-3", "driver": "vfio-pci"}, {"range": "4-7"}]},
            {"vendor": "8086", "device": "159b", "index": 0, "num_vfs": 16},
            {"weird key": [1, "two", {"x": 1.5}], "pci": "a\"b\\c\n\x7f", "num_vfs": 0},
        ],
    }
    text = emit_document(doc)
    assert tomllib.loads(text) == doc
    try:
        parse_config(text.encode(), SOURCE)
    except ConfigError as exc:
        assert [p.key for p in exc.problems] == ['pf[2]."weird key"', "pf[2].pci"]
    else:
        raise AssertionError("the third block is invalid")
    valid = {k: v for k, v in doc.items()}
    valid["pf"] = doc["pf"][:2]
    assert len(parse_config(emit_document(valid).encode(), SOURCE).pfs) == 2
