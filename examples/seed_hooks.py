"""The article's two hook functions, in Python: run with `minifw run examples/seed_hooks.py`.

The article registers both at NF_INET_PRE_ROUTING: the first (priority -300 here) drops ICMP,
the second (next priority) drops every packet from one source address; each drop is printed
to the kernel log (dmesg), like printk. The address is from 198.18.0.0/15 (RFC 2544).
"""

from minifw import ACCEPT, DROP, hook

BLOCKED = "198.18.2.2"


@hook("prerouting", priority=-300)
def drop_icmp(pkt):
    if pkt.proto == "icmp":
        pkt.log("Drop ICMP packet")
        return DROP
    return ACCEPT


@hook("prerouting", priority=-299)
def drop_blocked_host(pkt):
    if pkt.version == 4 and pkt.src == BLOCKED:
        pkt.log(f"Drop packet from {BLOCKED}")
        return DROP
    return ACCEPT
