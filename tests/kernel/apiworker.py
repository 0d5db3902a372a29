"""One process inside a lab namespace that loads configs through minifw's Python API.

A `minifw reload` spends most of its CPU importing minifw; a test that loads hundreds of rulesets
into the same namespace (the differential test) sends them here instead, and the process imports
once. It calls the same ``Firewall`` methods as the CLI commands, as the daemon does: long-lived,
in the namespace it was started in (its libnftables context belongs to that namespace).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from minifw.lab import LabError

_SERVE = r"""
import json, sys
from minifw.api import Firewall
from minifw.errors import MinifwError
replies, sys.stdout = sys.stdout, sys.stderr   # nothing else may write on the reply channel
for line in sys.stdin:
    op, path = json.loads(line)
    try:
        getattr(Firewall(), op)(path)
        error = None
    except MinifwError as exc:
        error = str(exc)
    replies.write(json.dumps(error) + "\n")
    replies.flush()
"""


class ApiWorker:
    """``worker.load("up" | "reload", path)``: what ``minifw up|reload --config path`` does."""

    def __init__(self, host):
        host.lab.tmp.mkdir(parents=True, exist_ok=True)
        log = open(host.lab.tmp / f"api-{host.name}.log", "w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, sys.executable, "-c", _SERVE],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
            env={**os.environ, "MINIFW_STATE_DIR": str(host.state_dir)}, start_new_session=True)
        log.close()
        host.lab._procs.append(self.proc)  # killed when the lab closes, however it ends

    def load(self, op: str, path, check: bool = True) -> str | None:
        """None once loaded; a refusal raises LabError, or is returned with check=False."""
        assert op in ("up", "reload"), op
        self.proc.stdin.write(json.dumps([op, str(path)]) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise LabError(f"the API process ended (exit {self.proc.poll()})")
        error = json.loads(line)
        if check and error is not None:
            raise LabError(f"minifw {op}: {error}")
        return error
