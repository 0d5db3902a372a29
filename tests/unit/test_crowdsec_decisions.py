"""The LAPI decision stream parser, Go durations, and the union of decisions for one set."""

import json

import pytest

from minifw.errors import DecisionError
from minifw.model.decisions import (
    MAX_DURATION_NS, Decision, parse_go_duration, parse_stream, union,
)
from minifw.model.sets import MAX_TIMEOUT

S = 10**9


# ---- Go durations ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ns", [
    ("59m59.6s", (59 * 60 + 59) * S + 6 * S // 10),
    ("1h2m3s", 3723 * S),
    ("4h", 4 * 3600 * S),
    ("-3s", -3 * S),
    ("0", 0),
    ("-0", 0),
    ("+5m", 300 * S),
    ("1.5h", 5400 * S),
    ("59m58.534660793s", 3598534660793),
    ("-41.614289ms", -41614289),
    ("1us", 1000), ("1µs", 1000), ("7ns", 7), ("2ms", 2 * 10**6),
    (".5s", S // 2), ("1.s", S),
    ("1h1h", 7200 * S),
    ("1h60m", 7200 * S), ("1m1h", 3660 * S), ("90s", 90 * S), ("1h0.5s", 3600 * S + S // 2),
    ("0.0000000019s", 1),            # below a nanosecond: truncated, as Go does
])
def test_go_durations_parse_exactly(text, ns):
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize("text", ["", "-", "1", "5", "h", "1d", "1 h", "1h ", " 1h", "1.h2",
                                  ".s", "1..5s", "--1s", "1hm", "0s0", None, 3, "nan", "1e3s"])
def test_go_durations_refuse_garbage(text):
    with pytest.raises(ValueError):
        parse_go_duration(text)


# ---- the stream ----------------------------------------------------------------------------

def dec(**kw):
    base = {"duration": "59m59.6s", "id": 1, "origin": "cscli", "scenario": "manual",
            "scope": "Ip", "type": "ban", "value": "198.18.40.9"}
    base.update(kw)
    return base


def body(new=(), deleted=()):
    return json.dumps({"new": list(new), "deleted": list(deleted)})


def test_a_real_answer_parses():
    stream = parse_stream(body([dec(), dec(id=2, scope="Range", value="198.18.41.0/24",
                                       origin="crowdsec", scenario="ssh-bf")],
                               [dec(id=3, duration="-41.614289ms")]))
    assert [d.value for d in stream.new] == ["198.18.40.9", "198.18.41.0/24"]
    assert stream.new[0] == Decision(1, "cscli", "manual", "Ip", "ban", "198.18.40.9",
                                     3599600000000)
    assert stream.new[1].label == "crowdsec:ssh-bf" and stream.new[0].label == "cscli"
    assert stream.deleted[0].duration_ns < 0       # expired deletes are normal


def test_nulls_are_empty_lists():
    stream = parse_stream('{"new": null, "deleted": null}')
    assert stream.new == () and stream.deleted == ()


def test_v6_and_scope_case():
    stream = parse_stream(body([dec(scope="ip", value="FD00::0009"),
                                dec(id=2, scope="RANGE", value="fd00:40::/64")]))
    assert [(d.scope, d.value) for d in stream.new] == [("Ip", "fd00::9"),
                                                        ("Range", "fd00:40::/64")]


@pytest.mark.parametrize("answer", [
    b"{", b"", b"[]", b"null", b'"new"', b"\xff\xfe", b"[" * 100000,
    body([dec(scope="Country", value="FR")]),
    body([dec(scope="AS")]),
    body([dec(scope=None)]),
    body([dec(value="198.18.40.256")]),
    body([dec(value="198.018.40.9")]),                        # a leading zero: octal?
    body([dec(value="198.18.40.٩")]),                     # a non-ASCII digit
    body([dec(value="198.18.40")]),
    body([dec(value="")]),
    body([dec(value="198.18.40.9/24", scope="Range")]),      # host bits set
    body([dec(value="198.18.40.0/24")]),                      # a range in an Ip decision
    body([dec(value="fe80::1%eth0")]),
    body([dec(value=None)]),
    body([dec(duration="-3s")]),                              # negative in new
    body([dec(duration="forever")]),
    body([dec(duration=3600)]),
    body([dec(duration="87601h")]),                           # over ten years
    body([dec(id="1")]), body([dec(id=-1)]), body([dec(id=True)]),
    body([dec(type=None)]),
    body([dec(), "198.18.40.10"]),
    body([], [dec(scope="Country")]),
    json.dumps({"new": {"id": 1}}),
    json.dumps({"new": [], "deleted": 5}),
])
def test_garbage_refuses_the_whole_answer(answer):
    with pytest.raises(DecisionError):
        parse_stream(answer)


def test_one_bad_decision_among_good_ones_refuses_all():
    good = [dec(id=i, value=f"198.18.40.{i}") for i in range(1, 50)]
    with pytest.raises(DecisionError, match=r"new\[49\]"):
        parse_stream(body(good + [dec(id=99, value="198.18.40.300")]))


def test_ten_years_is_the_boundary():
    ten_years_h = MAX_DURATION_NS // (3600 * S)
    assert MAX_DURATION_NS == ten_years_h * 3600 * S
    assert parse_stream(body([dec(duration=f"{ten_years_h}h")])).new[0].duration_ns \
        == MAX_DURATION_NS
    with pytest.raises(DecisionError):
        parse_stream(body([dec(duration=f"{ten_years_h}h0.000000001s")]))
    assert parse_stream(body([dec(duration="0")])).new[0].duration_ns == 0


def test_expiry_rounds_up():
    d = parse_stream(body([dec(duration="59m59.6s")])).new[0]
    assert d.expiry(1000) == 1000 + 3600
    d = parse_stream(body([dec(duration="1s")])).new[0]
    assert d.expiry(1000) == 1001
    d = parse_stream(body([dec(duration="1.000000001s")])).new[0]
    assert d.expiry(1000) == 1002


# ---- the union -------------------------------------------------------------------------------

def D(i, value, expiry, kind="ban", origin="cscli", scenario="s"):
    scope = "Range" if "/" in value else "Ip"
    return Decision(i, origin, scenario, scope, kind, value, 0), expiry


def test_duplicates_keep_the_longest_expiry():
    got, ignored = union([D(1, "198.18.0.9", 500), D(2, "198.18.0.9", 900),
                          D(3, "198.18.0.9", 700)], at=100)
    assert ignored == 0
    assert got == {"198.18.0.9": got["198.18.0.9"]}
    assert (got["198.18.0.9"].expiry, got["198.18.0.9"].decision) == (900, 2)


def test_non_ban_types_are_ignored_and_counted():
    got, ignored = union([D(1, "198.18.0.9", 500, "captcha"), D(2, "198.18.0.10", 500),
                          D(3, "198.18.1.0/24", 500, "throttle")], at=100)
    assert set(got) == {"198.18.0.10"} and ignored == 2


def test_expired_decisions_are_left_out_at_the_boundary():
    got, _ = union([D(1, "198.18.0.9", 100), D(2, "198.18.0.10", 101)], at=100)
    assert set(got) == {"198.18.0.10"}


def test_expiry_is_capped_at_the_kernel_limit():
    got, _ = union([D(1, "198.18.0.9", 100 + MAX_TIMEOUT + 1),
                    D(2, "198.18.0.10", 100 + MAX_TIMEOUT)], at=100)
    assert got["198.18.0.9"].expiry == got["198.18.0.10"].expiry == 100 + MAX_TIMEOUT


def test_a_longer_inner_range_splits_the_outer():
    got, _ = union([D(1, "10.0.0.0/8", 5000), D(2, "10.1.0.0/16", 9000)], at=0)
    assert got["10.1.0.0/16"].expiry == 9000
    outer = {k for k, v in got.items() if v.decision == 1}
    assert "10.0.0.0/8" not in outer and len(outer) == 8   # /16 /15 /14 ... /9
    import ipaddress
    nets = [ipaddress.ip_network(k) for k in got]
    assert sum(n.num_addresses for n in nets) == 2**24      # the whole /8, exactly once
    assert list(ipaddress.collapse_addresses(nets)) == [ipaddress.ip_network("10.0.0.0/8")]


def test_a_shorter_inner_range_is_absorbed():
    got, _ = union([D(1, "10.0.0.0/8", 9000), D(2, "10.1.0.0/16", 5000)], at=0)
    assert set(got) == {"10.0.0.0/8"} and got["10.0.0.0/8"].decision == 1


def test_partly_overlapping_ranges_and_equal_expiries():
    got, _ = union([D(1, "198.18.0.0/24", 500), D(2, "198.18.0.0/23", 500),
                    D(3, "198.18.2.0/24", 500), D(4, "198.18.0.0/24", 500)], at=0)
    assert set(got) == {"198.18.0.0/23", "198.18.2.0/24"}


def test_adjacent_ranges_stay_as_they_are():
    got, _ = union([D(1, "198.18.0.0/25", 900), D(2, "198.18.0.128/25", 500)], at=0)
    assert set(got) == {"198.18.0.0/25", "198.18.0.128/25"}
    assert got["198.18.0.128/25"].expiry == 500


def test_singles_stay_beside_covering_ranges():
    # they go to the hash set, the range to the interval set: no overlap for the kernel
    got, _ = union([D(1, "198.18.0.0/24", 500), D(2, "198.18.0.5", 900)], at=0)
    assert set(got) == {"198.18.0.0/24", "198.18.0.5"}


def test_v4_and_v6_ranges_do_not_meet():
    got, _ = union([D(1, "fd00::/64", 500), D(2, "198.18.0.0/24", 900),
                    D(3, "fd00::/80", 900)], at=0)
    assert got["fd00::/80"].expiry == 900 and "198.18.0.0/24" in got
    assert all(v.decision == 1 for k, v in got.items() if k.startswith("fd00::") and
               k != "fd00::/80")
