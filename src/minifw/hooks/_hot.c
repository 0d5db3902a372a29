/* The hook runner's hot path in C: the packet fields hooks read most, and the serve loop of a
 * runner with one hook function. Optional: minifw/hooks/packet.py and minifw/runners/runner.py
 * hold the same logic in pure Python, used where this module is not built or
 * MINIFW_PURE_PYTHON=1 is set.
 *
 * Only the common case lives here: a queued-packet datagram laid out as the kernel writes it,
 * and an IPv4 packet with a 20-byte header. Everything else (IPv6, options, fragments, errors
 * and their messages, datagrams of other shapes) is handed to the Python code, so both paths
 * behave the same. Burst.serve is the one place here that makes system calls (recvmmsg on the
 * queue socket, poll when it is empty, send of the verdicts): per burst, the Python code around those calls cost more
 * than the packets when bursts are short (TCP), so the whole cycle is C. Its verdicts follow
 * the one verdict-run state machine, minifw/netlink/verdicts.py (Burst below runs it in C).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <unistd.h>
#include <sys/socket.h>

/* set by configure() from packet.py */
static PyObject *V4_SEEN;       /* dict: int address -> IPv4 object */
static PyObject *V4_NEW;        /* callable(int) -> IPv4 object (and remembers it) */
static PyObject *PROTO_OF;      /* tuple of 256: protocol number -> name or number */
static PyObject *PAYLOAD_SPAN;  /* callable(data) -> (start, end), raising PacketError */
static PyObject *PACKET_ERROR;
static PyObject *BROKEN_EXT_MSG;
static PyObject *STR_PARSE_OTHER, *STR_ADDR, *STR_PORT, *STR_PAYLOAD;
/* the attributes of a VerdictRuns (minifw/netlink/verdicts.py) that Burst loads and stores */
static PyObject *STR_VERDICT, *STR_MARK, *STR_LAST, *STR_OPEN, *STR_ERRORS, *STR_DROPPED,
    *STR_OUT, *STR_QUEUE, *STR_ERROR_VERDICT;

/* The wire layout of a queued-packet datagram as the kernel writes it (one message, the packet
 * header its first attribute). Defined once, in minifw/netlink/nfqueue.py (HOT_DEFINES, with
 * these names); tests/unit/test_verdicts.py checks that these numbers are the same. */
#define NFQ_PACKET_MSG_TYPE 0x0300  /* nlmsg_type: NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET */
#define NFQ_QUEUE_AT 18             /* nfgenmsg.res_id, big-endian */
#define NFQ_FIRST_ATTR_AT 20        /* nla_len, nla_type of the first attribute */
#define NFQ_PACKET_HDR_LEN 11       /* its nla_len when it is NFQA_PACKET_HDR */
#define NFQ_PACKET_HDR 1            /* NFQA_PACKET_HDR */
#define NFQ_PACKET_ID_AT 24         /* nfqnl_msg_packet_hdr.packet_id, big-endian */
#define NFQ_AFTER_PACKET_HDR 32     /* the attribute after the packet header */
#define NFQ_PAYLOAD 10              /* NFQA_PAYLOAD */
#define NFQ_NLA_TYPE_MASK 0x3FFF    /* nla_type without NLA_F_NESTED, NLA_F_NET_BYTEORDER */

typedef struct {
    PyObject_HEAD
    /* the slots Python code reads (packet.py's PacketMethods): same names, same meaning */
    PyObject *q, *data, *buf, *p, *e, *l3, *l4, *proto, *h, *env;
    /* filled by the C parse of the usual packet (fast = 1) */
    int fast;
    unsigned char protonum;
    uint32_t src, dst;
    uint16_t sport, dport;
} PacketCore;

static int
has_ports(unsigned char proto)
{
    return proto == 6 || proto == 17 || proto == 132 || proto == 136;
}

/* Where NFQA_PAYLOAD starts and ends in a queued-packet datagram; 0 if found, 1 if anything
 * is unusual (the Python walk then decides, with its error messages). */
static int
payload_span(const unsigned char *d, Py_ssize_t n, Py_ssize_t *start, Py_ssize_t *end)
{
    Py_ssize_t off = NFQ_AFTER_PACKET_HDR;
    while (off + 4 <= n) {
        uint16_t len, kind;
        memcpy(&len, d + off, 2);
        memcpy(&kind, d + off + 2, 2);
        if (len < 4)
            return 1;
        if ((kind & NFQ_NLA_TYPE_MASK) == NFQ_PAYLOAD) {
            if (off + len > n)
                return 1;
            *start = off + 4;
            *end = off + len;
            return 0;
        }
        off += (len + 3) & ~3;
    }
    return 1;
}

static int
set_member(PyObject **slot, PyObject *value)  /* steals value */
{
    if (value == NULL)
        return -1;
    Py_XSETREF(*slot, value);
    return 0;
}

