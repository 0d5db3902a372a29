"""Every CLI command against broken state: one `error:` line and a non-zero exit, or success;
never a traceback, never an "internal error" (a foreign error that no edge mapped).

The commands come from a walk of the click tree, so a new command is covered as soon as it
exists (and fails here until ARGUMENTS gives its parameters a value). The kernel is the fake
(``seam.use``); the real kernel's edge has its own test in tests/kernel/test_broken_state_live.py.
"""

from __future__ import annotations

import copy
import gc
import shutil
from pathlib import Path

import click
import pytest

from minifw.app.rules import Service
from minifw.app.sets import SetService
from minifw.cli import common as clicommon
from minifw.cli.main import cli, run
from minifw.kernel import seam
from minifw.kernel.fake import FakeKernel

from fakekit import CONFIG, no_real_kernel  # noqa: F401  (fixture)

# A value for each parameter a command requires, by parameter name.
ARGUMENTS = {
    "elements": ["198.18.5.6"],
    "rule_id": ["ping"],
    "name": ["blocked"],
    "file": ["{import_file}"],
    "action": ["--action", "drop"],
    "kind": ["--kind", "masquerade"],   # nat add
    "nat_id": ["masq"],                 # nat delete
}
# ... or by command and parameter name.
ARGUMENTS_OF = {
    ("run", "file"): ["{missing}"],  # a hook file that is not there: serving is not for here
    ("set", "target"): ["{missing}:BLOCKED"],   # hook set
    ("set", "op"): ["add"],
    ("set", "addrs"): ["198.18.5.6"],
}
# Extra arguments that take a command past its argument checks, to the state and the kernel;
# several lists: the command runs once with each.
EXTRA = {
    "up": [["--config", "{config}"]],
    "daemon": [["--config", "{missing}"]],  # a config that is not there: serving is not for here
    "reload": [[], ["--config", "{config}"]],
    "check": [["--config", "{config}"]],
    "add": [["--id", "web", "--proto", "tcp", "--dport", "80"],
            ["--id", "web", "--proto", "tcp", "--dport", "80", "--runtime"]],
    "delete": [[], ["--runtime"]],
    "explain": [["--proto", "icmp", "--src", "198.18.0.2", "--dst", "198.18.0.1"],
                ["--config", "{config}", "--proto", "icmp", "--src", "198.18.0.2",
                 "--dst", "198.18.0.1"]],
    "status": [[], ["--json"]],
    "ban": [[], ["--timeout", "1h", "--set", "other"]],
    "top": [["--once", "--json", "--interval", "0.1"]],  # without --once it runs until ^C
}


def commands(group: click.Group = cli, path: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, path + (name,))
        else:
            yield path + (name,), command


def argvs(path: tuple[str, ...], command: click.Command) -> list[list[str]]:
    options: list[str] = []
    values: list[str] = []
    for param in command.params:
        if not param.required:
            continue
        given = ARGUMENTS_OF.get((path[-1], param.name), ARGUMENTS.get(param.name))
        assert given is not None, (
            f"'minifw {' '.join(path)}' requires {param.name}: give it a value in ARGUMENTS")
        (options if isinstance(param, click.Option) else values).extend(given)
    return [[*path, *options, *extra, *values] for extra in EXTRA.get(path[-1], [[]])]


# ---- broken states: each takes a healthy, loaded instance and damages it ------------------------

