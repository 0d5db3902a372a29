"""The console script's fast path (cli/entry.py) against the click CLI (cli/main.py).

The same argv, valid and invalid, goes through both, each with its own state directory and
fake kernel (minifw up on it, or down); stdout, stderr, the exit status and the fake kernel's
table must be the same (state paths aside). tests/kernel/test_cli_entry_live.py does the same with
the real kernel, in a namespace."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from minifw.app.rules import Service
from minifw.cli import common as clicommon
from minifw.cli import entry
from minifw.cli import main as clickmain
from minifw.engine.guard import Connection
from minifw.kernel import seam
from minifw.kernel.fake import FakeKernel

from fakekit import CONFIG

ROOT = Path(__file__).resolve().parents[2]

# One session: each step sees the state the earlier ones left (bans, a set, a default timeout).
SESSION = [
    ["ban", "198.18.0.1"],
    ["ban", "198.18.0.1", "--json"],          # a re-ban
    ["ban", "198.18.0.2", "198.18.0.2", "fd00::2", "--json"],
    ["ban"],                                  # missing address: click's usage error
    ["ban", "--json"],
    ["ban", "nope"],                          # bad address
    ["ban", "198.18.0.3", "nope"],
    ["ban", "198.18.0.4", "--timeout", "5x"],  # bad --timeout
    ["ban", "198.18.0.4", "--timeout", "0s"],
    ["ban", "198.18.0.4", "--timeout", "1h"],
    ["ban", "--timeout=10m", "198.18.0.5", "--set=blocked"],
    ["ban", "198.18.0.6", "--timeout"],        # no value
    ["ban", "198.18.0.6", "--timeout", "--json"],
    ["ban", "--timeout", "1h", "--timeout", "2h", "198.18.0.6"],  # repeated
    ["ban", "--bogus", "198.18.0.7"],          # unknown option
    ["ban", "-x", "198.18.0.7"],
    ["ban", "--json=yes", "198.18.0.7"],
    ["ban", "--jso", "198.18.0.7"],
    ["ban", "--help"],
    ["ban", "198.18.0.7", "-h"],
    ["ban", "--", "--help"],
    ["ban", "--", "198.18.0.8"],
    ["ban", "-", "198.18.0.8"],
    ["ban", "--set", "web", "198.18.1.1", "--json"],
    ["ban", "--set", "bad name", "198.18.1.1"],
    ["ban", "--set=", "198.18.1.1"],
    ["ban", "198.18.2.0/24"],
    ["ban", "198.18.2.0/25"],                  # overlaps the /24
    ["ban", "::ffff:198.18.0.9"],              # a warning on stderr
    ["ban", "198.18.0.10\x1b[31m"],            # one line, escaped
    ["ban", "-5"],
    # the lockout guard: the admin's session comes from 198.18.0.50 (see _instance)
    ["ban", "198.18.0.50"],                    # refused: one line, nothing changed
    ["ban", "198.18.0.48/30", "--json"],
    ["ban", "198.18.0.50", "--force"],          # applied, with a warning
    ["ban", "198.18.0.51", "--force", "--force"],  # repeated: click's to judge
    ["ban", "--force=yes", "198.18.0.51"],
    ["ban", "198.18.0.51", "--guard", "198.18.0.51:22"],  # --guard: handed to click
    ["ban", "198.18.0.52", "--guard", "198.18.0.51:22", "--guard=198.18.0.53:2222"],
    ["ban", "198.18.0.52", "--guard", "bad"],
    ["unban", "198.18.0.50", "--force"],
    ["unban", "198.18.0.1"],
    ["unban", "198.18.0.1", "198.18.9.9", "--json"],
    ["unban", "198.18.2.1"],                   # covered by a CIDR
    ["unban"],
    ["unban", "--timeout", "1h", "198.18.0.2"],  # not an unban option
    ["unban", "--set", "web", "198.18.1.1"],
    ["unban", "--help"],
    ["unban", "bad"],
    ["--help"],
    ["--version"],
    ["bann", "198.18.0.1"],
    [],
]


ADMIN = Connection(ipaddress.ip_address("198.18.0.50"), 40000,
                   ipaddress.ip_address("198.18.0.1"), 22, "sshd")


@pytest.fixture(autouse=True)
def privileged(monkeypatch, no_real_kernel):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)


def _instance(tmp_path: Path, name: str, up: bool) -> tuple[Path, FakeKernel]:
    """A state directory and its fake kernel, minifw up on it (from fakekit's CONFIG) or not."""
    kernel = FakeKernel()
    kernel.sessions = [ADMIN]
    state = tmp_path / name
    if up:
        config = tmp_path / f"{name}.toml"
        config.write_text(CONFIG)
        Service(state, kernel).up(str(config))
    return state, kernel


def _call(run, argv, capsys, state: Path, how: str, kernel: FakeKernel | None = None):
    """Run one argv as the console script would: exit status, stdout, stderr."""
    if how == "flag":
        argv = ["--state-dir", str(state), *argv]
    elif how == "flag=":
        argv = [f"--state-dir={state}", *argv]
    else:
        os.environ["MINIFW_STATE_DIR"] = str(state)
    try:
        with seam.use(kernel or FakeKernel()):
            code = run(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, _plain(out, state), _plain(err, state)


def _plain(text: str, state: Path) -> str:
    """The output without what differs by nature: the state path and the measured apply time."""
    return re.sub(r'"apply_ms": [0-9.e-]+', '"apply_ms": 0', text.replace(str(state), "STATE"))


@pytest.mark.parametrize("how,up", [("env", True), ("flag", True), ("flag=", True),
                                    ("env", False)])
def test_both_paths_print_and_exit_alike(capsys, monkeypatch, tmp_path, how, up):
    monkeypatch.setenv("MINIFW_STATE_DIR", "")  # restored after the test
    fast_dir, fast_kernel = _instance(tmp_path, "fast", up)
    click_dir, click_kernel = _instance(tmp_path, "click", up)
    for argv in SESSION:
        fast = _call(entry.run, argv, capsys, fast_dir, how, fast_kernel)
        slow = _call(clickmain.run, argv, capsys, click_dir, how, click_kernel)
        assert fast == slow, argv
        code, out, err = fast
        if code != 0:  # every failure: one line on stderr
            assert len(err.splitlines()) == 1 and err.startswith("error: "), (argv, err)
        assert fast_kernel.tables == click_kernel.tables, argv
        if up and argv in (["ban", "198.18.0.50"], ["ban", "198.18.0.48/30", "--json"]):
            assert code == 1 and "this change would cut 198.18.0.50:40000" in err, (argv, err)
        if up and argv == ["ban", "198.18.0.50", "--force"]:
            assert code == 0 and err.startswith("warning: --force: this change would cut")
    # and the two records ended up alike
    argv = ["unban", "198.18.0.2", "fd00::2", "--json"]
    fast = _call(entry.run, argv, capsys, fast_dir, how, fast_kernel)
    assert fast == _call(clickmain.run, argv, capsys, click_dir, how, click_kernel)
    assert json.loads(fast[1])["unbanned"] == ["198.18.0.2", "fd00::2"]
    if up:  # the bans reached the (fake) kernel
        assert "198.18.0.5" in repr(fast_kernel.tables)


def test_usage_errors_keep_clicks_status_and_hint(capsys, tmp_path):
    code, out, err = _call(entry.run, ["ban"], capsys, tmp_path / "s", "flag")
    assert (code, out) == (2, "")
    assert err == "error: Missing argument 'ADDR|CIDR...'. (see 'minifw ban --help')\n"


def test_without_privilege_both_paths_say_so_before_touching_state(capsys, monkeypatch,
                                                                    tmp_path):
    monkeypatch.setattr(clicommon, "privileged", lambda: False)
    for argv in (["ban", "198.18.0.1"], ["unban", "198.18.0.1", "--json"], ["ban", "nope"]):
        fast = _call(entry.run, argv, capsys, tmp_path / "s", "flag")
        assert fast == _call(clickmain.run, argv, capsys, tmp_path / "s", "flag")
        assert fast[0] == 1 and "minifw needs root (CAP_NET_ADMIN)" in fast[2]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("argv,fast", [
    (["ban", "198.18.0.1"], True),
    (["--state-dir", "/x", "unban", "fd00::1", "--set", "s", "--json"], True),
    (["ban", "--timeout=1h", "198.18.0.1"], True),
    (["ban"], False), (["ban", "--help"], False), (["ban", "-h", "1.2.3.4"], False),
    (["ban", "--timeout"], False), (["unban", "--timeout", "1h", "1.2.3.4"], False),
    (["--state-dir", "--json", "ban", "1.2.3.4"], False), (["--version"], False),
    (["status"], False), (["set", "list", "blocked"], False), ([], False),
])
def test_what_the_fast_path_takes(argv, fast):
    assert (entry.parse(argv) is not None) is fast


def test_the_console_script_is_the_fast_entry():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'minifw = "minifw.cli.entry:main"' in text


# A process of either path, on a fake kernel (minifw down) and with privilege.
PROCESS = ("import sys\n"
           "from minifw.kernel import seam\n"
           "from minifw.kernel.fake import FakeKernel\n"
           "seam._chosen.append(FakeKernel())\n"
           "from minifw.cli import common\n"
           "common.privileged = lambda: True\n"
           "from minifw.cli.{} import main\n"
           "sys.argv[0] = 'minifw'\n"
           "main()\n")


def test_whole_processes_of_both_paths_agree_and_leave_the_same_files(tmp_path):
    """The fast path's main() leaves without the interpreter's teardown: its output, its exit
    status and the files of its state directory must still be the click path's."""
    dirs = {how: tmp_path / how for how in ("entry", "main")}
    for argv in (["ban", "198.18.0.1", "fd00::1", "--json"], ["ban", "198.18.0.1"],
                 ["ban", "nope"], ["ban"], ["ban", "198.18.0.2", "--timeout", "1h"],
                 ["unban", "198.18.0.1", "198.18.0.9"], ["unban", "--json", "fd00::1"]):
        seen = []
        for how, state in dirs.items():
            proc = subprocess.run([sys.executable, "-c", PROCESS.format(how), "--state-dir",
                                   str(state), *argv], capture_output=True, text=True,
                                  timeout=60)
            seen.append((proc.returncode, _plain(proc.stdout, state), _plain(proc.stderr, state)))
        assert seen[0] == seen[1], argv
        listing = {how: sorted(p.relative_to(state).as_posix() for p in state.rglob("*"))
                   for how, state in dirs.items()}
        assert listing["entry"] == listing["main"] and "sets.db" in listing["entry"], argv


def test_a_ban_imports_neither_click_nor_tomlkit(tmp_path):
    """What the fast path is for: checked in a fresh interpreter (minifw down, a fake kernel
    as above, so the machine's own namespace is never asked). Nor pathlib (it brings
    urllib.parse and fnmatch), subprocess or sqlite3's Python part (datetime): each costs the
    start-up of every ban. The fake
    kernel itself loads typing: tests/kernel/test_cli_entry_live.py checks that one too, with the
    real kernel."""
    code = (
        "import sys\n"
        "from minifw.kernel import seam\n"
        "from minifw.kernel.fake import FakeKernel\n"
        "seam._chosen.append(FakeKernel())\n"
        "from minifw.cli import common\n"
        "common.privileged = lambda: True\n"
        "from minifw.cli import entry\n"
        "code = entry.run(['--state-dir', sys.argv[1], 'ban', '198.18.0.1', '--json'])\n"
        "heavy = sorted(m for m in ('click', 'tomlkit', 'minifw.hooks', 'minifw.runners',\n"
        "                           'minifw.cli.main', 'minifw.app.rules', 'minifw.engine',\n"
        "                           'pathlib', 'subprocess', 'sqlite3', 'datetime')\n"
        "               if m in sys.modules)\n"
        "print(code, heavy, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=60)
    assert proc.stderr.strip().splitlines()[-1] == "0 []", proc.stderr
    assert json.loads(proc.stdout)["banned"] == ["198.18.0.1"]