/* The parse on first field access: the same result as packet.py's PurePacket._parse. */
static int
core_parse(PacketCore *self)
{
    PyObject *bufobj;
    Py_ssize_t p, e;
    Py_buffer view;

    if (PROTO_OF == NULL) {  /* packet.py calls configure() when it imports this module */
        PyErr_SetString(PyExc_RuntimeError, "minifw.hooks._hot.configure() was not called");
        return -1;
    }
    self->fast = 0;
    int queued = self->q != NULL && self->q != Py_None;  /* built from a QueuedPacket */
    if (queued)
        bufobj = PyObject_GetAttr(self->q, STR_PAYLOAD);
    else if ((bufobj = self->data) != NULL)
        Py_INCREF(bufobj);
    else
        PyErr_SetString(PyExc_AttributeError, "_data");
    if (bufobj == NULL)
        return -1;
    if (PyObject_GetBuffer(bufobj, &view, PyBUF_SIMPLE) < 0) {
        Py_DECREF(bufobj);
        return -1;
    }
    if (queued) {
        p = 0;
        e = view.len;
    }
    else if (payload_span(view.buf, view.len, &p, &e)) {  /* unusual: Python's walk decides */
        PyObject *span = PyObject_CallOneArg(PAYLOAD_SPAN, bufobj);
        if (span == NULL || !PyArg_ParseTuple(span, "nn", &p, &e)) {
            Py_XDECREF(span);
            PyBuffer_Release(&view);
            Py_DECREF(bufobj);
            return -1;
        }
        Py_DECREF(span);
    }
    const unsigned char *b = (const unsigned char *)view.buf + p;
    if (e - p >= 24 && view.len >= e && b[0] == 0x45 && !(((b[6] << 8) | b[7]) & 0x1FFF)) {
        uint32_t v;
        self->protonum = b[9];
        memcpy(&v, b + 12, 4);
        self->src = ntohl(v);
        memcpy(&v, b + 16, 4);
        self->dst = ntohl(v);
        self->sport = (uint16_t)((b[20] << 8) | b[21]);
        self->dport = (uint16_t)((b[22] << 8) | b[23]);
        PyBuffer_Release(&view);
        Py_XSETREF(self->buf, bufobj);
        if (set_member(&self->p, PyLong_FromSsize_t(p)) < 0
                || set_member(&self->e, PyLong_FromSsize_t(e)) < 0
                || set_member(&self->proto, PyLong_FromLong(self->protonum)) < 0
                || set_member(&self->l4, PyLong_FromSsize_t(p + 20)) < 0
                || set_member(&self->l3, PyLong_FromLong(4)) < 0)
            return -1;
        Py_CLEAR(self->h);
        self->fast = 1;
        return 0;
    }
    PyBuffer_Release(&view);
    PyObject *ps = PyLong_FromSsize_t(p), *es = PyLong_FromSsize_t(e), *r = NULL;
    if (ps != NULL && es != NULL)
        r = PyObject_CallMethodObjArgs((PyObject *)self, STR_PARSE_OTHER, bufobj, ps, es, NULL);
    Py_XDECREF(ps);
    Py_XDECREF(es);
    Py_DECREF(bufobj);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static inline int
ensure_parsed(PacketCore *self)
{
    if (self->l3 == NULL || self->l3 == Py_None)
        return core_parse(self);
    return 0;
}

static PyObject *
py_parse(PacketCore *self, PyObject *unused)
{
    if (core_parse(self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
v4_object(uint32_t ip)
{
    PyObject *key = PyLong_FromUnsignedLong(ip);
    if (key == NULL)
        return NULL;
    PyObject *addr = PyDict_GetItemWithError(V4_SEEN, key);
    if (addr != NULL) {
        Py_DECREF(key);
        Py_INCREF(addr);
        return addr;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    addr = PyObject_CallOneArg(V4_NEW, key);
    Py_DECREF(key);
    return addr;
}

static PyObject *
call_with_two(PacketCore *self, PyObject *name, long a, long b)
{
    PyObject *x = PyLong_FromLong(a), *y = PyLong_FromLong(b);
    PyObject *r = NULL;
    if (x != NULL && y != NULL)
        r = PyObject_CallMethodObjArgs((PyObject *)self, name, x, y, NULL);
    Py_XDECREF(x);
    Py_XDECREF(y);
    return r;
}

static PyObject *
get_version(PacketCore *self, void *closure)
{
    if (ensure_parsed(self) < 0)
        return NULL;
    Py_INCREF(self->l3);
    return self->l3;
}

static PyObject *
get_src(PacketCore *self, void *closure)
{
    if (ensure_parsed(self) < 0)
        return NULL;
    if (self->fast)
        return v4_object(self->src);
    return call_with_two(self, STR_ADDR, 12, 8);
}

static PyObject *
get_dst(PacketCore *self, void *closure)
{
    if (ensure_parsed(self) < 0)
        return NULL;
    if (self->fast)
        return v4_object(self->dst);
    return call_with_two(self, STR_ADDR, 16, 24);
}

static PyObject *
get_proto(PacketCore *self, void *closure)
{
    if (ensure_parsed(self) < 0)
        return NULL;
    long n;
    if (self->fast)
        n = self->protonum;
    else {
        if (self->proto == NULL || self->proto == Py_None) {
            PyErr_SetObject(PACKET_ERROR, BROKEN_EXT_MSG);
            return NULL;
        }
        n = PyLong_AsLong(self->proto);
        if (n == -1 && PyErr_Occurred())
            return NULL;
        if (n < 0 || n > 255) {
            PyErr_SetString(PyExc_IndexError, "protocol number out of range");
            return NULL;
        }
    }
    PyObject *name = PyTuple_GET_ITEM(PROTO_OF, n);
    Py_INCREF(name);
    return name;
}

static PyObject *
port(PacketCore *self, int which)
{
    if (ensure_parsed(self) < 0)
        return NULL;
    if (self->fast) {
        if (!has_ports(self->protonum))
            Py_RETURN_NONE;
        return PyLong_FromLong(which ? self->dport : self->sport);
    }
    PyObject *w = PyLong_FromLong(which);
    if (w == NULL)
        return NULL;
    PyObject *r = PyObject_CallMethodOneArg((PyObject *)self, STR_PORT, w);
    Py_DECREF(w);
    return r;
}

static PyObject *get_sport(PacketCore *self, void *c) { return port(self, 0); }
static PyObject *get_dport(PacketCore *self, void *c) { return port(self, 1); }

static void
core_dealloc(PacketCore *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_CLEAR(self->q);
    Py_CLEAR(self->data);
    Py_CLEAR(self->buf);
    Py_CLEAR(self->p);
    Py_CLEAR(self->e);
    Py_CLEAR(self->l3);
    Py_CLEAR(self->l4);
    Py_CLEAR(self->proto);
    Py_CLEAR(self->h);
    Py_CLEAR(self->env);
    /* a heap subclass's reference to its type is dropped by subtype_dealloc */
    tp->tp_free((PyObject *)self);
}

static PyMemberDef core_members[] = {
    {"_q", T_OBJECT, offsetof(PacketCore, q), 0, NULL},
    {"_data", T_OBJECT, offsetof(PacketCore, data), 0, NULL},
    {"_buf", T_OBJECT, offsetof(PacketCore, buf), 0, NULL},
    {"_p", T_OBJECT, offsetof(PacketCore, p), 0, NULL},
    {"_e", T_OBJECT, offsetof(PacketCore, e), 0, NULL},
    {"_l3", T_OBJECT, offsetof(PacketCore, l3), 0, NULL},
    {"_l4", T_OBJECT, offsetof(PacketCore, l4), 0, NULL},
    {"_proto", T_OBJECT, offsetof(PacketCore, proto), 0, NULL},
    {"_h", T_OBJECT, offsetof(PacketCore, h), 0, NULL},
    {"_env", T_OBJECT, offsetof(PacketCore, env), 0, NULL},
    {NULL}
};

static PyGetSetDef core_getset[] = {
    {"version", (getter)get_version, NULL, "4 or 6.", NULL},
    {"src", (getter)get_src, NULL, "The source address.", NULL},
    {"dst", (getter)get_dst, NULL, "The destination address.", NULL},
    {"proto", (getter)get_proto, NULL,
     "\"tcp\", \"udp\", \"icmp\", \"icmpv6\", \"sctp\", or the protocol number for others.", NULL},
    {"sport", (getter)get_sport, NULL, "The source port, or None.", NULL},
    {"dport", (getter)get_dport, NULL, "The destination port, or None.", NULL},
    {NULL}
};

/* The packet over one whole queued-packet datagram (packet.py's from_datagram): nothing is read
 * until a field is. Burst builds its packets with this too. */
static PyObject *
core_new(PyTypeObject *cls, PyObject *data, PyObject *env)
{
    PacketCore *pkt = (PacketCore *)cls->tp_alloc(cls, 0);
    if (pkt == NULL)
        return NULL;
    Py_INCREF(data);
    pkt->data = data;
    Py_INCREF(env);
    pkt->env = env;
    return (PyObject *)pkt;
}

static PyObject *
core_from_datagram(PyObject *cls, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "from_datagram(data, env) takes 2 arguments");
        return NULL;
    }
    return core_new((PyTypeObject *)cls, args[0], args[1]);
}

static PyMethodDef core_methods[] = {
    {"_parse", (PyCFunction)py_parse, METH_NOARGS, "Parse the network and transport headers."},
    {"from_datagram", (PyCFunction)(void (*)(void))core_from_datagram, METH_FASTCALL | METH_CLASS,
     "from_datagram(data, env): the packet over one whole queued-packet datagram whose first "
     "attribute is its packet header; data must not change while the packet is in use."},
    {NULL}
};

static PyTypeObject PacketCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "minifw.hooks._hot.PacketCore",
    .tp_basicsize = sizeof(PacketCore),
    .tp_dealloc = (destructor)core_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_doc = "The header fields hooks read most, parsed in C on first use.",
    .tp_members = core_members,
    .tp_getset = core_getset,
    .tp_methods = core_methods,
    .tp_new = PyType_GenericNew,
};

/* ---- one burst of datagrams, decided ------------------------------------------------------ */

/* Burst is minifw/netlink/verdicts.py's VerdictRuns in C, for one queue without marks: the
 * contract is documented once, there. It loads the state of the VerdictRuns it was given on
 * entry (serve, decide) and stores it back before it returns, by any way out, so either side
 * continues the other's open run; in between it decides and closes runs on its copy. */
typedef struct {
    PyObject_HEAD
    PyObject *runs, *fn, *env, *cls, *accept, *drop, *failed, *odd, *stop;
    PyObject *on_drop;    /* None or callable(pkt), called after each DROP (hook events) */
    PyObject *prefix[2];  /* batch verdict message but its last 4 bytes (the id): DROP, ACCEPT */
    uint16_t wire_queue;  /* the queue number as its big-endian bytes read in host order */
    long error_verdict;
    /* the VerdictRuns state while C runs it (load_state, store_state) */
    long verdict;         /* -1: none yet */
    uint32_t last;        /* the last decided id as its big-endian bytes read in host order */
    int has_last;         /* last is set */
    int open;             /* the run ending at last has no message yet */
    Py_ssize_t errors, dropped;  /* since the load: added to the VerdictRuns' on store */
    Py_ssize_t seen;      /* packets given to the function */
    char *pend;           /* verdict messages of closed runs, not sent yet (out) */
    Py_ssize_t pend_len, pend_cap;
} Burst;

/* VerdictRuns.close: the open run's batch verdict message goes to the pending ones. */
static int
close_run(Burst *self)
{
    if (!self->open)
        return 0;
    PyObject *prefix = self->prefix[self->verdict ? 1 : 0];
    Py_ssize_t size = PyBytes_GET_SIZE(prefix) + 4;
    if (self->pend_len + size > self->pend_cap) {
        Py_ssize_t cap = (self->pend_cap ? self->pend_cap * 2 : 4096) + size;
        char *grown = PyMem_Realloc(self->pend, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->pend = grown;
        self->pend_cap = cap;
    }
    memcpy(self->pend + self->pend_len, PyBytes_AS_STRING(prefix), size - 4);
    memcpy(self->pend + self->pend_len + size - 4, &self->last, 4);  /* wire order */
    self->pend_len += size;
    self->open = 0;
    return 0;
}

/* VerdictRuns.decide without a mark: verdict 0 (DROP), 1 (ACCEPT) or -1 (ERROR). */
static int
decide_one(Burst *self, uint32_t wire_id, long verdict)
{
    if (verdict < 0) {
        verdict = self->error_verdict;
        self->errors++;
    }
    if (!verdict)
        self->dropped++;
    if (self->open && verdict != self->verdict && close_run(self) < 0)
        return -1;
    self->verdict = verdict;
    self->last = wire_id;
    self->has_last = 1;
    self->open = 1;
    return 0;
}

static int
load_state(Burst *self)
{
    PyObject *v = PyObject_GetAttr(self->runs, STR_VERDICT);
    if (v == NULL)
        return -1;
    self->verdict = v == Py_None ? -1 : PyLong_AsLong(v);
    Py_DECREF(v);
    if (self->verdict == -1 && PyErr_Occurred())
        return -1;
    PyObject *open = PyObject_GetAttr(self->runs, STR_OPEN);
    if (open == NULL)
        return -1;
    self->open = PyObject_IsTrue(open);
    Py_DECREF(open);
    if (self->open < 0)
        return -1;
    PyObject *mark = PyObject_GetAttr(self->runs, STR_MARK);
    if (mark == NULL)
        return -1;
    Py_DECREF(mark);
    if (self->open && mark != Py_None) {
        PyErr_SetString(PyExc_ValueError, "Burst serves runs without marks");
        return -1;
    }
    PyObject *last = PyObject_GetAttr(self->runs, STR_LAST);
    if (last == NULL)
        return -1;
    self->has_last = last != Py_None;
    if (self->has_last) {
        unsigned long id = PyLong_AsUnsignedLong(last);
        if (id == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(last);
            return -1;
        }
        self->last = htonl((uint32_t)id);
    }
    Py_DECREF(last);
    if (self->open && (!self->has_last || self->verdict < 0 || self->verdict > 1)) {
        PyErr_SetString(PyExc_ValueError, "an open run needs a verdict and a last id");
        return -1;
    }
    self->errors = self->dropped = 0;
    return 0;
}

static int
add_to(PyObject *runs, PyObject *name, Py_ssize_t n)
{
    if (n == 0)
        return 0;
    PyObject *old = PyObject_GetAttr(runs, name);
    if (old == NULL)
        return -1;
    PyObject *delta = PyLong_FromSsize_t(n);
    PyObject *sum = delta == NULL ? NULL : PyNumber_Add(old, delta);
    Py_DECREF(old);
    Py_XDECREF(delta);
    if (sum == NULL)
        return -1;
    int r = PyObject_SetAttr(runs, name, sum);
    Py_DECREF(sum);
    return r;
}

static int
set_steal(PyObject *runs, PyObject *name, PyObject *value)
{
    if (value == NULL)
        return -1;
    int r = PyObject_SetAttr(runs, name, value);
    Py_DECREF(value);
    return r;
}

static int
store_inner(Burst *self)
{
    if (set_steal(self->runs, STR_VERDICT, self->verdict < 0 ? Py_NewRef(Py_None)
                                                            : PyLong_FromLong(self->verdict)) < 0
            || set_steal(self->runs, STR_MARK, Py_NewRef(Py_None)) < 0
            || set_steal(self->runs, STR_LAST, self->has_last
                         ? PyLong_FromUnsignedLong(ntohl(self->last)) : Py_NewRef(Py_None)) < 0
            || set_steal(self->runs, STR_OPEN, PyBool_FromLong(self->open)) < 0)
        return -1;
    if (add_to(self->runs, STR_ERRORS, self->errors) < 0)
        return -1;
    self->errors = 0;
    if (add_to(self->runs, STR_DROPPED, self->dropped) < 0)
        return -1;
    self->dropped = 0;
    if (self->pend_len) {
        PyObject *out = PyObject_GetAttr(self->runs, STR_OUT);
        if (out == NULL)
            return -1;
        PyObject *msgs = PyBytes_FromStringAndSize(self->pend, self->pend_len);
        int r = msgs == NULL ? -1 : PyList_Check(out) ? PyList_Append(out, msgs) : -1;
        if (r < 0 && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "VerdictRuns.out must be a list");
        Py_XDECREF(msgs);
        Py_DECREF(out);
        if (r < 0)
            return -1;
        self->pend_len = 0;
    }
    return 0;
}

/* Store the state back into the VerdictRuns. With an exception pending (a StopRunner), that
 * one propagates whatever happens here. */
static int
store_state(Burst *self)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    int r = store_inner(self);
    if (type != NULL) {
        if (r < 0)
            PyErr_Clear();
        PyErr_Restore(type, value, tb);
        return -1;
    }
    return r;
}

static int
burst_init(Burst *self, PyObject *args, PyObject *kw)
{
    static char *names[] = {"runs", "fn", "env", "cls", "accept", "drop", "failed", "odd",
                            "stop", NULL};
    PyObject *runs, *fn, *env, *cls, *accept, *drop, *failed, *odd, *stop;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOO!OOOOO", names, &runs, &fn, &env,
                                     &PyType_Type, &cls, &accept, &drop, &failed, &odd, &stop))
        return -1;
    if (!PyType_IsSubtype((PyTypeObject *)cls, &PacketCoreType)) {
        PyErr_SetString(PyExc_TypeError, "cls must be a PacketCore subclass");
        return -1;
    }
    PyObject *q = PyObject_GetAttr(runs, STR_QUEUE);
    if (q == NULL)
        return -1;
    long queue = PyLong_AsLong(q);
    Py_DECREF(q);
    if (queue == -1 && PyErr_Occurred())
        return -1;
    PyObject *ev = PyObject_GetAttr(runs, STR_ERROR_VERDICT);
    if (ev == NULL)
        return -1;
    long error_verdict = PyLong_AsLong(ev);
    Py_DECREF(ev);
    if (error_verdict == -1 && PyErr_Occurred())
        return -1;
    if (queue < 0 || queue > 65535 || (error_verdict != 0 && error_verdict != 1)) {
        PyErr_SetString(PyExc_ValueError, "a queue number, and a DROP or ACCEPT error verdict");
        return -1;
    }
    PyObject *p[2];
    for (int k = 0; k < 2; k++) {
        p[k] = PyObject_CallMethod(runs, "prefix", "i", k);
        if (p[k] == NULL || !PyBytes_Check(p[k])) {
            if (p[k] != NULL)
                PyErr_SetString(PyExc_TypeError, "VerdictRuns.prefix must return bytes");
            Py_XDECREF(p[k]);
            if (k)
                Py_DECREF(p[0]);
            return -1;
        }
    }
    Py_XSETREF(self->prefix[0], p[0]);
    Py_XSETREF(self->prefix[1], p[1]);
#define KEEP(f) Py_INCREF(f); Py_XSETREF(self->f, f)
    KEEP(runs); KEEP(fn); KEEP(env); KEEP(cls); KEEP(accept); KEEP(drop); KEEP(failed);
    KEEP(odd); KEEP(stop);
#undef KEEP
    self->wire_queue = htons((uint16_t)queue);
    self->error_verdict = error_verdict;
    self->verdict = -1;
    self->has_last = self->open = 0;
    return 0;
}

