"""Spawn behaviour seen through the public API: relative commands under `cwd`, and the fd
limit services and checks are given (issue 6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def test_relative_command_runs_from_its_cwd(make_stack, helper, tmp_path):
    # As after `cd` in a shell: ./bin/server.sh names a file under cwd, not under ours.
    (tmp_path / "bin").mkdir()
    script = tmp_path / "bin" / "server.sh"
    script.write_text(f"#!/bin/sh\nexec {helper} cwd pause\n")
    script.chmod(0o755)
    stack = make_stack()
    svc = stack.add("server", ["./bin/server.sh"], cwd=str(tmp_path))
    stack.start(timeout=60)
    assert svc.wait_for_log("^cwd ", timeout=30) == f"cwd {tmp_path.resolve()}"


def test_services_and_checks_get_the_limit_the_owner_started_with(helper):
    # A fresh owner whose soft RLIMIT_NOFILE is below the hard one, as after a default
    # login: corral raises it for itself, but a service and its exec check must see the
    # original (a service using select() breaks with fds above 1024).
    script = textwrap.dedent(
        """
        import json, resource, sys
        helper = sys.argv[1]
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        start = min(hard // 2, 1024)
        resource.setrlimit(resource.RLIMIT_NOFILE, (start, hard))
        import corral
        stack = corral.Stack("limits")
        check = corral.ExecCheck(["/bin/sh", "-c", f'test "$(ulimit -Sn)" = {start}'])
        svc = stack.add("svc", [helper, "nofile", "pause"], ready=check)
        try:
            stack.start(timeout=60)
            line = svc.wait_for_log("^nofile ", timeout=30)
            owner = resource.getrlimit(resource.RLIMIT_NOFILE)
        finally:
            stack.close(timeout=60)
        print(json.dumps({"start": start, "hard": hard, "line": line, "owner": owner}))
        """
    )
    p = subprocess.run([sys.executable, "-c", script, helper], capture_output=True, text=True,
                       env=dict(os.environ), timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["start"] < out["hard"]
    assert out["owner"] == [out["hard"], out["hard"]]  # the owner itself runs raised
    assert out["line"] == f"nofile {out['start']} {out['hard']}"
