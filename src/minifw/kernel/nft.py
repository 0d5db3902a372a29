"""libnftables, in-process, through the pip-nftables ctypes binding. The only nft edge."""

from __future__ import annotations

import json
import _thread
TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

from ..errors import KernelError, UnsupportedError

_lock = _thread.allocate_lock()  # threading.Lock itself, without the threading module's import
_handle = None


def _nft():
    global _handle
    with _lock:
        if _handle is None:
            try:
                import nftables  # pip-nftables
                nft = nftables.Nftables()
            except (ImportError, OSError) as exc:
                raise UnsupportedError(
                    "libnftables is not available; install Debian's 'nftables' package "
                    f"({exc})") from exc
            nft.set_json_output(True)
            nft.set_handle_output(True)
            _handle = nft
        return _handle


def handle():
    """The process's libnftables context, created on first use."""
    return _nft()


# libnftables gives only a status and text, and the text changes with what else is in the
# namespace (a refused rule may read "did you mean table 'nat' in family ip?"). So nothing here
# tells one refusal from another: every one is a KernelError carrying the text for the operator.
# Where the cause matters, callers probe first (table_exists, the runner's queue probe) or send
# their own nf_tables batch and read its errno (kernel/nfnl.py).


def run(document: dict[str, Any]) -> None:
    """Apply a JSON command document as ONE transaction; raise KernelError if refused."""
    try:
        rc, _, err = _nft().json_cmd(document)
    except ValueError as exc:  # the binding parses libnftables' answer as JSON
        raise KernelError(f"libnftables gave an answer that is not JSON: {exc}") from exc
    if rc != 0:
        raise _kernel_error(err)


def query(command: str, *, terse: bool = True) -> dict[str, Any]:
    """Run a read-only nft listing command and return its JSON. Terse: never lists set elements."""
    nft = _nft()
    with _lock:
        nft.set_terse_output(terse)
        try:
            rc, out, err = nft.cmd(command)
        finally:
            nft.set_terse_output(False)
    if rc != 0:
        raise _kernel_error(err)
    try:
        return json.loads(out) if out.strip() else {"nftables": []}
    except ValueError as exc:
        raise KernelError(f"libnftables listed '{command}' in a form that is not JSON: "
                          f"{exc}") from exc


def table_exists(family: str, name: str) -> bool:
    # Not "list table" (nor "list tables"): nft 1.0.6 pulls every set element for those, 33 s
    # with 1M bans. The terse ruleset listing never does.
    listing = query("list ruleset")
    return any(t.get("family") == family and t.get("name") == name
               for t in items(listing, "table"))


def items(listing: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [obj[kind] for obj in listing.get("nftables", []) if kind in obj]


def refused(err: str) -> KernelError:
    """The KernelError of a refused transaction whose libnftables error text is ``err`` (the
    fake kernel raises the same)."""
    return _kernel_error(err)


def _kernel_error(err: str) -> KernelError:
    # nft echoes the input under a syntax error; for a JSON request that is the whole document,
    # which never belongs in a one-line error
    text = " ".join(line.strip() for line in err.strip().splitlines() if line.strip()
                    and not set(line.strip()) <= {"^", "~"} and not line.lstrip().startswith("{"))
    return KernelError(f"nftables refused the change: {text or 'no reason given'}")
