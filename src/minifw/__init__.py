"""minifw: a programmable Linux firewall on Netfilter.

The public names load lazily (PEP 562): ``import minifw`` stays cheap for the CLI and for hook
files, which need only ``hook``, ``ACCEPT`` and ``DROP``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing loads for type checkers only: it costs a ban's start
if TYPE_CHECKING:
    from typing import Any

__version__ = "0.1.0"
__all__ = ["Firewall", "hook", "ACCEPT", "DROP", "Addresses", "Counter", "__version__"]

_HOME = {"Firewall": "minifw.api", "hook": "minifw.hooks", "ACCEPT": "minifw.hooks",
         "DROP": "minifw.hooks", "Addresses": "minifw.hooks.addresses",
         "Counter": "minifw.hooks.addresses"}

if TYPE_CHECKING:
    from .api import Firewall
    from .hooks import ACCEPT, DROP, hook
    from .hooks.addresses import Addresses, Counter


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'minifw' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
