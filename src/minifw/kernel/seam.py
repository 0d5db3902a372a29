"""The one door from the application layer (``minifw.app``) to the kernel.

The operations never call libnftables, netlink or /proc themselves: they ask a ``Kernel``.
The real one delegates to the edge modules (``nft``, the set-element sender, ``netns``); the
fake (``kernel.fake.FakeKernel``) keeps an in-memory table, so the operations' rollback paths
run in unit tests without root, as httpx's MockTransport stands in for the network.

A ``Kernel`` has a few primitives (run a document, the terse listings, a set's elements, the
bulk element sender, a namespace fact); everything derived from the terse listing (``exists``,
``objects``, ``kernel_objects``, ``declarative_layout``, ``chain_rules``, ``base_chains``) is
computed here, from ``kernel.table``, for the real kernel and the fake alike.

Which kernel: ``Service``/``SetService`` take one as ``kernel=``; without one they use
``default()``: the real kernel, unless a caller (a test, an embedding program) chose another
with ``use(kernel)``.
"""

from __future__ import annotations

import contextlib
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any, Iterator

from ..errors import NEED_ROOT, KernelError, PartialAdd
from . import nft, table

__all__ = ["Kernel", "PartialAdd", "default", "use"]


class Kernel:
    """The kernel as the application layer sees it: ``inet minifw`` and a few facts around it.
    Every failure is a ``KernelError`` (one refused transaction changed nothing)."""

    # ---- primitives: what a fake replaces --------------------------------------------------
    def run(self, document: dict[str, Any]) -> None:
        """Apply a libnftables JSON document as ONE transaction."""
        nft.run(document)

    def open(self) -> None:
        """Set up what the first transaction would otherwise pay for (libnftables' context)."""
        nft.handle()

    def ruleset(self) -> dict[str, Any]:
        """The terse listing of every table (never set elements)."""
        return nft.query("list ruleset")

    def chains(self) -> dict[str, Any]:
        """The listing of every chain of every table."""
        return nft.query("list chains")

    def set_elements(self, name: str) -> list[Any]:
        """The elements of one set of ``inet minifw``, as ``nft -j list set`` gives them (slow
        for big sets: for recovery and counters only). KernelError if there is no such set."""
        found = nft.query(f"list set {table.FAMILY} {table.TABLE} {name}", terse=False)
        return [e for s in table.items(found, "set") for e in s.get("elem", [])]

    def element_counters(self, name: str) -> list[tuple[bytes, int, int, int]]:
        """(key bytes, flags, packets, bytes) of each element of one set of ``inet minifw``,
        by our own netlink dump (a merged run's counters at each scrape: 10k in 0.05 s).
        KernelError if there is no such set."""
        from .setelems import element_counters  # lazy: only metrics and top read these
        return element_counters(table.TABLE, name)

    def add_elements(self, table_name: str, groups: list[tuple[str, list[bytes]]],
                     timeout_ms: int | None) -> None:
        """Add packed-address keys (4 or 16 bytes) to sets of ``inet table_name``, in
        transactions of ``nfnl.CHUNK`` keys; ``PartialAdd`` when one fails after others went in."""
        from .nfnl import add_elements  # lazy: a ban sends through libnftables, not this
        try:
            add_elements(table_name, groups, timeout_ms)
        except PermissionError as exc:  # the sender lets EPERM through as it is
            raise KernelError(f"the kernel refused a set-element batch: {exc.strerror}; "
                              f"{NEED_ROOT}") from exc

    def log_visible(self) -> bool:
        """Whether nft ``log`` lines from this namespace reach the kernel log."""
        from . import netns  # lazy: it loads subprocess, which a ban does not need
        return netns.kernel_log_visible()

    def connections(self, guards=()) -> list:
        """The connections the lockout guard protects here (``kernel.conns``), with the
        ``--guard`` peers given (GuardSpecs)."""
        from .conns import find_connections
        return find_connections(guards)

    def clients(self) -> list:
        """Every address a protected connection here could come from, cheaply (a superset)."""
        from .conns import clients
        return clients()

    # ---- derived from the terse listing ----------------------------------------------------
    def listing(self) -> table.Listing:
        """The terse listing trimmed to ``inet minifw``."""
        return table.mine(self.ruleset())

    def exists(self) -> bool:
        return table.exists(self.listing())

    def objects(self) -> tuple[list[str], list[str]]:
        return table.objects(self.listing())

    def kernel_objects(self):
        return table.kernel_objects(self.listing())

    def declarative_layout(self) -> dict[str, list[str | None]]:
        return table.declarative_layout(self.listing())

    def chain_rules(self, chain: str) -> list[table.LiveRule]:
        return table.chain_rules(self.listing(), chain)

    def base_chains(self) -> list[dict]:
        return table.base_chains(self.chains())


_REAL = Kernel()
_chosen: list[Kernel] = []


def default() -> Kernel:
    """The kernel of operations built without one: the real one, unless ``use`` chose another."""
    return _chosen[-1] if _chosen else _REAL


@contextlib.contextmanager
def use(kernel: Kernel) -> Iterator[Kernel]:
    """Within the block, ``default()`` is ``kernel`` (for tests that drive the CLI)."""
    _chosen.append(kernel)
    try:
        yield kernel
    finally:
        _chosen.remove(kernel)
