"""The article's two hook functions, in Python, run in the kernel as BPF netfilter programs:
`minifw run examples/seed_hooks.py` (or a [[hook]] file = "seed_hooks.py" in the config).

The article registers both at NF_INET_PRE_ROUTING: the first (priority -300 here) drops ICMP,
the second (next priority) drops every packet from the blocked host; each drop is printed to
the kernel log (dmesg), like printk. The address is from 198.18.0.0/15 (RFC 2544).
BLOCKED is an Addresses: `minifw hook set seed_hooks.py:BLOCKED add 198.18.0.0/24` changes it
while the programs run.
"""

from minifw import ACCEPT, DROP, Addresses, hook

BLOCKED = Addresses("198.18.2.2")


@hook("prerouting", priority=-300, where="kernel")
def drop_icmp(pkt):
    if pkt.proto == "icmp":
        pkt.log("Drop ICMP packet")
        return DROP
    return ACCEPT


@hook("prerouting", priority=-299, where="kernel")
def drop_blocked_host(pkt):
    if pkt.src in BLOCKED:
        pkt.log(f"Drop packet from {pkt.src}")
        return DROP
    return ACCEPT
