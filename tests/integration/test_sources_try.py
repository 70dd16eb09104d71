"""`apilake sources try NAME`: page 1 from the (fake) vendor on 127.0.0.1, read as the worker and the planner would;
exit 1 with the reason when the config does not match the response, 2 on an HTTP error; secrets never shown."""

from __future__ import annotations

import copy
import json
import logging
import math
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from apilake.lake import page_key
from apilake.observability import logger
from apilake_cli.main import main
from apilake_dev.vendors.fake import Dataset, FakeVendor, Fault, encode_cursor
from tests.integration.conftest import API_KEY, DATASETS, source_configs

SECRET = f"--secret=apilake/vendor={API_KEY}"
TODAY = datetime.now(UTC).date()


def write(tmp_path: Path, configs: list[dict[str, Any]]) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "sources": configs}, sort_keys=False))
    return path


def try_json(
    path: Path, name: str, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, dict[str, Any], str]:
    code = main(["sources", "try", name, "--sources", str(path), SECRET, "--json", *options])
    out, err = capsys.readouterr()
    assert API_KEY not in out + err
    return code, json.loads(out), err


@pytest.fixture
def sources(vendor: FakeVendor, tmp_path: Path) -> Path:
    return write(tmp_path, source_configs(vendor.base_url))


def day_records(dataset: Dataset, day: str) -> int:
    return len(dataset.records(day, (date.fromisoformat(day) + timedelta(days=1)).isoformat()))


