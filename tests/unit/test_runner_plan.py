"""Which [[hook]] runners `up` and `reload` retire, replace and start (no root: records only)."""

import os
import subprocess
import sys

from minifw.runners import hookstate
from minifw.runners.supervise import plan_runners


def record(state_dir, pid, file, managed=True, digest=None):
    hookstate.write_record(state_dir, hookstate.RunnerRecord(
        pid=pid, file=file, managed=managed, digest=digest,
        queues=(hookstate.QueueRecord(chain=f"hook_q{pid % 1000 + 1000}_f", function="f",
                                      queue=pid % 1000 + 1000, hook="input", priority=0),)))


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_plan(tmp_path):
    a, b, c, d = (tmp_path / n for n in ("a.py", "b.py", "c.py", "d.py"))
    for f in (a, b, c, d):
        f.write_text(f"# {f.name}\n")
    live = os.getpid()
    ppid = os.getppid()
    record(tmp_path, live, str(a), digest=hookstate.file_digest(str(a)))     # unchanged
    record(tmp_path, ppid, str(b), digest="0" * 64)                          # changed since
    c_pid = dead_pid()
    record(tmp_path, c_pid, str(c))                                         # died
    plan = plan_runners([str(a), str(b), str(c), str(d)], tmp_path)
    assert plan.replace == {str(b): [ppid]} and plan.retire == []   # make before break
    assert plan.start == [str(b), str(c), str(d)]
    assert plan.restart == [str(b), str(c)]
    assert plan.describe() == "restarted 2 hook runners, started 1 hook runners"
    assert plan.leaving_chains == []    # b's successor takes its place

    # a left the config: it is retired (and c's dead runner with it); b is replaced

    gone = plan_runners([str(b)], tmp_path)
    assert sorted(r.file for r in gone.retire) == [str(a), str(c)]
    assert gone.replace == {str(b): [ppid]}
    assert sorted(gone.leaving_chains) == sorted([f"hook_q{live % 1000 + 1000}_f",
                                                  f"hook_q{c_pid % 1000 + 1000}_f"])
    assert gone.describe() == "restarted 1 hook runners, stopped 1 hook runners"

    every = plan_runners([str(a)], tmp_path, restart_all=True)
    assert every.replace == {str(a): [live]} and every.restart == [str(a)]
    assert {r.file for r in every.retire} == {str(b), str(c)}


def test_unmanaged_runners_are_left_alone(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("# x\n")
    record(tmp_path, os.getpid(), str(f), managed=False, digest="0" * 64)
    plan = plan_runners([], tmp_path, restart_all=True)
    assert plan.retire == [] and plan.replace == {} and plan.start == []
    assert plan.describe() == ""
    assert plan_runners([str(f)], tmp_path).start == []   # already running under `minifw run`
