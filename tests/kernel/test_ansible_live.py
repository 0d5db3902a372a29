"""The Ansible collection (ansible/) over real SSH: a controller namespace and three host
namespaces, each running its own sshd (config, host key and authorized key made here; SetEnv
gives each its own MINIFW_STATE_DIR and the venv's minifw on PATH). ansible-playbook applies a
config (changed, then unchanged), shows a one-rule change in --check --diff without applying
it, fails with minifw's own line on a broken config and on a ban the lockout guard refuses,
and adds then removes bans, each checked with traffic and `nft -j` in the namespaces."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from minifw.lab import MINIFW

from kit import probe, ruleset_text, serve

# four playbook runs: ~45 s on an idle machine, 150 s at a load of 10 on two cores
pytestmark = pytest.mark.timeout(280)

SSHD = "/usr/sbin/sshd"
REPO = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = Path(sys.executable).with_name("ansible-playbook")
HOSTS = ("h1", "h2", "h3")

CONFIG_A = """\
[policy]
input = "drop"

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "accept"
"""
CONFIG_B = CONFIG_A.replace("dport = 80", "dport = 8080")   # one rule changes
BROKEN = CONFIG_A.replace('action = "accept"\n', 'action = "acept"\n', 1)
BANS = ["198.18.40.9", "198.18.41.0/24", "fd00:40::9"]


def addr(i: int, end: int) -> str:
    return f"198.18.{50 + i}.{end}"


@pytest.fixture
def fleet(lab, tmp_path):
    """ctl linked to h1..h3; sshd in each host; the inventory and ansible's environment."""
    if not Path(SSHD).exists() or not shutil.which("ssh"):
        pytest.fail("openssh-server and openssh-client are needed (make install adds them)")
    if not PLAYBOOK_BIN.exists():
        pytest.fail("ansible-playbook is missing: ansible-core is in the [test] extra "
                    "(make install)")
    tmp_path.chmod(0o755)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")],
                   check=True, capture_output=True, timeout=30)
    ctl = lab.host("ctl")
    hosts = {}
    path = f"{Path(MINIFW).parent}:/usr/sbin:/usr/bin:/sbin:/bin"
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation dir
    for i, name in enumerate(HOSTS, start=1):
        host = lab.host(name)
        lab.link(ctl, [f"{addr(i, 1)}/24"], host, [f"{addr(i, 2)}/24"])
        home = tmp_path / name
        home.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(home / "hostkey")], check=True, capture_output=True, timeout=30)
        (home / "authorized_keys").write_text((tmp_path / "key.pub").read_text())
        (home / "sshd_config").write_text(f"""\
Port 22
ListenAddress {addr(i, 2)}
HostKey {home}/hostkey
AuthorizedKeysFile {home}/authorized_keys
PidFile none
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
SetEnv MINIFW_STATE_DIR={host.state_dir} PATH={path}
""")
        host.popen([SSHD, "-D", "-e", "-f", str(home / "sshd_config")])  # killed by the lab
        host.wait_listening(22)
        serve(host, tcp=[80, 8080])
        hosts[name] = host
    inventory = tmp_path / "inventory.ini"
    inventory.write_text("[fw]\n" + "".join(
        f"{name} ansible_host={addr(i, 2)} cfg={tmp_path / name / 'minifw.toml'} "
        f"ctl_addr={addr(i, 1)}\n" for i, name in enumerate(HOSTS, start=1))
        + "\n[fw:vars]\nansible_user=root\nansible_python_interpreter=/usr/bin/python3\n")
    collections = tmp_path / "collections" / "ansible_collections" / "minifw"
    collections.mkdir(parents=True)
    (collections / "minifw").symlink_to(REPO / "ansible")
    env = {
        "LC_ALL": "C.UTF-8", "ANSIBLE_CONFIG": str(tmp_path / "none.cfg"),
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"),
        "ANSIBLE_INVENTORY": str(inventory), "ANSIBLE_FORKS": "3",
        "ANSIBLE_PRIVATE_KEY_FILE": str(tmp_path / "key"),
        "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True",
        # no ControlPersist: no ssh master outlives the run
        "ANSIBLE_SSH_ARGS": "-F /dev/null -o ControlMaster=no -o UserKnownHostsFile=/dev/null "
                            "-o IdentitiesOnly=yes -o ConnectTimeout=10",
        "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
    }
    return ctl, hosts, tmp_path, env


def play(fleet, name: str, tasks: str, *args: str) -> subprocess.CompletedProcess:
    ctl, _, tmp, env = fleet
    book = tmp / f"{name}.yml"
    book.write_text("- hosts: fw\n  gather_facts: false\n  tasks:\n" + tasks)
    return ctl.run([str(PLAYBOOK_BIN), str(book), *args], check=False, timeout=150, env=env)


