"""The set record's import blocks: lookups, counts, paging, bans and unbans of imported
addresses, re-imports and compaction keep one live copy of each element."""

import io

from minifw.store.setrecord import CONFIG, RUNTIME, SetStore, distinct_sorted, pack, parse_import


def addrs(n, base="fd00:a::"):
    return [f"{base}{i:x}" for i in range(1, n + 1)]


def imported(store, name, texts, expiry=0):
    with store.transaction() as db:
        if not store.exists(name):
            store.declare(db, name, None)
        return store.import_keys(db, name, distinct_sorted([pack(a) for a in texts]), expiry)


def test_import_block_lookup_count_and_pages(tmp_path):
    store = SetStore(tmp_path)
    texts = addrs(50)[::-1] + addrs(5)             # reverse order, with repeats
    assert imported(store, "blocked", texts) == 50
    assert store.counts("blocked")["addresses"] == 50
    assert store.get("blocked", "fd00:a::7") == (0, RUNTIME)
    assert store.get("blocked", "fd00:a::99") is None and store.get("blocked", "198.18.0.1") is None
    with store.transaction() as db:
        store.put(db, "blocked", [("198.18.0.9", 0), ("198.18.64.0/18", 0)], CONFIG)
    listed = [a for a, _ in store.page("blocked", 0, 100)]
    assert listed[:2] == ["198.18.64.0/18", "198.18.0.9"] and len(listed) == 52
    assert sorted(listed[2:]) == sorted(addrs(50))
    pages = [a for p in range(0, 52, 7) for a, _ in store.page("blocked", p, 7)]
    assert pages == listed


def test_ban_and_unban_of_imported_addresses_keep_counts_exact(tmp_path):
    store = SetStore(tmp_path)
    imported(store, "blocked", addrs(20), expiry=0)
    with store.transaction() as db:            # a ban moves the address to a row, new expiry
        store.put(db, "blocked", [("fd00:a::3", 4_000_000_000)], RUNTIME)
    assert store.get("blocked", "fd00:a::3") == (4_000_000_000, RUNTIME)
    assert store.counts("blocked")["addresses"] == 20
    with store.transaction() as db:            # unban of an imported address
        store.drop_origin(db, "blocked", ["fd00:a::4", "fd00:a::3"], RUNTIME)
    assert store.get("blocked", "fd00:a::4") is None and store.get("blocked", "fd00:a::3") is None
    assert store.counts("blocked")["addresses"] == 18
    listed = [a for a, _ in store.page("blocked", 0, 100)]
    assert len(listed) == 18 and "fd00:a::4" not in listed
    assert [a for a, _ in store.page("blocked", 2, 3)] == listed[2:5]
    with store.transaction() as db:            # config removal leaves runtime addresses alone
        store.drop_origin(db, "blocked", ["fd00:a::5"], CONFIG)
    assert store.get("blocked", "fd00:a::5") == (0, RUNTIME)


def test_reimport_refreshes_and_compact_rewrites(tmp_path):
    store = SetStore(tmp_path)
    imported(store, "blocked", addrs(30), expiry=0)
    with store.transaction() as db:
        store.put(db, "blocked", [("fd00:a::1", 0)], CONFIG)
    imported(store, "blocked", addrs(10), expiry=4_000_000_000)  # overlaps the first import
    assert store.counts("blocked")["addresses"] == 30
    assert store.get("blocked", "fd00:a::2") == (4_000_000_000, RUNTIME)
    assert store.get("blocked", "fd00:a::1") == (4_000_000_000, CONFIG | RUNTIME)
    assert store.get("blocked", "fd00:a::1e") == (0, RUNTIME)
    before = sorted(store.page("blocked", 0, 100))
    store.compact()
    assert sorted(store.page("blocked", 0, 100)) == before
    assert store.db.execute("SELECT sum(n), sum(live) FROM block").fetchone() == (29, 29)
    with store.transaction() as db:
        store.retally(db, "blocked")
    assert store.counts("blocked")["addresses"] == 30
    with store.transaction() as db:
        store.flush(db, "blocked")
    assert store.counts("blocked")["elements"] == 0 and store.page("blocked", 0, 10) == []


def test_expired_blocks_do_not_count_and_are_compacted(tmp_path):
    store = SetStore(tmp_path)
    imported(store, "blocked", addrs(10), expiry=1)   # long expired
    assert store.counts("blocked")["addresses"] == 0
    assert store.get("blocked", "fd00:a::1") is None and store.page("blocked", 0, 5) == []
    assert store.compact() == 10
    assert store.db.execute("SELECT count(*) FROM block").fetchone() == (0,)


def test_fast_parser_allows_whole_line_comments():
    four, six, cidrs, skipped = parse_import(
        io.StringIO("# header\n198.18.0.1\n  fd00::A \n\n198.18.0.1\n"), "f", False)
    assert four == [pack("198.18.0.1")] * 2 and six == [pack("fd00::a")]
    assert cidrs == [] and skipped == []


def test_kinds_name_the_backing_sets_with_live_elements(tmp_path):
    store = SetStore(tmp_path)
    assert store.kinds("blocked") == set()
    imported(store, "blocked", addrs(3))                            # an IPv6 block
    assert store.kinds("blocked") == {(6, False)}
    with store.transaction() as db:
        store.put(db, "blocked", [("198.18.0.9", 0), ("198.18.64.0/18", 0)], RUNTIME)
        store.put(db, "blocked", [("fd00:b::/64", 1)], RUNTIME)       # expired long ago
    assert store.kinds("blocked") == {(6, False), (4, False), (4, True)}
    with store.transaction() as db:
        store.drop_origin(db, "blocked", addrs(3), RUNTIME)           # the block's addresses go
    assert store.kinds("blocked") == {(4, False), (4, True)}
    assert store.kinds("other") == set()
