"""The lockout guard's parsers of what the host says: ``/proc/net/tcp`` and ``tcp6`` lines, and
``SSH_CONNECTION``. Pure, and free of dataclasses (each costs about a millisecond to define):
``minifw ban`` runs them on every call, where its whole start is the budget."""

from __future__ import annotations

import collections
import ipaddress

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Iterable

    Address = ipaddress.IPv4Address | ipaddress.IPv6Address

TCP_STATES = {"01": "established", "0A": "listen"}

# One line of /proc/net/tcp or tcp6, addresses as the socket sees them (an IPv4 peer of a
# dual-stack socket is IPv4-mapped); state is "established", "listen", or the kernel's hex code.
TcpSocket = collections.namedtuple("TcpSocket",
                                   "local local_port remote remote_port state inode")

_HEX = frozenset("0123456789abcdefABCDEF")


def unmap(addr: Address) -> Address:
    """The address netfilter sees: an IPv4-mapped IPv6 address (a dual-stack socket's view of
    an IPv4 peer) is IPv4 on the wire, and a scope id is not part of the packet."""
    if addr.version == 6:
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            return ipaddress.IPv6Address(str(addr).split("%", 1)[0])
    return addr


def _hex(text: str, widths: tuple[int, ...]) -> int:
    """Fixed-width hex as the kernel prints it (int() alone would take '0x', '+' and '_')."""
    if len(text) not in widths or not set(text) <= _HEX:
        raise ValueError(text)
    return int(text, 16)


def _hex_address(text: str, byteorder: str) -> Address:
    """The kernel prints the address as 32-bit words, each in the host's byte order."""
    _hex(text, (8, 32))
    raw = b"".join(int(text[i:i + 8], 16).to_bytes(4, byteorder)
                   for i in range(0, len(text), 8))
    return ipaddress.ip_address(raw)


def parse_tcp_line(line: str, byteorder: str) -> TcpSocket | None:
    """A socket from one line of /proc/net/tcp{,6}; None for the header or a malformed line.

    ``byteorder`` is the host's ("little" or "big"), as ``sys.byteorder`` gives it."""
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":") or not fields[0][:-1].isdigit():
        return None
    try:
        local, lport = fields[1].split(":")
        remote, rport = fields[2].split(":")
        state = fields[3].upper()
        _hex(state, (2,))
        if not fields[9].isascii() or not fields[9].isdigit():
            return None
        return TcpSocket(_hex_address(local, byteorder), _hex(lport, (4,)),
                         _hex_address(remote, byteorder), _hex(rport, (4,)),
                         TCP_STATES.get(state, state), int(fields[9]))
    except ValueError:
        return None


def parse_tcp_table(text: str, byteorder: str) -> list[TcpSocket]:
    return [s for s in (parse_tcp_line(line, byteorder) for line in text.splitlines()) if s]


def listening_remotes(sockets: Iterable[TcpSocket]) -> list[TcpSocket]:
    """The established sockets whose local port has a listening socket: the sessions some
    server in this namespace accepted (a superset of those to sshd, which need the owners)."""
    sockets = list(sockets)
    ports = {s.local_port for s in sockets if s.state == "listen"}
    return [s for s in sockets
            if s.state == "established" and s.local_port in ports and s.remote_port != 0]


def ssh_fields(value: str | None) -> tuple | None:
    """``SSH_CONNECTION``'s "client_ip client_port server_ip server_port" as (client,
    client_port, server, server_port), addresses as on the wire; None when absent or malformed."""
    if not value:
        return None
    parts = value.split()
    if len(parts) != 4:
        return None
    try:
        client, server = (unmap(ipaddress.ip_address(p)) for p in (parts[0], parts[2]))
        cport, sport = int(parts[1]), int(parts[3])
    except ValueError:
        return None
    if client.version != server.version or not (1 <= cport <= 65535 and 1 <= sport <= 65535):
        return None
    return client, cport, server, sport
