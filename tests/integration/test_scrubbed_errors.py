"""A vendor whose error text echoes the API key it was sent: the page fails with the vendor's words, and the key
shows nowhere (the ledger's failure, the run status, the DLQ, the logs, the bucket); *** stands in its place."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

import pytest

from apilake_dev.vendors.search_like import SearchLikeDataset, SearchLikeVendor
from tests.integration.conftest import API_KEY, emulated_harness, source_configs
from tests.integration.test_oauth_like import stored_text
from tests.integration.test_search_like import GRAPHQL_QUERY, graphql

SOURCE = "hits"
RUN = "echo-1"
DAY = date(2026, 11, 26)


def test_a_graphql_error_echoing_the_api_key_is_kept_with_stars_for_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a GraphQL vendor that answers a query it cannot run with an error quoting the caller's API key
    dataset = SearchLikeDataset("ds-s", total=25)
    with SearchLikeVendor([dataset], api_key=API_KEY, echo_key=True) as vendor:
        common = next(c for c in source_configs(vendor.base_url) if c["name"] == "api-b")
        source = {**common, "name": SOURCE, "params": {}, **graphql(10, GRAPHQL_QUERY.replace("items(", "itemz("))}
        with emulated_harness(vendor, [source], tmp_path, monkeypatch) as harness:
            # When the run is planned and the queue drained
            harness.plan({"sources": [SOURCE], "run_id": RUN, "ingestion_date": DAY.isoformat()})
            harness.drain(SOURCE)
            # Then page 1 failed for good with the vendor's words, the key replaced by ***
            assert [json.loads(body)["page"] for body in harness.dlq_bodies(SOURCE)] == [1]
            failure = harness.status(RUN).sources[0].shards[0].failures[1]
            said = "\"Cannot query field 'itemz' on type 'Query'. (asked with API key ***)\""
            assert f"reports 1 error(s) at 'errors': {said} (attempt 3)" in failure
            # And the key is nowhere: the ledger and the rest of the bucket, the DLQ, the logs, the output
            printed = capsys.readouterr()
            everywhere = [stored_text(harness), *harness.dlq_bodies(SOURCE), log_lines.getvalue(), printed.out]
            assert [text for text in [*everywhere, printed.err] if API_KEY in text] == []
            assert "(asked with API key ***)" in log_lines.getvalue()
