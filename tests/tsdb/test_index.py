from __future__ import annotations

import pytest

from watchkeeper.labels import Labels, Matcher, MatchOp, from_dict
from watchkeeper.tsdb.index import SeriesIndex, literal_alternatives, literal_prefix, series_hash

SERIES = [
    from_dict({"__name__": "http_requests_total", "job": "api", "status": "200"}),
    from_dict({"__name__": "http_requests_total", "job": "api", "status": "500"}),
    from_dict({"__name__": "http_requests_total", "job": "web", "status": "200"}),
    from_dict({"__name__": "up", "job": "api"}),
    from_dict({"__name__": "up", "job": "ab"}),
    from_dict({"__name__": "up", "job": "a\nb"}),
    from_dict({"__name__": "up"}),
]


def names(idx: SeriesIndex, matchers: list[Matcher]) -> set[Labels]:
    return {idx.labels(s) for s in idx.select(matchers).tolist()}


def brute(matchers: list[Matcher]) -> set[Labels]:
    return {s for s in SERIES if all(m.matches(dict(s).get(m.name, "")) for m in matchers)}


@pytest.fixture
def idx() -> SeriesIndex:
    index = SeriesIndex()
    index.get_or_create(SERIES)
    return index


M = Matcher.parse_op


@pytest.mark.parametrize(
    ("matchers", "expected"),
    [
        ([M("=", "job", "api")], 3),
        ([M("=", "job", "nope")], 0),
        ([M("=", "job", "")], 1),  # only the series without a job label
        ([M("!=", "job", "api")], 4),  # includes the series without a job
        ([M("!=", "job", "")], 6),
        ([M("=~", "job", "a")], 0),  # anchored: "a" does not match "ab" or "api"
        ([M("=~", "job", "a.*")], 5),  # prefix fast path; "." matches the newline of "a\nb"
        ([M("=~", "job", "a.")], 1),
        ([M("=~", "job", "a.b")], 1),  # "." matches "\n"
        ([M("=~", "job", "ap|we.*")], 1),  # "ap" does not match "api"; "we.*" matches "web"
        ([M("=~", "job", "api|web")], 4),  # literal alternation fast path
        ([M("=~", "job", "api|web|")], 5),  # "" alternative also matches the series without job
        ([M("!~", "job", "api|web")], 3),
        ([M("=~", "job", "")], 1),
        ([M("!~", "job", "")], 6),
        ([M("!~", "job", ".+")], 1),
        ([M("=~", "job", ".*")], 7),
        ([M("=~", "job", ".+")], 6),
        ([M("=~", "status", "2..|5..")], 3),
        ([M("=~", "__name__", "http_.*"), M("!=", "status", "500")], 2),
        ([M("=", "__name__", "up"), M("!~", "job", "a.*")], 1),
        ([M("=", "__name__", "http_requests_total"), M("=~", "nolabel", "")], 3),
        ([M("=", "__name__", "http_requests_total"), M("!=", "nolabel", "")], 0),
        ([], 7),
    ],
)
def test_matchers_follow_prometheus(idx: SeriesIndex, matchers: list[Matcher], expected: int) -> None:
    got = names(idx, matchers)
    assert got == brute(matchers)
    assert len(got) == expected


def test_ids_are_stable_and_deduplicated(idx: SeriesIndex) -> None:
    ids, created = idx.get_or_create([SERIES[0], SERIES[0], from_dict({"__name__": "new"})])
    assert ids[0] == ids[1] == series_hash(SERIES[0])
    assert len(created) == 1
    other = SeriesIndex()
    assert other.get_or_create([SERIES[0]])[0] == [ids[0]]


def test_hash_collision_probes_to_next_id(idx: SeriesIndex) -> None:
    # Occupy the id the new labels hash to with different labels: the new series must get another.
    labels = from_dict({"__name__": "victim"})
    idx.add(series_hash(labels), from_dict({"__name__": "squatter"}))
    (sid,), _ = idx.get_or_create([labels])
    assert sid == series_hash(labels) + 1
    assert idx.get_or_create([labels])[0] == [sid]
    assert idx.labels(idx.slot_of(sid) or 0) == labels
    with pytest.raises(ValueError, match="already used"):
        idx.add(sid, from_dict({"__name__": "third"}))


def test_postings_after_many_additions_and_removal() -> None:
    idx = SeriesIndex()
    batch = [from_dict({"__name__": "m", "i": str(i), "par": str(i % 2)}) for i in range(20_000)]
    idx.get_or_create(batch)
    assert len(idx.select([M("=", "par", "1")])) == 10_000  # builds the CSR
    idx.get_or_create([from_dict({"__name__": "m", "i": "x", "par": "1"})])  # tail entry
    assert len(idx.select([M("=", "par", "1")])) == 10_001
    idx.remove(idx.select([M("=~", "i", "1.*")]).tolist())
    got = idx.select([M("=", "par", "1")])
    assert all(not idx.labels(s)[1][1].startswith("1") for s in got.tolist())
    assert len(got) == 10_001 - sum(1 for i in range(20_000) if i % 2 and str(i).startswith("1"))
    slots = idx.slots_of(idx.ids[got[:3]])
    assert slots.tolist() == got[:3].tolist()
    removed = idx.select([M("=", "i", "1")])  # empty now: i="1" was removed
    assert len(removed) == 0
    assert idx.slots_of(idx.ids[[0, 1]]).tolist() == [0, -1]  # i="0" kept, i="1" removed


def test_listings(idx: SeriesIndex) -> None:
    assert idx.label_names() == ["__name__", "job", "status"]
    assert idx.metric_names() == ["http_requests_total", "up"]
    ups = idx.select([M("=", "__name__", "up")])
    assert idx.label_names(ups) == ["__name__", "job"]
    assert idx.label_values("job", ups) == ["a\nb", "ab", "api"]
    idx.remove(idx.select([M("=", "job", "web")]).tolist())
    assert idx.label_values("job") == ["a\nb", "ab", "api"]


@pytest.mark.parametrize(
    ("pattern", "alts", "prefix"),
    [
        ("a|b|c", ["a", "b", "c"], None),
        ("a.*", None, "a"),
        (".*", None, ""),
        ("a|b.*", None, None),
        ("a\\.b", None, None),
        ("x", ["x"], None),
        ("", [""], None),
    ],
)
def test_regex_fast_path_detection(pattern: str, alts: list[str] | None, prefix: str | None) -> None:
    assert literal_alternatives(pattern) == alts
    assert literal_prefix(pattern) == prefix


def test_invalid_regex_is_value_error() -> None:
    with pytest.raises(ValueError):
        Matcher(MatchOp.REGEX, "job", "(")
