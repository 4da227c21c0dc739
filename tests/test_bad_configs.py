"""The bad-input corpus: every malformed config in tests/bad_configs/ is refused before the host is touched.

These are problems of the file itself (exit 2, nothing written). Configs that are valid but
do not fit this host are in tests/host_configs/ (test_host_configs.py): they fail alone.

Each corpus file starts with `# expect: X`. X is either a key path (`pf[0].vfs[1].range`, `version`,
`pf[1]`) that must be reported as the key of one of the problems, or a phrase (`not valid TOML`)
that must appear in a problem's message. Either way the message must name the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

from sriov_node.host.observe import observe
from tests.helpers import run_cli, sim_writes

CORPUS = Path(__file__).parent / "bad_configs"
FILES = sorted(CORPUS.glob("*.toml"))
_NAME_RE = re.compile(r"^\d{2}-[a-z0-9]+(?:-[a-z0-9]+)*\.toml$")
_KEY_RE = re.compile(r"^[a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*$")


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("ascii")
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <key path or phrase>'"
    return first[len("# expect: "):].strip()


def reported(stderr: str, source: str) -> List[str]:
    """The problems of a ConfigError as rendered on stderr, without the 'error: FILE: ' prefix."""
    prefix = f"error: {source}: "
    return [line[len(prefix):] for line in stderr.splitlines() if line.startswith(prefix)]


def assert_refused(proc, source: str, expect: str) -> None:
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 2, out
    assert "Traceback" not in proc.stderr, out
    assert source in proc.stderr, out
    problems = reported(proc.stderr, source)
    assert problems, f"no 'error: {source}: ...' line\n{out}"
    assert all(p.strip() for p in problems), out
    if _KEY_RE.match(expect):
        keys = [p.split(": ", 1)[0] for p in problems]
        assert expect in keys, f"expected a problem at key {expect!r}, got keys {keys}\n{out}"
    else:
        assert any(expect in p for p in problems), f"expected {expect!r} in a problem\n{out}"


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), ("e810", 1, None))


def test_corpus_is_large_enough_and_well_formed():
    assert len(FILES) >= 30, f"only {len(FILES)} bad configs in {CORPUS}"
    for path in FILES:
        assert _NAME_RE.match(path.name), f"{path.name}: name it NN-short-name.toml"
        assert expectation(path)
    numbers = [p.name[:2] for p in FILES]
    assert len(numbers) == len(set(numbers)), "two corpus files share a number"


@pytest.mark.parametrize("command", ["apply", "validate"])
@pytest.mark.parametrize("config", FILES, ids=[p.stem for p in FILES])
def test_bad_config_is_refused_without_writes(host, config: Path, command: str):
    before = observe(host)
    assert before.pfs and all(pf.num_vfs == 0 for pf in before.pfs)

    proc = run_cli(command, root=host.root, config=str(config))

    assert_refused(proc, str(config), expectation(config))
    assert sim_writes(host) == []
    after = observe(host)
    assert after == before
    assert all(pf.num_vfs == 0 for pf in after.pfs)
