"""nf_tables messages in an nfnetlink batch, built by hand. Pure.

Two users send their own batches (BATCH_BEGIN, requests..., BATCH_END: one transaction):

- the hook runner, because libnftables cannot express the xtables NFQUEUE target (nft_compat
  ``target``): NEWTABLE / NEWCHAIN / NEWRULE / DELCHAIN ...;
- bulk set-element adds (``set import``), because libnftables parses an element list element by
  element (about 3 s per 1M): NEWSETELEM messages built from ``inet_pton`` bytes with one join.
  ``element_batches`` cuts an import into transactions of a given size (kernel/nfnl.py sends
  them one after the other).

Layouts follow <linux/netfilter/nf_tables.h> and <linux/netfilter/xt_NFQUEUE.h>.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from typing import Iterator

from ..errors import PacketError
from .nlmsg import (
    NLA_HDR, NfnlMsg, NfnlSubsys, NlmFlag, NlmsgType, attr, attr_be16, attr_be32, attr_str,
    message, nested, nfgen, nfnl_type, parse_error, split_messages,
)


class NftMsg(enum.IntEnum):
    NEWTABLE = 0
    GETTABLE = 1
    DELTABLE = 2
    NEWCHAIN = 3
    GETCHAIN = 4
    DELCHAIN = 5
    NEWRULE = 6
    GETRULE = 7
    DELRULE = 8
    NEWSETELEM = 12


class NfProto(enum.IntEnum):
    UNSPEC = 0
    INET = 1
    IPV4 = 2
    IPV6 = 10


class TableAttr(enum.IntEnum):
    NAME = 1
    FLAGS = 2


class ChainAttr(enum.IntEnum):
    TABLE = 1
    HANDLE = 2
    NAME = 3
    HOOK = 4
    POLICY = 5
    USE = 6
    TYPE = 7


class HookAttr(enum.IntEnum):
    HOOKNUM = 1
    PRIORITY = 2


class RuleAttr(enum.IntEnum):
    TABLE = 1
    CHAIN = 2
    HANDLE = 3
    EXPRESSIONS = 4
    COMPAT = 5
    POSITION = 6
    USERDATA = 7


class ListAttr(enum.IntEnum):
    ELEM = 1


class SetElemListAttr(enum.IntEnum):
    TABLE = 1
    SET = 2
    ELEMENTS = 3


class SetElemAttr(enum.IntEnum):
    KEY = 1
    DATA = 2
    FLAGS = 3
    TIMEOUT = 4


class ExprAttr(enum.IntEnum):
    NAME = 1
    DATA = 2


class TargetAttr(enum.IntEnum):
    NAME = 1
    REV = 2
    INFO = 3


class QueueAttr(enum.IntEnum):
    NUM = 1
    TOTAL = 2
    FLAGS = 3


class QueueFlag(enum.IntFlag):
    """Flags of both the nft ``queue`` expression and xt_NFQ_info_v3."""

    BYPASS = 0x01
    CPU_FANOUT = 0x02


class CtAttr(enum.IntEnum):
    DREG = 1
    KEY = 2
    DIRECTION = 3
    SREG = 4


class CtKey(enum.IntEnum):
    STATE = 0
    DIRECTION = 1
    STATUS = 2
    MARK = 3


class MetaAttr(enum.IntEnum):
    DREG = 1
    KEY = 2
    SREG = 3


class MetaKey(enum.IntEnum):
    LEN = 0
    PROTOCOL = 1
    PRIORITY = 2
    MARK = 3


class BitwiseAttr(enum.IntEnum):
    SREG = 1
    DREG = 2
    LEN = 3
    MASK = 4
    XOR = 5


class CmpAttr(enum.IntEnum):
    SREG = 1
    OP = 2
    DATA = 3


class CmpOp(enum.IntEnum):
    EQ = 0
    NEQ = 1


class DataAttr(enum.IntEnum):
    VALUE = 1
    VERDICT = 2


class VerdictAttr(enum.IntEnum):
    CODE = 1
    CHAIN = 2


class ImmAttr(enum.IntEnum):
    DREG = 1
    DATA = 2


class Reg(enum.IntEnum):
    VERDICT = 0
    R1 = 1


class NfVerdict(enum.IntEnum):
    DROP = 0
    ACCEPT = 1


class UdataType(enum.IntEnum):
    """nftnl's rule userdata TLVs (what nft shows as a rule's comment)."""

    COMMENT = 0


HOOK_NUMBERS = {"prerouting": 0, "input": 1, "forward": 2, "output": 3, "postrouting": 4}
XT_NFQUEUE_REVISION = 3
# nla_len is 16 bits: one NEWSETELEM message carries at most this many bytes of elements
ELEMENTS_MAX = 65000
_XT_NFQ_INFO_V3 = struct.Struct("=HHH")  # queuenum, queues_total, flags (host order)


# ---- expressions -------------------------------------------------------------------------------

def _expr(name: str, *data: bytes) -> bytes:
    body = attr_str(ExprAttr.NAME, name)
    if data:
        body += nested(ExprAttr.DATA, *data)
    return nested(ListAttr.ELEM, body)


def _value(raw: bytes) -> bytes:
    return attr(DataAttr.VALUE, raw)


def _u32_host(value: int) -> bytes:
    return struct.pack("=I", value & 0xFFFFFFFF)


def expr_xt_nfqueue(queue: int, flags: QueueFlag, total: int = 1) -> bytes:
    """The xtables NFQUEUE target, revision 3, through nft_compat."""
    info = _XT_NFQ_INFO_V3.pack(queue, total, int(flags)) + b"\0\0"  # XT_ALIGN to 8
    return _expr("target", attr_str(TargetAttr.NAME, "NFQUEUE"),
                 attr_be32(TargetAttr.REV, XT_NFQUEUE_REVISION), attr(TargetAttr.INFO, info))


def expr_queue(queue: int, flags: QueueFlag, total: int = 1) -> bytes:
    """The native nft ``queue`` expression (needs CONFIG_NFT_QUEUE)."""
    return _expr("queue", attr_be16(QueueAttr.NUM, queue), attr_be16(QueueAttr.TOTAL, total),
                 attr_be16(QueueAttr.FLAGS, int(flags)))


def expr_counter() -> bytes:
    return _expr("counter")


def expr_ct_load(key: CtKey, dreg: Reg = Reg.R1) -> bytes:
    return _expr("ct", attr_be32(CtAttr.DREG, dreg), attr_be32(CtAttr.KEY, key))


def expr_ct_store(key: CtKey, sreg: Reg = Reg.R1) -> bytes:
    return _expr("ct", attr_be32(CtAttr.KEY, key), attr_be32(CtAttr.SREG, sreg))


def expr_meta_load(key: MetaKey, dreg: Reg = Reg.R1) -> bytes:
    return _expr("meta", attr_be32(MetaAttr.DREG, dreg), attr_be32(MetaAttr.KEY, key))


def expr_bitwise(mask: int, xor: int, reg: Reg = Reg.R1) -> bytes:
    """reg = (reg & mask) ^ xor, on a 32-bit host-order value (marks)."""
    return _expr("bitwise", attr_be32(BitwiseAttr.SREG, reg), attr_be32(BitwiseAttr.DREG, reg),
                 attr_be32(BitwiseAttr.LEN, 4),
                 nested(BitwiseAttr.MASK, _value(_u32_host(mask))),
                 nested(BitwiseAttr.XOR, _value(_u32_host(xor))))


def expr_cmp(op: CmpOp, value: int, reg: Reg = Reg.R1) -> bytes:
    return _expr("cmp", attr_be32(CmpAttr.SREG, reg), attr_be32(CmpAttr.OP, op),
                 nested(CmpAttr.DATA, _value(_u32_host(value))))


def expr_verdict(verdict: NfVerdict) -> bytes:
    return _expr("immediate", attr_be32(ImmAttr.DREG, Reg.VERDICT),
                 nested(ImmAttr.DATA, nested(DataAttr.VERDICT,
                                             attr_be32(VerdictAttr.CODE, verdict))))


def comment_udata(text: str) -> bytes:
    raw = text.encode()[:126] + b"\0"
    return struct.pack("=BB", UdataType.COMMENT, len(raw)) + raw


# ---- set elements ------------------------------------------------------------------------------

Keys = list[bytes]


def element(key: bytes, timeout_ms: int | None = None) -> bytes:
    """One NFTA_LIST_ELEM: the key (a packed address) and, if given, its timeout."""
    body = nested(SetElemAttr.KEY, attr(DataAttr.VALUE, key))
    if timeout_ms is not None:
        body += attr(SetElemAttr.TIMEOUT, struct.pack(">Q", timeout_ms))
    return nested(ListAttr.ELEM, body)


def element_run(keys: Keys, timeout_ms: int | None) -> bytes:
    """``element(k, timeout_ms)`` for each of ``keys`` (all of one length), with one join:
    every element has the same bytes around its key (1M elements in a fraction of a second)."""
    if not keys:
        return b""
    klen = len(keys[0])
    template = element(bytes(klen), timeout_ms)
    at = 3 * NLA_HDR.size  # the key follows the ELEM, KEY and VALUE headers
    head, tail = template[:at], template[at + klen:]
    return head + (tail + head).join(keys) + tail


def chunked(groups: list[tuple[str, Keys]], size: int) -> list[list[tuple[str, Keys]]]:
    """``groups`` (set name, keys) cut into transactions of at most ``size`` keys, in order."""
    out: list[list[tuple[str, Keys]]] = [[]]
    room = size
    for name, keys in groups:
        start = 0
        while start < len(keys):
            if room == 0:
                out.append([])
                room = size
            part = keys[start:start + room]
            out[-1].append((name, part))
            start += len(part)
            room -= len(part)
    return [t for t in out if t]


def element_batches(table: str, groups: list[tuple[str, Keys]], timeout_ms: int | None,
                    size: int) -> Iterator["NftBatch"]:
    """One batch (one transaction) per ``size`` keys of ``groups``, built as it is asked for."""
    for transaction in chunked(groups, size):
        batch = NftBatch()
        for set_name, keys in transaction:
            batch.add_elements(table, set_name, keys, timeout_ms)
        yield batch


# ---- the batch ---------------------------------------------------------------------------------

@dataclasses.dataclass
class NftBatch:
    """An nf_tables transaction. ``to_bytes()`` gives the datagram; ``requests`` maps seq -> what."""

    family: NfProto = NfProto.INET
    first_seq: int = 1
    _messages: list[tuple[NftMsg, int, bytes, str]] = dataclasses.field(default_factory=list)
    elements: int = 0  # set elements the batch adds

    def add_table(self, table: str) -> "NftBatch":
        self._messages.append((NftMsg.NEWTABLE, NlmFlag.CREATE,
                               attr_str(TableAttr.NAME, table), f"add table {table}"))
        return self

    def delete_table(self, table: str, only_if_empty: bool = False) -> "NftBatch":
        flags = NlmFlag.NONREC if only_if_empty else 0
        self._messages.append((NftMsg.DELTABLE, flags, attr_str(TableAttr.NAME, table),
                               f"delete table {table}"))
        return self

    def add_chain(self, table: str, name: str, hook: str, priority: int) -> "NftBatch":
        body = (attr_str(ChainAttr.TABLE, table) + attr_str(ChainAttr.NAME, name)
                + nested(ChainAttr.HOOK, attr_be32(HookAttr.HOOKNUM, HOOK_NUMBERS[hook]),
                         attr_be32(HookAttr.PRIORITY, priority))
                + attr_be32(ChainAttr.POLICY, NfVerdict.ACCEPT)
                + attr_str(ChainAttr.TYPE, "filter"))
        self._messages.append((NftMsg.NEWCHAIN, NlmFlag.CREATE | NlmFlag.EXCL, body,
                               f"add chain {table} {name} ({hook} priority {priority})"))
        return self

    def add_plain_chain(self, table: str, name: str) -> "NftBatch":
        """A regular chain (no hook): only reachable by jumps."""
        body = attr_str(ChainAttr.TABLE, table) + attr_str(ChainAttr.NAME, name)
        self._messages.append((NftMsg.NEWCHAIN, NlmFlag.CREATE, body,
                               f"add chain {table} {name}"))
        return self

    def delete_chain(self, table: str, name: str) -> "NftBatch":
        body = attr_str(ChainAttr.TABLE, table) + attr_str(ChainAttr.NAME, name)
        self._messages.append((NftMsg.DELCHAIN, 0, body, f"delete chain {table} {name}"))
        return self

    def add_rule(self, table: str, chain: str, exprs: list[bytes],
                 comment: str | None = None) -> "NftBatch":
        body = (attr_str(RuleAttr.TABLE, table) + attr_str(RuleAttr.CHAIN, chain)
                + nested(RuleAttr.EXPRESSIONS, *exprs))
        if comment:
            body += attr(RuleAttr.USERDATA, comment_udata(comment))
        self._messages.append((NftMsg.NEWRULE, NlmFlag.CREATE | NlmFlag.APPEND, body,
                               f"add rule to chain {chain}"))
        return self

    def add_elements(self, table: str, set_name: str, keys: Keys,
                     timeout_ms: int | None = None) -> "NftBatch":
        """Add ``keys`` (packed addresses of one length) to a set, with a timeout if given: as
        many NEWSETELEM messages as ``ELEMENTS_MAX`` takes."""
        if not keys:
            return self
        head = (attr_str(SetElemListAttr.TABLE, table)
                + attr_str(SetElemListAttr.SET, set_name))
        per_msg = max(1, ELEMENTS_MAX // len(element(keys[0], timeout_ms)))
        for start in range(0, len(keys), per_msg):
            part = keys[start:start + per_msg]
            elems = element_run(part, timeout_ms)
            self._messages.append((NftMsg.NEWSETELEM, NlmFlag.CREATE,
                                   head + nested(SetElemListAttr.ELEMENTS, elems),
                                   f"add {len(part)} elements to set {table} {set_name}"))
        self.elements += len(keys)
        return self

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def requests(self) -> dict[int, str]:
        return {self.first_seq + 1 + i: m[3] for i, m in enumerate(self._messages)}

    def to_bytes(self) -> bytes:
        seq = self.first_seq
        out = [message(NfnlMsg.BATCH_BEGIN, NlmFlag.REQUEST, seq,
                       nfgen(NfProto.UNSPEC, NfnlSubsys.NFTABLES))]
        for kind, flags, body, _ in self._messages:
            seq += 1
            out.append(message(nfnl_type(NfnlSubsys.NFTABLES, kind),
                               NlmFlag.REQUEST | NlmFlag.ACK | flags, seq,
                               nfgen(self.family) + body))
        seq += 1
        out.append(message(NfnlMsg.BATCH_END, NlmFlag.REQUEST, seq,
                           nfgen(NfProto.UNSPEC, NfnlSubsys.NFTABLES)))
        return b"".join(out)


def parse_replies(data: bytes | memoryview) -> list[tuple[int, int]]:
    """(seq, errno) of each acknowledgement or error in a reply datagram (errno 0 = success)."""
    out = []
    for msg_type, _f, _seq, _pid, body in split_messages(data):
        if msg_type == NlmsgType.ERROR:
            errno, seq = parse_error(body)
            out.append((seq, errno))
        elif msg_type in (NlmsgType.NOOP, NlmsgType.DONE):
            continue
        else:
            raise PacketError(f"unexpected netlink message type {msg_type:#x} in reply to an "
                              "nf_tables batch.")
    return out