static void
burst_dealloc(Burst *self)
{
    Py_CLEAR(self->runs);
    Py_CLEAR(self->fn);
    Py_CLEAR(self->env);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->accept);
    Py_CLEAR(self->drop);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->odd);
    Py_CLEAR(self->stop);
    Py_CLEAR(self->on_drop);
    Py_CLEAR(self->prefix[0]);
    Py_CLEAR(self->prefix[1]);
    PyMem_Free(self->pend);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Decide datagrams start..count-1 of one recvmmsg burst: datagram i sits in buf at
 * i * slot, its length is the uint32 at i * entry + len_at in lens (the mmsghdr array). Stops at
 * the first datagram that is not a plain queued packet of this queue (the runner's general path
 * takes that one) and returns its index; count when all were decided; -1 with an exception set
 * (a StopRunner from the hook, or an error in the Python callbacks). The state must be loaded. */
static Py_ssize_t
decide_range(Burst *self, const char *buf, Py_ssize_t buflen, const char *lens,
             Py_ssize_t lenslen, Py_ssize_t start, Py_ssize_t count, Py_ssize_t slot,
             Py_ssize_t entry, Py_ssize_t len_at)
{
    Py_ssize_t i;
    if (start < 0 || count < 0 || slot <= 0 || entry <= 0 || len_at < 0
            || count > buflen / slot || len_at > lenslen - 4
            || (count > 0 && count - 1 > (lenslen - 4 - len_at) / entry)) {
        PyErr_SetString(PyExc_ValueError, "the burst does not fit its buffers");
        return -1;
    }
    PyTypeObject *cls = (PyTypeObject *)self->cls;
    for (i = start; i < count; i++) {
        uint32_t n, nl_len, wire_id;
        uint16_t kind, wq, alen, atype;
        const unsigned char *d = (const unsigned char *)buf + i * slot;
        memcpy(&n, lens + i * entry + len_at, 4);
        if (n > (uint32_t)slot || n < NFQ_AFTER_PACKET_HDR)
            break;
        memcpy(&nl_len, d, 4);
        memcpy(&kind, d + 4, 2);
        memcpy(&wq, d + NFQ_QUEUE_AT, 2);
        memcpy(&alen, d + NFQ_FIRST_ATTR_AT, 2);
        memcpy(&atype, d + NFQ_FIRST_ATTR_AT + 2, 2);
        if (nl_len != n || kind != NFQ_PACKET_MSG_TYPE || alen != NFQ_PACKET_HDR_LEN
                || atype != NFQ_PACKET_HDR || wq != self->wire_queue)
            break;
        memcpy(&wire_id, d + NFQ_PACKET_ID_AT, 4);

        PyObject *data = PyBytes_FromStringAndSize((const char *)d, n);
        if (data == NULL)
            return -1;
        PyObject *pkt = core_new(cls, data, self->env);
        Py_DECREF(data);
        if (pkt == NULL)
            return -1;
        self->seen++;
        long verdict;
        int reported = 0;
        PyObject *v = PyObject_CallOneArg(self->fn, pkt);
        if (v == NULL) {
            if (PyErr_ExceptionMatches(self->stop)) {  /* SIGTERM/SIGINT: the runner stops */
                Py_DECREF(pkt);
                return -1;
            }
            PyObject *type, *value, *tb;  /* any other exception, SystemExit included */
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            if (tb != NULL)
                PyException_SetTraceback(value, tb);
            PyObject *r = PyObject_CallOneArg(self->failed, value);  /* reports it */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            if (r == NULL) {
                Py_DECREF(pkt);
                return -1;
            }
            Py_DECREF(r);
            verdict = -1;
        }
        else {
            if (v == self->accept)
                verdict = 1;
            else if (v == self->drop) {
                verdict = 0;
                reported = self->on_drop != NULL && self->on_drop != Py_None;
            }
            else {  /* reports it */
                PyObject *r = PyObject_CallFunctionObjArgs(self->odd, pkt, v, NULL);
                if (r == NULL) {
                    Py_DECREF(v);
                    Py_DECREF(pkt);
                    return -1;
                }
                Py_DECREF(r);
                verdict = -1;
            }
            Py_DECREF(v);
        }
        if (decide_one(self, wire_id, verdict) < 0) {
            Py_DECREF(pkt);
            return -1;
        }
        if (reported) {  /* only DROPs, only while a daemon listens: the runner arms it */
            PyObject *cb = self->on_drop;
            Py_INCREF(cb);  /* the runner's watcher thread may swap it meanwhile */
            PyObject *r = PyObject_CallOneArg(cb, pkt);
            Py_DECREF(cb);
            if (r == NULL) {
                if (PyErr_ExceptionMatches(self->stop)) {  /* decided already: stop after it */
                    Py_DECREF(pkt);
                    return -1;
                }
                PyErr_Clear();  /* an event lost, never a verdict */
            }
            Py_XDECREF(r);
        }
        Py_DECREF(pkt);
    }
    return i;
}

