"""Configs valid in themselves that do not fit this host fail alone (tests/host_configs/).

A selector that matches no PF here, a count above a PF's sriov_totalvfs, two blocks choosing
one PF: those blocks fail (exit 1, the key named), nothing of theirs is written, and every
other block still converges. `validate` reports them with exit 1 and writes nothing.
Each file starts with `# expect: KEY` and `# converges: PCI[,PCI]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import pytest

from sriov_node.host.observe import observe
from tests.helpers import run_cli, sim_writes

CORPUS = Path(__file__).parent / "host_configs"
FILES = sorted(CORPUS.glob("*.toml"))


def header(path: Path, name: str) -> str:
    for line in path.read_text().splitlines()[:3]:
        if line.startswith(f"# {name}: "):
            return line.split(": ", 1)[1].strip()
    raise AssertionError(f"{path.name}: no '# {name}:' line")


def keys_named(stderr: str, source: str) -> List[str]:
    prefix = f"error: {source}: "
    return [line[len(prefix):].split(": ", 1)[0] for line in stderr.splitlines() if line.startswith(prefix)]


@pytest.fixture
def host(make_host):
    return make_host(("x710", 2, None), ("e810", 1, None))


def test_corpus_is_there():
    assert len(FILES) >= 10


@pytest.mark.parametrize("config", FILES, ids=[p.stem for p in FILES])
def test_validate_reports_the_block_and_writes_nothing(host, config: Path):
    proc = run_cli("validate", root=host.root, config=str(config))
    out = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 1, out
    assert "Traceback" not in proc.stderr, out
    key = header(config, "expect")
    assert any(k == key or k.startswith(key + ".") for k in keys_named(proc.stderr, str(config))), out
    assert sim_writes(host) == []


@pytest.mark.parametrize("config", FILES, ids=[p.stem for p in FILES])
def test_apply_fails_only_that_block_and_converges_the_rest(host, config: Path):
    before = {pf.pci: pf.num_vfs for pf in observe(host).pfs}
    proc = run_cli("apply", root=host.root, config=str(config))
    out = f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 1, out
    assert "Traceback" not in proc.stderr, out
    key = header(config, "expect")
    assert any(k == key or k.startswith(key + ".") for k in keys_named(proc.stderr, str(config))), out
    converges = set(header(config, "converges").split(","))
    after = {pf.pci: pf.num_vfs for pf in observe(host).pfs}
    for pci, count in after.items():
        if pci in converges:
            assert count == 2, out
        else:
            assert count == before[pci] == 0, f"{pci} was touched\n{out}"
    again = run_cli("apply", root=host.root, config=str(config))
    assert again.returncode == 1 and "write(s)" not in again.stdout  # the healthy PF: zero writes now
