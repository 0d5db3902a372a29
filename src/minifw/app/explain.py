"""The explain operation: which ruleset to ask, the pure evaluation, and what else is in the way.

It reads the live ruleset of an instance from its state directory (what `up`, `reload`, `add`
and `delete` last applied), or a config file, and never nft's listing: the evaluator works on
the same rule model the compiler compiles. It also looks at the kernel for base chains of other
tables at the packet's hooks, which explain does not cover.
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any, Iterable, Sequence

from . import routing
from .capture import read_capture
from ..compile.nft import FAMILY, TABLE
from ..engine.explain import Explanation, HookFunction, Probe, explain
from ..engine.route import Routing, unroutable
from ..errors import KernelError, PacketError, StateError
from ..model import Ruleset
from ..model.types import PATHS, Hook
from .results.explain import CaptureSummary, Decider
from .results.rules import ForeignChain
from .rules import read_config
from ..store.state import Store

# Families of tables whose base chains see IPv4 / IPv6 packets at the inet hooks.
_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}


@dataclasses.dataclass(frozen=True)
class Source:
    ruleset: Ruleset
    where: str                    # "the live ruleset (state dir ...)" or the config path
    hook_functions: tuple[HookFunction, ...] = ()
    specs: tuple[Any, ...] = ()   # the loaded HookSpecs, for --run-hooks
    set_lookup: Any = None        # name, address -> True/False/None (unknown)
    live: bool = False            # the live instance: routing comes from this namespace


def ruleset_source(state_dir: Path, config: str | None, run_hooks: bool = False) -> Source:
    """The ruleset to explain: ``config`` if given, else the instance's live ruleset.

    Hook functions come from the config's [[hook]] files (loading them runs their module code,
    as `minifw up` does), or for the live ruleset from the running hook runners' records; with
    ``run_hooks`` their code is loaded from the live config's [[hook]] files.
    """
    if config is not None:
        _, ruleset = read_config(config)
        specs, wheres = _hook_specs(config, placed=True)
        return Source(ruleset, config, tuple(_function(s.name, s.hook, s.priority,
                                                       wheres.get(s.name, "queue"))
                                             for s in specs), tuple(specs),
                      config_set_lookup(ruleset))
    state = Store(state_dir).load()
    if not state.loaded:
        raise StateError(f"minifw is not up with state dir {state_dir}, so there is no live "
                         "ruleset to explain; run 'minifw up --config FILE' or pass "
                         "'explain --config FILE'")
    from ..runners import hookstate, kattach

    functions = tuple(_function(q.function, q.point.hook, q.priority)
                      for rec in hookstate.records(state_dir) if rec.alive for q in rec.queues)
    functions += tuple(_function(fn["name"], Hook(fn["hook"]), fn["priority"], "kernel")
                       for rec in kattach.records(state_dir)
                       for fn in rec.get("functions", []) if fn["where"] == "kernel")
    specs = _hook_specs(state.config)[0] if run_hooks and functions and state.config else []
    return Source(Ruleset.from_toml(state.ruleset), f"the live ruleset ({state.config})",
                  functions, tuple(specs), _live_sets(state_dir), live=True)


def config_set_lookup(ruleset: Ruleset):
    """Set membership from a config's [[set]] elements (bans made at run time are not there)."""
    import ipaddress

    contents = {s.name: [ipaddress.ip_network(e, strict=False) for e in s.elements]
                for s in ruleset.sets}

    def lookup(name: str, addr) -> bool | None:
        nets = contents.get(name)
        return None if nets is None else any(addr in n for n in nets
                                              if n.version == addr.version)
    return lookup


def _live_sets(state_dir: Path):
    """Set membership from the instance's set store: what is in the kernel's sets now."""
    import ipaddress

    from ..store.setrecord import SetStore

    store = SetStore(state_dir)

    def lookup(name: str, addr) -> bool | None:
        if not store.exists(name):
            return None
        if store.get(name, str(addr)) is not None:
            return True
        return any(addr in n for n in map(ipaddress.ip_network, store.cidrs(name))
                   if n.version == addr.version)
    return lookup


def _function(name: str, hook: Hook, priority: int, where: str = "queue") -> HookFunction:
    return HookFunction(name, hook, priority, where)