def recap(out: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP: host -> {ok, changed, failed, ignored, ...}."""
    found = {}
    for line in out.splitlines():
        m = re.match(r"^(h\d)\s+:\s+(.*)$", line)
        if m:
            found[m[1]] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m[2])}
    assert set(found) == set(HOSTS), out
    return found


def failures(out: str) -> dict[str, list[dict]]:
    """The results of failed tasks, by host (the default callback prints them as JSON)."""
    found: dict[str, list[dict]] = {}
    decoder = json.JSONDecoder()
    for m in re.finditer(r"^fatal: \[(h\d)\]: FAILED! => ", out, re.M):
        found.setdefault(m[1], []).append(decoder.raw_decode(out, m.end())[0])
    return found


def live_rules(host) -> list[str]:
    """minifw's rules in the kernel, counters left out (traffic moves them)."""
    data = json.loads(ruleset_text(host))["nftables"]
    return [json.dumps([e for e in o["rule"]["expr"] if "counter" not in e])
            + o["rule"]["chain"] + o["rule"].get("comment", "")
            for o in data if "rule" in o and o["rule"]["table"] == "minifw"]


def ban_elements(host) -> list[str]:
    out = host.run([MINIFW, "set", "list", "blocked", "--json"]).stdout
    return sorted(i["element"] for i in json.loads(out)["items"])


# safe apply: the change rolls back unless a later task (a new SSH connection) confirms it; a
# ban waits for that (minifw refuses one while a change is pending)
APPLY = """\
    - minifw.minifw.minifw:
        config: "{{ lookup('file', playbook_dir + '/wanted.toml') }}"
        path: "{{ cfg }}"
        confirm: 60
    - minifw.minifw.minifw:
        state: confirmed
    - minifw.minifw.minifw:
        bans: %s
""" % json.dumps(BANS)


def test_a_playbook_over_ssh_applies_diffs_refuses_and_bans(fleet):
    ctl, hosts, tmp, _ = fleet
    (tmp / "wanted.toml").write_text(CONFIG_A)

    first = play(fleet, "apply", APPLY)
    assert first.returncode == 0, first.stdout + first.stderr
    assert all(r["changed"] == 3 and r["failed"] == 0 for r in recap(first.stdout).values())
    for i, name in enumerate(HOSTS, start=1):
        host = hosts[name]
        assert (tmp / name / "minifw.toml").read_text() == CONFIG_A
        assert (host.state_dir / "state.json").exists()   # SetEnv: each host's own state
        assert probe(ctl, "tcp", addr(i, 2), 80, expect="open") == "open"
        assert probe(ctl, "tcp", addr(i, 2), 8080, expect="timeout") == "timeout"
        assert ban_elements(host) == sorted(BANS)
        assert json.loads(host.minifw("status", "--json").stdout)["pending"] is None

    second = play(fleet, "apply", APPLY)
    assert second.returncode == 0, second.stdout + second.stderr
    assert all(r["changed"] == 0 and r["ok"] == 3 for r in recap(second.stdout).values())

    before = {name: live_rules(h) for name, h in hosts.items()}
    (tmp / "wanted.toml").write_text(CONFIG_B)
    (tmp / "broken.toml").write_text(BROKEN)
    third = play(fleet, "rest", """\
    - name: a one-rule change, only shown
      minifw.minifw.minifw:
        config: "{{ lookup('file', playbook_dir + '/wanted.toml') }}"
        path: "{{ cfg }}"
      check_mode: true
      diff: true
      register: shown
    - assert:
        that: "shown.changed and shown.rules.changed == ['web'] and shown.rules.added == []
               and shown.rules.removed == [] and shown.rules.sections == []"
    - name: a broken config
      minifw.minifw.minifw:
        config: "{{ lookup('file', playbook_dir + '/broken.toml') }}"
        path: "{{ cfg }}"
      ignore_errors: true
    - name: a ban that would cut the controller's session
      minifw.minifw.minifw:
        bans: ["{{ ctl_addr }}"]
      ignore_errors: true
    - name: the bans removed
      minifw.minifw.minifw:
        bans: %s
        bans_state: absent
""" % json.dumps(BANS))
    assert third.returncode == 0, third.stdout + third.stderr
    for stats in recap(third.stdout).values():
        assert (stats["changed"], stats["ignored"], stats["failed"]) == (2, 2, 0), third.stdout
    assert third.stdout.count("-rule web: proto=tcp dport=80 action=accept") == 3, third.stdout
    assert third.stdout.count("+rule web: proto=tcp dport=8080 action=accept") == 3
    assert "rule ssh" not in third.stdout          # only the rule that changes is shown
    failed = failures(third.stdout)
    for i, name in enumerate(HOSTS, start=1):
        host = hosts[name]
        broken, cut = failed[name]
        cfg = tmp / name / "minifw.toml"
        assert broken["msg"].startswith(f"error: {cfg}:") and "acept" in broken["msg"], broken
        assert "\n" not in broken["msg"]
        assert cut["msg"].startswith(f"error: this change would cut {addr(i, 1)}:"), cut
        assert cut["msg"].endswith("use --force to apply anyway")
        # neither the check run nor the refusals changed the host: the kernel's ruleset, the
        # config file, the traffic
        assert cfg.read_text() == CONFIG_A
        assert before[name] and live_rules(host) == before[name]
        assert probe(ctl, "tcp", addr(i, 2), 80, expect="open") == "open"
        assert ban_elements(host) == []

    down = play(fleet, "down", "    - minifw.minifw.minifw:\n        state: absent\n")
    assert down.returncode == 0, down.stdout + down.stderr
    assert all(r["changed"] == 1 for r in recap(down.stdout).values())
    for i, name in enumerate(HOSTS, start=1):
        assert live_rules(hosts[name]) == []
        assert probe(ctl, "tcp", addr(i, 2), 8080, expect="open") == "open"
