"""Names and constants of the rule model: hooks, families, protocols, actions."""

from __future__ import annotations

import dataclasses
import enum


class Hook(str, enum.Enum):
    """The five Netfilter hooks (NF_INET_*), in the names nftables uses."""

    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
    POSTROUTING = "postrouting"

    @property
    def mark_bit(self) -> int:
        """The packet-mark bit an accepting rule sets when this hook has a drop policy."""
        return MARK_BITS[self]


HOOK_ORDER = {h.value: i for i, h in enumerate(Hook)}  # Netfilter's order, by name


def point_order(hook: "Hook | str", priority: int | None) -> tuple[int, int]:
    """The key that sorts base chains as the kernel runs them: by hook, then priority (a hook
    minifw does not know, such as ingress, sorts last)."""
    name = hook.value if isinstance(hook, Hook) else hook
    return HOOK_ORDER.get(name, len(HOOK_ORDER)), priority or 0


@dataclasses.dataclass(frozen=True)
class HookPoint:
    """Where a base chain sits: a hook and a priority. Sorts in the kernel's order."""

    hook: Hook
    priority: int

    @property
    def order(self) -> tuple[int, int]:
        return point_order(self.hook, self.priority)

    def __lt__(self, other: "HookPoint") -> bool:
        return self.order < other.order

    def __str__(self) -> str:
        return f"{self.hook.value}/{self.priority}"


# One bit per hook, kept in the high byte so common low-bit users (Docker, kube-proxy) are untouched.
MARK_BITS = {
    Hook.PREROUTING: 0x01000000,
    Hook.INPUT: 0x02000000,
    Hook.FORWARD: 0x04000000,
    Hook.OUTPUT: 0x08000000,
    Hook.POSTROUTING: 0x10000000,
}

# Hooks a packet sees, by path (Netfilter's traversal order).
PATHS = {
    "in": (Hook.PREROUTING, Hook.INPUT),
    "forward": (Hook.PREROUTING, Hook.FORWARD, Hook.POSTROUTING),
    "out": (Hook.OUTPUT, Hook.POSTROUTING),
}

# Hooks where an input / output interface is known.
HOOKS_WITH_IIF = frozenset({Hook.PREROUTING, Hook.INPUT, Hook.FORWARD})
HOOKS_WITH_OIF = frozenset({Hook.FORWARD, Hook.OUTPUT, Hook.POSTROUTING})
# The kernel refuses reject at postrouting.
HOOKS_WITH_REJECT = frozenset({Hook.PREROUTING, Hook.INPUT, Hook.FORWARD, Hook.OUTPUT})
# Hooks where conntrack attaches state at priority -200 (NF_IP_PRI_CONNTRACK).
HOOKS_BEFORE_CONNTRACK = frozenset({Hook.PREROUTING, Hook.OUTPUT})
CONNTRACK_PRIORITY = -200
POLICY_PRIORITY = 1000  # the policy chain runs last; rules must stay below it
PRIORITY_MIN = -2**31   # nft's chain priority is a signed 32-bit integer


class Family(str, enum.Enum):
    IP = "ip"
    IP6 = "ip6"
    ANY = "any"


class Action(str, enum.Enum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    LOG = "log"  # log and continue: the rule never decides

    @property
    def decides(self) -> bool:
        return self is not Action.LOG


class Proto(str, enum.Enum):
    TCP = "tcp"
    UDP = "udp"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"
    ANY = "any"

    @property
    def has_ports(self) -> bool:
        return self in (Proto.TCP, Proto.UDP)

    @property
    def number(self) -> int:
        return PROTO_NUMBERS[self]


PROTO_NUMBERS = {Proto.TCP: 6, Proto.UDP: 17, Proto.ICMP: 1, Proto.ICMPV6: 58}

CT_STATES = ("new", "established", "related", "invalid", "untracked")

ICMP_TYPES = {
    "echo-reply": 0, "destination-unreachable": 3, "source-quench": 4, "redirect": 5,
    "echo-request": 8, "router-advertisement": 9, "router-solicitation": 10,
    "time-exceeded": 11, "parameter-problem": 12, "timestamp-request": 13,
    "timestamp-reply": 14, "info-request": 15, "info-reply": 16,
    "address-mask-request": 17, "address-mask-reply": 18,
}
ICMPV6_TYPES = {
    "destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
    "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
    "mld-listener-query": 130, "mld-listener-report": 131, "mld-listener-done": 132,
    "nd-router-solicit": 133, "nd-router-advert": 134, "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136, "nd-redirect": 137, "router-renumbering": 138,
    "ind-neighbor-solicit": 141, "ind-neighbor-advert": 142, "mld2-listener-report": 143,
}
# ICMPv6 neighbour discovery, accepted first by a stateful drop policy.
ND_TYPES = ("nd-router-solicit", "nd-router-advert", "nd-neighbor-solicit", "nd-neighbor-advert")

LIMIT_UNITS = ("second", "minute", "hour", "day", "week")
LIMIT_UNIT_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 604800}
LIMIT_MAX = 2**32 - 1          # rates and bursts above this are refused (burst is 32-bit in nft)
LIMIT_DEFAULT_BURST = 5        # nft's burst when none is given
LOG_PREFIX_MAX = 127  # bytes; the kernel's NF_LOG_PREFIXLEN is 128 with the NUL
