"""Every chain name in table ``inet minifw``, built and parsed here and nowhere else. Pure.

The names are on the wire, and kernel state left by an older minifw must still be recognised,
so they never change:

  <hook>_<priority>       rule chain at (hook, priority), ``m`` for minus: input_0,
                          prerouting_m300; priorities -2147483648..999
  <hook>_policy           the chain of a drop policy, at priority 1000
  bans                    the ban chain, at prerouting priority -350
  bans_v4, bans_v6        regular chains the ban chain sends each IP version to
  hook_q<queue>_<name>    a Python hook function's base chain
  flow_q<queue>_<name>    a per-flow hook function's chain, at its priority + 1
  nat_<hook>              a NAT chain (type nat): nat_prerouting and nat_output at dstnat
                          (-100), nat_postrouting at srcnat (100)

Everything that needs a chain's kind, hook, priority or queue parses the name here, rather
than splitting a label made for people.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from ..model.types import Hook

BAN_CHAIN = "bans"
BAN_CHAIN_V4, BAN_CHAIN_V6 = "bans_v4", "bans_v6"
BAN_PRIORITY = -350  # before conntrack (-200) and before the seed's -300: drop as early as possible
HOOK_CHAIN_MAX = 200  # hook function names are at most 64 characters: never cut in practice

_FUNCTION = r"(hook|flow)_q(0|[1-9]\d*)_([A-Za-z0-9][A-Za-z0-9_.-]*)"


# The hook names and the patterns built from them, on first use (re caches the compiled
# patterns): a ban needs only the ban chain's names above, so it loads neither the patterns
# nor the hook model (model.types: its enums and dataclass cost a ban's start-up).
@functools.cache
def _hook_patterns() -> tuple[str, str, str]:
    """(rule chain, policy chain, declarative chain) patterns."""
    from ..model.types import Hook
    hooks = "|".join(h.value for h in Hook)
    # the declarative one is what the compiler has always taken as its own (and deletes when
    # unused), odd spellings such as input_007 included: kept as it was, so reloads treat old
    # tables alike
    return (rf"({hooks})_(m?)(0|[1-9]\d*)", rf"({hooks})_policy", rf"({hooks})_(m?\d+|policy)")


class Kind(enum.Enum):
    RULES = "rules"
    POLICY = "policy"
    BANS = "bans"
    BANS_BY_VERSION = "bans-by-version"
    HOOK_FUNCTION = "hook-function"
    FLOW_CACHE = "flow-cache"
    NAT = "nat"


@dataclasses.dataclass(frozen=True)
class Chain:
    """What a chain's name says. ``hook``/``priority``: where a base chain named for its place
    hooks in (None for regular chains and hook-function chains, whose name holds no place);
    ``queue``/``function``: a hook function's queue number and name."""

    kind: Kind
    hook: Hook | None = None
    priority: int | None = None
    queue: int | None = None
    function: str | None = None


def rule_chain(hook: Hook, priority: int) -> str:
    return f"{hook.value}_{'m' if priority < 0 else ''}{abs(priority)}"


def policy_chain(hook: Hook) -> str:
    return f"{hook.value}_policy"


def hook_chain(queue: int, function: str) -> str:
    return f"hook_q{queue}_{function}"[:HOOK_CHAIN_MAX]


def flow_chain(queue: int, function: str) -> str:
    return f"flow_q{queue}_{function}"[:HOOK_CHAIN_MAX]


def nat_chain(hook: Hook) -> str:
    return f"nat_{hook.value}"


# The NAT chains and their priorities: the kernel runs NAT there whatever a chain declares.
NAT_CHAINS = {"nat_prerouting": ("prerouting", -100), "nat_output": ("output", -100),
              "nat_postrouting": ("postrouting", 100)}


def parse(name: str) -> Chain | None:
    """The chain ``name`` stands for, or None if minifw never makes a chain of that name."""
    from ..model.types import POLICY_PRIORITY, PRIORITY_MIN, Hook
    rules, policy, _ = _hook_patterns()
    if m := re.fullmatch(rules, name):
        priority = -int(m[3]) if m[2] else int(m[3])
        if (m[2] and priority == 0) or not PRIORITY_MIN <= priority < POLICY_PRIORITY:
            return None  # input_m0, input_1000: never made, so not ours
        return Chain(Kind.RULES, Hook(m[1]), priority)
    if m := re.fullmatch(policy, name):
        return Chain(Kind.POLICY, Hook(m[1]), POLICY_PRIORITY)
    if name == BAN_CHAIN:
        return Chain(Kind.BANS, Hook.PREROUTING, BAN_PRIORITY)
    if name in (BAN_CHAIN_V4, BAN_CHAIN_V6):
        return Chain(Kind.BANS_BY_VERSION)
    if m := re.fullmatch(_FUNCTION, name):
        kind = Kind.HOOK_FUNCTION if m[1] == "hook" else Kind.FLOW_CACHE
        return Chain(kind, queue=int(m[2]), function=m[3])
    if name in NAT_CHAINS:
        hook, priority = NAT_CHAINS[name]
        return Chain(Kind.NAT, Hook(hook), priority)
    return None


def kind_of(name: str) -> Kind | None:
    chain = parse(name)
    return chain.kind if chain else None


def is_declarative(name: str) -> bool:
    """Chains the declarative compiler owns (rule, policy and NAT chains). Others in the table
    (bans, hook functions) are left alone by loads."""
    return bool(re.fullmatch(_hook_patterns()[2], name)) or name in NAT_CHAINS
