"""The local Ray of `umlip run`: its node address is loopback and it requires a token.

Ray's servers listen on every interface whatever the node address, so the cluster that
`umlip run` starts for itself demands a per-run token: a client without it is refused
(even one with the machine's own ~/.ray/auth_token, if any).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

START_AND_PROBE = textwrap.dedent(
    """
    import os, subprocess, sys
    os.environ.pop("RAY_AUTH_MODE", None)
    os.environ.pop("RAY_AUTH_TOKEN", None)
    from umlip_orchestrator.cli import protect_local_ray
    assert protect_local_ray()  # what `umlip run` does before Ray is imported
    import ray
    from umlip_orchestrator.runner import _init_ray
    _init_ray(None)
    nodes = [n["NodeManagerAddress"] for n in ray.nodes()]
    address = ray.get_runtime_context().gcs_address
    probe = "import ray; ray.init(address=%r)" % address
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    outsider = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    print("NODES", nodes)
    print("MODE", os.environ["RAY_AUTH_MODE"])
    print("OUTSIDER", outsider.returncode, "Authentication" in outsider.stderr)
    """
)


def test_local_ray_is_loopback_and_token_protected() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    result = subprocess.run(
        [sys.executable, "-c", START_AND_PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)
    assert lines["NODES"] in ("['127.0.0.2']", "['127.0.0.1']"), result.stdout
    assert lines["MODE"] == "token"
    assert lines["OUTSIDER"] == "1 True", result.stdout + result.stderr
