"""Each of the five hooks sees exactly the packets Netfilter routes through it.

A router namespace carries minifw. One rule, "drop TCP to port 80", is placed at each hook in
turn and three flows are probed, over IPv4 and IPv6:
- client -> router:80   (local input:  prerouting, input)
- client -> server:80   (forwarded:    prerouting, forward, postrouting)
- router -> server:80   (local output: output, postrouting)
"""

import pytest

from kit import R4_C, R6_C, R_SERVER4, R_SERVER6, probes, routed, rules, serve, up

BLOCKED = {
    "prerouting": {"to_router", "forwarded"},
    "input": {"to_router"},
    "forward": {"forwarded"},
    "output": {"from_router"},
    "postrouting": {"forwarded", "from_router"},
}


def rule_at(hook):
    return f"""
[[rule]]
id = "drop-80-{hook}"
hook = "{hook}"
priority = 10
proto = "tcp"
dport = 80
action = "drop"
"""


@pytest.fixture
def net(lab):
    client, router, server = routed(lab)
    serve(router, tcp=[80, 81])
    serve(server, tcp=[80, 81])
    return client, router, server


def flows(client, router):
    return {
        "to_router": [(client, R4_C), (client, R6_C)],
        "forwarded": [(client, R_SERVER4), (client, R_SERVER6)],
        "from_router": [(router, R_SERVER4), (router, R_SERVER6)],
    }


@pytest.mark.parametrize("hook", list(BLOCKED))
def test_drop_at_each_hook(net, hook):
    client, router, server = net
    up(router, rule_at(hook))
    with probes() as p:
        for flow, pairs in flows(client, router).items():
            want = "timeout" if flow in BLOCKED[hook] else "open"
            for src, addr in pairs:
                p.expect(src, "tcp", addr, 80, expect=want)
                p.expect(src, "tcp", addr, 81, expect="open")  # the rule matches port 80 only
    # Each blocked flow sent at least one SYN per address family into the rule.
    assert rules(router)[f"drop-80-{hook}"]["packets"] >= 2 * len(BLOCKED[hook])


def policy_at(hook):
    return f"""
[policy]
{hook} = "drop"

[[rule]]
id = "accept-80-{hook}"
hook = "{hook}"
priority = -100
proto = "tcp"
dport = 80
action = "accept"
"""


@pytest.mark.parametrize("hook", list(BLOCKED))
def test_drop_policy_at_each_hook(net, hook):
    """A drop policy at a hook drops the new flows through it that no rule there accepted.

    Replies are established (stateful default) and neighbour discovery is let through, so
    flows that only come back through the hook are untouched.
    """
    client, router, server = net
    up(router, policy_at(hook))
    with probes() as p:
        for flow, pairs in flows(client, router).items():
            for src, addr in pairs:
                p.expect(src, "tcp", addr, 80, expect="open")
                p.expect(src, "tcp", addr, 81,
                         expect="timeout" if flow in BLOCKED[hook] else "open")
    status = rules(router)
    assert status[f"accept-80-{hook}"]["packets"] >= 2 * len(BLOCKED[hook])
