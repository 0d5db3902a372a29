"""pkt.log formats as the daemon's ringbuf reader finds them: from a kernel hook record (JSON,
as kattach writes it), back to the compiler's LogFormats, so a record decodes to the text."""

import json
import struct
import textwrap

from minifw.compile.bpfhook import decode_log
from minifw.runners import kattach
from minifw.runners.klog import formats_of, points_of
from minifw.runners.kplace import place

HOOKS = """\
    from minifw import hook, ACCEPT, DROP

    @hook("prerouting", priority=-300, where="kernel")
    def drop_icmp(pkt):
        if pkt.proto == "icmp":
            pkt.log("Drop ICMP packet")
            return DROP
        return ACCEPT

    @hook("input", priority=7, where="kernel")
    def ports(pkt):
        pkt.log(f"to {pkt.dport} from {pkt.src}")
        return ACCEPT
    """


def test_a_record_gives_back_the_formats_and_points_its_lines_decode_with(tmp_path):
    f = tmp_path / "h.py"
    f.write_text(textwrap.dedent(HOOKS))
    plan = place(str(f), quiet=True)
    rec = json.loads(json.dumps(kattach._record(plan, "k", 1, str(tmp_path / "maps"))))
    compiled = tuple(lf for p in plan.kernel for lf in p.programs[0].logs)
    assert formats_of(rec) == compiled and len(compiled) == 2
    assert points_of(rec) == {"drop_icmp": ("prerouting", -300), "ports": ("input", 7)}
    icmp, ports = compiled
    assert decode_log(struct.pack("<Q", icmp.id), formats_of(rec)) == \
        ("drop_icmp", "Drop ICMP packet")
    record = struct.pack("<Qq", ports.id, 443) + bytes([198, 18, 0, 2]) + bytes(12)
    assert decode_log(record, formats_of(rec)) == ("ports", "to 443 from 198.18.0.2")


def test_a_record_without_logs_has_no_formats():
    assert formats_of({"functions": [{"name": "q", "hook": "input", "priority": 1,
                                      "where": "queue"}]}) == ()
    assert formats_of({}) == () and points_of({}) == {}
