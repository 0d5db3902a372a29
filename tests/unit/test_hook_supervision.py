"""The runner plan of up/reload (replace, retire, start) and status's hook problems, from the
records in a state directory. No root: records name this process (alive) or a finished one."""

import subprocess
import sys

import pytest

from minifw.runners import hookstate, supervise


@pytest.fixture
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def record(state_dir, pid, file, *, managed=True, digest=None, fail="open", name="gate"):
    hookstate.write_record(state_dir, hookstate.RunnerRecord(
        pid=pid, file=str(file), managed=managed, digest=digest,
        queues=(hookstate.QueueRecord(function=name, hook="input", priority=0, queue=1000,
                                      chain=f"hook_q1000_{name}", fail=fail),)))


@pytest.fixture
def files(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("A = 1\n")
    b.write_text("B = 1\n")
    return str(a), str(b)


def test_an_unchanged_runner_stays_and_a_new_file_starts(tmp_path, files):
    a, b = files
    record(tmp_path, 1, a, digest=hookstate.file_digest(a))  # pid 1 (init) is alive
    plan = supervise.plan_runners([a, b], tmp_path)
    assert (plan.start, plan.restart, plan.replace, plan.retire) == ([b], [], {}, [])
    assert plan.describe() == "started 1 hook runners"


def test_a_changed_file_is_replaced_not_stopped(tmp_path, files):
    a, _ = files
    record(tmp_path, 1, a, digest="stale")
    plan = supervise.plan_runners([a], tmp_path)
    assert (plan.start, plan.restart, plan.replace, plan.retire) == ([a], [a], {a: [1]}, [])
    assert plan.leaving_chains == []           # its successor takes its (hook, priority)
    assert plan.describe() == "restarted 1 hook runners"
    everything = supervise.plan_runners([a], tmp_path, restart_all=True)
    assert everything.replace == {a: [1]}


def test_a_dropped_file_is_retired_with_its_chains(tmp_path, files, dead_pid):
    a, b = files
    record(tmp_path, 1, a, digest=hookstate.file_digest(a))
    record(tmp_path, dead_pid, b, name="other")
    plan = supervise.plan_runners([], tmp_path)
    assert sorted(r.file for r in plan.retire) == [a, b]
    assert sorted(plan.leaving_chains) == ["hook_q1000_gate", "hook_q1000_other"]
    assert plan.describe() == "stopped 1 hook runners"          # one was running
    cmds = supervise.retire_commands(plan, ["hook_q1000_gate", "input_0"])
    assert cmds == [{"delete": {"chain": {"family": "inet", "table": "minifw",
                                          "name": "hook_q1000_gate"}}}]


def test_a_dead_runner_restarts_and_unmanaged_ones_are_left_alone(tmp_path, files, dead_pid):
    a, b = files
    record(tmp_path, dead_pid, a)
    record(tmp_path, 1, b, managed=False, digest="stale")
    plan = supervise.plan_runners([a, b], tmp_path, restart_all=True)
    assert (plan.start, plan.restart, plan.replace, plan.retire) == ([a], [a], {}, [])


def test_problems_say_which_hook_is_not_running_and_why(tmp_path, files, dead_pid):
    a, b = files
    assert supervise.problems(tmp_path) == []
    hookstate.write_wanted(tmp_path, [a, b])
    record(tmp_path, 1, a, digest="x")
    assert supervise.problems(tmp_path) == [hookstate.HookProblem(
        file=b, running=False, functions=(),
        reason="its runner is not running; nothing of it is in the kernel")]
    hookstate.write_failure(tmp_path, a, "the hook runner for a did not start: boom", [1])
    hookstate.write_failure(tmp_path, b, "the hook runner for b did not start: bang", [])
    record(tmp_path, dead_pid, b, fail="closed", name="shut")
    kept, down = supervise.problems(tmp_path)
    assert kept.file == a and kept.running and "boom" in kept.reason
    assert "previous runner keeps running" in kept.reason
    assert down.file == b and not down.running and down.functions == ("shut",)
    assert down.reason == ("the hook runner for b did not start: bang; its fail-closed "
                              "chains stay and drop what they queue (shut)")
    hookstate.clear_failure(tmp_path, a)
    hookstate.forget_all(tmp_path)                       # down: nothing wanted, no failures
    (dead,) = supervise.problems(tmp_path)               # the dead runner's record remains
    assert dead.file == b and f"pid {dead_pid}" in dead.reason


def test_a_minifw_run_runner_that_died_is_a_problem(tmp_path, files, dead_pid):
    a, _ = files
    record(tmp_path, dead_pid, a, managed=False)
    (p,) = supervise.problems(tmp_path)
    assert not p.running and "fail-open chains stay and let packets pass" in p.reason
