"""Runner records: a damaged one is reported with the pid its name gives, never skipped."""

import json

import pytest

from minifw.runners import hookstate, supervise

GOOD_QUEUE = {"chain": "hook_q1000_f", "function": "f", "queue": 1000, "hook": "input",
              "priority": 0, "fail": "open"}


def good(pid=4242):
    return {"pid": pid, "file": "/etc/minifw/h.py", "queues": [dict(GOOD_QUEUE)]}


def test_a_whole_record_has_no_problem():
    assert hookstate.record_problem(good(), 4242) is None
    assert hookstate.record_problem({**good(), "queues": []}, 4242) is None


@pytest.mark.parametrize("rec, pid", [
    ([], 4242), (None, 4242), ("x", 4242),
    (good(4243), 4242),                      # not the pid of its file name
    ({**good(), "pid": True}, 1),            # a bool is not a pid
    (good(0), 0), (good(-1), -1),            # pids start at 1
    ({**good(), "file": 3}, 4242),
    ({**good(), "queues": {}}, 4242),
    ({**good(), "queues": [["x"]]}, 4242),
    ({**good(), "queues": [{**GOOD_QUEUE, "queue": "1000"}]}, 4242),
    ({**good(), "queues": [{**GOOD_QUEUE, "priority": False}]}, 4242),
    ({**good(), "queues": [{**GOOD_QUEUE, "flow_chain": 7}]}, 4242),
])
def test_records_of_the_wrong_shape_are_named(rec, pid):
    assert hookstate.record_problem(rec, pid)


def test_pid_one_is_a_pid():
    assert hookstate.record_problem(good(1), 1) is None


def test_a_damaged_record_is_reported_and_never_signalled(tmp_path):
    folder = hookstate.hooks_dir(tmp_path)
    folder.mkdir()
    (folder / "runner-1.json").write_text("{not json")        # pid 1 is alive: never signal it
    (folder / "runner-abc.json").write_text(json.dumps(good()))
    recs = hookstate.records(tmp_path)
    assert [(r.pid, r.alive, bool(r.damaged)) for r in recs] == [(1, False, True),
                                                                 (0, False, True)]
    problems = supervise.problems(tmp_path)
    assert len(problems) == 2 and all(p.file is None for p in problems)
    assert "runner-1.json is unreadable" in problems[0].reason
    assert supervise.stop_pids(tmp_path, None) == 0              # nothing was signalled
    assert list(folder.glob("runner-*.json")) == []            # and both records are gone
