"""@hook(where=...): the argument, the queue-only arguments a function gives explicitly, the
kernel's priority range, and the auto choice with its reason."""

import pytest

from minifw.errors import ConfigError
from minifw.hooks import ACCEPT, KERNEL_PRIORITY_RANGE, make_spec
from minifw.hooks.choice import choose


def fn(pkt):
    return ACCEPT


def test_where_defaults_to_auto_and_takes_the_three_values():
    assert make_spec(fn, "input").where == "auto"
    for where in ("auto", "kernel", "queue"):
        assert make_spec(fn, "input", where=where).where == where
    for bad in ("Kernel", "bpf", "", None, 1):
        with pytest.raises(ConfigError, match="where must be 'auto', 'kernel' or 'queue'"):
            make_spec(fn, "input", where=bad)


def test_defaults_are_not_queue_only_but_given_values_are_even_the_defaults():
    assert make_spec(fn, "input").queue_only == ()
    assert make_spec(fn, "input").fail == "open"
    assert make_spec(fn, "input").on_error == "accept"
    assert make_spec(fn, "input", fail="open").queue_only == ("fail=",)
    assert make_spec(fn, "input", on_error="accept").queue_only == ("on_error=",)
    assert make_spec(fn, "input", per_flow=False, payload=False).queue_only == ()
    assert make_spec(fn, "input", per_flow=True).queue_only == ("per_flow=True",)
    assert make_spec(fn, "input", payload=True).queue_only == ("payload=True",)
    spec = make_spec(fn, "forward", fail="closed", on_error="drop", payload=True)
    assert spec.queue_only == ("fail=", "on_error=", "payload=True")
    assert (spec.fail, spec.on_error) == ("closed", "drop")


def test_kernel_refuses_queue_only_arguments_at_decoration():
    for kwargs in ({"fail": "closed"}, {"on_error": "drop"}, {"payload": True},
                   {"per_flow": True, "priority": 0}):
        with pytest.raises(ConfigError, match='where="kernel" but .* only applies to the queue'):
            make_spec(fn, "input", where="kernel", **kwargs)
    assert make_spec(fn, "input", where="queue", fail="closed").queue_only == ("fail=",)


def test_kernel_priority_range_both_ends():
    lo, hi = KERNEL_PRIORITY_RANGE
    assert (lo, hi) == (-(2 ** 31) + 1, 2 ** 31 - 2)
    assert make_spec(fn, "input", lo, where="kernel").priority == lo
    assert make_spec(fn, "input", hi, where="kernel").priority == hi
    with pytest.raises(ConfigError, match="the kernel refuses priority 2147483647"):
        make_spec(fn, "input", hi + 1, where="kernel")
    # INT_MIN is refused on both paths already
    with pytest.raises(ConfigError, match="priority must be an integer"):
        make_spec(fn, "input", lo - 1, where="kernel")
    assert make_spec(fn, "input", hi + 1).kernel_refusal is not None
    assert make_spec(fn, "input", hi).kernel_refusal is None


def test_choose_queue_when_asked():
    c = choose(make_spec(fn, "input", where="queue"), None)
    assert (c.where, c.reason) == ("queue", 'where="queue"')


def test_choose_kernel_when_asked_or_auto_compiles():
    assert choose(make_spec(fn, "input", where="kernel"), None).where == "kernel"
    c = choose(make_spec(fn, "input"), None)
    assert c.where == "kernel" and c.reason == "auto: compiles to BPF"


def test_auto_stays_on_the_queue_for_queue_only_arguments_and_says_why():
    c = choose(make_spec(fn, "input", fail="closed"), None)
    assert c.where == "queue"
    assert c.reason.startswith("auto: fail= only applies to the queue")
    c = choose(make_spec(fn, "input", 2 ** 31 - 1), None)
    assert c == choose(make_spec(fn, "input", 2 ** 31 - 1), None)
    assert (c.where, c.reason) == ("queue", "auto: the kernel refuses priority 2147483647 for "
                                            "a BPF hook")


def test_auto_falls_back_on_a_compile_error_and_kernel_raises_it():
    err = ConfigError("`for` loops cannot run in the kernel; use where=\"queue\"",
                      file="h.py", line=12)
    c = choose(make_spec(fn, "input"), err)
    assert c.where == "queue"
    assert c.reason == "auto: does not compile: h.py:12: `for` loops cannot run in the kernel; " \
                       "use where=\"queue\""
    with pytest.raises(ConfigError) as info:
        choose(make_spec(fn, "input", where="kernel"), err)
    assert info.value is err
    # a queue function is never compiled: an error handed in changes nothing
    assert choose(make_spec(fn, "input", where="queue"), err).where == "queue"


def test_the_plain_address_set_trap_is_refused_at_load_even_on_the_queue(tmp_path):
    from minifw.hooks.load import load_module
    bad = tmp_path / "bad.py"
    bad.write_text('from minifw import hook, ACCEPT, DROP\n'
                   'BLOCKED = {"198.18.2.2", "198.18.64.0/18"}\n'
                   '@hook("input", where="queue")\n'
                   'def f(pkt):\n'
                   '    if pkt.src in BLOCKED:\n'
                   '        return DROP\n'
                   '    return ACCEPT\n')
    with pytest.raises(ConfigError, match="use minifw.Addresses") as info:
        load_module(str(bad))
    assert (info.value.file, info.value.line) == (str(bad), 5)
    good = tmp_path / "good.py"
    good.write_text(bad.read_text().replace('{"198.18.2.2", "198.18.64.0/18"}',
                                            'Addresses("198.18.2.2", "198.18.64.0/18")')
                    .replace("import hook,", "import hook, Addresses,"))
    mod = load_module(str(good))
    assert [s.name for s in mod.specs] == ["f"]
    assert "Addresses(" in mod.source and "BLOCKED" in mod.namespace
