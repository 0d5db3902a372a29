"""minifw: a programmable Linux firewall on Netfilter."""

__version__ = "0.1.0"

from .hooks import ACCEPT, DROP, hook  # noqa: E402  (the hook-function API)

__all__ = ["hook", "ACCEPT", "DROP", "__version__"]
