"""minifw as a CrowdSec bouncer against a real LAPI (Debian's crowdsec, ``-no-cs``) in a
namespace of its own: decisions reach the set and drop traffic, deletes release it, overlapping
ranges are split, an unreachable LAPI leaves the bans and says so. One LAPI for the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import subprocess

import pytest

from minifw.lab import MINIFW
from kit import CLIENT4, SERVER4, need_root, new_lab, nft_objects, pair, serve, up, wait_until

LAPI4 = "198.18.30.1"
HOST_LAPI4 = "198.18.30.2"
URL = f"http://{LAPI4}:8080"


def lapi_config(base: str, directory: str) -> str:
    """Debian's /etc/crowdsec/config.yaml made into a LAPI alone in ``directory``."""
    text = open(base).read()
    text = text.replace("daemonize: true", "daemonize: false")
    text = re.sub(r"(?m)^(\s*)log_dir: .*", rf"\1log_dir: {directory}/", text)
    text = re.sub(r"(?m)^(\s*)data_dir: .*", rf"\1data_dir: {directory}/data/", text)
    text = re.sub(r"(?m)^(\s*)db_path: .*", rf"\1db_path: {directory}/crowdsec.db", text)
    text = re.sub(r"(?m)^(\s*)credentials_path: /etc/crowdsec/local_api_credentials.yaml",
                  rf"\1credentials_path: {directory}/creds.yaml", text)
    text = re.sub(r"(?m)^(\s*)listen_uri: .*", rf"\1listen_uri: {LAPI4}:8080", text)
    text = re.sub(r"(?m)^    online_client:.*\n(      .*\n)*", "", text)
    text = re.sub(r"prometheus:\n  enabled: true", "prometheus:\n  enabled: false", text)
    return text


class Fleet:
    def __init__(self, lab):
        self.lab = lab
        self.server, self.client = pair(lab)
        self.lapi = lab.host("lapi")
        lab.link(self.server, [f"{HOST_LAPI4}/24"], self.lapi, [f"{LAPI4}/24"],
                 a_if="eth-l", b_if="eth0")
        serve(self.server, tcp=[80])
        self.dir = lab.tmp / "lapi"
        (self.dir / "data").mkdir(parents=True)
        self.config = self.dir / "config.yaml"
        self.config.write_text(lapi_config("/etc/crowdsec/config.yaml", str(self.dir)))
        self.cscli("machines", "add", "m1", "--password", "pw-m1-123456", "-f",
                   str(self.dir / "creds.yaml"), "--url", URL)
        key = self.cscli("bouncers", "add", "minifw", "-o", "raw").stdout.strip().splitlines()[-1]
        self.key_file = lab.tmp / "crowdsec.key"
        self.key_file.write_text(key + "\n")
        os.chmod(self.key_file, 0o600)
        self.proc = None
        self.start()

    def cscli(self, *args: str) -> subprocess.CompletedProcess:
        return self.lapi.run(["cscli", "-c", str(self.config), *args], timeout=30)

    def start(self) -> None:
        self.proc = self.lapi.popen(["crowdsec", "-c", str(self.config), "-no-cs"])
        self.lapi.wait_listening(8080, deadline=20)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)

    def delete(self, value: str) -> None:
        """Delete exactly the decisions on ``value`` (cscli's --range also takes the ranges
        inside it)."""
        alerts = json.loads(self.cscli("decisions", "list", "-o", "json").stdout) or []
        ids = [d["id"] for a in alerts for d in a.get("decisions") or [] if d["value"] == value]
        assert ids, value
        for i in ids:
            self.cscli("decisions", "delete", "--id", str(i))

    def lookups(self) -> set[str]:
        """The backing sets [crowdsec]'s drop rule looks up in the kernel."""
        out = set()
        for rule in nft_objects(self.server, "rule"):
            if rule.get("comment", "").startswith("crowdsec-bans:"):
                for e in rule["expr"]:
                    right = e.get("match", {}).get("right") if isinstance(e, dict) else None
                    if isinstance(right, str) and right.startswith("@"):
                        out.add(right[1:])
        return out

    def sync(self, check: bool = True):
        return self.server.minifw("crowdsec", "sync", "--once", "--json", check=check)

    def elements(self, kind: str = "v4") -> set[str]:
        out = set()
        for s in nft_objects(self.server, "set"):
            if s["name"] == f"s_crowdsec_{kind}":
                for e in s.get("elem", []):
                    v = e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
                    out.add(f"{v['prefix']['addr']}/{v['prefix']['len']}"
                            if isinstance(v, dict) else v)
        return out


