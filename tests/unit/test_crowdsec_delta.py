"""A delta sync (the addresses and ranges a stream touches, made again alone) leaves the set
exactly as a full union of every recorded decision would: random streams of single addresses,
overlapping ranges, duplicates, deletes and non-ban decisions, with minifw down (the record)."""

import json
import random

from minifw.app import crowdsec
from minifw.app.crowdsec import Bouncer
from minifw.model.crowdsec import CrowdsecConfig
from minifw.store.setrecord import now

VALUES = ["198.18.0.1", "198.18.0.2", "198.18.1.7", "198.18.1.0/24", "198.18.0.0/23",
          "198.18.1.128/25", "fd00::1", "fd00::/64", "fd00::2"]


class FakeLapi:
    """Answers a scripted list of stream bodies, as LAPI's /v1/decisions/stream would."""

    def __init__(self):
        self.bodies: list[dict] = []

    def stream(self, startup: bool) -> bytes:
        return json.dumps(self.bodies.pop(0)).encode()


def raw(i, value, kind="ban", minutes=60):
    return {"id": i, "origin": "cscli", "scenario": "s", "scope": "Range" if "/" in value
            else "Ip", "type": kind, "value": value, "duration": f"{minutes}m"}


def kept(bouncer):
    record = bouncer.sets.record
    return dict(record.live("crowdsec")), dict(
        (a, (d, label)) for a, (d, label) in bouncer.record.origins(
            "crowdsec", [a for a, _ in record.live("crowdsec")]).items())


def test_delta_syncs_equal_the_full_union(tmp_path):
    rng = random.Random(7)
    lapi = FakeLapi()
    config = CrowdsecConfig.from_toml({"url": "http://198.18.30.1:8080", "key_file": "/k"})
    bouncer = Bouncer(tmp_path, config, lapi=lapi)
    held: dict[int, dict] = {}
    lapi.bodies.append({"new": [raw(1, "198.18.0.1")], "deleted": None})
    held[1] = raw(1, "198.18.0.1")
    assert bouncer.sync().startup
    deltas = 0
    for step in range(60):
        new = [raw(100 + step * 3 + k, rng.choice(VALUES),
                   "captcha" if rng.random() < 0.15 else "ban", rng.randint(1, 240))
               for k in range(rng.randint(0, 3))]
        gone = rng.sample(sorted(held), min(len(held), rng.randint(0, 2)))
        lapi.bodies.append({"new": new, "deleted": [held[i] for i in gone]})
        for i in gone:
            del held[i]
        held.update((d["id"], d) for d in new)
        result = bouncer.sync()
        deltas += not result.startup
        want, _ = bouncer.wanted(now())
        elements, origins = kept(bouncer)
        assert elements == {e: el.expiry for e, el in want.items()}, step
        assert origins == {e: (el.decision, el.label) for e, el in want.items()}, step
        assert result.elements == len(want)
    assert deltas == 60


def test_a_full_union_still_comes_every_so_often(tmp_path, monkeypatch):
    lapi = FakeLapi()
    config = CrowdsecConfig.from_toml({"url": "http://198.18.30.1:8080", "key_file": "/k"})
    bouncer = Bouncer(tmp_path, config, lapi=lapi)
    lapi.bodies += [{"new": [raw(1, "198.18.0.1")]}, {"new": [raw(2, "198.18.0.2")]},
                    {"new": [raw(3, "198.18.0.3")]}]
    bouncer.sync()
    full = []
    monkeypatch.setattr(bouncer, "wanted", lambda at: full.append(at) or Bouncer.wanted(
        bouncer, at))
    bouncer.sync()
    assert full == []                       # a delta
    bouncer.full_at -= crowdsec.FULL_EVERY   # exactly FULL_EVERY later: a full union again
    bouncer.sync()
    assert len(full) == 1
    assert set(dict(bouncer.sets.record.live("crowdsec"))) == {
        "198.18.0.1", "198.18.0.2", "198.18.0.3"}
