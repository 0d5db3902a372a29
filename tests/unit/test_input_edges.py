"""Edges of user input (issue 11, defects 6, 8 and 9): every failure is ONE `error:` line, and
lenient inputs are refused or normalised explicitly. No root needed."""

from __future__ import annotations

import io
import sqlite3

import pytest

from minifw.cli import common as clicommon
from minifw.cli import main as climain
from minifw.errors import ConfigError, RuleError, StateError
from minifw.kernel.nft import _kernel_error
from minifw.model import parse_config
from minifw.model.rule import PortRange, Rule
from minifw.model.setdefs import SetDef
from minifw.kernel.privilege import has_net_admin
from minifw.store.setrecord import parse_import

DEEP = "a = " + "[" * 5000 + "]" * 5000 + "\n"


def run_cli(capsys, *argv):
    try:
        code = climain.run(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code, err):
    assert code not in (0, None)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "internal error" not in lines[0] and "Traceback" not in err
    return lines[0]


# ---- defect 6: tracebacks ---------------------------------------------------------------------

def test_deep_nesting_is_a_config_error():
    with pytest.raises(ConfigError, match="nested too deeply"):
        parse_config(DEEP, "deep.toml")
    with pytest.raises(ConfigError, match="unknown top-level key 'a'"):  # shallow: read
        parse_config("a = " + "[" * 20 + "]" * 20 + "\n", "shallow.toml")


