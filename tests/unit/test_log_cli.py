"""``minifw log`` on an events file: readable lines or JSON, the filters, -n, and one error line
for every bad flag or value."""

from __future__ import annotations

import json
import threading

import pytest

from minifw.cli import common as clicommon
from minifw.cli import events as cli_events
from minifw.cli.main import run
from minifw.events import files
from minifw.events.files import EventFile, EventFilter, encode, events_path
from minifw.events.record import build_event, parse_packet

from test_event_record import ECHO, UDP, v4, v6


class Origin:
    def __init__(self, rule, action="drop"):
        self.rule, self.hook, self.priority, self.action = rule, "input", 0, action


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)
    monkeypatch.setenv("MINIFW_STATE_DIR", str(tmp_path))
    f = EventFile(events_path(tmp_path), max_bytes=1 << 20, keep=1)
    f.write_lines([
        encode(build_event(parse_packet(v4(1, ECHO), 2), ts=1796211780.0, origin=Origin("no-ping"),
                           prefix="no-ping", iif="eth0")),
        encode(build_event(parse_packet(v4(17, UDP), 2), ts=1796211781.0,
                           origin=Origin("policy:input"), prefix="policy:input")),
        encode(build_event(parse_packet(v6(17, UDP), 10), ts=1796211782.0, origin=None,
                           prefix="other", hook=0)),
    ])
    f.close()
    return tmp_path


def cli(capsys, *argv):
    try:
        code = run(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code or 0, out, err


def test_readable_lines(state, capsys):
    code, out, err = cli(capsys, "log")
    lines = out.splitlines()
    assert code == 0 and err == "" and len(lines) == 3
    assert lines[0] == ("2026-12-02T11:43:00.000000Z drop no-ping input/0 icmp 198.18.0.2 -> "
                        "198.18.0.1 type=8 iif=eth0 len=28")
    assert lines[2].startswith("2026-12-02T11:43:02.000000Z - prefix='other' prerouting udp "
                               "[fd00::2]:40000 -> [fd00::1]:53")


def test_json_and_filters(state, capsys):
    code, out, _ = cli(capsys, "log", "--json", "--rule", "policy:input")
    (event,) = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and event["dport"] == 53 and event["rule"] == "policy:input"
    _, out, _ = cli(capsys, "log", "--json", "--src", "fd00::/8")
    assert [json.loads(line)["prefix"] for line in out.splitlines()] == ["other"]
    _, out, _ = cli(capsys, "log", "--json", "--dst", "198.18.0.1")
    assert len(out.splitlines()) == 2
    _, out, _ = cli(capsys, "log", "--json", "-n", "1")
    assert [json.loads(line)["prefix"] for line in out.splitlines()] == ["other"]
    _, out, _ = cli(capsys, "log", "--since", "2026-12-02T11:43:01.000000Z")
    assert len(out.splitlines()) == 2
    _, out, _ = cli(capsys, "log", "--since", "10m")  # long ago
    assert out == ""


@pytest.mark.parametrize("argv", [
    ["--src", "nope"], ["--dst", "198.18.0.0/33"], ["--since", "yesterday"], ["-n", "-1"],
    ["-n", "many"], ["--bogus"], ["--since", "10w"],
])
def test_bad_flags_are_one_error_line(state, capsys, argv):
    code, out, err = cli(capsys, "log", *argv)
    assert code != 0 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ")


def test_no_events_yet_is_no_output(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)
    monkeypatch.setenv("MINIFW_STATE_DIR", str(tmp_path / "absent"))
    assert cli(capsys, "log") == (0, "", "")


def test_follow_without_a_daemon_reads_the_file(state, monkeypatch):
    from minifw.control import client
    monkeypatch.setattr(client, "daemon_running", lambda state_dir: False)
    monkeypatch.setattr(cli_events, "follow",
                        lambda path, where: files.follow(path, where, poll=0.01))
    live = cli_events._live(state, events_path(state), EventFilter(rule="late"))
    got = []
    reader = threading.Thread(target=lambda: got.append(next(live)))
    reader.start()
    reader.join(0.2)
    f = EventFile(events_path(state), max_bytes=1 << 20, keep=1)
    f.write_lines([encode(build_event({}, ts=0, origin=Origin("late"), prefix="late"))])
    reader.join(3)
    assert got and got[0]["rule"] == "late"
