"""The one exception tree of minifw.

    MinifwError                 base; the CLI prints "error: <message>" and exits non-zero
    ├── ConfigError             a config file cannot be read or parsed (carries file and line)
    │   └── RuleError           one rule or field is invalid (carries file, rule id and field)
    ├── KernelError             the kernel or libnftables refused or failed an operation
    │   ├── UnsupportedError    the running kernel lacks a feature minifw needs
    │   └── PartialAdd          a bulk set-element add failed after some transactions went in
    ├── StateError              minifw's own state (loaded/not loaded, state dir, lock) forbids it
    │   └── HookStartError      the ruleset went in, but a [[hook]] runner did not start
    ├── FailsafeError           `up` found the config bad with minifw not loaded: it loaded the
    │                           last good ruleset instead, or nothing
    ├── GuardError              a --guard value is malformed, or names a peer with no route here
    ├── LockoutError            the lockout guard refused: the change would cut a protected
    │                           connection (nothing changed; --force applies it anyway)
    ├── PacketError             a packet is truncated or malformed
    ├── ControlError            a control-socket request is malformed, oversized or refused,
    │                           or the daemon did not answer
    └── FleetError              CrowdSec's LAPI is unreachable or refused a request
        └── DecisionError       LAPI's decision stream is malformed: none of it was applied

Foreign exceptions are wrapped at the edge with ``raise ... from``; only the CLI catches these.
The edges: libnftables (``kernel/nft.py``), netlink (``kernel/nfnl.py``), SQLite
(``store/setrecord.py``) and files (``store/state.py``, config and import readers).
"""

from __future__ import annotations

# What an edge says when the operating system refuses minifw for lack of privilege.
NEED_ROOT = "minifw needs root (CAP_NET_ADMIN)"


class MinifwError(Exception):
    """Base of every error minifw raises on purpose."""


class ConfigError(MinifwError):
    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        self.file = file
        self.line = line
        self.detail = message
        where = file or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")


class RuleError(ConfigError):
    """A rule is invalid. ``field`` names the TOML key at fault."""

    def __init__(self, message: str, *, rule: str | None = None, field: str | None = None,
                 file: str | None = None, line: int | None = None):
        self.rule = rule
        self.field = field
        parts = []
        if rule is not None:
            parts.append(f"rule '{rule}'")
        if field is not None:
            parts.append(f"field '{field}'")
        prefix = ": ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message, file=file, line=line)
        self.detail = message

    def located(self, file: str | None, line: int | None = None) -> "RuleError":
        """The same error, said of ``file`` (the model does not know which file it came from)."""
        return RuleError(self.detail, rule=self.rule, field=self.field, file=file,
                         line=line if line is not None else self.line)


class KernelError(MinifwError):
    """The kernel (through libnftables or netlink) refused an operation."""


class UnsupportedError(KernelError):
    """The running kernel or userspace lacks a feature."""


class PartialAdd(KernelError):
    """A bulk set-element add failed after ``applied`` of its transactions were committed."""

    def __init__(self, message: str, applied: int):
        super().__init__(message)
        self.applied = applied


class StateError(MinifwError):
    """The operation does not fit minifw's current state."""


class HookStartError(StateError):
    """``up``/``reload`` loaded the ruleset, but a [[hook]] runner did not start (each failure
    is recorded for ``status``; the daemon keeps serving and tries again after its backoff)."""


class FailsafeError(MinifwError):
    """``up`` could not load the config with minifw not loaded (as at boot), and fell back:
    ``loaded`` says whether the last good ruleset is in force; ``__cause__`` is the config's
    error."""

    def __init__(self, message: str, *, loaded: bool):
        super().__init__(message)
        self.loaded = loaded


class GuardError(MinifwError):
    """A ``--guard ADDR:PORT`` value is malformed, or this host has no route to its peer. The
    message names the flag (not a config file)."""


class LockoutError(MinifwError):
    """The lockout guard refused a change: it would cut ``findings``' first blocking connection.
    Raised before anything (kernel, config, state) changed."""

    def __init__(self, message: str, findings: tuple = ()):
        super().__init__(message)
        self.findings = findings


class PacketError(MinifwError):
    """A packet is truncated or malformed."""


class ControlError(MinifwError):
    """A request on the daemon's control socket (``control.sock``) is malformed, oversized,
    refused, or got no answer. The daemon replies with it; the client raises it."""


class FleetError(MinifwError):
    """CrowdSec's Local API is unreachable, or answered a request with an error
    (fleet/lapi.py)."""


class DecisionError(FleetError):
    """LAPI's decision stream is not one minifw can apply (model/decisions.py): malformed
    JSON, an unknown scope, an invalid address or an absurd duration. None of it was applied."""
