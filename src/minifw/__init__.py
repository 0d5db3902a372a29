"""minifw: a programmable Linux firewall on Netfilter."""

__version__ = "0.1.0"
