"""deploy/kubernetes/Containerfile builds the agent's image from the Debian package, offline: the base is a Debian
12 rootfs made by mmdebstrap from Debian's archive (no registry), imported into podman's store, and the image is
built by buildah (chroot isolation: no OCI runtime needed). In the image, the entrypoint converges a simulated host
mounted at /host, the readiness command exits 0, the device-plugin file is there, and SIGTERM stops the agent (0).

Slow (minutes, Debian's archive over the network): runs with SRIOV_NODE_TEST_IMAGE=1, when mmdebstrap, buildah and
podman are installed (apt-get install mmdebstrap buildah podman). The .deb: SRIOV_NODE_TEST_DEB=PATH, else built
by scripts/package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOLS = ("mmdebstrap", "buildah", "podman")
pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(os.environ.get("SRIOV_NODE_TEST_IMAGE") != "1", reason="SRIOV_NODE_TEST_IMAGE=1 builds it"),
    pytest.mark.skipif(not all(shutil.which(t) for t in TOOLS), reason="needs " + ", ".join(TOOLS)),
]

SMOKE = r"""set -eu
sriov-node sim create /host --nic x710:2 >/dev/null
mkdir -p /etc/sriov-node-configmap
printf '[device_plugin]\nconfig_file = "/run/sriov-node/device-plugin/config.json"\n\n[[pf]]\npci = "0000:20:00.0"\nnum_vfs = 4\n  [[pf.vfs]]\n  range = "0-3"\n  driver = "iavf"\n  resource = "netdev"\n' > /etc/sriov-node-configmap/default.toml
NODE_NAME=node-1 sriov-node-kubernetes > /tmp/pod.log 2>&1 &
pid=$!
n=0
until [ -e /host/run/sriov-node/agent.pid ] && sriov-node --config /etc/sriov-node/config.toml status --exit-code >/dev/null 2>&1; do
  n=$((n + 1)); if [ $n -ge 600 ] || ! kill -0 $pid; then cat /tmp/pod.log; echo NOT-READY; exit 1; fi; sleep 0.2
done
echo READY
cat /host/run/sriov-node/device-plugin/config.json
kill -TERM $pid
rc=0; wait $pid || rc=$?
echo "TERM-RC=$rc"
cat /tmp/pod.log
"""


def run(*args, timeout=1200, **kw):
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    given = os.environ.get("SRIOV_NODE_TEST_DEB")
    if given:
        return Path(given)
    if not (REPO / "scripts" / "package").exists():
        pytest.skip("no scripts/package in this tree: give SRIOV_NODE_TEST_DEB=PATH")
    out = tmp_path_factory.mktemp("dist")
    run(str(REPO / "scripts" / "package"), "--no-lint", "--out", str(out))
    return next(out.glob("sriov-node_*_all.deb"))


@pytest.fixture(scope="module")
def image(deb, tmp_path_factory):
    tag = uuid.uuid4().hex[:8]
    base, name = f"localhost/sriov-node-test-base:{tag}", f"localhost/sriov-node-test:{tag}"
    work = tmp_path_factory.mktemp("image")
    run("mmdebstrap", "--variant=apt", "--include=ca-certificates", "bookworm", str(work / "base.tar"),
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian-security bookworm-security main")
    run("podman", "import", str(work / "base.tar"), base)
    context = work / "context"
    (context / "dist").mkdir(parents=True)
    (context / "deploy" / "kubernetes").mkdir(parents=True)
    shutil.copy(deb, context / "dist")
    for f in ("Containerfile", "entrypoint.sh"):
        shutil.copy(REPO / "deploy" / "kubernetes" / f, context / "deploy" / "kubernetes" / f)
    try:
        run("buildah", "bud", "--isolation", "chroot", "--build-arg", f"BASE={base}",
            "-f", str(context / "deploy" / "kubernetes" / "Containerfile"), "-t", name, str(context))
        yield name
    finally:
        subprocess.run(["podman", "rmi", "-f", name, base], capture_output=True)


def test_the_image_runs_the_entrypoint_it_declares(image):
    config = json.loads(run("podman", "image", "inspect", image))[0]["Config"]
    assert config["Entrypoint"] == ["/usr/local/bin/sriov-node-kubernetes"]
    assert "SRIOV_NODE_ROOT=/host" in config["Env"]


def test_in_the_image_the_entrypoint_converges_a_host_and_stops_on_sigterm(image, tmp_path):
    smoke = tmp_path / "smoke.sh"
    smoke.write_text(SMOKE)
    ctr = run("buildah", "from", image).strip()
    try:
        out = run("buildah", "run", "--isolation", "chroot", "-v", f"{smoke}:/smoke.sh:ro", ctr, "--", "sh",
                  "/smoke.sh", timeout=600)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)
    assert "READY" in out and "NOT-READY" not in out, out
    assert '"resourceName": "netdev"' in out
    assert "TERM-RC=0" in out, out
    assert "wrote the device plugin config" in out and "installed default.toml" in out
