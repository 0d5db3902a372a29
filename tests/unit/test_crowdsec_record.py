"""The decision record, the feed's status text, and the minifw_crowdsec_* metric families."""

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from minifw.app.crowdsec import status_text
from minifw.daemon.crowdsec import crowdsec_families
from minifw.model.decisions import Decision
from minifw.store.decisions import DecisionStore, element_origins


def dec(i, value, ns=3600 * 10**9, kind="ban"):
    return Decision(i, "cscli", "s", "Range" if "/" in value else "Ip", kind, value, ns)


def test_startup_replaces_and_deltas_delete_by_id(tmp_path):
    record = DecisionStore(tmp_path)
    record.apply([dec(1, "198.18.0.1"), dec(2, "198.18.0.2")], [], at=1000, replace=True)
    record.apply([dec(3, "198.18.0.3")], [1], at=1001, replace=False)
    assert sorted(d.id for d, _ in record.all()) == [2, 3]
    assert dict((d.id, e) for d, e in record.all())[3] == 1001 + 3600
    record.apply([dec(4, "198.18.0.4")], [], at=1002, replace=True)   # reconcile
    assert [d.id for d, _ in record.all()] == [4]
    assert record.count() == {"ban": 1} and record.count_origins() == {"cscli": 1}
    # an expired decision leaves at the boundary
    record.apply([dec(5, "198.18.0.5", ns=10**9)], [], at=2000, replace=True)
    assert [d.id for d, _ in record.all()] == [5]          # expires at 2001
    record.apply([], [], at=2001, replace=False)
    assert [d.id for d, _ in record.all()] == []
    record.close()


def test_origins_of_the_narrowest_element(tmp_path):
    record = DecisionStore(tmp_path)
    record.set_elements("crowdsec", [], [("198.18.0.0/24", 7, "cscli"),
                                         ("198.18.0.0/26", 8, "crowdsec:ssh-bf"),
                                         ("198.18.0.9", 9, "cscli")])
    assert record.origin_of("crowdsec", "198.18.0.9") == (9, "cscli")
    assert record.origin_of("crowdsec", "198.18.0.10") == (8, "crowdsec:ssh-bf")
    assert record.origin_of("crowdsec", "198.18.0.64") == (7, "cscli")
    assert record.origin_of("crowdsec", "198.18.1.0") is None
    assert record.origin_of("other", "198.18.0.9") is None
    record.set_elements("crowdsec", ["198.18.0.9"], [])
    assert record.origin_of("crowdsec", "198.18.0.9") == (8, "crowdsec:ssh-bf")
    record.close()
    assert element_origins(tmp_path, "crowdsec", ["198.18.0.0/24", "198.18.0.1"]) == {
        "198.18.0.0/24": "cscli, decision 7"}


def test_status_text_and_metrics(tmp_path):
    record = DecisionStore(tmp_path)
    assert crowdsec_families(tmp_path, CounterMetricFamily, GaugeMetricFamily) is not None
    assert list(crowdsec_families(tmp_path, CounterMetricFamily, GaugeMetricFamily)) == []
    status = {"url": "http://198.18.30.1:8080", "set": "crowdsec", "last_sync": 1000,
              "decisions": {"ban": 3, "captcha": 1}, "elements": 2, "failures": 4,
              "origins": {"cscli": 1, "crowdsec:ssh-bf": 2},
              "unreachable_since": None}
    record.set_status(status)
    assert status_text(record.status()).startswith("crowdsec: synced ")
    assert "4 decision(s), 2 element(s) in set crowdsec" in status_text(record.status())
    families = {f.name: f for f in crowdsec_families(tmp_path, CounterMetricFamily,
                                                       GaugeMetricFamily)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("minifw_crowdsec_decisions", (("type", "ban"),))] == 3
    assert samples[("minifw_crowdsec_failures_total", ())] == 4
    assert samples[("minifw_crowdsec_ban_decisions", (("origin", "crowdsec:ssh-bf"),))] == 2
    assert samples[("minifw_crowdsec_reachable", ())] == 1
    assert samples[("minifw_crowdsec_last_sync_timestamp_seconds", ())] == 1000
    record.set_status({**status, "unreachable_since": 1500})
    assert status_text(record.status()).startswith("crowdsec: unreachable since ")
    samples = {s.name: s.value for f in crowdsec_families(tmp_path, CounterMetricFamily,
                                                            GaugeMetricFamily)
               for s in f.samples}
    assert samples["minifw_crowdsec_reachable"] == 0
    (tmp_path / "crowdsec.json").write_text("{torn")
    assert record.status() == {}
