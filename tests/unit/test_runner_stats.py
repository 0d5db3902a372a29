"""A runner's counts file (runners/hookstate.py): what the daemon's status and metrics read."""

from minifw.runners import hookstate


def test_counts_make_the_round_trip_and_go_with_the_record(tmp_path):
    hookstate.made_hooks_dir(tmp_path)
    hookstate.write_stats(tmp_path, 42, {"packets": 10, "drops": 3, "errors": 1})
    assert hookstate.read_stats(tmp_path, 42) == {"packets": 10, "drops": 3, "errors": 1}
    assert hookstate.read_stats(tmp_path, 43) is None
    # beside the runner records, never taken for one
    assert [r.pid for r in hookstate.records(tmp_path)] == []
    hookstate.remove_record(tmp_path, 42)
    assert hookstate.read_stats(tmp_path, 42) is None


def test_a_damaged_counts_file_reads_as_none(tmp_path):
    path = hookstate.stats_path(tmp_path, 7)
    path.parent.mkdir(parents=True)
    for text in ("{", "[]", '{"packets": 1, "drops": 0}', '{"packets": true, "drops": 0, '
                 '"errors": 0}', '{"packets": 1.5, "drops": 0, "errors": 0}'):
        path.write_text(text)
        assert hookstate.read_stats(tmp_path, 7) is None, text
    path.write_text('{"packets": 0, "drops": 0, "errors": 0, "more": 1}')
    assert hookstate.read_stats(tmp_path, 7) == {"packets": 0, "drops": 0, "errors": 0}
