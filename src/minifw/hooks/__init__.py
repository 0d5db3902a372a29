"""Python hook functions: the seed's ``nf_hook_ops``, registered from userspace.

    from minifw import hook, ACCEPT, DROP

    @hook("prerouting", priority=-300)
    def drop_icmp(pkt):
        if pkt.proto == "icmp":
            pkt.log("Drop ICMP packet")
            return DROP
        return ACCEPT

``where`` says where the function runs: "kernel" compiles it to a BPF netfilter program,
"queue" runs it in Python behind NFQUEUE, "auto" (the default) takes the kernel where the
function compiles and asks for nothing queue-only (an explicit fail=, on_error=, per_flow=True
or payload=True), else the queue. Semantics never change silently: the choice and its reason
are logged and shown by ``status``.

Pure: the decorator only validates and records; ``minifw run`` does the rest.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

from ..errors import ConfigError
from ..model.rule import ID_RE
from ..model.types import CONNTRACK_PRIORITY, HOOKS_BEFORE_CONNTRACK, Hook
from ..netlink.nfqueue import Verdict

ACCEPT = Verdict.ACCEPT
DROP = Verdict.DROP

FAIL_MODES = ("open", "closed")
ON_ERROR = {"accept": Verdict.ACCEPT, "drop": Verdict.DROP}
DEFAULT_FLOW_MARK = 0x20000000  # a high bit no minifw policy mark uses
PRIORITY_RANGE = (-(2 ** 31) + 1, 2 ** 31 - 1)
# A BPF netfilter link refuses INT_MIN and INT_MAX (ERANGE): nf_hook_ops keeps those two for
# the kernel's own first and last hooks.
KERNEL_PRIORITY_RANGE = (-(2 ** 31) + 1, 2 ** 31 - 2)
WHERE = ("auto", "kernel", "queue")
ATTR = "__minifw_hook__"


@dataclasses.dataclass(frozen=True)
class HookSpec:
    """Where and how one Python function is hooked in."""

    fn: Callable[[Any], Any] = dataclasses.field(compare=False, repr=False)
    name: str
    hook: Hook
    priority: int
    fail: str = "open"
    on_error: str = "accept"
    per_flow: bool = False
    flow_mark: int = DEFAULT_FLOW_MARK
    payload: bool = False
    where: str = "auto"
    # the queue-only arguments given explicitly ("fail=", "on_error=", "per_flow=True",
    # "payload=True"): each keeps an "auto" function on the queue
    queue_only: tuple[str, ...] = ()

    @property
    def kernel_refusal(self) -> str | None:
        """Why this function cannot run in the kernel whatever its body, or None."""
        if self.queue_only:
            return (f"{', '.join(self.queue_only)} only applies to the queue (in the kernel "
                    "there is no userspace to fail, and no exception or payload copy)")
        lo, hi = KERNEL_PRIORITY_RANGE
        if not lo <= self.priority <= hi:
            return f"the kernel refuses priority {self.priority} for a BPF hook"
        return None

    @property
    def error_verdict(self) -> Verdict:
        return ON_ERROR[self.on_error]

    @property
    def fail_open(self) -> bool:
        return self.fail == "open"


def make_spec(fn: Callable, hook_name: str, priority: int = 0, *, fail: str | None = None,
              on_error: str | None = None, per_flow: bool = False,
              flow_mark: int = DEFAULT_FLOW_MARK, payload: bool = False,
              name: str | None = None, where: str = "auto") -> HookSpec:
    """Validate hook arguments; raise ConfigError with a sentence saying what to fix.

    fail/on_error: None means not given (the defaults "open" and "accept" apply); a given
    value, even the default's, is an explicit queue-only argument."""
    queue_only = tuple(arg for arg, given in (
        ("fail=", fail is not None), ("on_error=", on_error is not None),
        ("per_flow=True", per_flow is True), ("payload=True", payload is True)) if given)
    fail = "open" if fail is None else fail
    on_error = "accept" if on_error is None else on_error
    label = name
    if name is None:  # a function's own name may hold what chain names cannot (<lambda>, ö)
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", getattr(fn, "__name__", "hook"))[:64]
        label = label.lstrip("_.-") or "hook"
    who = f"hook function '{label}'"
    try:
        hk = Hook(hook_name)
    except ValueError:
        raise ConfigError(f"{who}: unknown hook {hook_name!r}; use one of "
                          f"{', '.join(h.value for h in Hook)}.") from None
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise ConfigError(f"{who}: priority must be an integer between {PRIORITY_RANGE[0]} "
                          f"and {PRIORITY_RANGE[1]}, not {priority!r}.")
    if fail not in FAIL_MODES:
        raise ConfigError(f"{who}: fail must be 'open' or 'closed', not {fail!r}.")
    if on_error not in ON_ERROR:
        raise ConfigError(f"{who}: on_error must be 'accept' or 'drop', not {on_error!r}.")
    if not isinstance(flow_mark, int) or flow_mark <= 0 or flow_mark & (flow_mark - 1) \
            or flow_mark > 0x80000000:
        raise ConfigError(f"{who}: flow_mark must be one bit of a 32-bit mark, such as "
                          f"0x20000000, not {flow_mark!r}.")
    if not isinstance(label, str) or not ID_RE.match(label):
        raise ConfigError(f"{who}: the name goes into chain names and comments: use 1-64 "
                          "ASCII letters, digits, '_', '.' or '-', starting with a letter or "
                          "digit (name=... sets it).")
    for flag, value in (("per_flow", per_flow), ("payload", payload)):
        if not isinstance(value, bool):
            raise ConfigError(f"{who}: {flag} must be True or False, not {value!r}.")
    if per_flow and hk in HOOKS_BEFORE_CONNTRACK and priority <= CONNTRACK_PRIORITY:
        raise ConfigError(f"{who}: per_flow at {hk.value} needs a priority above "
                          f"{CONNTRACK_PRIORITY}, where conntrack has already run; "
                          f"{priority} is too early.")
    if not callable(fn):
        raise ConfigError(f"{who}: @hook must decorate a function.")
    if where not in WHERE:
        raise ConfigError(f"{who}: where must be 'auto', 'kernel' or 'queue', not "
                          f"{where!r}.")
    spec = HookSpec(fn=fn, name=label, hook=hk, priority=priority, fail=fail,
                    on_error=on_error, per_flow=bool(per_flow), flow_mark=flow_mark,
                    payload=bool(payload), where=where, queue_only=queue_only)
    if where == "kernel" and spec.kernel_refusal:
        raise ConfigError(f"{who}: where=\"kernel\" but {spec.kernel_refusal}; drop it or "
                          "use where=\"queue\".")
    return spec


