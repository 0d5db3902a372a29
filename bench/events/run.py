"""bench/events: NFLOG events from a logged drop rule under a UDP flood, minifw against ulogd2.

In ONE run, in two namespaces joined by veth (tx floods rx with bench/udpflood.c; the rules
live in rx; the flood runs on CPU 0, the consumers share CPU 1), interleaved over rounds:
- ab:    rx has two addresses; `ip daddr A udp dport 9 counter log group 100 drop` sends
         events to minifw's reader, `ip daddr B ... counter drop` none. The flood sends one
         batch to A, one to B, and so on, timing its calls to each: on veth the receiver's
         input path (netfilter and NFLOG included) runs inside them, so pps(A) / pps(B) is
         "events on against events off" under the same load to the microsecond.
- ab-ulogd: the same with ulogd2 as the consumer (a reference: the kernel's share).
- both:  one rule logs every packet to group 100 (minifw) AND group 101 (ulogd2: its NFLOG
         input and JSON output, our own ulogd.conf, started inside rx): events written per
         second by each (lines written / time from the flood's start to its last line), lost
         by each (the rule's own counter minus lines written), CPU time per event.
The event cap is off (every packet is an event). minifw's side is bench/events/reader.py
(NflogSocket, a JSON line per event, appended to a file).

Goals: minifw >= 1.0x ulogd2's events/s with no more loss; events on >= 0.9x events off.
Usage (root): .venv/bin/python bench/events/run.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))

from minifw.lab import MINIFW, Lab  # noqa: E402


def _bench_hooks():
    """bench/hooks/run.py, for its process helpers (bench/ is scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_hooks_run",
                                                  HERE.parent / "hooks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_HOOKS = _bench_hooks()
cpu_seconds, stop = _HOOKS.cpu_seconds, _HOOKS.stop

PY = str(ROOT / ".venv" / "bin" / "python")
MINIFW_GROUP, ULOGD_GROUP = 100, 101
ULOGD_PLUGINS = Path("/usr/lib/x86_64-linux-gnu/ulogd")
TABLE = "evbench"
ADDR_A, ADDR_B = "198.18.0.1", "198.18.0.3"
# The flood (and the kernel's receive path, NFLOG included, which runs in its system calls on
# veth) gets CPU 0, the consumers share CPU 1: they never take CPU time from the flood, and
# minifw and ulogd2 compete for the same core.
FLOOD_CPU, CONSUMER_CPU = ["taskset", "-c", "0"], ["taskset", "-c", "1"]


def ensure_tools() -> None:
    missing = [p for p, probe in (("ulogd2", "/usr/sbin/ulogd"),
                                  ("ulogd2-json", str(ULOGD_PLUGINS / "ulogd_output_JSON.so")),
                                  ("gcc", "/usr/bin/gcc"))
               if not os.path.exists(probe)]
    if missing:  # (the package's service is not started: no systemd here, policy-rc.d)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))


def ulogd_conf(tmp: Path, out: Path, args) -> Path:
    """NFLOG input on ULOGD_GROUP with the batching minifw's reader has, then BASE, IFINDEX,
    IP2STR and the JSON output (buffered: sync=0), as Debian's example JSON stack."""
    plugins = "\n".join(f'plugin="{ULOGD_PLUGINS}/ulogd_{name}.so"' for name in (
        "inppkt_NFLOG", "raw2packet_BASE", "filter_IFINDEX", "filter_IP2STR", "output_JSON"))
    conf = tmp / "ulogd.conf"
    conf.write_text(f"""[global]
logfile="{tmp}/ulogd.log"
loglevel=3
{plugins}
stack=log1:NFLOG,base1:BASE,ifi1:IFINDEX,ip2str1:IP2STR,json1:JSON

[log1]
group={ULOGD_GROUP}
unbind=0
netlink_socket_buffer_size={32 << 20}
netlink_socket_buffer_maxsize={256 << 20}
netlink_qthreshold={args.qthreshold}
netlink_qtimeout={max(1, args.timeout_ms // 10)}

[json1]
sync=0
file="{out}"
""")
    return conf


def rule(host, logs: list[tuple[str, int]], twin: bool = False) -> None:
    """The reader's set-up: the drop rule for A with these NFLOG statements, and with ``twin``
    the same rule for B without them."""
    stmts = " ".join(f'log prefix "{prefix}" group {group}' for prefix, group in logs)
    other = f"ip daddr {ADDR_B} udp dport 9 counter drop" if twin else ""
    nft(host, f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain input {{ type filter hook input priority 0; policy accept;
    ip daddr {ADDR_A} udp dport 9 counter {stmts} drop
    {other}
  }}
}}
""")


def daemon_rules(host, ulogd: bool, twin: bool) -> None:
    """The daemon's set-up: minifw compiled the rule for A (a log rule, then the counted drop);
    ulogd2's NFLOG statement joins minifw's on its log rule, and with ``twin`` B is dropped by
    a table of ours after minifw's chains, so B's packets cross them too, unlogged."""
    nft(host, f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain input {{ type filter hook input priority 10; policy accept;
    {f"ip daddr {ADDR_B} udp dport 9 counter drop" if twin else ""}
  }}
}}
""")
    if not ulogd:
        return
    (log_rule,) = [r for r in minifw_rules(host) if r.get("comment") == "log flood"]
    log_rule["expr"].append({"log": {"prefix": "ulogd", "group": ULOGD_GROUP}})
    host.run(["nft", "-j", "-f", "-"], input=json.dumps({"nftables": [{"replace": {
        "rule": {k: log_rule[k] for k in ("family", "table", "chain", "handle", "expr")}}}]}))


