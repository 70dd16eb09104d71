"""The auth kinds end to end in-process (planner, queues, workers, lake): OAuth2 client credentials whose tokens
expire in the middle of the run (after a few requests, or after a second), HTTP basic with the key as the
username (Stripe), and headers from one secret. Every record lands exactly once, and no secret, password or
token shows in the logs, the errors, the ledger, the lake's objects and metadata, or the DLQs."""

from __future__ import annotations

import base64
import gzip
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import pytest

from apilake.exceptions import PlanningError
from apilake.lake import page_key
from apilake_dev.vendors.fake import Dataset
from apilake_dev.vendors.oauth_like import AuthState, OAuthLikeVendor
from tests.integration.conftest import BUCKET, READ_TIMEOUT, RETRIES, Harness, emulated_harness

RUN = "auth-1"
DAY = date(2026, 11, 26)
CLIENT_SECRET = "cs-8d1f0c2a-d0-not-l0g"
STRIPE_KEY = "sk_test_51Hx-d0-not-l0g-4eC39"
ACCOUNT_KEY = "hk-77ab19-d0-not-l0g"
AUDIENCE = "https://api.example.com/v2/"
DATASETS = {
    "oauth-pages": Dataset("ds-o1", total=57),  # page_number, fanned out: 12 pages and the planner's probe
    "oauth-chain": Dataset("ds-o2", total=30),  # a cursor chain of 6 pages, paced over about 3 seconds
    "basic-pages": Dataset("ds-b", total=44),
    "header-pages": Dataset("ds-h", total=23),
}


def auth_state(**overrides: Any) -> AuthState:
    return AuthState(
        client_id="apilake-test",
        client_secret=CLIENT_SECRET,
        audience=AUDIENCE,
        basic=(STRIPE_KEY, ""),
        secret_headers={"X-Account-Id": "acct_0042", "X-Api-Key": ACCOUNT_KEY},
        protection={"ds-o1": "oauth2", "ds-o2": "oauth2", "ds-b": "basic", "ds-h": "headers"},
        **overrides,
    )


def oauth2(vendor: OAuthLikeVendor, secret_name: str = "apilake/oauth", **overrides: Any) -> dict[str, Any]:
    return {
        "type": "oauth2_client_credentials",
        "token_url": vendor.token_url,
        "secret_name": secret_name,
        "scopes": ["read:things", "read:more"],
        "token_params": {"audience": AUDIENCE},
        **overrides,
    }


def sources(vendor: OAuthLikeVendor) -> list[dict[str, Any]]:
    common = {
        "base_url": vendor.base_url,
        "record_id_path": "id",
        "retries": RETRIES,
        "timeouts": {"connect_seconds": 2, "read_seconds": READ_TIMEOUT},
    }
    return [
        {
            **common,
            "name": "oauth-pages",
            "path": "/page_number/ds-o1",
            "records_path": "data",
            "pagination": {"type": "page_number", "page_size": 5, "total_path": "meta.total"},
            "auth": oauth2(vendor),
        },
        {
            **common,
            "name": "oauth-chain",
            "path": "/cursor/ds-o2",
            "params": {"limit": 5},
            "records_path": "results",
            "pagination": {"type": "cursor", "cursor_path": "next_cursor", "has_more_path": "has_more"},
            "auth": oauth2(vendor, client_auth="basic"),
            "budget": {"requests_per_second": 4, "max_concurrency": 2},  # 2 a second: the chain outlives a token
        },
        {
            **common,
            "name": "basic-pages",
            "path": "/offset/ds-b",
            "records_path": "items",
            "pagination": {"type": "offset", "limit": 10, "total_path": "total"},
            "auth": {"type": "http_basic", "secret_name": "apilake/stripe", "username_field": "key"},
        },
        {
            **common,
            "name": "header-pages",
            "path": "/link_header/ds-h",
            "params": {"per_page": 5},
            "records_path": "",
            "pagination": {"type": "link_header"},
            "auth": {
                "type": "headers_from_secret",
                "secret_name": "apilake/headers",
                "headers": {"X-Account-Id": "account", "X-Api-Key": "key"},
            },
        },
    ]


def create_secrets() -> None:
    client = boto3.client("secretsmanager", region_name="us-east-1")
    secrets = {
        "apilake/oauth": {"client_id": "apilake-test", "client_secret": CLIENT_SECRET},
        "apilake/stripe": {"key": STRIPE_KEY, "password": ""},
        "apilake/headers": {"account": "acct_0042", "key": ACCOUNT_KEY},
    }
    for name, value in secrets.items():
        client.create_secret(Name=name, SecretString=json.dumps(value))


@contextmanager
def running(
    state: AuthState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OAuthLikeVendor, Harness]]:
    vendor = OAuthLikeVendor(list(DATASETS.values()), state)
    with vendor, emulated_harness(vendor, sources(vendor), tmp_path, monkeypatch) as harness:
        create_secrets()
        yield vendor, harness


