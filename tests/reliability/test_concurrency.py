"""Concurrency: 20 writers, 25 operations each (add, delete, ban, unban, reload), on one minifw
instance in a namespace, all at once. Nothing that reported success is lost: at the end the
kernel, `minifw list` and the config file hold exactly the rules that were added and not deleted,
the kernel set holds exactly the addresses banned and not unbanned, and the config still loads.

Each writer is its own process (fuzz_worker.py: the CLI in-process, as the binary runs it), so the
writers contend for minifw's lock exactly as separate `minifw` commands do.
"""

from __future__ import annotations

import json
import random
import threading
import time
import tomllib

import rkit
from fuzz_worker import Worker
from kit import nft_objects

WRITERS = 20
OPS = 25

BASE = """\
[policy]
input = "drop"

[[rule]]
id = "ssh"
proto = "tcp"
dport = 22
action = "accept"
"""


def _plan(w: int) -> list[str]:
    """A writer's mix: mostly adds and bans, with deletes, unbans and reloads among them."""
    rng = random.Random(w)
    return [rng.choice(["add", "add", "add", "delete", "ban", "ban", "unban", "reload"])
            for _ in range(OPS)]


def _writer(worker: Worker, w: int, results: list) -> None:
    rules: list[str] = []
    bans: list[str] = []
    for i, kind in enumerate(_plan(w)):
        if kind == "delete" and not rules or kind == "unban" and not bans:
            kind = "add" if kind == "delete" else "ban"
        if kind == "add":
            rid = f"w{w}-r{i}"
            # two fields differ from rule to rule: no run merges them, one nft rule per id
            argv = ["add", "--id", rid, "--proto", "udp", "--dport", str(10000 + 100 * w + i),
                    "--sport", str(20000 + 100 * w + i), "--action", "accept"]
        elif kind == "delete":
            rid = rules[-1]
            argv = ["delete", rid]
        elif kind == "ban":
            rid = f"198.18.{100 + w}.{i + 1}"
            argv = ["ban", rid]
        elif kind == "unban":
            rid = bans[0]
            argv = ["unban", rid]
        else:
            rid, argv = None, ["reload"]
        r = worker.ask({"op": "run", "argv": argv}, timeout=120)
        results.append((w, kind, rid, r))
        if r["code"] != 0:
            continue
        if kind == "add":
            rules.append(rid)
        elif kind == "delete":
            rules.remove(rid)
        elif kind == "ban":
            bans.append(rid)
        elif kind == "unban":
            bans.remove(rid)


def test_writers_lose_nothing(lab):
    host = lab.host("fw")
    lab.tmp.mkdir(parents=True, exist_ok=True)
    config = lab.tmp / "fw.toml"
    config.write_text(BASE)
    host.minifw("up", "--config", str(config))
    workers = [Worker(host, f"writer{w}") for w in range(WRITERS)]
    results: list = []
    try:
        for wk in workers:  # every worker has imported minifw before the race starts
            assert wk.ask({"op": "snapshot", "watch": []})["state"]
        started = time.monotonic()
        threads = [threading.Thread(target=_writer, args=(wk, w, results))
                   for w, wk in enumerate(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=600)
        seconds = time.monotonic() - started
        assert not any(t.is_alive() for t in threads), "a writer hung"
    finally:
        for wk in workers:
            wk.close()

    assert len(results) == WRITERS * OPS
    failed = [(w, k, rid, r["err"]) for w, k, rid, r in results if r["code"] != 0]
    for _, _, _, err in failed:  # a refusal is allowed only as one error line
        assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert not failed, f"{len(failed)} operations failed: {failed[:5]}"

    # What every writer was told, replayed in its own order (each writer is sequential).
    want_rules = {"ssh"}
    want_bans: set[str] = set()
    per_writer: dict[int, list] = {}
    for w, kind, rid, r in results:
        per_writer.setdefault(w, []).append((kind, rid, r))
    for ops in per_writer.values():
        for kind, rid, r in ops:
            if r["code"] != 0:
                continue
            if kind == "add":
                want_rules.add(rid)
            elif kind == "delete":
                want_rules.discard(rid)
            elif kind == "ban":
                want_bans.add(rid)
            elif kind == "unban":
                want_bans.discard(rid)

    # The kernel: rules by their comment, bans by the set's elements.
    kernel_ids = {r.get("comment", "").split(": ")[0] for r in nft_objects(host, "rule")
                  if r["table"] == "minifw" and not r["chain"].endswith("_policy")
                  and r["chain"].startswith("input_")}
    assert kernel_ids == want_rules
    listed = {r["id"] for r in json.loads(host.minifw("list", "--json").stdout)["rules"]}
    assert listed == want_rules
    out = host.run(["nft", "-j", "list", "set", "inet", "minifw", "s_blocked_v4"]).stdout
    elems = next(o["set"] for o in json.loads(out)["nftables"] if "set" in o).get("elem", [])
    banned = {e["elem"]["val"] if isinstance(e, dict) else e for e in elems}
    assert banned == want_bans

    # The config: valid, and holding exactly the rules.
    text = config.read_text()
    assert {r["id"] for r in tomllib.loads(text)["rule"]} == want_rules
    host.minifw("check", "--config", str(config))
    kinds = [k for _, k, _, _ in results]
    rkit.report("concurrency", writers=WRITERS, ops=len(results), failed=len(failed),
                rules=len(want_rules), bans=len(want_bans),
                **{k: kinds.count(k) for k in ("add", "delete", "ban", "unban", "reload")},
                seconds=round(seconds, 1))