/* burst.decide(buf, lengths, start, count, slot_size, entry_size, len_at) -> index */
static PyObject *
burst_decide(Burst *self, PyObject *args)
{
    Py_buffer buf, lens;
    Py_ssize_t start, count, slot, entry, len_at;
    if (self->runs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Burst.__init__ was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*nnnnn", &buf, &lens, &start, &count, &slot, &entry,
                          &len_at))
        return NULL;
    Py_ssize_t i = -1;
    if (load_state(self) == 0) {
        i = decide_range(self, buf.buf, buf.len, lens.buf, lens.len, start, count, slot,
                         entry, len_at);
        if (store_state(self) < 0)
            i = -1;
    }
    PyBuffer_Release(&buf);
    PyBuffer_Release(&lens);
    return i < 0 ? NULL : PyLong_FromSsize_t(i);
}

/* Wait until fd has something to read or report, or a signal arrived: its handler is then due
 * (the caller runs it with PyErr_CheckSignals). wake_fd is the descriptor signal.set_wakeup_fd
 * has the C signal handler write to (-1: none): a signal that lands after the last
 * PyErr_CheckSignals, even before poll is entered, leaves a byte there and ends the wait.
 * 0, or -errno. */
static int
wait_readable(int fd, int wake_fd)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = wake_fd, .events = POLLIN}};
    int r, err;
    Py_BEGIN_ALLOW_THREADS
    r = poll(p, wake_fd >= 0 ? 2 : 1, -1);
    err = errno;
    Py_END_ALLOW_THREADS
    if (r < 0)
        return err == EINTR ? 0 : -err;
    if (wake_fd >= 0 && p[1].revents) {
        char sink[256];
        if (p[1].revents & POLLNVAL)
            return -EBADF;
        while (read(wake_fd, sink, sizeof sink) > 0)  /* its bytes only say "look" */
            ;
    }
    return 0;
}

