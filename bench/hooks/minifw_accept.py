from minifw import ACCEPT, hook


@hook("input", priority=0, fail="closed")
def accept_all(pkt):
    return ACCEPT