def nft(host, text: str) -> None:
    host.run(["nft", "-f", "-"], input=text)


def minifw_rules(host) -> list[dict]:
    data = json.loads(host.run(["nft", "-j", "list", "table", "inet", "minifw"]).stdout)
    return [obj["rule"] for obj in data["nftables"] if "rule" in obj]


def counter(host, daemon: bool) -> int:
    """Packets of A's drop rule: minifw's rule "flood" with the daemon, else ours."""
    if daemon:
        rules = [r for r in minifw_rules(host) if r.get("comment") == "flood"]
    else:
        data = json.loads(host.run(["nft", "-j", "list", "table", "inet", TABLE]).stdout)
        rules = [obj["rule"] for obj in data["nftables"] if "rule" in obj]
    for r in rules:
        for expr in r["expr"]:
            if "counter" in expr:
                return expr["counter"]["packets"]
    raise RuntimeError("the bench rule has no counter")


class Lines:
    """Counts the complete lines of a growing file, reading only what was added since."""

    def __init__(self, path: Path):
        self.path, self.at, self.count, self.grew = path, 0, 0, time.monotonic()

    def update(self) -> int:
        if self.path.exists():
            with open(self.path, "rb") as fh:
                fh.seek(self.at)
                while chunk := fh.read(1 << 22):
                    self.at += len(chunk)
                    self.count += chunk.count(b"\n")
                    self.grew = time.monotonic()
        return self.count


def settle(files: list[Lines], target: int, quiet: float = 3.0,
           deadline: float = 120.0) -> list[float]:
    """Wait until every consumer wrote ``target`` lines or wrote none for ``quiet`` seconds
    (it lost some); return when each wrote its last line (time.monotonic). On a loaded machine
    a consumer may go a second without the CPU, hence the long quiet time."""
    end = time.monotonic() + deadline
    waiting = list(files)
    while waiting and time.monotonic() < end:
        for f in list(waiting):
            if f.update() >= target or time.monotonic() - f.grew >= quiet:
                waiting.remove(f)
        time.sleep(0.05)
    return [f.grew for f in files]


def start_reader(rx, tmp: Path, args):
    out, stats = tmp / "minifw.jsonl", tmp / "reader.json"
    for p in (out, stats, Path(f"{stats}.ready")):
        p.unlink(missing_ok=True)
    proc = rx.popen([*CONSUMER_CPU, PY, str(HERE / "reader.py"), str(MINIFW_GROUP), str(out),
                     str(stats), "--copy-range", str(args.copy_range),
                     "--qthreshold", str(args.qthreshold), "--timeout-ms", str(args.timeout_ms),
                     "--nlbufsiz", str(args.nlbufsiz),
                     *(["--fast"] if args.writer == "fast" else [])])
    wait_for(Path(f"{stats}.ready"), proc, "the minifw reader")
    return proc, out


DAEMON_CONFIG = f"""[policy]
input = "accept"

[events]
drops = true
limit = "off"
group = {MINIFW_GROUP}
max_bytes = {1 << 40}
keep = 1

[[rule]]
id = "flood"
hook = "input"
proto = "udp"
dst = "{ADDR_A}"
dport = 9
action = "drop"
"""


def start_daemon(rx, tmp: Path, args):
    """``minifw daemon`` in rx, on the consumers' CPU; returns once it said READY=1."""
    conf = tmp / "minifw.toml"
    conf.write_text(DAEMON_CONFIG)
    out = rx.state_dir / "events.jsonl"
    out.unlink(missing_ok=True)
    ready = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp / "notify.sock"
    path.unlink(missing_ok=True)
    ready.bind(str(path))
    ready.settimeout(30)
    try:
        proc = rx.popen([*CONSUMER_CPU, MINIFW, "daemon", "--config", str(conf)],
                        env={"NOTIFY_SOCKET": str(path)})
        while b"READY=1" not in ready.recv(4096):
            pass
    except TimeoutError:
        raise RuntimeError("minifw daemon did not say READY=1 within 30 s") from None
    finally:
        ready.close()
    return proc, out