def _hook_specs(config: str, placed: bool = False) -> tuple[list, dict[str, str]]:
    """The @hook functions of a config's [[hook]] files, loaded (their module code runs), and
    with ``placed`` where each runs (kernel or queue: compiled as ``up`` would)."""
    from ..hooks.config import hook_files
    from ..hooks.load import load_hooks
    from ..runners.kplace import place

    text = Path(config).read_text()
    files = hook_files(text, config)
    if not placed:
        return [spec for file in files for spec in load_hooks(file)], {}
    plans = [place(file, quiet=True) for file in files]
    return ([p.spec for plan in plans for p in plan.placed],
            {p.spec.name: p.choice.where for plan in plans for p in plan.placed})


def hook_runner(source: Source, probe: Probe, logs: list[str]):
    """A ``run_hook`` for the evaluator: call the hook function on a packet synthesized from
    ``probe``, as the runner would (ACCEPT or DROP; anything else or an exception gives the
    function's on_error verdict). Log lines it writes are kept in ``logs``."""
    from ..hooks import ACCEPT, DROP
    from ..hooks.packet import Packet
    from ..netlink.nfqueue import QueuedPacket

    by_name = {s.name: s for s in source.specs}
    raw = synthesize(probe)
    names = {1: probe.iif, 2: probe.oif}

    def run(fn: HookFunction, mark: int) -> str:
        spec = by_name.get(fn.name)
        if spec is None:
            raise StateError(f"--run-hooks: the code of hook function {fn.name} is not in the "
                             f"[[hook]] files of {source.where}")
        queued = QueuedPacket(0, 1, 0x0800 if probe.version == 4 else 0x86DD,
                              list(Hook).index(fn.hook), payload=raw, mark=mark,
                              indev=1 if probe.iif and fn.hook.value in
                              ("prerouting", "input", "forward") else 0,
                              outdev=2 if probe.oif and fn.hook.value in
                              ("forward", "output", "postrouting") else 0)
        pkt = Packet(queued, ifname=names.get, logger=logs.append)
        try:
            v = spec.fn(pkt)
        except Exception as exc:  # the user's code: its on_error verdict applies, as at run time
            logs.append(f"{fn.name} raised {type(exc).__name__}: {exc}")
            v = spec.error_verdict
        if v is not ACCEPT and v is not DROP:
            logs.append(f"{fn.name} returned {v!r}, not ACCEPT or DROP")
            v = spec.error_verdict
        return "drop" if v == DROP else "accept"
    return run


def synthesize(probe: Probe) -> bytes:
    """The probe as IP packet bytes (headers with valid checksums, no payload)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import ICMPv6Unknown, IPv6

    ip = (IP(src=str(probe.src), dst=str(probe.dst)) if probe.version == 4
          else IPv6(src=str(probe.src), dst=str(probe.dst)))
    if probe.proto.value == "tcp":
        l4 = TCP(sport=probe.sport, dport=probe.dport, flags="S")
    elif probe.proto.value == "udp":
        l4 = UDP(sport=probe.sport, dport=probe.dport)
    elif probe.proto.value == "icmp":
        l4 = ICMP(type=probe.icmp_type, code=0)
    else:
        l4 = ICMPv6Unknown(type=probe.icmp_type, code=0, msgbody=b"\0\0\0\0")
    return bytes(ip / l4)


def foreign_chains(hooks: Iterable[Hook], versions: Iterable[int]) -> list[str]:
    """Warnings about other tables' base chains at these hooks; [] when nft cannot be asked."""
    from ..kernel import seam  # the kernel edge, only when needed
    from ..kernel.privilege import privileged

    if not privileged():  # libnftables would print "you must be root" itself
        return []
    try:
        chains = seam.default().base_chains()
    except (KernelError, PermissionError, OSError):
        return []
    families = {f for v in versions for f in _FAMILIES[v]}
    return [f.warning(f"explain covers table {FAMILY} {TABLE} only, and that chain can still "
                      "drop what minifw accepts")
            for f in ForeignChain.select(chains, {h.value for h in hooks}, families)]


def routed(source: Source, probe: Probe, *, path_given: bool,
           oif_given: bool) -> tuple[Probe, Routing | None, str | None]:
    """The probe with its path and output interface from the live routing (routing.py), the
    decision, and the `route:` line (None when --path/--oif decided all)."""
    if not source.live:
        return probe, None, routing.NO_LOOKUP
    probe, decision = routing.route(source.ruleset, probe, path_given=path_given,
                                    oif_given=oif_given, set_lookup=source.set_lookup)
    return probe, decision, decision.text if decision is not None else None


def explain_one(source: Source, probe: Probe, run_hooks: bool = False,
                logs: list[str] | None = None,
                decision: Routing | None = None) -> Explanation:
    run = hook_runner(source, probe, logs if logs is not None else []) if run_hooks else None
    result = explain(source.ruleset, probe, source.hook_functions, run, source.set_lookup,
                     routing.address_of(source.ruleset) if source.live else None)
    if decision is not None and decision.path is None:
        return unroutable(result, decision)
    return result