/* burst.serve(fd, mmsghdrs, slots, buf, lengths, slot_size, entry_size, len_at, wake_fd=-1)
 *
 * The serve loop: one recvmmsg (MSG_WAITFORONE | MSG_TRUNC) into the receiver's slots, decide
 * the burst, close the open run and send the verdict messages in one send; again. Returns
 * (count, index) when datagram index of a burst of count is not a plain queued packet (the
 * VerdictRuns then holds the state: its messages not sent yet in out, its run open), or -errno
 * when recvmmsg fails (ENOBUFS: the runner grows the buffer). A failed send raises OSError; a
 * signal whose handler raises (StopRunner) ends it with that exception. The VerdictRuns' out
 * must be empty when it is called (sent): the messages of this loop go out before anything
 * added to it later.
 *
 * recvmmsg never blocks (MSG_DONTWAIT): when nothing is queued, poll waits on fd and wake_fd
 * together (see wait_readable), so a stop wakes the loop whenever it lands. Under load that
 * costs nothing; an idle queue costs one poll (and one empty recvmmsg) per burst. */
static PyObject *
burst_serve(Burst *self, PyObject *args)
{
    int fd;
    unsigned long long hdrs;
    unsigned int slots;
    Py_buffer buf, lens;
    Py_ssize_t slot, entry, len_at;
    int wake_fd = -1, loaded = 0;
    PyObject *result = NULL;
    if (self->runs == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Burst.__init__ was not called");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "iKIy*w*nnn|i", &fd, &hdrs, &slots, &buf, &lens, &slot, &entry,
                          &len_at, &wake_fd))
        return NULL;
    if (hdrs == 0 || slots == 0 || slots > 1024 || slot <= 0 || entry <= 0
            || len_at < 0 || len_at > entry - 4 || (Py_ssize_t)slots > buf.len / slot
            || (Py_ssize_t)slots > lens.len / entry) {
        PyErr_SetString(PyExc_ValueError, "the receiver's buffers do not match its slots");
        goto out;
    }
    PyObject *pending = PyObject_GetAttr(self->runs, STR_OUT);
    if (pending == NULL)
        goto out;
    Py_ssize_t waiting = PyObject_Length(pending);
    Py_DECREF(pending);
    if (waiting != 0) {
        if (waiting > 0)
            PyErr_SetString(PyExc_ValueError, "the VerdictRuns has messages not sent yet");
        goto out;
    }
    if (load_state(self) < 0)
        goto out;
    loaded = 1;
    if (PyErr_CheckSignals() < 0)  /* one that came before this call */
        goto out;
    for (;;) {
        /* msg_len of every entry zeroed: the kernel sets those of the datagrams it returns,
         * so after a stop the receiver reads the interrupted burst from its buffer */
        for (unsigned int k = 0; k < slots; k++)
            memset((char *)lens.buf + k * entry + len_at, 0, 4);
        /* without waiting, so the GIL stays: nothing blocks here */
        int n = recvmmsg(fd, (struct mmsghdr *)(uintptr_t)hdrs, slots,
                         MSG_WAITFORONE | MSG_TRUNC | MSG_DONTWAIT, NULL);
        if (n < 0) {
            int err = errno;
            if (err == EAGAIN || err == EWOULDBLOCK)
                err = -wait_readable(fd, wake_fd);
            if (err == 0 || err == EINTR || err == EAGAIN || err == EWOULDBLOCK) {
                if (PyErr_CheckSignals() < 0)
                    goto out;
                continue;
            }
            result = PyLong_FromLong(-err);
            goto out;
        }
        Py_ssize_t i = decide_range(self, buf.buf, buf.len, lens.buf, lens.len, 0, n, slot,
                                    entry, len_at);
        if (i < 0)
            goto out;
        if (i < n) {
            result = Py_BuildValue("nn", (Py_ssize_t)n, i);
            goto out;
        }
        if (close_run(self) < 0)
            goto out;
        Py_ssize_t at = 0;
        while (at < self->pend_len) {
            ssize_t sent = send(fd, self->pend + at, self->pend_len - at, 0);
            if (sent < 0) {
                if (errno == EINTR)
                    continue;
                PyErr_SetFromErrno(PyExc_OSError);
                goto out;
            }
            at += sent;
        }
        self->pend_len = 0;
        if (PyErr_CheckSignals() < 0)
            goto out;
    }
