"""Run inside a lab namespace (`ip netns exec NS python bpfattach.py CMD ...`): attach, swap,
list and clear this namespace's BPF programs through minifw.kernel.bpf, printing JSON."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bpfprogs import accept_all, drop_icmp  # noqa: E402
from minifw.kernel.bpf.attach import Attachments  # noqa: E402
from minifw.kernel.bpf.link import link_create  # noqa: E402
from minifw.kernel.bpf.pins import netns_dir  # noqa: E402
from minifw.kernel.bpf.prog import load  # noqa: E402
from minifw.kernel.bpf.sys import BpfError  # noqa: E402

PROGRAMS = {"drop_icmp": drop_icmp, "drop_b": lambda: drop_icmp("drop_b"), "accept_a": lambda: accept_all("accept_a"),
            "accept_b": lambda: accept_all("accept_b")}


def main(cmd: str, *args: str) -> object:
    pins = Attachments(netns_dir())
    if cmd == "dir":
        return pins.pin_dir
    if cmd == "attach":  # attach PROGRAM PF HOOK PRIORITY...
        name, pf, hook, *priorities = args
        with load(PROGRAMS[name](), {}) as prog:
            for priority in priorities:
                pins.attach(int(pf), int(hook), int(priority), prog.fd)
        return pins.entries()
    if cmd == "link":  # a bare link, no pin: PF HOOK PRIORITY DEFRAG
        pf, hook, priority, defrag = (int(a) for a in args)
        with load(accept_all(), {}) as prog:
            try:
                link_create(prog.fd, pf, hook, priority, bool(defrag))
            except BpfError as exc:
                return {"errno": exc.errno, "error": str(exc)}
        return {"errno": 0}
    if cmd == "detach":
        pf, hook, priority = (int(a) for a in args)
        return pins.detach(pf, hook, priority)
    if cmd == "entries":
        return pins.entries()
    if cmd == "clear":
        return pins.clear()
    raise SystemExit(f"unknown command {cmd}")


def serve() -> None:
    """One command per line (JSON argv), one JSON answer per line: no start-up per call."""
    for line in sys.stdin:
        try:
            answer = {"ok": main(*json.loads(line))}
        except BpfError as exc:
            answer = {"error": str(exc), "errno": exc.errno}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        print(json.dumps(main(*sys.argv[1:])))
