from minifw import ACCEPT, hook


@hook("input", priority=0, fail="closed", per_flow=True)
def first_packet_only(pkt):
    return ACCEPT