out:
    if (loaded && store_state(self) < 0)
        Py_CLEAR(result);
    PyBuffer_Release(&buf);
    PyBuffer_Release(&lens);
    return result;
}

static PyMemberDef burst_members[] = {
    {"seen", T_PYSSIZET, offsetof(Burst, seen), 0, "Packets given to the function."},
    {"on_drop", T_OBJECT, offsetof(Burst, on_drop), 0,
     "None, or a callable(pkt) called after each DROP verdict (hook events)."},
    {"errors", T_PYSSIZET, offsetof(Burst, errors), READONLY,
     "Errors since the runs' state was loaded (not yet in the VerdictRuns)."},
    {"dropped", T_PYSSIZET, offsetof(Burst, dropped), READONLY,
     "Drops since the runs' state was loaded (not yet in the VerdictRuns)."},
    {NULL}
};

static PyMethodDef burst_methods[] = {
    {"decide", (PyCFunction)burst_decide, METH_VARARGS,
     "decide(buf, lengths, start, count, slot_size, entry_size, len_at) -> index"},
    {"serve", (PyCFunction)burst_serve, METH_VARARGS,
     "serve(fd, mmsghdrs, slots, buf, lengths, slot_size, entry_size, len_at, wake_fd=-1)"},
    {NULL}
};