def test_deep_nesting_through_the_cli(capsys, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text(DEEP)
    line = one_error(*run_cli(capsys, "check", "--config", str(path))[::2])
    assert str(path) in line


@pytest.mark.parametrize("text", ["198.18.0.2\x00\n", "198.18.0.1\n198.18.0.2\x00\n",
                                  "fd00::1\x00\n", "198.18.0.0/24\n\x00\n"])
def test_a_nul_byte_in_an_import_file_is_a_config_error(text):
    with pytest.raises(ConfigError, match=r"\\x00"):
        parse_import(io.StringIO(text), "f.txt", skip_invalid=False)
    four, six, cidrs, skipped = parse_import(io.StringIO(text), "f.txt", skip_invalid=True)
    assert len(skipped) == 1


def test_the_page_number_is_bounded(capsys):
    code, _, err = run_cli(capsys, "set", "list", "blocked", "--page", "99999999999999999999")
    assert code == 2
    assert "--page" in one_error(code, err)


# ---- defect 8: one line, never misleading -----------------------------------------------------

def test_one_line_escapes_control_characters():
    assert clicommon.one_line("rule 'a\nb': x\r\x1b[31m") == "rule 'a\\nb': x\\r\\x1b[31m"
    assert clicommon.one_line("plain ü text") == "plain ü text"


def test_an_error_naming_an_id_with_a_newline_is_one_line(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[rule]]\nid = "a\\nb"\naction = "drop"\n')
    line = one_error(*run_cli(capsys, "check", "--config", str(path))[::2])
    assert "'a\\nb'" in line


@pytest.mark.parametrize("argv", [["up", "--foo"], ["frob"], ["add", "--action"],
                                  ["set", "list"], ["add", "--id", "x", "--action", "drop",
                                                    "--position", "-1"]])
def test_usage_errors_are_one_line_with_exit_2(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert "Usage:" not in one_error(code, err)


def test_help_still_shows_the_usage(capsys):
    code, out, _ = run_cli(capsys, "up", "--help")
    assert code == 0 and out.startswith("Usage: minifw up")


@pytest.mark.parametrize("comment", ["x\x00y", "a\nb", "tab\there", "del\x7f", "c1\x9b"])
def test_a_comment_with_control_characters_is_refused_by_the_model(comment):
    with pytest.raises(RuleError) as info:
        Rule.from_toml({"id": "r", "action": "drop", "comment": comment})
    assert info.value.field == "comment"
    with pytest.raises(RuleError) as info:
        SetDef.from_toml({"name": "s", "comment": comment})
    assert info.value.field == "comment"


def test_a_printable_comment_is_kept():
    assert Rule.from_toml({"id": "r", "action": "drop", "comment": "ssh für alle"}).comment \
        == "ssh für alle"


def test_check_refuses_what_up_would_refuse(capsys, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[rule]]\nid = "a"\naction = "drop"\ncomment = "x\\u0000y"\n')
    line = one_error(*run_cli(capsys, "check", "--config", str(path))[::2])
    assert "'comment'" in line and "nftables" not in line.split("'comment'")[0]


def test_a_kernel_error_never_quotes_the_document():
    err = ('Error: syntax error, unexpected \'{\'\n{"nftables": [{"add": {"table": '
           '{"family": "inet", "name": "minifw"}}}]}\n^^^^^\n')
    message = str(_kernel_error(err))
    assert "nftables\": [" not in message and "syntax error" in message


@pytest.mark.parametrize("capeff,expected", [("0000003fffffffff", True), ("0000000000001000", True),
                                             ("0000000000000000", False),
                                             ("0000000000002800", False), ("zz", False)])
def test_cap_net_admin_is_read_from_capeff(capeff, expected):
    status = f"Name:\tminifw\nCapInh:\t0000000000000000\nCapEff:\t{capeff}\n"
    assert has_net_admin(status) is expected


def test_without_privilege_every_kernel_command_says_so_once(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(clicommon, "privileged", lambda: False)
    monkeypatch.setenv("MINIFW_STATE_DIR", str(tmp_path / "state"))
    for argv in (["status"], ["list"], ["up", "--config", "x.toml"], ["down"], ["reload"],
                 ["delete", "r"], ["add", "--action", "drop"], ["ban", "198.18.0.1"],
                 ["unban", "198.18.0.1"], ["set", "list", "blocked"], ["explain", "--proto",
                                                                     "icmp"]):
        code, out, err = run_cli(capsys, *argv)
        line = one_error(code, err)
        assert "minifw needs root (CAP_NET_ADMIN)" in line, argv
        assert out == ""
    assert not (tmp_path / "state").exists()


def test_without_privilege_check_and_explain_of_a_file_still_work(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(clicommon, "privileged", lambda: False)
    path = tmp_path / "c.toml"
    path.write_text('[[rule]]\nid = "a"\nproto = "icmp"\naction = "drop"\n')
    assert run_cli(capsys, "check", "--config", str(path))[0] == 0
    code, out, _ = run_cli(capsys, "explain", "--config", str(path), "--proto", "icmp",
                           "--src", "198.18.0.2", "--dst", "198.18.0.1")
    assert code == 0 and out


# ---- the guard: the last net ------------------------------------------------------------------

@pytest.mark.parametrize("exc,expect", [
    (StateError("the set record x is damaged"), "error: the set record x is damaged"),
    # each edge maps its foreign errors: one that escapes is a bug, and says so
    (IsADirectoryError(21, "Is a directory", "/var/lib/minifw/lock"),
     "internal error (IsADirectoryError: [Errno 21] Is a directory: '/var/lib/minifw/lock')"),
    (sqlite3.DatabaseError("file is not a database"),
     "internal error (DatabaseError: file is not a database); please report it"),
    (RecursionError("maximum recursion depth exceeded"), "internal error (RecursionError"),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     "internal error (UnicodeDecodeError"),
    (AttributeError("'list' object has no attribute 'get'"), "internal error"),
])
def test_the_guard_turns_escaped_errors_into_one_line(capsys, monkeypatch, exc, expect):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)

    @clicommon.guarded
    def command():
        raise exc
    with pytest.raises(SystemExit) as info:
        command()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expect in err


# ---- defect 9: lenient inputs -----------------------------------------------------------------

def _rule(**fields):
    return Rule.from_toml({"id": "r", "action": "drop", **fields})


def test_a_port_written_as_a_string_is_normalised_explicitly():
    rule = _rule(proto="tcp", sport="80", dport=["80-90", 443])
    assert rule.sport == (PortRange(80, 80),) and rule.to_toml()["sport"] == 80
    assert rule.dport == (PortRange(80, 90), PortRange(443, 443))


@pytest.mark.parametrize("bad", [" 80", "80 ", "80 - 90", "٨٠", "+80", "0x50", "80.0", "",
                                 "000080", "65536", "1-65536"])
def test_ports_with_spaces_or_odd_digits_are_refused(bad):
    with pytest.raises(RuleError) as info:
        _rule(proto="tcp", sport=bad)
    assert info.value.field == "sport"


def test_port_boundaries():
    assert _rule(proto="udp", dport=65535).dport == (PortRange(65535, 65535),)
    assert _rule(proto="udp", dport="0-65535").dport == (PortRange(0, 65535),)
    for bad in (65536, -1):
        with pytest.raises(RuleError):
            _rule(proto="udp", dport=bad)


@pytest.mark.parametrize("bad", [" 198.18.0.1", "198.18.0.1 ", "\t198.18.0.0/24", "fd00::1\n",
                                 "fe80::1%eth0"])
def test_addresses_with_surrounding_spaces_are_refused(bad):
    with pytest.raises(RuleError) as info:
        _rule(src=bad)
    assert info.value.field == "src"
    with pytest.raises(RuleError) as info:
        SetDef.from_toml({"name": "s", "elements": [bad]})
    assert info.value.field == "elements"


def test_addresses_without_spaces_are_taken():
    assert str(_rule(src="198.18.0.1").src[0]) == "198.18.0.1/32"
    assert SetDef.from_toml({"name": "s", "elements": ["198.18.0.0/24"]}).elements == (
        "198.18.0.0/24",)


def test_priority_boundaries():
    assert _rule(priority=-2**31).priority == -2**31
    assert _rule(priority=999).priority == 999
    for bad in (-2**31 - 1, 1000, -2**63, 2**64):
        with pytest.raises(RuleError) as info:
            _rule(priority=bad)
        assert info.value.field == "priority"
    with pytest.raises(RuleError, match="-2147483648 and 999"):
        _rule(priority=-2**31 - 1)


# ---- defect 9: large port lists ---------------------------------------------------------------

from minifw.compile.nft import PORT_INTERVAL_AT, build_rule_bodies, merge_ports  # noqa: E402


def _dport_right(rule):
    body = build_rule_bodies(rule, drop_policy=False)[0]
    return next(e["match"]["right"] for e in body
                if "match" in e and e["match"]["left"].get("payload", {}).get("field") == "dport")


def test_every_port_compiles_into_one_interval():
    rule = _rule(proto="tcp", dport=list(range(1, 65536)))
    assert _dport_right(rule) == {"range": [1, 65535]}


def test_adjacent_and_overlapping_ports_merge_but_gaps_stay():
    P = PortRange
    assert merge_ports([P(5, 5), P(1, 3), P(4, 4), P(10, 20), P(15, 25)]) == [P(1, 5), P(10, 25)]
    assert merge_ports([P(1, 1), P(3, 3)]) == [P(1, 1), P(3, 3)]      # a gap of one port stays
    assert merge_ports([P(1, 2), P(3, 3)]) == [P(1, 3)]               # adjacent: merged
    assert merge_ports([P(0, 65535), P(80, 80)]) == [P(0, 65535)]
    rule = _rule(proto="udp", dport=[53, 54, 55, 100, "200-300", 301])
    assert _dport_right(rule) == {"set": [{"range": [53, 55]}, 100, {"range": [200, 301]}]}


def test_a_long_list_of_single_ports_is_an_interval_set():
    """Below PORT_INTERVAL_AT elements a list is written as is; from it on, as ranges only."""
    short = [2 * i for i in range(1, PORT_INTERVAL_AT)]           # PORT_INTERVAL_AT - 1 ports
    assert _dport_right(_rule(proto="tcp", dport=short)) == {"set": short}
    long = short + [2 * PORT_INTERVAL_AT]
    assert _dport_right(_rule(proto="tcp", dport=long)) == {
        "set": [{"range": [p, p]} for p in long]}
