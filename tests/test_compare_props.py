"""Property: over generated kernel states, the comparison, the plan, verification and status agree.

Each example builds a simulated host, drives its kernel into an arbitrary state (VF count,
autoprobe, overrides, bindings, unbound VFs), and picks an arbitrary desired state. Then:
status says "converged" exactly when the comparison finds nothing, exactly when the plan is
empty; one run converges (every desire here is one the simulated kernel can meet); after it
the three agree again, on "converged", and a second run writes nothing.
"""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sriov_node.engine.compare import compare
from sriov_node.config import parse_config
from tests.helpers import open_host
from sriov_node.engine.plan import plan_pf
from sriov_node.engine.reconcile import reconcile, survey
from sriov_node.sim.build import create_host
from sriov_node.views.status import build_status

PF = "0000:20:00.0"
DRIVERS = [None, "vfio-pci", "iavf", "none", "any"]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                 derandomize=os.environ.get("HYPOTHESIS_EXPLORE") != "1")

vf_kernel_state = st.tuples(
    st.sampled_from(["leave", "unbind", "override"]),
    st.sampled_from([None, "vfio-pci", "iavf", "none"]),  # the override written before a re-probe
)


@st.composite
def scenario(draw):
    have = draw(st.integers(0, 5))
    return {
        "have": have,
        "autoprobe": draw(st.booleans()),
        "vfs": draw(st.lists(vf_kernel_state, min_size=have, max_size=have)),
        "want": (want := draw(st.integers(0, 5))),
        "drivers": draw(st.lists(st.sampled_from(DRIVERS), min_size=want, max_size=want)),
    }


def build_kernel_state(host, s) -> None:
    sysfs = host.sysfs
    if s["have"]:
        sysfs.set_num_vfs(PF, s["have"])
    for i, (what, override) in enumerate(s["vfs"]):
        vf = sysfs.vf_address(PF, i)
        if what == "leave":
            continue
        if sysfs.device_driver(vf):
            sysfs.unbind(vf, sysfs.device_driver(vf))
        if what == "override":
            sysfs.set_driver_override(vf, override)
            sysfs.drivers_probe(vf)
    sysfs.set_autoprobe(PF, s["autoprobe"])


def config_text(s) -> str:
    text = f'[[pf]]\npci = "{PF}"\nnum_vfs = {s["want"]}\n'
    for i, driver in enumerate(s["drivers"]):
        text += f'[[pf.vfs]]\nrange = "{i}"\n' + (f'driver = "{driver}"\n' if driver else "")
    return text


def views(host, desired):
    """(status says converged, the comparison is empty, the plan is empty)."""
    resolution = survey(host, desired).resolution
    (target,) = resolution.targets
    pf_status = build_status(host, desired)["pfs"][0]
    return (pf_status["converged"], compare(target.spec, target.pf) == (),
            plan_pf(target, frozenset(host.sysfs.listdir("sys/bus/pci/drivers"))).actions == ())


@PROPS
@given(scenario())
def test_comparison_plan_verification_and_status_agree(s):
    with tempfile.TemporaryDirectory() as tmp:
        root = create_host(os.path.join(tmp, "h"), (("x710", 1, None),), vfio_loaded=True)
        host = open_host(root)
        build_kernel_state(host, s)
        desired = parse_config(config_text(s).encode(), "generated.toml")

        status_ok, compare_ok, plan_empty = views(host, desired)
        assert status_ok == compare_ok == plan_empty

        report = reconcile(open_host(root), desired)
        (outcome,) = report.outcomes
        assert report.exit_code == 0, outcome.error
        assert outcome.status == ("unchanged" if compare_ok else "changed")
        assert views(open_host(root), desired) == (True, True, True)
        again = reconcile(open_host(root), desired)
        assert again.writes == 0 and again.outcomes[0].status == "unchanged"
