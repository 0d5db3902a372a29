from minifw import ACCEPT, DROP, Addresses, hook

# fail="closed" keeps it on the queue (minifw_kernel.py is the same hook in the kernel)
BLOCKED = Addresses(*(f"198.18.9.{i}" for i in range(1, 200)))
PORTS = {22, 23, 25}


@hook("input", priority=0, fail="closed")
def parse_lookup(pkt):
    if pkt.src in BLOCKED or pkt.dport in PORTS or pkt.proto == "icmp":
        return DROP
    return ACCEPT
