#!/usr/bin/python
"""The minifw module: a host's ruleset and bans, through the host's own minifw CLI."""

from __future__ import annotations

DOCUMENTATION = r"""
module: minifw
short_description: Load a minifw ruleset and manage bans on a host
description:
  - Runs the target's own C(minifw) command line (C(diff --json), C(up), C(ban), C(unban),
    C(set list --json), C(down), C(confirm)), so the host decides with its own version.
  - Idempotent. The wanted config is compared with the live ruleset rule by rule
    (C(minifw diff --json)); bans with C(minifw set list --json).
  - Check mode applies nothing; with C(--diff) it shows the rules that would be added, removed
    or changed, and the chains whose order would change.
  - A refusal (a broken config, the lockout guard, a pending change) fails the task with
    minifw's own one-line error as C(msg); the config file is left as it was.
options:
  config:
    description:
      - The config's TOML text. Mutually exclusive with O(src).
      - A final newline is added if missing (C(lookup('file')) strips it).
    type: str
  src:
    description:
      - A config file ON THE TARGET to install at O(path). For a file on the controller use
        O(config) with C(lookup('file', ...)) or C(lookup('template', ...)).
    type: path
  path:
    description: Where the config lives on the target; minifw loads it from there.
    type: path
    default: /etc/minifw/minifw.toml
  state:
    description:
      - V(present) loads the config at O(path) (written first from O(config) or O(src)).
      - V(absent) unloads minifw (C(minifw down)); the config file stays.
      - V(confirmed) keeps a change applied earlier with O(confirm) (C(minifw confirm)). Run it
        in a later task; reaching the host again over a new connection is the proof.
    type: str
    choices: [present, absent, confirmed]
    default: present
  confirm:
    description:
      - Seconds. The ruleset change is rolled back unless C(state=confirmed) (or
        C(minifw confirm)) runs within them. A ban is refused while a change waits, so give
        O(bans) in a task after the confirmation.
    type: int
  force:
    description: Apply a change the lockout guard refuses (it cuts a protected connection).
    type: bool
    default: false
  bans:
    description: Addresses or CIDRs (IPv4 or IPv6).
    type: list
    elements: str
  bans_state:
    description: Whether the O(bans) are in the set (V(present)) or not (V(absent)).
    type: str
    choices: [present, absent]
    default: present
  bans_set:
    description: The set the bans go to.
    type: str
    default: blocked
  state_dir:
    description: minifw's state directory; default C(MINIFW_STATE_DIR) of the target's
      environment, else C(/var/lib/minifw).
    type: path
  executable:
    description: The minifw command (a name looked up on PATH, or a path).
    type: str
    default: minifw
"""

EXAMPLES = r"""
- name: The firewall of the web servers
  minifw.minifw.minifw:
    config: "{{ lookup('template', 'minifw.toml.j2') }}"
    path: /etc/minifw/minifw.toml

- name: Keep bad actors out
  minifw.minifw.minifw:
    bans: [198.18.40.9, 198.18.41.0/24]
"""

RETURN = r"""
rules:
  description: The rule-level difference found (before applying).
  returned: when state=present
  type: dict
  contains:
    added: {description: ids of new rules, type: list}
    removed: {description: ids of rules that go, type: list}
    changed: {description: ids of rules whose fields change, type: list}
    moved: {description: chains (hook/priority) whose rule order changes, type: list}
    sections: {description: other parts that change (policy, set, nat, events), type: list}
banned:
  description: Elements added to O(bans_set).
  returned: always
  type: list
unbanned:
  description: Elements removed from O(bans_set).
  returned: always
  type: list
message:
  description: What minifw said it did.
  returned: changed
  type: str
"""

import ipaddress
import json
import os
import tempfile

from ansible.module_utils.basic import AnsibleModule


PAGE = 100000  # `minifw set list`'s largest page


class Refused(Exception):
    """minifw exited non-zero: its one-line error is the message."""


class Cli:
    def __init__(self, module):
        self.module = module
        exe = module.params["executable"]
        self.exe = exe if os.path.sep in exe else module.get_bin_path(exe, required=True)
        state_dir = module.params["state_dir"]
        self.env = {"MINIFW_STATE_DIR": state_dir} if state_dir else {}

    def run(self, *args, ok_json=False):
        rc, out, err = self.module.run_command([self.exe, *args], environ_update=self.env)
        if rc != 0 and not (ok_json and out.strip()):
            lines = [line for line in (err or out).splitlines() if line.strip()]
            raise Refused(lines[-1] if lines else f"minifw {args[0]} exited {rc}")
        return out

    def json(self, *args, ok_json=False):
        out = self.run(*args, "--json", ok_json=ok_json)
        try:
            return json.loads(out)
        except ValueError:
            raise Refused(f"minifw {' '.join(args)} --json printed no JSON") from None


