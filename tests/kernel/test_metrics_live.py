"""The metrics endpoint and ``minifw top`` for real: ``minifw daemon --metrics`` in a
namespace, scraped by a real Prometheus server (Debian ``prometheus``) started in the same
namespace; the rule counters read back through Prometheus' query API equal the kernel's
(``nft -j``), a plain rule's and a merged run's (per-element counter) alike. ``top --once
--json`` on real traffic shows the rule's rate. One lab, daemon and Prometheus per module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse

import pytest

from kit import CLIENT4, SERVER4, SERVER4B, need_root, new_lab, pair, ping_burst, wait_until, write_config
from minifw.lab import MINIFW

METRICS = "127.0.0.1:9469"
PROMETHEUS = "127.0.0.1:9090"
# ten look-alike rules: one set lookup with per-element counters; the client is the 5th
RUN = "".join(f'[[rule]]\nid = "deny-{i}"\nsrc = "{CLIENT4 if i == 5 else f"198.18.7.{i}"}"\n'
              f'proto = "udp"\naction = "drop"\n\n' for i in range(10))
# [events] drops: each drop rule, run and the policy get a rate-limited log rule in front,
# with the lookup and counter of what it logs: none of them may count for the rule
CONFIG = f"""
[policy]
input = "drop"

[events]
drops = true

[[rule]]
id = "count-ping"
proto = "icmp"
action = "accept"

[[rule]]
id = "web"
proto = "tcp"
dport = 80
action = "drop"

{RUN}"""
SCRAPE = f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: minifw
    static_configs:
      - targets: ["{METRICS}"]
"""


@pytest.fixture(scope="module")
def served():
    need_root()
    if shutil.which("prometheus") is None:
        pytest.fail("the Debian package 'prometheus' is missing (make install adds it)")
    with new_lab() as lab:
        server, client, client2 = pair(lab, second_client=True)
        config = write_config(lab, CONFIG)
        with open(lab.tmp / "daemon.err", "w") as err:
            daemon = subprocess.Popen(
                ["ip", "netns", "exec", server.ns, MINIFW, "daemon", "--config", str(config),
                 "--metrics", METRICS],
                env={**os.environ, "MINIFW_STATE_DIR": str(server.state_dir)},
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                start_new_session=True)
        lab._procs.append(daemon)
        (lab.tmp / "prometheus.yml").write_text(SCRAPE)
        server.popen(["prometheus", f"--config.file={lab.tmp / 'prometheus.yml'}",
                      f"--storage.tsdb.path={lab.tmp / 'tsdb'}",
                      f"--web.listen-address={PROMETHEUS}"])
        try:
            wait_until(lambda: server.http_get(f"http://{METRICS}/metrics"), 30,
                       "the daemon's metrics endpoint")
            wait_until(lambda: server.http_get(f"http://{PROMETHEUS}/-/ready"), 30,
                       "Prometheus to be ready")
        except AssertionError:
            raise AssertionError((lab.tmp / "daemon.err").read_text()[-2000:]) from None
        yield server, client, client2


def query(server, promql: str) -> list[dict]:
    url = f"http://{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    body = server.http_get(url)
    assert body is not None, "Prometheus did not answer"
    data = json.loads(body)
    assert data["status"] == "success", data
    return data["data"]["result"]


def scraped(server, rule: str) -> int | None:
    found = query(server, f'minifw_rule_packets_total{{rule="{rule}"}}')
    return int(float(found[0]["value"][1])) if found else None


def kernel_rule(server, rule: str, chain: str = "input_0", verdict: str | None = None) -> int:
    """The packets counted by the rules of ``chain`` commented ``rule`` (with ``verdict``)."""
    data = json.loads(server.run(["nft", "-j", "list", "chain", "inet", "minifw",
                                  chain]).stdout)
    return sum(e["counter"]["packets"] for o in data["nftables"] if "rule" in o
               and o["rule"].get("comment") == rule
               and (verdict is None or any(verdict in e for e in o["rule"]["expr"]))
               for e in o["rule"]["expr"] if "counter" in e)


def scraped_policy(server) -> int | None:
    found = query(server, 'minifw_policy_dropped_packets_total{hook="input"}')
    return int(float(found[0]["value"][1])) if found else None


