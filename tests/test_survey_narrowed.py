"""A run of some PFs (the daemon's, on an event; `set`'s) reads only those PFs, not every PF of the
host, when nothing it decides depends on the others (`engine/survey.narrowed`): and then it answers
exactly what a survey of the whole host answers about them (`Resolution.only`), for every kind of
selector and every way a block can fail here. Where the answer does depend on the other PFs (an
`index` rule, values to put back, the device plugin's file, a PF of the run that is not here), the
whole host is read."""

from __future__ import annotations

import pytest

from sriov_node.config import load_config
from sriov_node.engine import survey as survey_module
from sriov_node.engine.survey import narrowed, survey
from tests.helpers import open_host

NICS = (("x710", 2, None), ("cx5", 2, None), ("x710", 1, None))
PFS = ("0000:20:00.0", "0000:20:00.1", "0000:30:00.0", "0000:30:00.1", "0000:40:00.0")
ABSENT = "0000:99:00.0"
NOT_A_PF = "0000:02:00.0"  # a PCI function without SR-IOV

# every selector, and every way a block fails on a host (resolve.py's kinds), spread over three
# configs so that each PF is some block's target in one and no block's in another
CONFIGS = {
    "by-reference": [
        'name = "ens1f1"\nnum_vfs = 2',
        'name = "ens2f0"\nnum_vfs = 2',
        'pci = "0000:40:00.0"\nnum_vfs = 3',
        'mac = "3c:fd:fe:00:20:00"\nnum_vfs = 1',
        f'pci = "{ABSENT}"\nnum_vfs = 2',  # absent
        'name = "nope0"\nnum_vfs = 2',  # absent, by name
        f'pci = "{NOT_A_PF}"\nnum_vfs = 2',  # not a PF
    ],
    "rules-and-conflicts": [
        'vendor = "15b3"\ndevice = "1017"\nnum_vfs = 2',  # a fleet rule: both cx5 PFs
        'pci = "0000:20:00.1"\nnum_vfs = 1',
        'name = "ens1f1"\nnum_vfs = 2',  # the same PF: a conflict
        'pci = "0000:40:00.0"\nnum_vfs = 99',  # above sriov_totalvfs
        'vendor = "1234"\ndevice = "abcd"\nnum_vfs = 2',  # a rule that matches nothing
    ],
    "altnames": [  # read whole: a mismatch's error names the other PF
        'name = "ens2f1"\naltname = "enp48s0f1"\nnum_vfs = 2',
        'name = "ens1f0"\naltname = "enp64s0f0"\nnum_vfs = 2',  # two PFs: a mismatch
        'altname = "enp48s0f0"\nnum_vfs = 2',
        'mac = "3c:fd:fe:02:40:00"\nnum_vfs = 2',
        'altname = "nope1"\nnum_vfs = 2',
    ],
}
WHOLE = {"altnames"}  # configs whose per-PF runs read every PF

ONLY = [frozenset({pf}) for pf in PFS] + [frozenset(PFS[1:3]), frozenset({ABSENT}), frozenset({NOT_A_PF}),
                                          frozenset({PFS[0], ABSENT})]


def config_text(blocks):
    return "".join(f"[[pf]]\n{block}\n" for block in blocks)


def answer(resolution):
    return ([(t.spec.key, t.pf) for t in resolution.targets],
            [(f.key, f.kind, f.pf, f.attr, f.message) for f in resolution.failures])


def head_reads(monkeypatch, with_vfs: bool = False):
    """Each PF read for resolution (`observe_pf` by `observe`: without the VFs, or with them when
    `with_vfs`, as `status` reads every PF)."""
    from sriov_node.host import observe as observe_module

    calls = []
    real = observe_module.observe_pf

    def counted(host, pci, **kwargs):
        if kwargs.get("want") is None and kwargs.get("with_vfs", True) == with_vfs:
            calls.append(pci)
        return real(host, pci, **kwargs)

    monkeypatch.setattr(observe_module, "observe_pf", counted)
    return calls


@pytest.fixture(scope="module")
def host_root(tmp_path_factory):
    from sriov_node.sim.build import create_host

    root = str(tmp_path_factory.mktemp("narrowed") / "host")
    create_host(root, NICS, iommu=True)
    return root


@pytest.mark.parametrize("only", ONLY, ids=lambda o: "+".join(sorted(o)))
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_run_of_some_pfs_answers_as_the_whole_hosts_survey(host_root, write_config, monkeypatch, name, only):
    desired = load_config(write_config(config_text(CONFIGS[name])))
    host = open_host(host_root)
    assert sorted(pf.pci for pf in survey(host, desired, vfs=False).heads.pfs) == sorted(PFS)
    whole = survey(host, desired).resolution.only(only)
    reads = head_reads(monkeypatch)
    seen = survey(host, desired, only)
    assert answer(seen.resolution) == answer(whole)
    narrow = only <= set(PFS) and name not in WHOLE
    # each PF of the run read once for resolution and no other; a PF of the run that is not here:
    # the whole host, whose PFs what is said of it names
    assert sorted(reads) == (sorted(only) if narrow else sorted(PFS)), reads
    assert (seen.resolved is None) == narrow  # the other blocks' answers are not kept as the host's


def test_the_daemons_run_reads_only_its_pf(host_root, write_config, monkeypatch):
    """The per-PF run the daemon makes on an event: one PF's head, its VFs, its verification."""
    from sriov_node.engine.reconcile import reconcile

    desired = load_config(write_config(config_text(CONFIGS["by-reference"])))
    from sriov_node.host import observe as observe_module

    reads = []
    real = observe_module.observe_pf

    def counted(host, pci, **kwargs):
        reads.append(pci)
        return real(host, pci, **kwargs)

    monkeypatch.setattr(observe_module, "observe_pf", counted)
    monkeypatch.setattr(survey_module, "observe_pf", counted)
    report = reconcile(open_host(host_root), desired, only=frozenset({PFS[4]}))
    assert [(o.pci, o.converged) for o in report.outcomes] == [(PFS[4], True)]
    assert set(reads) == {PFS[4]}, reads
    assert open_host(host_root).sysfs.num_vfs(PFS[4]) == 3


@pytest.mark.parametrize("case", ["index", "altname", "restore", "whole", "every-vf", "every-pf", "picking", "no-config"])
def test_what_depends_on_the_other_pfs_reads_the_whole_host(host_root, write_config, monkeypatch, case):
    blocks = list(CONFIGS["by-reference"])
    if case == "index":
        blocks.append('vendor = "8086"\ndevice = "1572"\nindex = 1\nnum_vfs = 2')  # which is 2nd: all of them
    if case == "altname":
        blocks.append('altname = "enp48s0f1"\nnum_vfs = 2')
    desired = None if case == "no-config" else load_config(write_config(config_text(blocks)))
    only = {"every-pf": None, "picking": (lambda resolved: frozenset({PFS[0]}))}.get(case, frozenset({PFS[0]}))
    kwargs = {"restore": {"restore": True}, "whole": {"whole": True}, "every-vf": {"every_vf": True}}.get(case, {})
    assert narrowed(desired, only, **kwargs) is None
    if case == "restore":
        kwargs = {"restore": {PFS[2]: {"num_vfs": 0}}}
    reads = head_reads(monkeypatch, with_vfs=case == "every-vf")  # status reads every PF with its VFs
    survey(open_host(host_root), desired, only, **kwargs)
    assert sorted(reads) == sorted(PFS), reads
