"""bench/hooks: what a Python hook costs, against no firewall and the usual alternatives.

In ONE run, in two namespaces joined by veth (sender -> receiver, queue at the receiver's
input hook):
- UDP packets/s delivered: no firewall; NetfilterQueue (PyPI) accept-all and parse callbacks;
  C libnetfilter_queue accept-all (one verdict per packet); minifw accept-all and
  parse + set-lookup hooks, and the parse hook again on the pure-Python path
  (MINIFW_PURE_PYTHON=1, without the C hot path of hooks/_hot.c);
- TCP iperf3 throughput: no firewall, a minifw hook, a minifw per-flow hook, and as a
  reference C libnetfilter_queue with minifw's queue settings (F_GSO, 128-byte copy, batch
  verdicts): what the queue mechanism itself allows on this machine.
- Kernel hooks: the parse + set-lookup hook with where="kernel" (minifw_kernel.py, compiled to
  BPF and attached by `minifw run`), against no firewall, the same logic as nftables rules and
  the queue runner, for UDP and TCP; and the compile + attach time of examples/seed_hooks.py's
  two hooks made kernel hooks (kernel_attach_time.py).
Every userspace path runs fail-closed (no F_FAIL_OPEN, no bypass), so only verdicts issued
from userspace count. Prints ratios, and each consumer's CPU time per delivered packet (on a
shared machine the pps a consumer reaches depends on the CPU share it gets; its CPU cost per
packet does much less). Usage (root): .venv/bin/python bench/hooks/run.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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

PY = str(ROOT / ".venv" / "bin" / "python")
QUEUE = 7


def ensure_tools() -> None:
    missing = [p for p, probe in (("libnetfilter-queue-dev",
                                   "/usr/include/libnetfilter_queue/libnetfilter_queue.h"),
                                  ("iperf3", "/usr/bin/iperf3"), ("gcc", "/usr/bin/gcc"))
               if not os.path.exists(probe)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    if subprocess.run([PY, "-c", "import netfilterqueue"], capture_output=True).returncode:
        subprocess.run([PY, "-m", "pip", "install", "-q", "NetfilterQueue"], check=True)


def build(tmp: Path) -> tuple[str, str, str]:
    blast, nfq, gso = (str(tmp / "udp_blast"), str(tmp / "nfq_accept"),
                       str(tmp / "nfq_gso_batch"))
    subprocess.run(["gcc", "-O2", "-o", blast, str(HERE / "udp_blast.c")], check=True)
    for out, src in ((nfq, "nfq_accept.c"), (gso, "nfq_gso_batch.c")):
        subprocess.run(["gcc", "-O2", "-o", out, str(HERE / src), "-lnetfilter_queue"],
                       check=True)
    return blast, nfq, gso


def udp_delivered(host) -> int:
    """Datagrams that got past netfilter to the UDP layer (delivered, no port or buffer full)."""
    lines = [ln.split() for ln in host.run("cat /proc/net/snmp").stdout.splitlines()
             if ln.startswith("Udp:")]
    row = dict(zip(lines[0][1:], map(int, lines[1][1:])))
    return row["InDatagrams"] + row["NoPorts"] + row["InErrors"]


def install_queue_chain(host) -> None:
    """The same xt NFQUEUE chain minifw uses, fail-closed, for the non-minifw consumers."""
    code = ("from minifw.compile import hooks as p; from minifw.hooks import make_spec; "
            "from minifw.kernel import nfnl; "
            f"s = make_spec(lambda x: 1, 'input', 0, fail='closed', name='bench'); "
            f"nfnl.send_batch(p.build_install_batch([p.Placement(s, {QUEUE})]))")
    host.run([PY, "-c", code])


def nft_rules() -> str:
    """The logic of minifw_parse.py as nftables rules: the same 199 addresses in a hash set."""
    blocked = ", ".join(f"198.18.9.{i}" for i in range(1, 200))
    return ("table inet hookbench {\n"
            f"  set blocked {{ type ipv4_addr; elements = {{ {blocked} }}; }}\n"
            "  chain input { type filter hook input priority 0; policy accept;\n"
            "    ip saddr @blocked drop\n"
            "    meta l4proto { tcp, udp } th dport { 22, 23, 25 } drop\n"
            "    meta l4proto icmp drop\n  }\n}\n")


NFT = ["nft"]  # a consumer that is the nftables rules, not a process


def start_consumer(rx, consumer: list[str] | None, minifw_file: str | None, env=None):
    """The process that decides (None for no firewall and for nftables rules)."""
    if consumer is NFT:
        rx.run(["nft", "-f", "-"], input=nft_rules())
        return None
    if minifw_file:
        proc = rx.popen([MINIFW, "run", minifw_file], env=env)
        wait_record(rx, proc, kernel="kernel" in Path(minifw_file).name)
        return proc
    if consumer:
        proc = rx.popen(consumer)
        time.sleep(0.7)
        install_queue_chain(rx)
        return proc
    return None


def remove_tables(host) -> None:
    host.run("nft flush ruleset", check=False)


def wait_record(host, proc, deadline=15.0, kernel: bool = False) -> None:
    """Until the runner is up: its record for the queue, its attached links in the kernel."""
    end = time.monotonic() + deadline
    while not (kernel_attached(host) if kernel else
               list((host.state_dir / "hooks").glob(f"runner-{proc.pid}.json"))):
        if proc.poll() is not None or time.monotonic() > end:
            raise RuntimeError("minifw runner did not start")
        time.sleep(0.05)


def kernel_attached(host) -> bool:
    """A dispatcher's link is pinned in the host's namespace pin directory (kernel/bpf/pins);
    its program is swapped in right after, so wait a little more."""
    from minifw.kernel.bpf.pins import ROOT
    ino = os.stat(f"/var/run/netns/{host.ns}").st_ino
    if not list(Path(ROOT, str(ino)).glob("*/link")):
        return False
    time.sleep(0.3)
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (the consumer: `ip netns exec` execs into it)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_case(lab, rx, tx, blast: str, seconds: float, consumer: list[str] | None,
             minifw_file: str | None, env: dict[str, str] | None = None
             ) -> tuple[float, float | None]:
    proc = start_consumer(rx, consumer, minifw_file, env)
    try:
        sender = subprocess.Popen(["ip", "netns", "exec", tx.ns, blast, "198.18.0.1", "9",
                                   str(seconds + 1.0)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        c0 = cpu_seconds(proc.pid) if proc else 0.0
        a, t0 = udp_delivered(rx), time.monotonic()
        time.sleep(seconds)
        b, t1 = udp_delivered(rx), time.monotonic()
        c1 = cpu_seconds(proc.pid) if proc else 0.0
        sender.wait(timeout=seconds + 10)
        cpu_per_packet = (c1 - c0) / max(b - a, 1) * 1e6 if proc else None
        return (b - a) / (t1 - t0), cpu_per_packet
    finally:
        stop(proc)
        remove_tables(rx)


def stop(proc) -> None:
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def wakeups(pid: int) -> int:
    """Times the process gave up the CPU to wait (voluntary context switches)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def tcp_case(rx, tx, seconds: float, consumer: list[str] | None,
             minifw_file: str | None) -> tuple[float, tuple[float, float] | None]:
    """iperf3 throughput, and the consumer's CPU share (of one core) and wake-ups per second
    while it ran."""
    proc = start_consumer(rx, consumer, minifw_file)
    try:
        server = rx.popen(["iperf3", "-s", "-1", "-p", "5201"])
        rx.wait_listening(5201)
        c0, w0 = (cpu_seconds(proc.pid), wakeups(proc.pid)) if proc else (0.0, 0)
        t0 = time.monotonic()
        out = tx.run(["iperf3", "-c", "198.18.0.1", "-p", "5201", "-t", str(seconds), "-J"],
                     timeout=seconds + 20)
        t1 = time.monotonic()
        share = None
        if proc:
            share = ((cpu_seconds(proc.pid) - c0) / (t1 - t0),
                     (wakeups(proc.pid) - w0) / (t1 - t0))
        server.wait(timeout=10)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"], share
    finally:
        stop(proc)
        remove_tables(rx)