@pytest.fixture(scope="module")
def fleet():
    need_root()
    if not (shutil.which("crowdsec") and shutil.which("cscli")):
        pytest.skip("Debian's crowdsec is not installed (make install installs it)")
    with new_lab() as lab:
        f = Fleet(lab)
        f.host_config = up(f.server, f"""
[crowdsec]
url = "{URL}"
key_file = "{f.key_file}"
interval = "1s"
""")
        yield f


@pytest.mark.timeout(120)
def test_decisions_drop_and_deletes_release(fleet):
    assert fleet.client.tcp_ok(SERVER4, 80)
    # nothing decided yet: the drop rule looks nothing up (each lookup costs every packet)
    assert fleet.lookups() == set()
    fleet.cscli("decisions", "add", "--ip", CLIENT4, "--duration", "1h")
    fleet.cscli("decisions", "add", "--ip", "198.18.40.9", "--duration", "1h", "--type",
                "captcha")
    synced = json.loads(fleet.sync().stdout)
    assert synced["startup"] and synced["ignored"] == 1
    assert CLIENT4 in fleet.elements()
    assert "198.18.40.9" not in fleet.elements()
    assert not fleet.client.tcp_ok(SERVER4, 80)
    assert "s_crowdsec_v4" in fleet.lookups() and "s_crowdsec_v6" not in fleet.lookups()
    listing = json.loads(fleet.server.minifw("set", "list", "crowdsec", "--json").stdout)
    item = next(i for i in listing["items"] if i["element"] == CLIENT4)
    assert 3500 < item["expires_in"] <= 3600       # the decision's remaining duration
    assert re.fullmatch(r"cscli, decision \d+", item["origin"])
    why = fleet.server.minifw("explain", "--src", CLIENT4, "--dst", SERVER4, "--proto", "tcp",
                              "--dport", "80", check=False).stdout
    assert re.search(r"decided by set crowdsec, decision \d+ from cscli", why), why
    # deleted in LAPI: released at the next sync
    fleet.cscli("decisions", "delete", "--ip", CLIENT4)
    fleet.sync()
    assert CLIENT4 not in fleet.elements()
    assert fleet.client.tcp_ok(SERVER4, 80)


@pytest.mark.timeout(120)
def test_overlapping_ranges_are_split_and_reconciled(fleet):
    # a long /26 inside a shorter /25: the kernel gets disjoint pieces, the /26 the longer
    fleet.cscli("decisions", "add", "--range", "198.18.0.0/25", "--duration", "1h")
    fleet.cscli("decisions", "add", "--range", "198.18.0.0/26", "--duration", "3h")
    fleet.cscli("decisions", "add", "--ip", "198.18.0.5", "--duration", "2h")
    fleet.sync()
    assert fleet.elements("v4net") == {"198.18.0.0/26", "198.18.0.64/26"}
    assert "s_crowdsec_v4net" in fleet.lookups()     # the first range armed its lookup
    assert "198.18.0.5" in fleet.elements("v4")
    assert not fleet.client.tcp_ok(SERVER4, 80)       # CLIENT4 (198.18.0.2) is covered
    # the /25 and the single go while minifw does not look: the startup sync reconciles
    fleet.delete("198.18.0.0/25")
    fleet.delete("198.18.0.5")
    fleet.sync()
    assert fleet.elements("v4net") == {"198.18.0.0/26"}
    assert "198.18.0.5" not in fleet.elements("v4")
    fleet.cscli("decisions", "delete", "--range", "198.18.0.0/26")
    fleet.sync()
    assert fleet.elements("v4net") == set()
    assert fleet.client.tcp_ok(SERVER4, 80)


@pytest.mark.timeout(120)
def test_a_longer_range_inside_one_in_the_set_splits_it(fleet):
    # the /25 is in the kernel already: it goes and its pieces come in the same sync
    fleet.cscli("decisions", "add", "--range", "198.18.0.0/25", "--duration", "1h")
    fleet.sync()
    assert fleet.elements("v4net") == {"198.18.0.0/25"}
    fleet.cscli("decisions", "add", "--range", "198.18.0.0/26", "--duration", "3h")
    fleet.sync()
    assert fleet.elements("v4net") == {"198.18.0.0/26", "198.18.0.64/26"}
    assert "s_crowdsec_v4net" in fleet.lookups()     # the first range armed its lookup
    assert not fleet.client.tcp_ok(SERVER4, 80)
    fleet.delete("198.18.0.0/25")
    fleet.delete("198.18.0.0/26")
    fleet.sync()
    assert fleet.elements("v4net") == set()


