"""NetfilterQueue (PyPI) consumer: accept-all or parse + set-lookup callback. Bench only."""
import ipaddress
import struct
import sys

from netfilterqueue import NetfilterQueue

BLOCKED = {ipaddress.ip_address(f"198.18.9.{i}") for i in range(1, 200)}
PORTS = {22, 23, 25}


def accept(pkt):
    pkt.accept()


def parse(pkt):
    p = pkt.get_payload()
    ihl = (p[0] & 15) * 4
    src = ipaddress.IPv4Address(p[12:16])
    proto = p[9]
    dport = struct.unpack_from("!H", p, ihl + 2)[0] if proto in (6, 17) else None
    if src in BLOCKED or dport in PORTS or proto == 1:
        pkt.drop()
    else:
        pkt.accept()


nfq = NetfilterQueue()
nfq.bind(int(sys.argv[2]), accept if sys.argv[1] == "accept" else parse, max_len=4096)
while True:  # NetfilterQueue raises on ENOBUFS under load; keep it serving
    try:
        nfq.run()
    except KeyboardInterrupt:
        break
    except OSError:
        continue