def daemon_stats(rx) -> dict:
    from minifw.control import client
    return client.request(rx.state_dir, "events.stats")["stats"]


def start_ulogd(rx, tmp: Path, args):
    out = tmp / "ulogd.jsonl"
    out.unlink(missing_ok=True)
    proc = rx.popen([*CONSUMER_CPU, "/usr/sbin/ulogd", "-c", str(ulogd_conf(tmp, out, args))])
    wait_for(out, proc, f"ulogd (see {tmp}/ulogd.log)")  # JSON opens its file once up
    # ulogd2 makes itself a real-time task (SCHED_RR 99, nice -1), which would take the
    # shared core from minifw outright: both get it the same way, as ordinary tasks
    os.sched_setscheduler(proc.pid, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, proc.pid, 0)
    time.sleep(0.3)
    return proc, out


def wait_for(path: Path, proc, what: str) -> None:
    end = time.monotonic() + 10
    while not path.exists():
        if time.monotonic() > end or proc.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def case(name: str, rnd: int, rx, tx, flood: str, tmp: Path, args) -> dict:
    consumers = {"ab": ["minifw"], "ab-ulogd": ["ulogd"], "both": ["minifw", "ulogd"],
                 "drain-minifw": ["minifw", "ulogd"], "drain-ulogd": ["minifw", "ulogd"]}[name]
    drained = name.split("-")[1] if name.startswith("drain") else None
    groups = {"minifw": ("flood", MINIFW_GROUP), "ulogd": ("ulogd", ULOGD_GROUP)}
    twin = name.startswith("ab")
    daemon = args.minifw == "daemon" and "minifw" in consumers
    procs, outs = {}, {}
    if daemon:
        procs["minifw"], outs["minifw"] = start_daemon(rx, tmp, args)
        daemon_rules(rx, "ulogd" in consumers, twin)
    else:
        rule(rx, [groups[c] for c in consumers], twin=twin)
    for c in consumers:
        if c not in procs:
            procs[c], outs[c] = (start_reader if c == "minifw" else start_ulogd)(rx, tmp, args)
    try:
        if drained:  # the events queue up in their sockets while they sleep
            for p in procs.values():
                os.kill(p.pid, signal.SIGSTOP)
        cpu0 = {k: cpu_seconds(p.pid) for k, p in procs.items()}
        c0 = counter(rx, daemon)
        t0 = time.monotonic()
        sent = tx.run([*FLOOD_CPU, flood, ADDR_A, *([ADDR_B] if twin else []), "9",
                       str(args.seconds)], timeout=args.seconds + 30).stdout.split()
        packets = counter(rx, daemon) - c0
        if drained:
            # only the measured one wakes (alone on its core: the scheduler favours whichever
            # slept less), right after the flood: events/s is the rate it works off the
            # backlog at; the other is ended
            other = next(k for k in procs if k != drained)
            gone = procs.pop(other)
            gone.terminate()  # (the daemon removes minifw: A's counter was read already)
            os.kill(gone.pid, signal.SIGCONT)
            gone.wait(timeout=30)
            outs.pop(other)
            os.kill(procs[drained].pid, signal.SIGCONT)
        files = {k: Lines(path) for k, path in outs.items()}
        starts = {k: time.monotonic() if drained else t0 for k in procs}
        settle(list(files.values()), packets)
        last = {k: f.grew for k, f in files.items()}
        cpu = {k: cpu_seconds(p.pid) - cpu0[k] for k, p in procs.items()}
        stats = daemon_stats(rx) if daemon and "minifw" in procs else None
    finally:
        for p in procs.values():
            stop(p)
    result: dict = {"packets": packets}
    if stats is not None:
        result["daemon"] = stats
    if twin:  # datagrams and seconds spent, to A (events on) and to B (off)
        result["on"] = int(sent[0]) / float(sent[1])
        result["off"] = int(sent[2]) / float(sent[3])
    for k, path in outs.items():
        written = files[k].update()  # (ulogd's last lines leave its buffer when it stops)
        result[k] = {"written": written, "lost": packets - written,
                     "events_per_s": written / max(last[k] - starts[k], 1e-3),
                     "cpu_us": cpu[k] / max(written, 1) * 1e6}
        path.unlink(missing_ok=True)
    if "minifw" in procs and not daemon and (tmp / "reader.json").exists():
        result["reader"] = json.loads((tmp / "reader.json").read_text())
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="flood length per case")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--copy-range", type=int, default=128)
    ap.add_argument("--qthreshold", type=int, default=1000)
    ap.add_argument("--timeout-ms", type=int, default=100)
    ap.add_argument("--nlbufsiz", type=int, default=65536)
    ap.add_argument("--cases", default="ab,ab-ulogd,both,drain-minifw,drain-ulogd")
    ap.add_argument("--minifw", choices=("daemon", "reader"), default="daemon",
                    help="minifw's consumer: `minifw daemon` (its EventService) or "
                         "bench/events/reader.py alone")
    ap.add_argument("--writer", choices=("fast", "json"), default="fast",
                    help="the reader's event lines: one %% format (fast) or json.dumps")
    ap.add_argument("--ns-prefix", default=os.environ.get("MINIFW_LAB_PREFIX", "evb"),
                    help="prefix of the namespaces the benchmark creates (and deletes)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/events needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    ensure_tools()
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="evbench"))
    runs: dict[str, list[dict]] = {}
    try:
        flood = str(tmp / "udpflood")
        subprocess.run(["gcc", "-O2", "-o", flood, str(ROOT / "bench" / "udpflood.c")],
                       check=True)
        with Lab(prefix=f"{args.ns_prefix}{os.getpid() % 10000}") as lab:
            rx, tx = lab.host("rx"), lab.host("tx")
            lab.link(rx, [f"{ADDR_A}/24", f"{ADDR_B}/24"], tx, ["198.18.0.2/24"])
            for rnd in range(1, args.rounds + 1):
                for name in args.cases.split(","):
                    r = case(name, rnd, rx, tx, flood, tmp, args)
                    runs.setdefault(name, []).append(r)
                    head = (f"on {r['on']:>9,.0f} pps, off {r['off']:>9,.0f} pps "
                            f"({r['on'] / r['off']:.2f}x)" if "on" in r
                            else f"{r['packets']:>9,} packets")
                    extra = "".join(
                        f"   {k}: {r[k]['events_per_s']:>8,.0f} ev/s lost {r[k]['lost']:>8,}"
                        f" ({r[k]['lost'] / max(r['packets'], 1):4.0%}) "
                        f"{r[k]['cpu_us']:5.2f} us CPU/event"
                        for k in ("minifw", "ulogd") if k in r)
                    print(f"[{rnd}] {name:<8} {head}{extra}", flush=True)
                    if "daemon" in r:
                        d = r["daemon"]
                        print(f"           daemon: written {d['written']:,} lost {d['lost']:,} "
                              f"overruns {d['nflog_overruns']} unmapped {d['unmapped']}",
                              flush=True)
                    if "reader" in r:
                        rd = r["reader"]
                        print(f"           reader: received {rd['received']:,} lost "
                              f"{rd['lost']:,} overruns {rd['overruns']}; CPU s: receive + "
                              f"decode {rd['cpu_receive']:.2f}, event lines "
                              f"{rd['cpu_build']:.2f}, write {rd['cpu_write']:.2f}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median
    print(f"\n{args.rounds} rounds of {args.seconds:g} s floods, interleaved; load average "
          f"{load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")

    def ratio(a: list[float], b: list[float]) -> str:
        per_round = [x / y if y else float("inf") for x, y in zip(a, b)]
        return f"{med(per_round):5.2f}x (rounds: {', '.join(f'{x:.2f}' for x in per_round)})"

    if "drain-minifw" in runs and "drain-ulogd" in runs:  # one round: the pair of floods
        runs["drain"] = [{**m, "ulogd": u["ulogd"], "packets": (m["packets"] + u["packets"]) / 2}
                         for m, u in zip(runs["drain-minifw"], runs["drain-ulogd"])]
    for name in ("both", "drain"):
        if name not in runs:
            continue
        both = runs[name]
        ev = [r["minifw"]["events_per_s"] for r in both]
        ul = [r["ulogd"]["events_per_s"] for r in both]
        print(f"  {name}: events/s minifw {med(ev):,.0f}, ulogd2 {med(ul):,.0f}: minifw/ulogd2 "
              f"{ratio(ev, ul)}   goal >= 1.00")
        lm = [r["minifw"]["lost"] / r["packets"] for r in both]
        lu = [r["ulogd"]["lost"] / r["packets"] for r in both]
        print(f"  {name}: lost minifw {med(lm):.1%}, ulogd2 {med(lu):.1%} of the rule's "
              "packets   goal: minifw <= ulogd2")
        cm = [r["minifw"]["cpu_us"] for r in both]
        cu = [r["ulogd"]["cpu_us"] for r in both]
        print(f"  {name}: CPU per event minifw {med(cm):.2f} us, ulogd2 {med(cu):.2f} us")
    for name, who in (("ab", "minifw"), ("ab-ulogd", "ulogd2")):
        if name in runs:
            on, off = [r["on"] for r in runs[name]], [r["off"] for r in runs[name]]
            goal = "   goal >= 0.90" if who == "minifw" else "   (reference)"
            print(f"  flood pps, events on ({who}) {med(on):,.0f} / off {med(off):,.0f}: "
                  f"{ratio(on, off)}{goal}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
