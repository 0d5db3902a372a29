"""`down` (no daemon: runners/supervise.stop_pids) returns only once the hook runners are gone,
even one that ignores SIGTERM and must be killed. No root: the runner is a child of the test."""

import subprocess
import sys
import time

from minifw.runners import hookstate, supervise


def test_stop_returns_after_a_runner_that_ignores_sigterm_is_gone(tmp_path, monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "import signal, time\n"
                             "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                             "print('ready', flush=True)\ntime.sleep(60)\n"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        hookstate.write_record(tmp_path, hookstate.RunnerRecord(
            pid=proc.pid, file=str(tmp_path / "h.py"), managed=True,
            queues=(hookstate.QueueRecord(function="gate", hook="input", priority=0,
                                          queue=1000, chain="hook_q1000_gate", fail="open"),)))
        monkeypatch.setattr(supervise, "STOP_TIMEOUT", 0.3)
        monkeypatch.setattr(supervise, "_live_chain_names", lambda: set())  # no kernel here
        start = time.monotonic()
        assert supervise.stop_all(tmp_path) == 1
        assert not hookstate.pid_alive(proc.pid)      # gone (a zombie of ours at most)
        assert time.monotonic() - start >= 0.3        # it was given its SIGTERM's time
        assert hookstate.records(tmp_path) == []
    finally:
        proc.kill()
        proc.wait()
