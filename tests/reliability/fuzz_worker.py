"""A long-lived minifw CLI, run inside a lab namespace by test_fuzz.py: one JSON request per line
on stdin, one JSON answer per line on stdout. Each request runs the click CLI in-process exactly
as the `minifw` binary does (cli.main.run), so thousands of cases cost no process start each.

Requests:
    {"op": "run", "argv": [...], "watch": [paths]}  -> {"code", "out", "err", "before", "after"}
      (before/after: hashes of the ruleset and of the watched files; null without "watch")
    {"op": "snapshot", "watch": [paths]}            -> {"state": ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import select
import subprocess
import sys
from pathlib import Path

WORKER = str(Path(__file__).resolve())
PYTHON = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")


class Worker:
    """The in-process CLI in the namespace, one JSON line per case."""

    def __init__(self, host, name: str = "worker"):
        self.host = host
        env = dict(os.environ, MINIFW_STATE_DIR=str(host.state_dir))
        host.lab.tmp.mkdir(parents=True, exist_ok=True)
        self.errors = host.lab.tmp / f"{name}.stderr"  # a file: a full pipe would block it
        with open(self.errors, "w") as err:
            self.proc = subprocess.Popen(["ip", "netns", "exec", host.ns, PYTHON, WORKER],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, env=env)

    def ask(self, req: dict, timeout: float = 60) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.proc.kill()
            raise AssertionError(f"the worker hung on {req!r}")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the worker died on {req!r}: {self.errors.read_text()}")
        return json.loads(line)

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    # The protocol gets its own descriptors: a fuzzed `set import NAME /dev/stdin` must read
    # nothing of it, and nothing a case prints may land in it.
    proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)

    from minifw.cli import main as climain
    from minifw.kernel import nft

    def ruleset() -> str:
        rc, out, err = nft.handle().cmd("list ruleset")
        if rc == 0 and out.strip():
            # An element with a timeout (a fuzzed `ban --timeout 1s` that succeeded) counts
            # down and vanishes by itself: the kernel changes with no command. Leave such
            # elements out; everything else is compared byte for byte.
            data = json.loads(out)
            for obj in data["nftables"]:
                if "set" in obj and "elem" in obj["set"]:
                    obj["set"]["elem"] = [e for e in obj["set"]["elem"]
                                          if not (isinstance(e, dict) and "timeout" in
                                                  e.get("elem", {}))]
            out = json.dumps(data, sort_keys=True)
        return hashlib.sha256(f"{rc}\0{out}\0{err}".encode()).hexdigest()

    def snapshot(paths: list[str]) -> dict:
        files = {}
        for p in paths:
            try:
                with open(p, "rb") as fh:
                    files[p] = hashlib.sha256(fh.read()).hexdigest()
            except OSError as exc:
                files[p] = f"missing: {exc.errno}"
        return {"ruleset": ruleset(), "files": files}

    for line in proto_in:
        req = json.loads(line)
        watch = req.get("watch")  # no watch: no snapshots (the concurrency test's writers)
        if req["op"] == "snapshot":
            answer = {"state": snapshot(watch or [])}
        else:
            before = snapshot(watch) if watch is not None else None
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = climain.run(req["argv"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None
                                                                        else 1)
            answer = {"code": code, "out": out.getvalue(), "err": err.getvalue(),
                      "before": before,
                      "after": snapshot(watch) if watch is not None else None}
        proto_out.write(json.dumps(answer) + "\n")
        proto_out.flush()


if __name__ == "__main__":
    sys.setrecursionlimit(1000)  # the binary's default: deep-nesting cases fail the same way
    main()