def attach_times(rx, tmp: Path) -> list[float]:
    """Compile + attach of examples/seed_hooks.py's two hooks made kernel hooks, in rx's
    namespace, 5 times (the process is started once: its import time is not counted)."""
    seed = (ROOT / "examples" / "seed_hooks.py").read_text()
    kernel = tmp / "seed_kernel.py"
    if "where=" not in seed:
        seed = (seed.replace("priority=-300)", 'priority=-300, where="kernel")')
                .replace("priority=-299)", 'priority=-299, where="kernel")'))
    kernel.write_text(seed)
    out = rx.run([PY, str(HERE / "kernel_attach_time.py"), str(kernel), "5"], check=False,
                 timeout=120)
    if out.returncode:
        print(f"compile + attach: {out.stderr.strip()}", flush=True)
        return []
    times = [float(x) for x in out.stdout.split()]
    print("compile + attach of the seed's two hooks (ms): " + " ".join(f"{t:.0f}" for t in times),
          flush=True)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="per UDP case")
    ap.add_argument("--tcp-seconds", type=float, default=2.0, help="per TCP case and round")
    ap.add_argument("--tcp-rounds", type=int, default=15,
                    help="TCP rounds: iperf3's throughput swings 10-20%% from one run to the "
                         "next here, so TCP takes many short rounds; the per-round ratios' "
                         "median settles where 3-5 rounds of 4 s did not")
    ap.add_argument("--rounds", type=int, default=3,
                    help="run every case this many times, interleaved; report each case's "
                         "median and best, and the median of the per-round ratios")
    ap.add_argument("--ns-prefix", default="hqb",
                    help="prefix of the namespaces the benchmark creates (and deletes)")
    ap.add_argument("--only", default="",
                    help="comma-separated words: run only the cases whose name contains one "
                         "(e.g. 'parse,C lib' or 'tcp'); ratios need both of their cases")
    args = ap.parse_args()
    words = [w.strip() for w in args.only.split(",") if w.strip()]

    def wanted(kind: str, name: str) -> bool:
        return not words or any(w in f"{kind} {name}" for w in words)
    if os.geteuid() != 0:
        print("bench/hooks needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    ensure_tools()
    load0 = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="hqbench"))
    try:
        blast, c_nfq, c_gso = build(tmp)
        with Lab(prefix=f"{args.ns_prefix}{os.getpid() % 10000}") as lab:
            rx, tx = lab.host("rx"), lab.host("tx")
            lab.link(rx, ["198.18.0.1/24"], tx, ["198.18.0.2/24"])
            rx.popen([PY, "-c", "import socket,time\ns=socket.socket(socket.AF_INET,"
                      "socket.SOCK_DGRAM);s.bind(('0.0.0.0',9));time.sleep(3600)"])
            nfq_py = str(HERE / "nfq_python.py")
            udp_cases = [
                ("no firewall", None, None),
                ("NetfilterQueue accept-all", [PY, nfq_py, "accept", str(QUEUE)], None),
                ("NetfilterQueue parse", [PY, nfq_py, "parse", str(QUEUE)], None),
                ("C libnetfilter_queue accept-all", [c_nfq, str(QUEUE)], None),
                ("minifw accept-all", None, str(HERE / "minifw_accept.py")),
                ("minifw parse + set lookup", None, str(HERE / "minifw_parse.py")),
                # the same hook without the C hot path (hooks/_hot.c): what pure Python costs
                ("minifw parse, pure Python", None, str(HERE / "minifw_parse.py")),
                ("nftables rules (parse logic)", NFT, None),
                ("minifw kernel parse + set lookup", None, str(HERE / "minifw_kernel.py")),
            ]
            udp: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            for rnd in range(1, args.rounds + 1):
                for name, consumer, hook_file in udp_cases:
                    if not wanted("udp", name):
                        continue
                    env = {"MINIFW_PURE_PYTHON": "1"} if "pure Python" in name else None
                    pps, per_packet = udp_case(lab, rx, tx, blast, args.seconds, consumer,
                                               hook_file, env)
                    extra = (f"   {per_packet:5.1f} us CPU/packet in the consumer"
                             if per_packet is not None else "")
                    print(f"[{rnd}] udp  {name:<34} {pps:>12,.0f} pps{extra}", flush=True)
                    udp.setdefault(name, []).append(pps)
                    if per_packet is not None:
                        cpu.setdefault(name, []).append(per_packet)
            tcp: dict[str, list[float]] = {}
            for rnd in range(1, args.tcp_rounds + 1):
                for name, consumer, hook_file in (
                        ("no firewall", None, None),
                        ("C F_GSO + batch verdicts", [c_gso, str(QUEUE)], None),
                        ("minifw hook", None, str(HERE / "minifw_accept.py")),
                        ("minifw per-flow hook", None, str(HERE / "minifw_perflow.py")),
                        ("minifw parse hook (queue)", None, str(HERE / "minifw_parse.py")),
                        ("nftables rules (parse logic)", NFT, None),
                        ("minifw kernel parse hook", None, str(HERE / "minifw_kernel.py"))):
                    if not wanted("tcp", name):
                        continue
                    bps, share = tcp_case(rx, tx, args.tcp_seconds, consumer, hook_file)
                    extra = (f"   consumer: {share[0]:4.0%} of a core, {share[1]:,.0f} "
                             "wake-ups/s" if share else "")
                    print(f"[{rnd}] tcp  {name:<34} {bps / 1e9:>12.2f} Gbit/s{extra}",
                          flush=True)
                    tcp.setdefault(name, []).append(bps)
            attach_ms = attach_times(rx, tmp) if wanted("kernel", "attach") else []
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med, best = statistics.median, max
    print(f"\n{args.rounds} rounds per UDP case, {args.tcp_rounds} per TCP case, interleaved; "
          f"load average at the start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at the end "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    print(f"  {'':38} {'median':>12} {'best':>12}   CPU/packet median (min)")
    for name, v in udp.items():
        c = cpu.get(name)
        extra = f"   {med(c):5.1f} us ({min(c):.1f})" if c else ""
        print(f"  udp {name:<34} {med(v):>12,.0f} {best(v):>12,.0f}{extra}")
    for name, v in tcp.items():
        print(f"  tcp {name:<34} {med(v) / 1e9:>12.2f} {best(v) / 1e9:>12.2f}   Gbit/s")

    def ratio(runs: dict[str, list[float]], a: str, b: str, best=best) -> str:
        """Median of the per-round ratios (the cases of one round ran minutes apart at most,
        so their ratio cancels much of the machine's drift), then the ratio of the bests."""
        if a not in runs or b not in runs:
            return "     -  (case not run)"
        per_round = [x / y for x, y in zip(runs[a], runs[b])]
        return f"{med(per_round):6.2f}x  (best/best {best(runs[a]) / best(runs[b]):5.2f}x)"

    print("\nratios: median of per-round ratios (and of the best figures: for CPU, the least)")
    for name in udp:
        print(f"  udp {name:<34} {ratio(udp, name, 'no firewall')} of no firewall")
    p, nq = "minifw parse + set lookup", "NetfilterQueue parse"
    c = "C libnetfilter_queue accept-all"
    print(f"  minifw parse / NetfilterQueue parse      {ratio(udp, p, nq)}   goal >= 1.30")
    print(f"  minifw parse / C per-packet accept-all   {ratio(udp, p, c)}   goal >= 1.00")
    print(f"  minifw accept / NetfilterQueue accept    "
          f"{ratio(udp, 'minifw accept-all', 'NetfilterQueue accept-all')}")
    print(f"  minifw accept / C per-packet accept-all  {ratio(udp, 'minifw accept-all', c)}")
    print(f"  CPU per packet, NetfilterQueue parse / minifw parse  {ratio(cpu, nq, p, min)}"
          "   (steadier than pps on a shared machine)")
    print(f"  CPU per packet, C accept-all / minifw parse          {ratio(cpu, c, p, min)}")
    pure = "minifw parse, pure Python"
    print(f"  CPU per packet, pure Python / C hot path (parse)     {ratio(cpu, pure, p, min)}")
    print(f"  tcp minifw hook / no firewall            "
          f"{ratio(tcp, 'minifw hook', 'no firewall')}   goal >= 0.90")
    print(f"  tcp minifw per-flow / no firewall        "
          f"{ratio(tcp, 'minifw per-flow hook', 'no firewall')}   goal >= 0.97")
    print(f"  tcp C F_GSO + batch / no firewall        "
          f"{ratio(tcp, 'C F_GSO + batch verdicts', 'no firewall')}   (reference: the mechanism)")
    print(f"  tcp minifw hook / C F_GSO + batch        "
          f"{ratio(tcp, 'minifw hook', 'C F_GSO + batch verdicts')}")
    k, q, n = "minifw kernel parse + set lookup", "minifw parse + set lookup", \
        "nftables rules (parse logic)"
    print(f"  udp kernel hook / no firewall            {ratio(udp, k, 'no firewall')}"
          "   goal >= 0.90")
    print(f"  udp kernel hook / nftables rules         {ratio(udp, k, n)}   goal >= 1.00")
    print(f"  udp kernel hook / queue runner (parse)   {ratio(udp, k, q)}")
    kt = "minifw kernel parse hook"
    print(f"  tcp kernel hook / no firewall            {ratio(tcp, kt, 'no firewall')}"
          "   goal >= 0.95")
    print(f"  tcp kernel hook / nftables rules         "
          f"{ratio(tcp, kt, 'nftables rules (parse logic)')}   goal >= 1.00")
    print(f"  tcp kernel hook / queue runner (parse)   "
          f"{ratio(tcp, kt, 'minifw parse hook (queue)')}")
    if attach_ms:
        print(f"  compile + attach of examples/seed_hooks.py's two hooks as kernel hooks: "
              f"median {med(attach_ms):.0f} ms, best {min(attach_ms):.0f} ms of "
              f"{len(attach_ms)}   goal < 200 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