def hook(hook_name: str, priority: int = 0, *, fail: str | None = None,
         on_error: str | None = None, per_flow: bool = False,
         flow_mark: int = DEFAULT_FLOW_MARK, payload: bool = False, name: str | None = None,
         where: str = "auto") -> Callable[[Callable], Callable]:
    """Register the decorated function at ``hook_name`` with ``priority`` (lower runs first).

    fail: "open" lets packets through while no runner listens or the queue is full; "closed"
        drops them. on_error: the verdict when the function raises. per_flow: only the first
        packet of a flow reaches Python; accepted flows then skip the queue in the kernel.
        payload: copy whole packets to userspace (default: headers only). These four are
        queue-only: given explicitly, they keep where="auto" on the queue.
    where: "auto" (default), "kernel" (compile to BPF or refuse) or "queue".
    """
    def register(fn: Callable) -> Callable:
        setattr(fn, ATTR, make_spec(fn, hook_name, priority, fail=fail, on_error=on_error,
                                    per_flow=per_flow, flow_mark=flow_mark, payload=payload,
                                    name=name, where=where))
        return fn
    return register


def collect(namespace: dict[str, Any], file: str = "<hooks>") -> list[HookSpec]:
    """The hook functions defined in a module namespace, checked as a set."""
    specs = [getattr(v, ATTR) for v in namespace.values() if hasattr(v, ATTR)]
    if not specs:
        raise ConfigError("defines no @hook function; decorate at least one function with "
                          "@hook(\"prerouting\", priority=...)", file=file)
    seen: dict[tuple[Hook, int], str] = {}
    names: set[str] = set()
    for spec in specs:
        key = (spec.hook, spec.priority)
        if key in seen:
            raise ConfigError(f"hook functions '{seen[key]}' and '{spec.name}' are both at "
                              f"{spec.hook.value} priority {spec.priority}; their order would "
                              "be undefined, so give each its own priority.", file=file)
        if spec.name in names:
            raise ConfigError(f"two hook functions are named '{spec.name}'; names must be "
                              "unique.", file=file)
        seen[key] = spec.name
        names.add(spec.name)
    return sorted(specs, key=lambda s: (list(Hook).index(s.hook), s.priority))


__all__ = ["hook", "ACCEPT", "DROP", "HookSpec", "make_spec", "collect", "Verdict"]
