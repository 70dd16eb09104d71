"""apilake.runner_parts: a run's sources spread over processes in whole families (a parent with its children, a
budget group's sources), the largest part first."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from apilake.config import SourcesFile, parse_sources
from apilake.messages import WorkItem
from apilake.runner_parts import families, split


def _source(name: str, parent: str | None = None, group: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": name,
        "base_url": "https://api.example.com",
        "path": f"/v1/{name}" + ("/{id}" if parent else ""),
        "records_path": "data",
        "pagination": {"type": "single"},
    }
    if parent is not None:
        raw["parent"] = {"source": parent, "fields": {"id": "id"}}
    if group is not None:
        raw["budget"] = {"group": group, "max_concurrency": 2}
    return raw


def _file(*sources: dict[str, Any]) -> SourcesFile:
    groups = {g: {"requests_per_second": 10} for g in {s["budget"]["group"] for s in sources if "budget" in s}}
    return parse_sources({"version": 1, "sources": list(sources), "budget_groups": groups}, "sources.yaml")


def _items(source: str, count: int) -> list[WorkItem]:
    return [
        WorkItem(run_id="r1", source=source, ingestion_date=date(2026, 1, 2), shard="all", page=page)
        for page in range(1, count + 1)
    ]


FAMILIES = [
    pytest.param([_source("a"), _source("b"), _source("c")], [["a"], ["b"], ["c"]], id="unrelated: one each"),
    pytest.param(
        [_source("repos"), _source("issues", parent="repos"), _source("comments", parent="issues"), _source("x")],
        [["repos", "issues", "comments"], ["x"]],
        id="a parent, its children and theirs: one family",
    ),
    pytest.param(
        [_source("a", group="stripe"), _source("x"), _source("b", group="stripe"), _source("c", group="gh")],
        [["a", "b"], ["x"], ["c"]],
        id="a budget group's sources: one family",
    ),
    pytest.param(
        [_source("a", group="g"), _source("kid", parent="x"), _source("x", group="g"), _source("y")],
        [["a", "kid", "x"], ["y"]],
        id="linked through a group and a parent",
    ),
]


@pytest.mark.parametrize(("sources", "expected"), FAMILIES)
def test_sources_linked_by_a_parent_or_a_budget_group_are_one_family(
    sources: list[dict[str, Any]], expected: list[list[str]]
) -> None:
    # Given a sources file
    config = _file(*sources)
    # When its sources are grouped into families
    found = families(config, [source.name for source in config.sources])
    # Then the linked ones are together, in the file's order
    assert found == expected


def test_families_of_some_sources_leave_the_others_out() -> None:
    # Given three unrelated sources and a run of two of them
    config = _file(_source("a"), _source("b"), _source("c"))
    # When grouped
    # Then only the run's sources are placed
    assert families(config, ["c", "a"]) == [["a"], ["c"]]


SPLITS = [
    pytest.param({"a": 5, "b": 5, "c": 5, "d": 5}, 2, [{"a", "c"}, {"b", "d"}], id="four equal sources, two parts"),
    pytest.param({"a": 9, "b": 3, "c": 3, "d": 2}, 2, [{"a"}, {"b", "c", "d"}], id="the largest alone"),
    pytest.param({"a": 5, "b": 5}, 8, [{"a"}, {"b"}], id="no more parts than families"),
    pytest.param({"a": 5, "b": 5}, 1, [{"a", "b"}], id="one process: one part"),
    pytest.param({"a": 5}, 4, [{"a"}], id="one family: one part"),
]


@pytest.mark.parametrize(("counts", "processes", "expected"), SPLITS)
def test_items_are_split_into_parts_of_whole_sources_largest_first(
    counts: dict[str, int], processes: int, expected: list[set[str]]
) -> None:
    # Given unrelated sources with these many work items
    config = _file(*[_source(name) for name in counts])
    items = [item for name, count in counts.items() for item in _items(name, count)]
    # When split over the processes
    parts = split(config, items, processes)
    # Then each part holds whole sources, every item once, the largest part first
    assert [{item.source for item in part} for part in parts] == expected
    assert sorted(item for part in parts for item in _keys(part)) == sorted(_keys(items))
    assert [len(part) for part in parts] == sorted((len(part) for part in parts), reverse=True)


def test_a_family_is_never_split_over_two_processes() -> None:
    # Given a parent with its child and a budget group of two, and two processes
    config = _file(
        _source("repos"), _source("issues", parent="repos"), _source("a", group="g"), _source("b", group="g")
    )
    items = _items("repos", 3) + _items("issues", 4) + _items("a", 1) + _items("b", 6)
    # When split
    parts = split(config, items, 2)
    # Then the parent and its child are in one part, the group's sources in the other
    assert sorted(sorted({item.source for item in part}) for part in parts) == [["a", "b"], ["issues", "repos"]]


def test_no_items_make_no_parts() -> None:
    assert split(_file(_source("a")), [], 4) == []


def _keys(items: list[WorkItem]) -> list[tuple[str, int]]:
    return [(item.source, item.page) for item in items]


class _Launcher:
    """Counts the parts a runner would start."""

    def __init__(self) -> None:
        self.started: list[int] = []

    def prestart(self, count: int) -> None:
        pass

    def start(self, part: int, *_: Any) -> Any:
        self.started.append(part)
        return _Part()

    def close_unused(self) -> None:
        pass


class _Part:
    def stop(self) -> None:
        pass


def test_a_halted_run_starts_no_part() -> None:
    # Given a runner of four unrelated sources with two processes, halted (its lease lost while it planned)
    from apilake.runner import Runner

    config = _file(_source("a"), _source("b"), _source("c"), _source("d"))
    launcher = _Launcher()
    runner = Runner(config, None, "b", None, None, processes=2, launcher=launcher)  # type: ignore[arg-type]
    runner._halt("run r1: another process took its lease")
    # When its work is spread
    mine = runner._spread(_items("a", 3) + _items("b", 3) + _items("c", 3) + _items("d", 3), 0.0)
    # Then no part's process was started (this process's own share is stopped too)
    assert launcher.started == [] and len(mine) == 6 and runner.queues.stopped
