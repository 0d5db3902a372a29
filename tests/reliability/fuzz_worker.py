"""A long-lived minifw CLI, run inside a lab namespace by test_fuzz.py: one JSON request per line
on stdin, one JSON answer per line on stdout. Each request runs the click CLI in-process exactly
as the `minifw` binary does (cli.main.run), so thousands of cases cost no process start each.

Requests:
    {"op": "run", "argv": [...], "watch": [paths]}  -> {"code", "out", "err", "before", "after"}
    {"op": "snapshot", "watch": [paths]}            -> {"state": ...}
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys


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
        watch = req.get("watch", [])
        if req["op"] == "snapshot":
            answer = {"state": snapshot(watch)}
        else:
            before = snapshot(watch)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = climain.run(req["argv"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None
                                                                        else 1)
            answer = {"code": code, "out": out.getvalue(), "err": err.getvalue(),
                      "before": before, "after": snapshot(watch)}
        proto_out.write(json.dumps(answer) + "\n")
        proto_out.flush()


if __name__ == "__main__":
    sys.setrecursionlimit(1000)  # the binary's default: deep-nesting cases fail the same way
    main()