static PyTypeObject BurstType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "minifw.hooks._hot.Burst",
    .tp_basicsize = sizeof(Burst),
    .tp_dealloc = (destructor)burst_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Burst(runs, fn, env, cls, accept, drop, failed, odd, stop): one hook function's "
              "per-packet loop over received bursts, answering through the VerdictRuns runs.",
    .tp_init = (initproc)burst_init,
    .tp_new = PyType_GenericNew,
    .tp_members = burst_members,
    .tp_methods = burst_methods,
};

/* ---- module ------------------------------------------------------------------------------ */

static PyObject *
configure(PyObject *mod, PyObject *args)
{
    PyObject *seen, *v4new, *protos, *span, *error, *msg;
    if (!PyArg_ParseTuple(args, "O!OO!OOU", &PyDict_Type, &seen, &v4new, &PyTuple_Type, &protos,
                          &span, &error, &msg))
        return NULL;
    if (PyTuple_GET_SIZE(protos) != 256) {
        PyErr_SetString(PyExc_ValueError, "the protocol table needs 256 entries");
        return NULL;
    }
#define KEEP(dst, src) Py_INCREF(src); Py_XSETREF(dst, src)
    KEEP(V4_SEEN, seen); KEEP(V4_NEW, v4new); KEEP(PROTO_OF, protos); KEEP(PAYLOAD_SPAN, span);
    KEEP(PACKET_ERROR, error); KEEP(BROKEN_EXT_MSG, msg);
#undef KEEP
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(v4_seen, v4_new, proto_of, payload_span, PacketError, broken_ext_msg)"},
    {NULL}
};