def stored_text(harness: Harness) -> str:
    """Every object of the lake bucket (raw pages, ledger, reports), decompressed, with its metadata."""
    texts = []
    for page in harness.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for entry in page.get("Contents", []):
            stored = harness.s3.get_object(Bucket=BUCKET, Key=entry["Key"])
            body = stored["Body"].read()
            texts += [entry["Key"], json.dumps(stored["Metadata"])]
            texts.append((gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body).decode(errors="replace"))
    return "\n".join(texts)


def secrets_shown(vendor: OAuthLikeVendor, harness: Harness, *texts: str) -> list[str]:
    """The secrets (and issued tokens) found in the logs, the errors, the lake or the DLQs."""
    basic = base64.b64encode(f"{STRIPE_KEY}:".encode()).decode()
    client = base64.b64encode(f"apilake-test:{CLIENT_SECRET}".encode()).decode()
    secrets = [CLIENT_SECRET, STRIPE_KEY, ACCOUNT_KEY, basic, client, *vendor.auth.issued]
    everywhere = "\n".join([*texts, stored_text(harness), *(b for s in DATASETS for b in harness.dlq_bodies(s))])
    return [secret for secret in secrets if secret in everywhere]


def test_every_auth_kind_lands_every_record_once_through_expiring_tokens_and_shows_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a vendor whose tokens are used up after 3 requests (oauth-pages gets 401s mid-run) and expire after
    # 1.5 s (oauth-chain, paced at 2 requests a second, outlives each token)
    with running(auth_state(token_uses=3, token_seconds=1.5), tmp_path, monkeypatch) as (vendor, harness):
        # When the run is planned and every source's queue drained
        harness.plan({"run_id": RUN, "ingestion_date": DAY.isoformat()})
        stats = {name: harness.drain(name) for name in DATASETS}
        # Then every page of every source landed once, with each of the vendor's records exactly once
        for name, dataset in DATASETS.items():
            assert stats[name].failed == 0 and stats[name].handler_errors == [], name
            expected = [r["id"] for r in dataset.records(None, None)]
            assert [r["id"] for r in harness.records(name)] == expected, name
            assert harness.keys(name)[0] == page_key(name, DAY, "all", 1)
        assert all(source.complete for source in harness.status(RUN).sources)
        # And the tokens did expire mid-run: several were issued, some refused with a 401 and renewed
        assert len(vendor.auth.issued) >= 4 and vendor.auth.rejected["used-up token"] >= 1
        requests = vendor.auth.token_requests
        assert {r["client_auth"] for r in requests} == {"body", "basic"}
        assert all(r["scope"] == "read:things read:more" and r["audience"] == AUDIENCE for r in requests)
        # And no secret, password or token shows anywhere
        printed = capsys.readouterr()
        assert secrets_shown(vendor, harness, log_lines.getvalue(), printed.out, printed.err) == []


def test_refused_client_credentials_and_refused_tokens_fail_pages_permanently_saying_why_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, log_lines: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an API that refuses every token (used up at once), and a vendor that no longer has our client's secret
    state = auth_state(token_uses=0)
    state.client_secret = "rotated-by-the-vendor"
    with running(state, tmp_path, monkeypatch) as (vendor, harness):
        # When the run is planned: the fanned-out source's probe cannot get a token
        with pytest.raises(PlanningError) as raised:
            harness.plan({"run_id": RUN, "ingestion_date": DAY.isoformat()})
        refused = (
            f"source 'oauth-pages': token endpoint {vendor.token_url}: refused the client credentials of secret "
            "'apilake/oauth': 401: invalid_client (Client authentication failed)"
        )
        assert refused in str(raised.value)
        # And the chain's page 1 fails permanently in the worker, for the same reason
        harness.drain("oauth-chain")
        chain = next(s for s in harness.status(RUN).sources if s.source == "oauth-chain")
        assert refused.replace("oauth-pages", "oauth-chain") in chain.shards[0].failures[1]
        assert [json.loads(b)["page"] for b in harness.dlq_bodies("oauth-chain")] == [1]
        # When the vendor takes the client's secret again, but its API refuses every token it is given
        with vendor.auth.lock:
            vendor.auth.client_secret = CLIENT_SECRET
        harness.plan({"run_id": "auth-2", "ingestion_date": DAY.isoformat(), "sources": ["oauth-chain"]})
        harness.event_source("oauth-chain").poll_once()
        # Then the page was asked for twice, with two tokens, and failed saying the renewed one was refused too
        assert vendor.auth.rejected["used-up token"] == 2 and len(vendor.auth.issued) == 2
        chain = next(s for s in harness.status("auth-2").sources if s.source == "oauth-chain")
        assert "again with renewed credentials: the vendor refuses them" in chain.shards[0].failures[1]
        printed = capsys.readouterr()
        shown = secrets_shown(vendor, harness, str(raised.value), log_lines.getvalue(), printed.out, printed.err)
        assert shown == []