def _replace_by_dir(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.mkdir()


def _garble_pages(db: Path) -> None:
    """Keep sets.db's 100-byte header (it passes the header check) and garble every page after
    the first: SQLite fails on the first query, not on opening."""
    data = bytearray(db.read_bytes())
    for i in range(4096, len(data)):
        data[i] = (i * 7 + 13) & 0xFF
    db.write_bytes(bytes(data))


DAMAGES = {
    "state dir is a file": lambda d: (shutil.rmtree(d), d.write_text("not a directory\n")),
    "state.json is a directory": lambda d: _replace_by_dir(d / "state.json"),
    "state.json is garbage": lambda d: (d / "state.json").write_bytes(b"\x00\xff garbage {"),
    "state.json is JSON of the wrong shape": lambda d: (d / "state.json").write_text("[1, 2]"),
    "state.json is nested too deeply": lambda d: (d / "state.json").write_text(
        "[" * 200_000 + "]" * 200_000),
    "intent.json is garbage": lambda d: (d / "intent.json").write_bytes(b"\xff\xfe{op"),
    "intent.json is a directory": lambda d: _replace_by_dir(d / "intent.json"),
    "intent.json is nested too deeply": lambda d: (d / "intent.json").write_text(
        '{"op": "load", "state": ' + "[" * 200_000 + "]" * 200_000 + "}"),
    "sets.db is garbage": lambda d: (d / "sets.db").write_bytes(b"garbage" * 1000),
    "sets.db is cut short": lambda d: (d / "sets.db").write_bytes(
        (d / "sets.db").read_bytes()[:5000]),
    "sets.db has garbled pages": lambda d: _garble_pages(d / "sets.db"),
    "sets.db is a directory": lambda d: (_replace_by_dir(d / "sets.db")),
    "sets.db is missing": lambda d: (d / "sets.db").unlink(),
    "sets.journal is garbage": lambda d: (d / "sets.journal").write_bytes(b"\x00" * 77),
    "sets.journal is a directory": lambda d: _replace_by_dir(d / "sets.journal"),
    "lock is a directory": lambda d: _replace_by_dir(d / "lock"),
    "hooks is a file": lambda d: (shutil.rmtree(d / "hooks", ignore_errors=True),
                                  (d / "hooks").write_text("not a directory\n")),
    "the loaded config is gone": lambda d: (d.parent / "minifw.toml").unlink(),
    "the loaded config is a directory": lambda d: _replace_by_dir(d.parent / "minifw.toml"),
}
# Breakages no command that uses the state directory can get past.
FATAL = {"state dir is a file"}  # (readers take no lock: a broken lock stops writers only)
PURE = {"check", "explain --config"}
# Escapes this test found in files outside the edges it covers, each to be mapped where it
# arises; the test fails as soon as one no longer happens, so that it is taken off this list.
KNOWN: dict[tuple[str, str], str] = {}


@pytest.fixture
def privileged(monkeypatch):
    monkeypatch.setattr(clicommon, "privileged", lambda: True)


def healthy(tmp_path: Path, kernel: FakeKernel) -> Path:
    config = tmp_path / "minifw.toml"
    config.write_text(CONFIG)
    state_dir = tmp_path / "state"
    Service(state_dir, kernel).up(str(config))
    SetService(state_dir, kernel).ban(["198.18.5.5"], None)
    return state_dir


@pytest.fixture
def instance(tmp_path, no_real_kernel):
    """A fresh copy of one healthy, loaded instance (files and fake kernel) on each call."""
    template = tmp_path / "template"
    template.mkdir()
    kernel = FakeKernel()
    state_dir = healthy(template, kernel)
    # the set record's connections close when collected, and SQLite then removes sets.db-wal
    # and -shm: a collection in the middle of a copy below would make it miss them
    gc.collect()

    def fresh() -> tuple[Path, FakeKernel]:
        for name in ("state", "minifw.toml"):
            p = tmp_path / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        shutil.copytree(state_dir, tmp_path / "state")
        shutil.copy(template / "minifw.toml", tmp_path / "minifw.toml")
        return tmp_path / "state", copy.deepcopy(kernel)
    return fresh


def run_cli(capsys, argv):
    try:
        code = run(argv)
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_every_command_is_given_arguments():
    walked = [path for path, _ in commands()]
    assert {p[-1] for p in walked} >= {"up", "down", "ban", "import", "explain"}
    for path, command in commands():
        assert argvs(path, command)


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_every_command_with_broken_state_says_one_line(damage, tmp_path, capsys, monkeypatch,
                                                       instance, privileged):
    import_file = tmp_path / "import.txt"
    import_file.write_text("198.18.7.1\n198.18.8.0/24\n")
    values = {"config": str(tmp_path / "minifw.toml"), "import_file": str(import_file),
              "missing": str(tmp_path / "no-such-hooks.py")}
    problems = []
    refused = 0
    for path, command in commands():
        for argv in argvs(path, command):
            argv = [a.format(**values) for a in argv]
            state_dir, kernel = instance()
            DAMAGES[damage](state_dir)
            monkeypatch.setenv("MINIFW_STATE_DIR", str(state_dir))
            with seam.use(kernel):
                code, out, err = run_cli(capsys, argv)
            lines = [line for line in err.splitlines() if not line.startswith("warning: ")]
            label = f"minifw {' '.join(argv)}: {code} {err.strip()!r}"
            known = KNOWN.get((path[-1], damage))
            if known is not None:
                refused += 1
                if "internal error" not in err:
                    problems.append(f"{label} (fixed: take it off KNOWN)")
            elif "Traceback" in err or "internal error" in err:
                problems.append(label)
            elif code == 2:
                problems.append(f"{label} (a usage error: the test gives it wrong arguments)")
            elif code not in (0, None):
                refused += 1
                if len(lines) != 1 or not lines[0].startswith("error: "):
                    problems.append(label)
            elif lines and not lines[0].startswith("minifw: "):
                problems.append(label)
            pure = " ".join(path) in PURE or "--config" in argv and path == ("explain",)
            if damage in FATAL and not pure and path != ("check",) and code in (0, None):
                problems.append(f"{label} (succeeded on a state directory it cannot use)")
    assert not problems, "\n".join(problems)
    assert refused, f"no command noticed the damage '{damage}'"