def explain_capture(source: Source, capture: str, *, path_kind: str = "in",
                    iif: str | None = None, oif: str | None = None,
                    state: str | None = None, direction: str = "in", iface: str | None = None,
                    path_given: bool = False) -> CaptureSummary:
    """Explain the packets of a capture that go ``direction`` (in: entering the host; out:
    leaving it, on the output path; all) and sum up: decider -> packets and verdicts (and the
    IP versions seen, to look for other tables' chains). The others are counted as skipped."""
    own_mac, name = _capture_iface(iface)
    if name is not None:
        iif, oif = iif or name, oif or name
    deciders: dict[str, dict[str, Any]] = {}
    verdicts: collections.Counter = collections.Counter()
    skipped: collections.Counter = collections.Counter()
    hits: collections.Counter = collections.Counter()   # rule -> packets it matched
    versions: set[int] = set()
    total = explained = unknown = 0
    routes: dict[tuple, tuple[Probe, Routing | None]] = {}
    for item in read_capture(capture, path_kind=path_kind, iif=iif, oif=oif, state=state,
                             own_mac=own_mac):
        total += 1
        way = item.direction or "in"
        if item.probe is not None and direction != "all" and way != direction:
            skipped[f"{'leaving' if way == 'out' else 'entering'} the host (--direction "
                    f"{direction})"] += 1
            continue
        if item.probe is None:
            skipped[item.skipped or "unknown"] += 1
            continue
        unknown += item.direction is None
        explained += 1
        probe, decision = item.probe, None
        if source.live:
            key = (probe.src, probe.dst, probe.iif, probe.path, probe.proto, probe.dport)
            if key not in routes:
                routes[key] = routing.route(
                    source.ruleset, probe, path_given=path_given or way == "out",
                    oif_given=probe.oif is not None, set_lookup=source.set_lookup)
            routed_probe, decision = routes[key]
            probe = dataclasses.replace(routed_probe, sport=probe.sport, state=probe.state,
                                        icmp_type=probe.icmp_type)
        versions.add(probe.version)
        exp = explain_one(source, probe, decision=decision)
        verdicts[exp.verdict] += 1
        hits.update(counted(exp))
        entry = deciders.setdefault(exp.decider, {
            "decider": exp.decider, "rule": exp.rule, "decided_by": exp.decided_by,
            "hook": exp.hook.value, "priority": exp.priority, "packets": 0, "verdicts": {},
            "first_packet": item.index})
        entry["packets"] += 1
        entry["verdicts"][exp.verdict] = entry["verdicts"].get(exp.verdict, 0) + 1
    order = sorted(deciders.values(), key=lambda d: (-d["packets"], d["decider"]))
    notes = [f"{unknown} packets of unknown direction were taken as entering the host (no "
             "direction flags; give --iface to tell)"] if unknown else []
    return CaptureSummary(capture=capture, path=path_kind, packets=total, explained=explained,
                          skipped=dict(skipped), verdicts=dict(verdicts),
                          deciders=tuple(Decider(**d) for d in order),
                          versions=frozenset(versions), ruleset=source.where,
                          direction=direction, notes=tuple(notes), hits=dict(hits),
                          route=("from this namespace's routing, per packet" if source.live
                                 and not path_given else None if source.live
                                 else routing.NO_LOOKUP))


def counted(exp: Explanation) -> set[str]:
    """The rules and nat entries whose kernel counters this packet moves: every rule it
    matched (log and accept rules too, not only the decider), and a nat entry only for the
    first packet of a flow."""
    return {s.name for s in exp.trace if s.matched and s.kind in ("rule", "nat") and s.name}


def _capture_iface(iface: str | None) -> tuple[bytes | None, str | None]:
    """(MAC, interface name) from --iface: a MAC address, or an interface's name here."""
    from .capture import mac_bytes

    if iface is None:
        return None, None
    if ":" in iface or "-" in iface and len(iface) == 17:
        return mac_bytes(iface), None
    from ..kernel.route import interface_mac

    mac = interface_mac(iface)
    if mac is None:
        raise PacketError(f"--iface: there is no interface {iface!r} with a MAC address here; "
                          "give the capture interface's MAC address instead")
    return mac_bytes(mac), iface


def path_hooks(path_kind: str) -> Sequence[Hook]:
    return PATHS.get(path_kind, ())