static struct PyModuleDef hot_module = {
    PyModuleDef_HEAD_INIT, "minifw.hooks._hot",
    "The hook runner's hot path in C (optional; see packet.py for the pure-Python path).", -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__hot(void)
{
    if (PyType_Ready(&PacketCoreType) < 0 || PyType_Ready(&BurstType) < 0)
        return NULL;
    STR_PARSE_OTHER = PyUnicode_InternFromString("_parse_other");
    STR_ADDR = PyUnicode_InternFromString("_addr");
    STR_PORT = PyUnicode_InternFromString("_port");
    STR_PAYLOAD = PyUnicode_InternFromString("payload");
    STR_VERDICT = PyUnicode_InternFromString("verdict");
    STR_MARK = PyUnicode_InternFromString("mark");
    STR_LAST = PyUnicode_InternFromString("last");
    STR_OPEN = PyUnicode_InternFromString("open");
    STR_ERRORS = PyUnicode_InternFromString("errors");
    STR_DROPPED = PyUnicode_InternFromString("dropped");
    STR_OUT = PyUnicode_InternFromString("out");
    STR_QUEUE = PyUnicode_InternFromString("queue");
    STR_ERROR_VERDICT = PyUnicode_InternFromString("error_verdict");
    if (!STR_PARSE_OTHER || !STR_ADDR || !STR_PORT || !STR_PAYLOAD || !STR_VERDICT || !STR_MARK
            || !STR_LAST || !STR_OPEN || !STR_ERRORS || !STR_DROPPED || !STR_OUT || !STR_QUEUE
            || !STR_ERROR_VERDICT)
        return NULL;
    PyObject *m = PyModule_Create(&hot_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&PacketCoreType);
    Py_INCREF(&BurstType);
    if (PyModule_AddObject(m, "PacketCore", (PyObject *)&PacketCoreType) < 0
            || PyModule_AddObject(m, "Burst", (PyObject *)&BurstType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