def kernel_element(server, set_name: str, value: str) -> int:
    data = json.loads(server.run(["nft", "-j", "list", "set", "inet", "minifw",
                                  set_name]).stdout)
    elems = [e["elem"] for o in data["nftables"] if "set" in o for e in o["set"]["elem"]]
    return next(e["counter"]["packets"] for e in elems if e["val"] == value)


def udp_burst(client, count: int) -> None:
    code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"for _ in range({count}): s.sendto(b'x' * 32, ('{SERVER4}', 9))\n")
    client.run(["python3", "-c", code])


def test_prometheus_reads_back_the_kernel_counters(served):
    server, client, client2 = served
    assert ping_burst(client, SERVER4, 7) == 7
    udp_burst(client, 13)
    # from another address: the run's lookup comes first in its rule, and an element counts
    # every packet whose address it holds, even one the rest of the rule (udp) then misses
    for port in (80, 80, 80, 81, 81):  # 80: the rule "web" drops; 81: the policy drops
        client2.tcp_result(SERVER4B, port, timeout=0.3)
    plain = kernel_rule(server, "count-ping")
    merged = kernel_element(server, "r_input_0_2_v4", CLIENT4)
    web = kernel_rule(server, "web")
    policy = kernel_rule(server, "policy input", "input_policy", "drop")
    assert plain >= 7 and merged == 13 and web >= 3 and policy >= 2
    # what Prometheus stored from its own scrapes equals the kernel's counters
    wait_until(lambda: scraped(server, "count-ping") == plain, 15,
               f"Prometheus to show count-ping at {plain} (it has "
               f"{scraped(server, 'count-ping')})")
    wait_until(lambda: scraped(server, "deny-5") == merged, 15,
               f"Prometheus to show deny-5 at {merged} (it has {scraped(server, 'deny-5')})")
    wait_until(lambda: scraped(server, "web") == web, 15, f"Prometheus to show web at {web}")
    wait_until(lambda: scraped_policy(server) == kernel_rule(server, "policy input",
                                                            "input_policy", "drop"), 15,
               "Prometheus to show the input policy's drops")
    labels = query(server, 'minifw_rule_packets_total{rule="deny-5"}')[0]["metric"]
    assert (labels["hook"], labels["priority"], labels["action"]) == ("input", "0", "drop")
    assert scraped(server, "deny-4") == 0
    assert float(query(server, "minifw_up")[0]["value"][1]) == 1
    # [events] drops: the drops above became events, which the endpoint counts
    wait_until(lambda: (query(server, "minifw_events_written_total") or [{"value": [0, "0"]}])
               [0]["value"][1] not in ("0",), 15, "events written to show")


def test_top_once_shows_the_rate_of_real_traffic(served):
    server, client, _ = served
    udp_burst(client, 3)  # dropped by deny-5: events ([events] drops) for the view's bottom
    flood = client.popen(["ping", "-n", "-i", "0.02", "-c", "150", SERVER4])  # 50/s for 3 s
    time.sleep(0.5)
    out = server.minifw("top", "--once", "--json", "--interval", "1", timeout=60).stdout
    flood.wait(timeout=10)
    data = json.loads(out)
    assert data["up"] is True and 0.9 < data["interval"] < 3
    row = next(r for r in data["rules"] if r["name"] == "count-ping")
    # 50 echo requests a second arrive (a loaded machine may send a few less)
    assert 25 <= row["packets_per_second"] <= 60, row
    assert row["drops_per_second"] == 0 and row["action"] == "accept"
    quiet = next(r for r in data["rules"] if r["name"] == "deny-4")
    assert quiet["packets_per_second"] == 0
    assert data["rules"][0]["name"] == "count-ping"  # the busiest first
    # the latest events underneath
    assert "deny-5" in {e["rule"] for e in data["events"]}, data["events"]


def test_a_rule_added_while_the_daemon_runs_gets_its_series(served):
    server, _, client2 = served  # not the client: the run before "late" drops its UDP
    server.minifw("add", "--id", "late", "--proto", "udp", "--dport", "7", "--action", "drop",
                  "--runtime")
    udp_port = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range(4): s.sendto(b'x', ('{SERVER4B}', 7))\n")
    client2.run(["python3", "-c", udp_port])
    late = kernel_rule(server, "late")
    assert late >= 4
    wait_until(lambda: scraped(server, "late") == late, 15,
               f"Prometheus to show the added rule at {late}")
    stamp = float(query(server, "minifw_last_apply_timestamp_seconds")[0]["value"][1])
    assert time.time() - 60 < stamp <= time.time()
