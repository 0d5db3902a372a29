"""The lockout guard applied, on real sessions: a real sshd in the server namespace and an ssh
session from the client namespace, minifw run under `env -i` (no SSH_CONNECTION, as after
Debian's sudo). A reload to a drop policy without an ssh rule, a ban of the client's address
and an `add` that drops it are each refused with one line, and the ruleset (`nft -j list
ruleset`), the config and the state are byte-identical; with --force each applies (with a
warning) and new connections fail. Then the same with only SSH_CONNECTION and a plain TCP
listener."""

from __future__ import annotations

import os

import pytest

from minifw.lab import MINIFW

from kit import CLIENT4, SERVER4, pair, ruleset_text, serve, write_config
import test_guard_conns
from test_guard_conns import established, plain_session, ssh_session

sshd = test_guard_conns.sshd  # the fixture

pytestmark = pytest.mark.timeout(90)

OPEN = '[[rule]]\nid = "web"\nproto = "tcp"\ndport = 80\naction = "accept"\n'
LOCKED = '[policy]\ninput = "drop"\n\n' + OPEN
# The runner's own SSH_CONNECTION (a test run over ssh) may be found from the ancestors too,
# and would then be named first: the exact line is asserted only where there is none.
EXACT = "SSH_CONNECTION" not in os.environ


def bare(host, *args: str, env: dict[str, str] | None = None):
    """minifw in ``host`` under `env -i` plus ``env``: no SSH_CONNECTION of its own."""
    assigns = [f"{k}={v}" for k, v in {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                        "MINIFW_STATE_DIR": str(host.state_dir),
                                        **(env or {})}.items()]
    return host.run(["env", "-i", *assigns, MINIFW, *args], check=False)


def frozen(host, config) -> tuple:
    """Everything a refused change must leave as it was."""
    files = {p.name: p.read_bytes() for p in sorted(host.state_dir.iterdir())
             if p.is_file() and p.name != "lock" and not p.name.startswith("sets.db")}
    return ruleset_text(host), config.read_bytes(), files


def refused(host, config, session: str, *args: str, env=None) -> None:
    before = frozen(host, config)
    out = bare(host, *args, env=env)
    assert out.returncode == 1 and out.stdout == "", out
    line = out.stderr.strip()
    assert "\n" not in line and line.startswith("error: this change would cut "), line
    assert line.endswith("; use --force to apply anyway"), line
    if EXACT:
        assert line.startswith(f"error: this change would cut {session}: "), line
    assert frozen(host, config) == before, f"{args} changed something"


def forced(host, *args: str, env=None) -> None:
    out = bare(host, *args, "--force", env=env)
    assert out.returncode == 0, out
    assert "warning: --force: this change would cut " in out.stderr, out


def lockout_cases(server, client, session: str, env=None) -> None:
    config = write_config(server.lab, OPEN, "guarded.toml")
    locked = write_config(server.lab, LOCKED, "locked.toml")
    out = bare(server, "up", "--config", str(config), env=env)
    assert out.returncode == 0, out
    assert client.tcp_result(SERVER4, 22) == "open"

    refused(server, config, session, "reload", "--config", str(locked), env=env)
    refused(server, config, session, "ban", CLIENT4, env=env)                # the fast path
    refused(server, config, session, "ban", "198.18.0.0/24", "--set", "blocked", "--json",
            env=env)
    refused(server, config, session, "add", "--id", "cut", "--src", CLIENT4, "--action",
            "drop", env=env)
    # what cuts no one passes
    assert bare(server, "ban", "198.18.0.77", env=env).returncode == 0
    assert bare(server, "add", "--id", "other", "--src", "198.18.0.77", "--action", "drop",
                env=env).returncode == 0

    forced(server, "ban", CLIENT4, env=env)
    assert client.tcp_result(SERVER4, 22) == "timeout"
    assert bare(server, "unban", CLIENT4, env=env).returncode == 0
    assert client.tcp_result(SERVER4, 22) == "open"

    forced(server, "add", "--id", "cut", "--src", CLIENT4, "--action", "drop", env=env)
    assert client.tcp_result(SERVER4, 22) == "timeout"
    assert bare(server, "delete", "cut", env=env).returncode == 0
    assert client.tcp_result(SERVER4, 22) == "open"

    forced(server, "reload", "--config", str(locked), env=env)
    assert client.tcp_result(SERVER4, 22) == "timeout"


def test_a_session_to_sshd_is_protected_without_ssh_connection(sshd):
    server, client, keys = sshd
    ssh_session(client, keys, SERVER4, keys / "ready")
    (end,) = established(client, SERVER4, 22)
    lockout_cases(server, client, f"{CLIENT4}:{end[1]} -> {SERVER4}:22 (ssh session found via "
                                  "sshd)")


def test_ssh_connection_alone_with_a_plain_listener(lab, tmp_path):
    server, client = pair(lab)
    serve(server, tcp=[22])                               # a plain TCP echo server, no sshd
    plain_session(client, tmp_path, 60)
    env = {"SSH_CONNECTION": f"{CLIENT4} 40022 {SERVER4} 22"}
    lockout_cases(server, client, f"{CLIENT4}:40022 -> {SERVER4}:22 (ssh session found via "
                                  "SSH_CONNECTION)", env)
