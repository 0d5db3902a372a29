"""The lockout guard's decisions: would a new ruleset cut the admin's own connection? Pure.

A connection to protect is a TCP session from a client to a port of this host. It comes from
``SSH_CONNECTION`` (of this process or an ancestor), from the sockets of an ``sshd``, or from
``--guard ADDR:PORT`` (ADDR the peer, such as a bastion or a VPN peer; PORT this host's port it
connects to). ``minifw.kernel.conns`` finds them; this module only reasons about them.

For each one, the explain engine evaluates the new ruleset, live sets included, on three
packets, since any of them failing ends the session:

- ``new``: a SYN from the client to the server port (``--path in``, state new), which the
  admin's next login needs;
- ``established``: a packet of the running session in (state established);
- ``reply``: the server's answer out (``--path out``, established, ports swapped), which an
  output drop policy or ``stateful = false`` cuts.

A drop or reject blocks: the command refuses unless ``--force``. A Python hook function decides
at run time: that finding warns and never refuses.

The parser of ``/proc/net/tcp`` and ``/proc/net/tcp6`` lines lives here as well, so it
unit-tests on captured lines; the reading stays at the edge.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from ..errors import GuardError
from .sockets import TcpSocket, ssh_fields
from .sockets import unmap as _unmap

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any, Iterable, Sequence

    from ..model.ruleset import Ruleset
    from ..model.types import Hook
    from .explain import Address, Explanation, HookFunction, Probe, SetLookup
# The explain engine and the rule model load in probes() and check(): a ban into the default
# set decides on the parsers and Connection alone (see minifw.app.guard).

SOURCES = ("SSH_CONNECTION", "sshd", "--guard")
DIRECTIONS = ("new", "established", "reply")
BLOCKING = ("drop", "reject")
# The client port of a --guard connection, whose real one is not known: an ephemeral port,
# as explain assumes without --sport.
GUARD_CLIENT_PORT = 40000

_DIRECTION_TEXT = {"new": "a new connection in", "established": "an established packet in",
                   "reply": "the server's reply out"}
_VERDICT_TEXT = {"drop": "dropped", "reject": "rejected", "accept": "accepted"}


def _endpoint(addr: Address, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


# ---- connections ------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Connection:
    """A TCP session to protect: client -> server:server_port, and where it was found.

    ``iface`` is this host's interface toward the client when the edge knows it (the packets in
    arrive there and the replies leave there), so rules with ``iif``/``oif`` are judged."""

    client: Address
    client_port: int
    server: Address
    server_port: int
    found: str                       # one of SOURCES
    iface: str | None = None

    def __post_init__(self):
        if self.found not in SOURCES:
            raise ValueError(f"found must be one of {SOURCES}, not {self.found!r}")
        object.__setattr__(self, "client", _unmap(self.client))
        object.__setattr__(self, "server", _unmap(self.server))
        if self.client.version != self.server.version:
            raise ValueError(f"{self.client} and {self.server} are not of one IP version")
        for port in (self.client_port, self.server_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is out of range 1-65535")

    @property
    def key(self) -> tuple:
        """The flow, whatever found it: two finds of one session are one connection."""
        return (self.client, self.client_port, self.server, self.server_port)

    def label(self) -> str:
        flow = f"{_endpoint(self.client, self.client_port)} -> " \
               f"{_endpoint(self.server, self.server_port)}"
        if self.found == "--guard":
            return f"{flow} (given by --guard)"
        return f"{flow} (ssh session found via {self.found})"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"client": str(self.client), "client_port": self.client_port,
                               "server": str(self.server), "server_port": self.server_port,
                               "found": self.found}
        if self.iface is not None:
            out["iface"] = self.iface
        return out


def dedupe(connections: Iterable[Connection]) -> list[Connection]:
    """One connection per flow, the first find kept (callers list SSH_CONNECTION, then sshd,
    then --guard), in the order given."""
    seen: dict[tuple, Connection] = {}
    for conn in connections:
        seen.setdefault(conn.key, conn)
    return list(seen.values())


@dataclasses.dataclass(frozen=True)
class GuardSpec:
    """What ``--guard ADDR:PORT`` names: the peer and this host's port it connects to. The edge
    turns it into a Connection once it knows this host's address toward the peer."""

    peer: Address
    port: int

    def connection(self, local: Address, iface: str | None = None) -> Connection:
        return Connection(self.peer, GUARD_CLIENT_PORT, local, self.port, "--guard", iface)


