"""A kernel Addresses' CIDR trie with expiries: the effective expiry each entry holds, so that
the longest match expiring never hides a shorter, live CIDR (Python's containment)."""

import ipaddress
import random
import struct

import pytest

from minifw.hooks.addresses import (
    LPM_VALUE_SIZE, Addresses, address_entries, effective_expiries, lpm_writes,
)

V4, V6 = 32, 128


def p(cidr: str) -> tuple[int, int]:
    net = ipaddress.ip_network(cidr)
    return net.prefixlen, int(net.network_address)


def key(cidr: str) -> bytes:
    net = ipaddress.ip_network(cidr)
    return struct.pack("<I", net.prefixlen) + net.network_address.packed


def value(effective: int, own: int) -> bytes:
    return struct.pack("<QQ", effective, own)


def test_the_value_is_the_effective_then_the_own_expiry():
    assert LPM_VALUE_SIZE == 16
    (k, v), = address_entries(["198.18.0.0/24"], 4, 7)["lpm"]
    assert k == key("198.18.0.0/24") and v == value(7, 7)


def test_a_cidr_alone_keeps_its_own_expiry():
    assert effective_expiries({p("198.18.0.0/24"): 50}, V4) == {p("198.18.0.0/24"): 50}
    assert effective_expiries({}, V4) == {}


def test_a_covering_cidr_that_lives_longer_lends_its_expiry():
    own = {p("198.18.0.0/16"): 100, p("198.18.0.0/24"): 50}
    assert effective_expiries(own, V4) == {p("198.18.0.0/16"): 100, p("198.18.0.0/24"): 100}


def test_a_covering_cidr_that_expires_sooner_changes_nothing():
    own = {p("198.18.0.0/16"): 40, p("198.18.0.0/24"): 50}
    assert effective_expiries(own, V4)[p("198.18.0.0/24")] == 50


@pytest.mark.parametrize("a, b, want", [(0, 50, 0), (50, 0, 0), (0, 0, 0), (50, 50, 50)])
def test_never_is_the_latest_expiry(a, b, want):
    own = {p("198.18.0.0/16"): a, p("198.18.0.0/24"): b}
    assert effective_expiries(own, V4)[p("198.18.0.0/24")] == want


@pytest.mark.parametrize("outer, inner, covers", [
    ("198.18.0.0/23", "198.18.0.0/24", True),      # one bit shorter, same start
    ("198.18.0.0/23", "198.18.1.0/24", True),      # one bit shorter, the other half
    ("198.18.2.0/23", "198.18.1.0/24", False),     # the next /23: disjoint
    ("0.0.0.0/0", "198.18.1.0/31", True),          # the whole space
    ("198.18.0.0/24", "198.18.0.0/24", False),     # itself is not a cover
    ("fd00::/8", "fd00:1::/32", True),
    ("fd01::/16", "fd00:1::/32", False),
    ("::/0", "fd00::/127", True),
])
def test_only_the_cidrs_that_contain_an_entry_lend_it_their_expiry(outer, inner, covers):
    bits = V4 if "." in outer else V6
    own = {p(outer): 100, p(inner): 50}
    if outer == inner:
        own = {p(inner): 50}
    assert effective_expiries(own, bits)[p(inner)] == (100 if covers else 50)


def test_the_effective_expiry_agrees_with_python_containment():
    """Random nested CIDRs with random expiries: at every instant, the longest matching entry's
    effective expiry says 'in' exactly when some live CIDR contains the address."""
    rng = random.Random(5)
    for _ in range(200):
        own = {}
        for _ in range(rng.randint(1, 8)):
            plen = rng.randint(0, 31)
            net = rng.getrandbits(32) & rng.choice([0xff00ffff, 0xffffffff, 0x0000ffff])
            own[(plen, net >> (32 - plen) << (32 - plen))] = rng.choice([0, 10, 20, 30])
        eff = effective_expiries(own, V4)
        for now in (5, 15, 25, 35):
            addr = rng.getrandbits(32) & 0xff00ffff
            live = [pr for pr, e in own.items() if e == 0 or e > now]
            live_set = Addresses(*(ipaddress.IPv4Network((n, pl)) for pl, n in live))
            want = ipaddress.IPv4Address(addr) in live_set
            match = [pr for pr in own if addr >> (32 - pr[0]) << (32 - pr[0]) == pr[1]]
            longest = max(match, default=None)
            got = longest is not None and (eff[longest] == 0 or eff[longest] > now)
            assert got == want, (own, addr, now)


def test_adding_a_covering_cidr_raises_the_inner_one_first():
    current = [(key("198.18.0.0/24"), value(50, 50))]
    writes = lpm_writes(current, [(key("198.18.0.0/16"), 0)])
    assert writes == [(key("198.18.0.0/24"), value(0, 50)), (key("198.18.0.0/16"), value(0, 0))] \
        or writes == [(key("198.18.0.0/16"), value(0, 0)), (key("198.18.0.0/24"), value(0, 50))]
    assert all(v is not None for _, v in writes)


def test_deleting_a_covering_cidr_deletes_it_before_lowering_the_inner_one():
    current = [(key("198.18.0.0/24"), value(0, 50)), (key("198.18.0.0/16"), value(0, 0))]
    writes = lpm_writes(current, [(key("198.18.0.0/16"), None)])
    assert writes == [(key("198.18.0.0/16"), None), (key("198.18.0.0/24"), value(50, 50))]


def test_an_unchanged_trie_is_not_written():
    current = [(key("198.18.0.0/24"), value(50, 50))]
    assert lpm_writes(current, [(key("198.18.0.0/24"), 50)]) == []
    assert lpm_writes([], []) == []
    assert lpm_writes(current, []) == []


def test_a_shorter_expiry_for_an_entry_is_a_fall_after_the_rises():
    current = [(key("198.18.0.0/24"), value(50, 50)), (key("198.18.1.0/24"), value(50, 50))]
    writes = lpm_writes(current, [(key("198.18.0.0/24"), 20), (key("198.18.1.0/24"), 90)])
    assert writes == [(key("198.18.1.0/24"), value(90, 90)), (key("198.18.0.0/24"), value(20, 20))]


def test_deleting_what_is_not_there_writes_nothing():
    current = [(key("fd00::/64"), value(0, 0))]
    assert lpm_writes(current, [(key("fd00:1::/64"), None)]) == []