def _element(text):
    """One canonical text per address or network (fd00::0:9 is fd00::9)."""
    net = ipaddress.ip_network(text, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _rule_line(rid, rule):
    fields = " ".join(f"{k}={v}" for k, v in rule.items() if k != "id")
    return f"rule {rid}: {fields or '(any)'}\n"


def _rendered(found):
    """Ansible's before/after texts: only what differs, one line a rule, so the unified diff
    shows each rule added (+), removed (-) or changed (- then +)."""
    before = {r["id"]: _rule_line(r["id"], r["rule"]) for r in found["removed"]}
    after = {r["id"]: _rule_line(r["id"], r["rule"]) for r in found["added"]}
    for c in found["changed"]:
        before[c["id"]] = _rule_line(c["id"], c["live"])
        after[c["id"]] = _rule_line(c["id"], c["wanted"])
    extra = "".join(f"chain {c}: rule order changes\n" for c in found["moved"])
    extra += "".join(f"[{s}] changes\n" for s in found["sections"])
    return ("".join(before[k] for k in sorted(before)),
            "".join(after[k] for k in sorted(after)) + extra)


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write(path, text):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".minifw-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def present(module, cli, result):
    p = module.params
    path = os.path.abspath(p["path"])
    wanted = p["config"]
    if p["src"] is not None:
        wanted = _read(p["src"])
        if wanted is None:
            raise Refused(f"src {p['src']}: no such file on the target")
    if wanted and not wanted.endswith("\n"):
        wanted += "\n"  # lookup('file') strips it; a text file ends with one
    old = _read(path)
    file_changes = wanted is not None and wanted != old
    probe, tmp = path, None
    if file_changes and module.check_mode:  # compare without writing the real file
        fd, tmp = tempfile.mkstemp(suffix=".toml")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(wanted)
        probe = tmp
    elif file_changes:
        _write(path, wanted)
    try:
        try:
            found = cli.json("diff", "--config", probe)
        except Refused as exc:
            raise Refused(str(exc).replace(probe, path)) from None
        finally:
            if tmp:
                os.unlink(tmp)
        result["rules"] = {"added": [r["id"] for r in found["added"]],
                           "removed": [r["id"] for r in found["removed"]],
                           "changed": [c["id"] for c in found["changed"]],
                           "moved": found["moved"], "sections": found["sections"]}
        loads = not (found["loaded"] and found["in_sync"] and found["same"]
                     and found["config"] == path)
        if module._diff and loads:
            before, after = _rendered(found)
            result["diff"] = {"before": before, "after": after,
                              "before_header": "live ruleset", "after_header": path}
        if loads and not module.check_mode:
            args = ["up", "--config", path]
            if p["confirm"]:
                args += ["--confirm", str(p["confirm"])]
            if p["force"]:
                args.append("--force")
            result["message"] = cli.run(*args).strip()
        result["changed"] = result["changed"] or loads or file_changes
    except Refused:
        if file_changes and not module.check_mode:  # the file as it was: nothing changed
            os.unlink(path) if old is None else _write(path, old)
        raise


def bans(module, cli, result):
    p = module.params
    wanted = []
    for text in p["bans"]:
        try:
            wanted.append(_element(text))
        except ValueError:
            raise Refused(f"{text!r} is not an address or CIDR") from None
    live, page, pages = set(), 1, 1
    while page <= pages:
        try:
            listed = cli.json("set", "list", p["bans_set"], "--page-size", str(PAGE),
                              "--page", str(page))
        except Refused:
            # the set is made by its first element: if status does not list it, it holds
            # nothing yet (or minifw is not loaded); else the refusal stands
            made = cli.json("status", ok_json=True)["set_elements"]
            if page > 1 or any(s["name"] == p["bans_set"] for s in made):
                raise
            break
        live |= {_element(i["element"]) for i in listed["items"]}
        pages, page = listed["pages"], page + 1
    if p["bans_state"] == "present":
        todo, verb, key = [e for e in dict.fromkeys(wanted) if e not in live], "ban", "banned"
    else:
        todo, verb, key = [e for e in dict.fromkeys(wanted) if e in live], "unban", "unbanned"
    if not todo:
        return
    if module._diff:
        sign = "+" if verb == "ban" else "-"
        result.setdefault("diff", {}).setdefault("prepared", "")
        result["diff"]["prepared"] += "".join(f"{sign} {p['bans_set']} {e}\n" for e in todo)
    if not module.check_mode:
        args = [verb, "--set", p["bans_set"], *todo]
        if p["force"]:
            args.append("--force")
        cli.json(*args)
    result[key] = todo  # done (or, in check mode, to do)
    result["changed"] = True


ARGUMENT_SPEC = {
    "config": {"type": "str"},
    "src": {"type": "path"},
    "path": {"type": "path", "default": "/etc/minifw/minifw.toml"},
    "state": {"type": "str", "default": "present",
              "choices": ["present", "absent", "confirmed"]},
    "confirm": {"type": "int"},
    "force": {"type": "bool", "default": False},
    "bans": {"type": "list", "elements": "str"},
    "bans_state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
    "bans_set": {"type": "str", "default": "blocked"},
    "state_dir": {"type": "path"},
    "executable": {"type": "str", "default": "minifw"},
}


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        mutually_exclusive=[("config", "src")],
        supports_check_mode=True,
    )
    result = {"changed": False, "banned": [], "unbanned": []}
    cli = Cli(module)
    state = module.params["state"]
    try:
        if state == "present":
            if module.params["config"] is not None or module.params["src"] is not None \
                    or module.params["bans"] is None:
                present(module, cli, result)
            if module.params["bans"]:
                bans(module, cli, result)
        else:
            status = cli.json("status", ok_json=True)
            if state == "absent" and status["loaded"]:
                if not module.check_mode:
                    result["message"] = cli.run("down").strip()
                result["changed"] = True
            elif state == "confirmed" and status["pending"]:
                if not module.check_mode:
                    result["message"] = cli.json("confirm").get("message", "")
                result["changed"] = True
    except Refused as exc:
        module.fail_json(msg=str(exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
