"""Hook functions' DROP verdicts as events: the runner's serve loops (Python, pure Python and
the C loop of hooks/_hot.c) call the queue's ``on_drop`` after each DROP the function returns,
and only then; a failing callback costs an event, never a verdict."""

from __future__ import annotations

from test_hook_hot_path import R, assert_verdicts, loop, make_runner, odd_drop, serve, udp4

loop = loop  # the fixture: each serve loop in turn


def test_each_drop_and_only_drops_are_reported(loop):
    r = make_runner({7: odd_drop}, [udp4(i) for i in (2, 3, 4, 5)] + [None] + [udp4(7)])
    seen = []
    r.ctx[7].on_drop = lambda pkt: seen.append(pkt.id)
    serve(r)
    assert seen == [3, 5, 7]
    assert r.ctx[7].dropped == 3


def test_nothing_is_reported_while_disarmed(loop):
    r = make_runner({7: odd_drop}, [udp4(i) for i in (2, 3)])
    assert r.ctx[7].on_drop is None  # no daemon: the loops call nothing more
    serve(r)
    assert r.ctx[7].dropped == 1


def test_an_error_verdict_is_not_a_drop_event(loop):
    def bad(pkt):
        raise ValueError("boom")

    r = make_runner({7: bad}, [udp4(1), udp4(2)], on_error="drop")
    seen = []
    r.ctx[7].on_drop = seen.append
    serve(r)
    assert seen == [] and r.ctx[7].errors == 2


def test_a_failing_callback_changes_no_verdict(loop):
    def broken(pkt):
        raise OSError("the daemon went away")

    r = make_runner({7: odd_drop}, [udp4(i) for i in (2, 3, 4)] + [None])
    r.ctx[7].on_drop = broken
    serve(r)
    assert_verdicts(r, [(7, 1, 2, None), (7, 0, 3, None), (7, 1, 4, None)])


def test_a_stop_in_the_callback_keeps_the_drop(loop):
    def stop(pkt):
        raise R.StopRunner()

    r = make_runner({7: odd_drop}, [udp4(2), udp4(3), udp4(4)])
    r.ctx[7].on_drop = stop
    serve(r)
    r._flush()
    assert_verdicts(r, [(7, 1, 2, None), (7, 0, 3, None)])