def parse_guard(text: str) -> GuardSpec:
    """``198.18.0.2:22`` or ``[fd00::2]:22`` -> GuardSpec; anything else raises GuardError."""
    raw = text.strip() if isinstance(text, str) else ""
    shape = "expected ADDR:PORT such as 198.18.0.2:22 or [fd00::2]:22"
    if raw.startswith("["):
        host, sep, port_text = raw[1:].partition("]:")
        if not sep:
            raise GuardError(f"--guard {text!r}: {shape}")
    else:
        host, sep, port_text = raw.rpartition(":")
        if not sep or not host:
            raise GuardError(f"--guard {text!r}: {shape}")
        if ":" in host:
            raise GuardError(f"--guard {text!r}: an IPv6 address goes in brackets, as in "
                             "[fd00::2]:22")
    try:
        peer = ipaddress.ip_address(host)
    except ValueError:
        raise GuardError(f"--guard {text!r}: {host!r} is not an IPv4 or IPv6 address") from None
    if peer.version == 6 and peer.scope_id is not None:
        raise GuardError(f"--guard {text!r}: give the address without a %scope")
    if peer.is_unspecified or peer.is_multicast:
        raise GuardError(f"--guard {text!r}: {peer} is not the address of one peer")
    if not port_text.isascii() or not port_text.isdigit():
        raise GuardError(f"--guard {text!r}: {port_text!r} is not a port number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise GuardError(f"--guard {text!r}: port {port} is out of range 1-65535")
    return GuardSpec(_unmap(peer), port)


def parse_ssh_connection(value: str | None) -> Connection | None:
    """``SSH_CONNECTION``'s value, "client_ip client_port server_ip server_port", as sshd sets
    it; None when absent or malformed (the environment is not the user's input to refuse)."""
    fields = ssh_fields(value)
    if fields is None:
        return None
    try:
        return Connection(*fields, "SSH_CONNECTION")
    except ValueError:
        return None


# ---- /proc/net/tcp: the parsers live in .sockets (no dataclass there: a ban's start) -----------

def sessions_to(listeners: Iterable[TcpSocket], sockets: Iterable[TcpSocket],
                found: str = "sshd") -> list[Connection]:
    """The established sockets whose local end is a port and address one of ``listeners``
    listens on (a wildcard listener takes every local address of its family and port; an
    IPv6 one also the IPv4-mapped addresses, which show in tcp6)."""
    bound: dict[int, list[Address]] = {}
    for lis in listeners:
        if lis.state == "listen":
            bound.setdefault(lis.local_port, []).append(lis.local)
    out = []
    for s in sockets:
        addrs = bound.get(s.local_port)
        if s.state != "established" or not addrs or s.remote_port == 0:
            continue
        if any(a == s.local or (a.is_unspecified and a.version == s.local.version)
               for a in addrs):
            out.append(Connection(s.remote, s.remote_port, s.local, s.local_port, found))
    return dedupe(out)


# ---- the check --------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Finding:
    """What the new ruleset does to one packet of a protected connection."""

    connection: Connection
    direction: str                   # one of DIRECTIONS
    verdict: str                     # accept | drop | reject | runtime
    decider: str                     # rule id, "policy of <hook>", "ban blocked", function name
    decided_by: str                  # rule | policy | hook-function
    hook: Hook
    priority: int
    explanation: Explanation = dataclasses.field(compare=False, repr=False)

    @property
    def blocks(self) -> bool:
        return self.verdict in BLOCKING

    @property
    def runtime(self) -> bool:
        return self.verdict == "runtime"

    def to_json(self) -> dict[str, Any]:
        return {"connection": self.connection.to_json(), "direction": self.direction,
                "verdict": self.verdict, "decider": self.decider,
                "decided_by": self.decided_by, "hook": self.hook.value,
                "priority": self.priority, "blocks": self.blocks, "runtime": self.runtime}


def probes(conn: Connection) -> list[tuple[str, Probe]]:
    """The three packets that keep ``conn`` alive, by direction."""
    from ..model.types import Proto
    from .explain import Probe

    lo = conn.client.is_loopback or conn.client == conn.server
    iface = "lo" if lo else conn.iface
    inbound = dict(src=conn.client, dst=conn.server, proto=Proto.TCP, path="in",
                   sport=conn.client_port, dport=conn.server_port, iif=iface)
    return [
        ("new", Probe(**inbound, state="new")),
        ("established", Probe(**inbound, state="established")),
        ("reply", Probe(src=conn.server, dst=conn.client, proto=Proto.TCP, path="out",
                        sport=conn.server_port, dport=conn.client_port, oif=iface,
                        state="established")),
    ]


def check(ruleset: Ruleset, connections: Iterable[Connection],
          set_lookup: SetLookup | None = None,
          hook_functions: Sequence[HookFunction] = ()) -> list[Finding]:
    """Every packet of every connection, evaluated on ``ruleset`` (live sets through
    ``set_lookup``, the running Python hook functions through ``hook_functions``)."""
    from .explain import explain

    findings = []
    for conn in dedupe(connections):
        for direction, probe in probes(conn):
            e = explain(ruleset, probe, hook_functions, None, set_lookup)
            findings.append(Finding(conn, direction, e.verdict, e.decider, e.decided_by,
                                    e.hook, e.priority, e))
    return findings


def _cause(f: Finding) -> str:
    if f.decided_by == "policy":
        return f"the {f.hook.value} policy (drop)"
    if f.decided_by == "hook-function":
        return f"hook function '{f.decider}' ({f.hook.value}, priority {f.priority})"
    if f.decider.startswith("ban "):
        return f"the ban set @{f.decider[4:]} ({f.connection.client} is in it)"
    return f"rule '{f.decider}' ({f.hook.value}, priority {f.priority})"


def describe(f: Finding) -> str:
    """One finding as a sentence: the connection, the direction, the verdict and its cause."""
    what = _DIRECTION_TEXT[f.direction]
    if f.runtime:
        return (f"{f.connection.label()}: {what} is decided at run time by {_cause(f)}, which "
                "the guard cannot check")
    if f.verdict == "accept":
        return f"{f.connection.label()}: {what} is accepted"
    return f"{f.connection.label()}: {what} is {_VERDICT_TEXT[f.verdict]} by {_cause(f)}"


def refusal(findings: Sequence[Finding]) -> str | None:
    """The one-line refusal for the first blocking finding, or None when nothing blocks."""
    blocking = [f for f in findings if f.blocks]
    if not blocking:
        return None
    more = len(blocking) - 1
    extra = (f" ({more} more checked packet{'s' if more > 1 else ''} cut too; 'minifw check' "
             "lists them)") if more else ""
    return f"this change would cut {describe(blocking[0])}{extra}; use --force to apply anyway"


def runtime_warnings(findings: Sequence[Finding]) -> list[str]:
    """A warning per finding a hook function decides: the guard lets those through."""
    return [describe(f) for f in findings if f.runtime]


def no_connection_warning(ruleset: Ruleset) -> str | None:
    """When no connection was found: the warning that nothing could be checked, if the ruleset
    drops anything by default (None when every hook's policy is accept)."""
    hooks = ruleset.drop_hooks
    if not hooks:
        return None
    return (f"no connection to protect was found (no SSH_CONNECTION, no session to an sshd, "
            f"no --guard), so the guard checked nothing; this ruleset drops by default at "
            f"{', '.join(h.value for h in hooks)}")
