"""docs/guide.md's "Trying it without SR-IOV hardware" block runs as written on a simulated host."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_guides_simulated_host_block_runs_as_written(tmp_path):
    text = (REPO / "docs/guide.md").read_text()
    section = text.split("### Trying it without SR-IOV hardware", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    script = block.replace("/tmp/node", str(tmp_path / "node"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRIOV_NODE_")}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "converged" in proc.stdout and '"resourceName": "intel_sriov_dpdk"' in proc.stdout
