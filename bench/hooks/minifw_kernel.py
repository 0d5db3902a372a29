from minifw import ACCEPT, DROP, Addresses, hook

# the parse + set lookup hook of minifw_parse.py, compiled to BPF
BLOCKED = Addresses(*(f"198.18.9.{i}" for i in range(1, 200)))
PORTS = {22, 23, 25}


@hook("input", priority=0, where="kernel")
def parse_lookup(pkt):
    if pkt.src in BLOCKED or pkt.dport in PORTS or pkt.proto == "icmp":
        return DROP
    return ACCEPT
