"""Settling a ruleset change that a kill interrupted between the kernel commit and the state
save: the state is made to agree with the kernel."""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Callable

from ..errors import ConfigError, KernelError, StateError
from ..kernel.seam import Kernel
from ..store.state import REDERIVE, State, Store, write_atomic

if TYPE_CHECKING:
    from ..model.ruleset import Ruleset


def settle_intent(store: Store, kernel: Kernel,
                  resend: Callable[[Ruleset], None] | None = None,
                  refused: bool = False) -> str | None:
    """Make the state agree with the kernel after a kill between a ruleset change's kernel
    commit and its state save (the lock held). The kernel's declarative chains are compared
    with what the intended ruleset and the saved one compile to: the one the kernel holds is
    kept; if it holds neither, the intended ruleset is applied again (one transaction). For a
    load, the named sets are then sent again from the record (adds are idempotent), since
    the kill may have cut that part short: ``resend`` (the set operations') does that. Returns
    what was done, if anything.

    ``refused``: the change's own transaction raised (libnftables refused the batch, which
    changes nothing). Where the kernel then matches both rulesets (a change of rule contents
    only: the layout compared is chains and rule ids), the saved one is kept."""
    pending = store.read_intent()
    if pending is None:
        return None
    try:
        return _settle(store, kernel, *pending, resend=resend, refused=refused)
    except ConfigError as exc:  # an intent or state whose ruleset does not load
        store.clear_intent()
        raise StateError(f"a ruleset change interrupted by a kill cannot be settled ({exc}); "
                         f"{REDERIVE}") from None


def _settle(store: Store, kernel: Kernel, op: str, new: State, config_text: str | None,
            resend: Callable[[Ruleset], None] | None, refused: bool = False) -> str:
    # the compiler and the rule model load only here, when there is an intent to settle:
    # a ban or an unban never pays for them
    from ..compile import nft as compiler
    from ..model.ruleset import Ruleset
    old = store.load_or_none()
    present = kernel.exists()
    if op == "down":
        if present:
            store.clear_intent()
            return "took back"
        store.commit(new)
        return "adopted"
    ruleset = Ruleset.from_toml(new.ruleset)
    layout = kernel.declarative_layout() if present else None
    holds_new = layout == compiler.expected_layout(compiler.build_load(ruleset))
    holds_old = old is not None and (
        (old.loaded and present and layout == compiler.expected_layout(
            compiler.build_load(Ruleset.from_toml(old.ruleset))))
        # not up before, and no declarative chain now: the kernel never took the load
        # (a refusal or a kill before it); applying it now would undo that refusal
        or (not old.loaded and not layout))
    if holds_old and (refused or not holds_new):
        store.clear_intent()
        return "took back"
    if holds_new:
        done = "adopted"
    else:
        chains, limits = kernel.objects()
        kernel_sets, _, _ = kernel.kernel_objects()
        try:
            kernel.run(compiler.build_load(ruleset, chains, limits, kernel_sets))
        except KernelError as exc:
            store.clear_intent()
            raise StateError(f"a ruleset change interrupted by a kill could not be completed "
                             f"({exc}); run 'minifw reload --config FILE'") from exc
        done = "applied again"
    if op == "load" and resend is not None:
        resend(ruleset)
    if config_text is not None and new.config:
        write_atomic(new.config, config_text)
    store.commit(new)
    return done