@pytest.mark.timeout(120)
def test_unreachable_lapi_keeps_bans_and_says_so(fleet):
    fleet.cscli("decisions", "add", "--ip", CLIENT4, "--duration", "1h")
    fleet.sync()
    fleet.stop()
    try:
        failed = fleet.sync(check=False)
        assert failed.returncode == 1
        assert failed.stderr.startswith("error: LAPI") and "unreachable" in failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1
        assert CLIENT4 in fleet.elements()               # nothing flushed
        assert not fleet.client.tcp_ok(SERVER4, 80)
        status = fleet.server.minifw("status").stdout
        assert "crowdsec: unreachable since" in status
        data = json.loads(fleet.server.minifw("status", "--json").stdout)
        assert data["crowdsec"]["unreachable_since"] and data["crowdsec"]["failures"] >= 1
    finally:
        fleet.start()
    fleet.cscli("decisions", "delete", "--ip", CLIENT4)
    fleet.sync()                                          # caught up
    assert CLIENT4 not in fleet.elements()
    assert "unreachable" not in fleet.server.minifw("status").stdout


@pytest.mark.timeout(120)
def test_the_daemon_feeds_the_set_and_events_name_the_decision(fleet):
    server = fleet.server
    config = fleet.lab.tmp / "daemon.toml"
    config.write_text(f"""
[events]
drops = true

[crowdsec]
url = "{URL}"
key_file = "{fleet.key_file}"
interval = "1s"
""")
    daemon = server.popen([MINIFW, "daemon", "--config", str(config)])
    try:
        wait_until(lambda: "crowdsec: synced" in server.minifw("status", check=False).stdout,
                   timeout=20, what="the daemon's first sync")
        fleet.cscli("decisions", "add", "--ip", CLIENT4, "--duration", "1h")
        wait_until(lambda: CLIENT4 in fleet.elements(), timeout=5, what="the decision applied")
        assert not fleet.client.tcp_ok(SERVER4, 80)
        events = server.state_dir / "events.jsonl"

        def dropped():
            lines = events.read_text().splitlines() if events.exists() else []
            return [e for e in map(json.loads, lines) if e.get("origin")]
        wait_until(dropped, timeout=10, what="an event of the CrowdSec drop")
        event = dropped()[0]
        assert (event["rule"], event["src"], event["origin"]) == ("crowdsec-bans", CLIENT4,
                                                                  "cscli")
        assert isinstance(event["decision"], int)
        fleet.delete(CLIENT4)
        wait_until(lambda: CLIENT4 not in fleet.elements(), timeout=5, what="the release")
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)
        server.minifw("up", "--config", str(fleet.host_config))  # a stopped daemon took it down


GARBAGE = r'''
import http.server, json, sys
def one(**kw):
    d = {"duration": "1h", "id": 7, "origin": "cscli", "scenario": "x", "scope": "Ip",
         "type": "ban", "value": "198.18.0.77", **kw}
    return json.dumps({"new": [d], "deleted": None}).encode()
BODIES = [b'{"new": [{"id": 1', one(scope="Country", value="FR"), one(duration="87601h")]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = BODIES[int(open(sys.argv[1]).read())]
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("198.18.30.1", 8081), H).serve_forever()
'''


@pytest.mark.timeout(120)
def test_garbage_from_a_fake_lapi_leaves_the_set_as_it_was(fleet):
    fleet.cscli("decisions", "add", "--ip", CLIENT4, "--duration", "1h")
    fleet.sync()
    before = fleet.elements()
    assert CLIENT4 in before
    script, which = fleet.lab.tmp / "garbage.py", fleet.lab.tmp / "which"
    script.write_text(GARBAGE)
    which.write_text("0")
    fake = fleet.lapi.popen([sys.executable, str(script), str(which)])
    config = fleet.lab.tmp / "fake.toml"
    config.write_text(f'[crowdsec]\nurl = "http://{LAPI4}:8081"\nkey_file = "{fleet.key_file}"\n')
    try:
        fleet.lapi.wait_listening(8081, deadline=10)
        for n, needle in enumerate(("not JSON", "unknown scope 'Country'", "over ten years")):
            which.write_text(str(n))
            failed = fleet.server.minifw("crowdsec", "sync", "--once", "--config", str(config),
                                         check=False)
            assert failed.returncode == 1 and needle in failed.stderr, failed.stderr
            assert len(failed.stderr.strip().splitlines()) == 1
            assert fleet.elements() == before
        assert not fleet.client.tcp_ok(SERVER4, 80)
    finally:
        fake.terminate()
        fake.wait(timeout=10)
    fleet.delete(CLIENT4)
    fleet.sync()
    assert CLIENT4 not in fleet.elements()