def test_a_page_number_source_with_a_total_fans_out_its_pages(
    sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a daily source (3 days back) whose vendor states the total
    code, found, _ = try_json(sources, "api-a", capsys)
    # Then it matches; page 1 of the run's last shard was asked for, and its pages are counted from the total
    shards = [(TODAY - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    total = day_records(DATASETS["api-a"], shards[-1])
    assert (code, found["matches"], found["mode"]) == (0, True, "fanout")
    assert found["next"] == {"pages": math.ceil(total / 7), "total": total, "page_size": 7}
    assert found["plan"]["shards"] == shards and found["plan"]["messages"] is None
    assert found["key"] == page_key("api-a", TODAY, shards[-1], 1)
    assert f"since={shards[-1]}" in found["request"]["url"] and found["request"]["credential_headers"] == ["X-Api-Key"]


@pytest.mark.parametrize(
    ("name", "expected_next", "messages"),
    [
        ("api-b", {"page": 2, "cursor": encode_cursor(2), "has_more": True}, 1),
        ("open-pages", {"page": 2, "cursor": None}, 1),
        ("offsets", {"pages": 10, "total": 95, "page_size": 10}, 10),
        ("one-page", {"pages": 1, "total": None, "page_size": None}, 1),
    ],
)
def test_each_style_reads_page_1_as_the_worker_does(
    sources: Path, capsys: pytest.CaptureFixture[str], name: str, expected_next: dict[str, Any], messages: int
) -> None:
    code, found, _ = try_json(sources, name, capsys)
    assert (code, found["problem"], found["error"]) == (0, None, None)
    assert found["next"] == expected_next
    assert found["plan"]["shards"] == ["all"] and found["plan"]["messages"] == messages
    assert found["records"]["count"] > 0 and found["records"]["first"]["id"].startswith("ds-")
    assert found["response"]["status"] == 200


@pytest.mark.parametrize("name", ["api-c", "api-d"])
def test_a_next_link_is_shown_without_the_key_it_carries(
    sources: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    # Given next_url (whose key goes in the query string, and comes back in the vendor's link) and link_header
    code, found, _ = try_json(sources, name, capsys)
    assert code == 0 and found["next"]["page"] == 2
    assert "/2" not in found["next"]["next_url"] and "page=2" in found["next"]["next_url"]
    if name == "api-c":
        assert "api_key=***" in found["request"]["url"] and found["request"]["credential_headers"] == []


def test_the_text_output_says_what_it_found_and_never_the_secret(
    sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sources", "try", "api-c", "--sources", str(sources), SECRET]) == 0
    out, err = capsys.readouterr()
    assert API_KEY not in out + err
    lines = dict(line.split(None, 1) for line in out.splitlines() if line[:1] != " ")
    assert lines["request"].startswith("GET http://127.0.0.1:") and "api_key=***" in lines["request"]
    assert lines["response"].startswith("200, ") and lines["records"] == "10 at 'data'"
    # And the next link as its work item would carry it: the key stripped (each request adds it again)
    assert lines["next"].startswith("page 2 at http://127.0.0.1:") and "api_key" not in lines["next"]
    assert lines["key"] == page_key("api-c", TODAY, "all", 1)
    assert lines["planner"] == "1 message over 1 shard (all): page 1 of each shard; each landed page enqueues the next"


def test_the_json_document_has_stable_keys(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, found, _ = try_json(sources, "api-b", capsys)
    assert list(found) == [
        "source",
        "pagination",
        "mode",
        "request",
        "response",
        "records",
        "next",
        "key",
        "plan",
        "notes",
        "matches",
        "problem",
        "error",
        "exit",
    ]
    assert set(found["request"]) == {"method", "url", "headers", "credential_headers", "body"}


def changed(base_url: str, name: str, **overrides: Any) -> list[dict[str, Any]]:
    configs = copy.deepcopy(source_configs(base_url))
    for config in configs:
        if config["name"] == name:
            config.update(overrides)
    return configs


@pytest.mark.parametrize(
    ("name", "overrides", "reason"),
    [
        pytest.param(
            "api-b",
            {"records_path": "data"},
            "records not found at path 'data' of the response (the response is an object with the keys: results, "
            "next_cursor, has_more)",
            id="records_path missing",
        ),
        pytest.param(
            "api-a",
            {"records_path": "meta"},
            "records at path 'meta' are a dict, not a list (the response is an object with the keys: data, meta)",
            id="records not a list",
        ),
        pytest.param(
            "offsets",
            {"pagination": {"type": "offset", "limit": 10, "total_path": "meta.total"}},
            "total not found at path 'meta.total' of the response",
            id="total missing",
        ),
        pytest.param(
            "api-b",
            {"pagination": {"type": "cursor", "cursor_path": "cursor", "has_more_path": "has_more"}},
            "has_more is true but there is no cursor at 'cursor'",
            id="cursor missing while has_more is true",
        ),
        pytest.param(
            "api-b",
            {"pagination": {"type": "cursor", "cursor_from": "last_record", "cursor_field": "uid"}},
            "the last record of page 1 has no 'uid' to take the cursor from",
            id="cursor field missing from the last record",
        ),
        pytest.param(
            "api-c",
            {"pagination": {"type": "next_url", "next_url_path": "links"}},
            "next URL at 'links' is a dict",
            id="next link not a URL",
        ),
    ],
)
def test_a_config_that_does_not_match_the_response_exits_1_with_the_reason(
    vendor: FakeVendor,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    path = write(tmp_path, changed(vendor.base_url, name, **overrides))
    code, found, _ = try_json(path, name, capsys)
    assert (code, found["matches"], found["exit"]) == (1, False, 1)
    assert found["problem"] == reason
    assert main(["sources", "try", name, "--sources", str(path), SECRET]) == 1
    assert f"does not match: {reason}" in capsys.readouterr().out


def test_a_response_that_is_not_json_does_not_match(
    vendor: FakeVendor, sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vendor.inject("single", "ds-g", 1, Fault("html"))
    code, found, _ = try_json(sources, "one-page", capsys)
    assert code == 1 and found["problem"].startswith("the response of http://127.0.0.1:")
    assert "is not JSON (text/html" in found["problem"]


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        pytest.param("api-b", ["--secret=apilake/vendor=wrong"], "401 from http://127.0.0.1:", id="wrong key"),
        pytest.param("api-c", ["--secret=apilake/vendor=wrong"], "api_key=***", id="wrong key in the query"),
    ],
)
def test_an_http_error_exits_2_without_the_secret(
    sources: Path, capsys: pytest.CaptureFixture[str], name: str, options: list[str], error: str
) -> None:
    code = main(["sources", "try", name, "--sources", str(sources), "--json", *options])
    out, err = capsys.readouterr()
    found = json.loads(out)
    assert (code, found["exit"], found["matches"]) == (2, 2, False)
    assert error in found["error"] and "wrong" not in out + err
    assert found["response"] == {"status": 401}


def test_a_secret_not_given_and_an_unknown_source_exit_2(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sources", "try", "api-b", "--sources", str(sources), "--json"]) == 2
    assert "secret 'apilake/vendor' was not given" in json.loads(capsys.readouterr().out)["error"]
    assert main(["sources", "try", "api-z", "--sources", str(sources)]) == 2
    assert "unknown source 'api-z'; declared: api-a, api-b" in capsys.readouterr().err


def test_a_retried_request_still_prints_one_json_document(
    vendor: FakeVendor, sources: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a vendor that answers 503 once: the source's retries apply, and the retry is logged on stderr
    vendor.inject("cursor", "ds-b", 1, Fault("status", status=503))
    # (whatever level an earlier command of this process left the logger at: `apilake ingest`'s default WARNING)
    logger.setLevel(logging.WARNING)
    try:
        code, found, err = try_json(sources, "api-b", capsys)
    finally:
        logger.setLevel(logging.INFO)
    assert code == 0 and found["response"]["attempts"] == 2
    assert "retrying vendor request" in err


def test_a_daily_shard_can_be_chosen(sources: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, found, _ = try_json(sources, "api-a", capsys, "--shard", "2026-11-25")
    total = day_records(DATASETS["api-a"], "2026-11-25")
    assert code == 0 and total > 0 and found["next"]["pages"] == math.ceil(total / 7)
    assert found["key"] == page_key("api-a", TODAY, "2026-11-25", 1)
    planned = "2026-11-25" in found["plan"]["shards"]
    assert planned != any("is not one this run's planner would plan" in note for note in found["notes"])


CURRENCIES = ("EUR", "USD", "GBP")


def family(base_url: str) -> list[dict[str, Any]]:
    """A parent listing records, and a child fetched once per record's currency: /single/{cur}."""
    common = {"base_url": base_url, "records_path": "records", "pagination": {"type": "single"}}
    return [
        {**common, "name": "parents", "path": "/single/parents"},
        {
            **common,
            "name": "by-currency",
            "path": "/single/{cur}",
            "parent": {"source": "parents", "fields": {"cur": "currency"}},
        },
    ]


def test_a_child_source_is_tried_with_the_first_record_of_its_parent_or_given_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parents = Dataset("parents", total=6)
    with FakeVendor([parents, *(Dataset(c, total=4) for c in CURRENCIES)]) as vendor:
        path = write(tmp_path, family(vendor.base_url))
        # When the parent is tried, the child work items its page 1 announces are counted
        code, found, _ = try_json(path, "parents", capsys)
        assert code == 0
        assert found["plan"]["children"] == {"by-currency": len({r["currency"] for r in parents.records(None, None)})}
        # When the child is tried alone, its placeholder comes from the parent's first record
        first = parents.records(None, None)[0]["currency"]
        code, found, _ = try_json(path, "by-currency", capsys)
        assert code == 0 and found["request"]["url"].endswith(f"/single/{first}")
        assert found["key"].startswith(f"raw/source=by-currency/ingestion_date={TODAY}/shard=p-{first.lower()}-")
        assert found["records"]["first"]["id"].startswith(f"{first}-")
        # And with --parent, the value given
        other = next(c for c in CURRENCIES if c != first)
        code, found, _ = try_json(path, "by-currency", capsys, f"--parent=cur={other}")
        assert code == 0 and found["request"]["url"].endswith(f"/single/{other}")


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        ("api-a", ["--shard", "yesterday"], "--shard 'yesterday': a day (YYYY-MM-DD) of a source with sharding: daily"),
        ("api-b", ["--shard", "2026-11-25"], "--shard '2026-11-25': a day (YYYY-MM-DD) of a source with sharding"),
        ("api-b", ["--parent", "x=1"], "--parent: source 'api-b' is not a child source"),
        ("api-b", ["--parent", "x"], "--parent 'x': expected NAME=VALUE"),
    ],
)
def test_bad_options_exit_2_with_the_reason(
    sources: Path, capsys: pytest.CaptureFixture[str], name: str, options: list[str], error: str
) -> None:
    assert main(["sources", "try", name, "--sources", str(sources), SECRET, *options]) == 2
    assert error in capsys.readouterr().err


@pytest.mark.parametrize(
    ("auth", "secret"),
    [
        (
            {"type": "headers_from_secret", "secret_name": "apilake/vendor", "headers": {"X-Api-Key": "key"}},
            json.dumps({"key": API_KEY}),
        ),
        ({"type": "bearer", "secret_name": "apilake/vendor", "secret_field": "token"}, json.dumps({"token": API_KEY})),
    ],
    ids=["headers_from_secret", "bearer from a JSON secret"],
)
def test_secrets_of_other_auth_kinds_are_never_printed(
    vendor: FakeVendor, tmp_path: Path, capsys: pytest.CaptureFixture[str], auth: dict[str, Any], secret: str
) -> None:
    path = write(tmp_path, changed(vendor.base_url, "api-b", auth=auth))
    command = ["sources", "try", "api-b", "--sources", str(path), f"--secret=apilake/vendor={secret}"]
    assert main(command) == 0
    out, err = capsys.readouterr()
    assert API_KEY not in out + err
    assert f"headers: {'X-Api-Key' if 'headers' in auth else 'Authorization'} (credential, not shown)" in out
    assert main([*command, "--json"]) == 0
    out, err = capsys.readouterr()
    assert API_KEY not in out + err and json.loads(out)["matches"] is True
