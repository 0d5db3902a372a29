"""Compiled hook functions decide in the kernel exactly as in Python: every construct of the
subset, IPv4 and IPv6, run through BPF_PROG_TEST_RUN (no attach) on the same crafted bytes as
the queue path's packet model; the stats and counters agree too."""

import textwrap

import pytest

from bpfhook_kit import KernelRun
from hookpackets import packets, v4, l4
from kit import need_root

HEAD = """\
from minifw import hook, ACCEPT, DROP
from minifw.hooks.addresses import Addresses, Counter
BLOCKED = Addresses("198.18.2.2", "198.18.64.0/18", "fd00::66", "fd00:0:0:1::/64")
WEB = (80, 443)
MANY = frozenset(range(1000, 1030)) | {22, 8080}
HITS = Counter()
"""

FUNCTIONS = {
    "fields": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.proto == "icmp" or pkt.proto == "icmpv6":
                return DROP
            if pkt.proto == 47 or pkt.proto == "sctp":
                return DROP
            if pkt.dport == 22 or pkt.sport == 22:
                return DROP
            if pkt.version == 6 and pkt.length > 90:
                return DROP
            return ACCEPT
    """,
    "none_semantics": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.dport != 80 and pkt.icmp_type != 80:
                return DROP
            if pkt.sport is None:
                return ACCEPT
            return DROP
    """,
    "ordering_none_raises": """
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if pkt.dport > 100:
                return DROP
            return ACCEPT
    """,
    "membership": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.dport in WEB:
                return ACCEPT
            if pkt.dport not in MANY and pkt.proto in ("tcp", "udp"):
                return DROP
            if pkt.icmp_type in (8, 22, None):
                return DROP
            return ACCEPT
    """,
    "addresses": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.src in BLOCKED:
                HITS.inc()
                return DROP
            if pkt.dst not in BLOCKED and pkt.src == "198.18.0.2":
                return DROP
            if pkt.src == "fd00::2" and pkt.dst != "fd99::":
                return DROP
            return ACCEPT
    """,
    "arithmetic": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            x = pkt.length * 3 - 100
            y = (x // 7) % 5 + (x & 0xF0) ^ (x >> 2) | 1
            z = -x + ~y
            if x < 0:
                z = (z & 0xFFFF) << 3
            elif x >= 1000:
                z = z >> 70
            else:
                z += 5
            if z % 2 == 1 and y > 10 or not x:
                return DROP
            return ACCEPT
    """,
    "shifts": """
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            x = pkt.length >> 70
            y = (pkt.length & 7) << 3
            if y - x > 20:
                return ACCEPT
            if pkt.proto == "udp" and (pkt.length << -1) > 0:
                return ACCEPT
            return ACCEPT
    """,
    "division_by_zero": """
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if pkt.proto == "tcp" or pkt.proto == "udp":
                if 1000 // (pkt.dport - 80) > 3:
                    return ACCEPT
            return ACCEPT
    """,
    "payload": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.payload[0:3] == b"GET":
                return DROP
            if pkt.payload[1:] == b"E":
                return DROP
            if len(pkt.payload) > 30 or pkt.payload[:0] != b"":
                return DROP
            if pkt.payload[0] == 0x16 and pkt.payload[1:3] == b"\\x03\\x01":
                return DROP
            return ACCEPT
    """,
    "payload_index_error": """
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if pkt.payload[2] == 3:
                return ACCEPT
            return ACCEPT
    """,
    "inlined_calls": """
        def is_web(p):
            return p.dport in WEB

        def score(p, base):
            if p.proto == "tcp":
                return base + 10
            return base

        def verdict(p):
            if score(p, 5) > 12:
                return DROP
            return ACCEPT

        @hook("prerouting", priority=-300)
        def f(pkt):
            if is_web(pkt) and pkt.sport == 40000:
                return ACCEPT
            return verdict(pkt)
    """,
    "locals_bool_ifexp": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            web = pkt.dport == 80 or pkt.dport == 443
            n = 2 if web else 3
            ok = web and n == 2
            port = pkt.dport
            if ok or port is None or 1000 <= port < 2000:
                return ACCEPT
            if port:
                return DROP
            return ACCEPT
    """,
    "hook_field_and_fall_off": """
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if pkt.hook == "prerouting" and pkt.proto == "udp":
                return ACCEPT
            if pkt.hook in ("input", "output"):
                return DROP
    """,
    "logs_and_counter": """
        @hook("prerouting", priority=-300)
        def f(pkt):
            HITS.inc(2)
            if pkt.proto == "icmp" or pkt.proto == "icmpv6":
                pkt.log(f"Drop ICMP from {pkt.src} type {pkt.icmp_type} via {pkt.hook}")
                return DROP
            pkt.log("pass")
            return ACCEPT
    """,
}


@pytest.fixture(autouse=True)
def _root():
    need_root()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_kernel_and_python_agree_on_every_packet(name, family):
    source = HEAD + textwrap.dedent(FUNCTIONS[name])
    with KernelRun(source, "f", family, filename=f"{name}.py") as k:
        want, got = [], []
        hooks = ("prerouting", "input", "output") if "pkt.hook" in source else ("prerouting",)
        for hook in hooks:
            for ip in packets(family):
                want.append(k.python(ip, hook))
                got.append(k.kernel(ip, hook))
        bad = [(i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g]
        assert not bad, bad[:5]
        assert 0 < want.count(0) < len(want)     # both verdicts seen: the test decides
        assert k.stats() == (len(want), want.count(0))
        if "HITS" in source.split("def f", 1)[1]:
            hits = k.module["HITS"]
            assert k.counter("HITS") == hits.value > 0


def test_the_counter_counts_what_python_counts():
    source = HEAD + textwrap.dedent(FUNCTIONS["addresses"])
    with KernelRun(source, "f", 4) as k:
        for src in (bytes([198, 18, 2, 2]), bytes([198, 18, 64, 1]), bytes([198, 18, 0, 9])):
            k.kernel(v4(17, l4(17), src=src))
        assert k.counter("HITS") == 2


def test_more_ipv6_extension_headers_than_walked_take_the_error_verdict():
    source = HEAD + textwrap.dedent("""
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if pkt.proto == "udp" or pkt.version == 6:
                return ACCEPT
            return ACCEPT
    """)
    from hookpackets import v6
    with KernelRun(source, "f", 6) as k:
        assert k.kernel(v6(17, l4(17), ext=((0,),) * 8)) == 1
        assert k.kernel(v6(17, l4(17), ext=((0,),) * 9)) == 0   # docs/hooks.md says so
        assert k.python(v6(17, l4(17), ext=((0,),) * 9)) == 1


def test_interfaces_by_name_and_the_mark():
    # test-run puts the packet on the loopback device: in at prerouting, out at output
    source = HEAD + textwrap.dedent("""
        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.iif == "lo" and pkt.mark == 0:
                return DROP
            if pkt.oif in ("lo", "eth9"):
                return DROP
            return ACCEPT
    """)
    ip = v4(17, l4(17))
    with KernelRun(source, "f", 4) as k:
        assert k.hook.ifnames == ("lo", "eth9")
        assert k.kernel(ip) == 1 and k.kernel(ip, "output") == 1   # no index known yet
        k.maps["ifindex"].update((0).to_bytes(4, "little"), (1).to_bytes(4, "little"))
        assert k.kernel(ip) == 0 and k.kernel(ip, "output") == 0
        assert k.kernel(ip, "input") == 0 and k.kernel(ip, "postrouting") == 0
        k.maps["ifindex"].update((0).to_bytes(4, "little"), (7).to_bytes(4, "little"))
        assert k.kernel(ip) == 1


def empty_addresses_hook(family):
    """A function that drops what an empty module Addresses holds, and a UDP packet of
    ``family`` from the lab's second address."""
    from hookpackets import A4, A6, v6
    source = HEAD + textwrap.dedent("""
        EMPTY = Addresses()

        @hook("prerouting", priority=-300)
        def f(pkt):
            if pkt.src in EMPTY:
                return DROP
            return ACCEPT
    """)
    return source, v4(17, l4(17), src=A4[1]) if family == 4 else v6(17, l4(17), src=A6[1])


@pytest.mark.parametrize("family", [4, 6])
def test_an_address_matches_until_its_expiry(family):
    import time
    from minifw.hooks.addresses import address_entries
    source, ip = empty_addresses_hook(family)
    single = "198.18.2.2" if family == 4 else "fd00::66"
    cidr = "198.18.2.0/24" if family == 4 else "fd00::/120"
    with KernelRun(source, "f", family) as k:
        names = k.hook.address_maps["EMPTY"]
        assert k.kernel(ip) == 1
        for item, kind in ((single, "hash"), (cidr, "lpm")):
            m = k.maps[names[f"v{family}_{kind}"]]
            now = time.monotonic_ns()
            for expiry, want in ((0, 0), (now + 60 * 10**9, 0), (now - 1, 1)):
                (key, value), = address_entries([item], family, expiry)[kind]
                m.update(key, value)
                assert k.kernel(ip) == want, (item, expiry)
            m.delete(key)
            assert k.kernel(ip) == 1


@pytest.mark.parametrize("family", [4, 6])
def test_an_expired_cidr_never_hides_a_shorter_live_one(family):
    """The trie returns the longest match only: through the real write path (``hook set``'s),
    each entry holds the latest expiry of the CIDRs that contain it, so a packet inside an
    expired /24 is still dropped while a live /16 covers it, as Python's containment says."""
    import time
    from minifw.runners.kattach import _write_addresses
    source, ip = empty_addresses_hook(family)
    inner, outer = ("198.18.2.0/24", "198.18.0.0/16") if family == 4 else \
        ("fd00::/120", "fd00::/64")
    with KernelRun(source, "f", family) as k:
        names = k.hook.address_maps["EMPTY"]

        def write(cidr, expiry, delete=False):
            return _write_addresses(k.maps, names, [cidr], expiry, family, delete)
        now = time.monotonic_ns()
        assert write(inner, now + 60 * 10**9) == 1 and k.kernel(ip) == 0
        write(inner, now - 1)                       # the /24 expired: nothing covers the packet
        assert k.kernel(ip) == 1
        assert write(outer, 0) == 1                 # a live /16 without expiry covers it
        assert k.kernel(ip) == 0
        assert write(outer, 0, delete=True) == 1    # gone: the expired /24 matches no more
        assert k.kernel(ip) == 1
        assert write(outer, 0, delete=True) == 0    # deleting what is not there
        write(outer, now + 60 * 10**9)              # a /16 with a later expiry covers it too
        assert k.kernel(ip) == 0
        write(outer, now - 1)                       # both expired
        assert k.kernel(ip) == 1
        write(inner, 0)                             # the /24 for ever, under an expired /16
        assert k.kernel(ip) == 0


@pytest.mark.parametrize("family", [4, 6])
def test_log_records_read_back_as_python_writes_them(family):
    source = HEAD + textwrap.dedent(FUNCTIONS["logs_and_counter"])
    with KernelRun(source, "f", family) as k:
        want: list = []
        for ip in packets(family)[:40]:
            k.python(ip, logs=want)
            k.kernel(ip)
        assert [text for _, text in k.logs()] == want
        assert any(text.startswith("Drop ICMP from ") for text in want)


@pytest.mark.parametrize("name", ["fields", "payload"])
def test_without_btf_offsets_the_length_comes_from_the_dynptr(name):
    source = HEAD + textwrap.dedent(FUNCTIONS[name])
    with KernelRun(source, "f", 6, layout={}) as k:
        assert "bpf_dynptr_size" in k.hook.program.kfuncs()
        for ip in packets(6):
            assert k.kernel(ip) == k.python(ip)


@pytest.mark.parametrize("field", ["pkt.dport >= 0", "pkt.icmp_type >= 0"])
def test_transport_bytes_at_the_edge_of_the_header_slice(field):
    """IPv4 reads the ports and the ICMP type from the header's slice when the header has no
    options and the packet holds 24 bytes; else with a read of their own: 0-5 bytes after a
    header of 20 and of 24 bytes must give Python's verdicts (any value: accept; an error,
    such as bytes read past the end, drop)."""
    source = HEAD + textwrap.dedent(f"""
        @hook("prerouting", priority=-300, on_error="drop")
        def f(pkt):
            if {field}:
                return ACCEPT
            return DROP
    """)
    with KernelRun(source, "f", 4) as k:
        got = []
        for proto in (17, 1):
            for ihl in (5, 6):
                for n in range(6):
                    ip = v4(proto, l4(proto, dport=80, icmp_type=8)[:n], ihl=ihl)
                    got.append(k.kernel(ip))
                    assert got[-1] == k.python(ip), (proto, ihl, n)
        assert 0 < got.count(0) < len(got)
