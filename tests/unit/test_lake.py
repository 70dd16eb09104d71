"""Keys are pure functions of (source, date, shard, page); bodies are deterministic gzip NDJSON."""

from __future__ import annotations

import gzip
import hashlib
import json
from datetime import date

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from apilake.lake import ENCODE_CHUNK_BYTES, LakeWriter, create_if_absent, encode_page, page_key


@pytest.mark.parametrize(
    ("source", "day", "shard", "page", "key"),
    [
        (
            "api-a",
            date(2026, 11, 26),
            "all",
            1,
            "raw/source=api-a/ingestion_date=2026-11-26/shard=all/page=00001.json.gz",
        ),
        (
            "api-b",
            date(2026, 1, 2),
            "2026-01-01",
            99999,
            "raw/source=api-b/ingestion_date=2026-01-02/shard=2026-01-01/page=99999.json.gz",
        ),
    ],
)
def test_page_keys_are_deterministic(source: str, day: date, shard: str, page: int, key: str) -> None:
    assert page_key(source, day, shard, page) == key


def test_pages_are_gzip_ndjson_one_record_a_line_in_utf8_with_the_hash_of_the_ndjson() -> None:
    digest, body = encode_page([{"a": 1, "b": "é"}, [1, 2]])
    ndjson = '{"a":1,"b":"é"}\n[1,2]\n'.encode()
    assert gzip.decompress(body) == ndjson
    assert digest == hashlib.sha256(ndjson).hexdigest()
    assert gzip.decompress(encode_page([])[1]) == b""


@mock_aws
def test_an_unchanged_page_is_not_rewritten_and_a_changed_one_is() -> None:
    # Given a bucket with one page written
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    writer = LakeWriter(s3, "lake")
    first = writer.write_page("raw/k.json.gz", [{"id": 1}], {"run-id": "r1"})
    head = s3.head_object(Bucket="lake", Key="raw/k.json.gz")
    # When the same records are written again
    again = writer.write_page("raw/k.json.gz", [{"id": 1}], {"run-id": "r2"})
    # Then nothing was written: same ETag, same LastModified, same metadata
    assert first.written and not again.written and again.bytes_written == 0
    assert s3.head_object(Bucket="lake", Key="raw/k.json.gz")["ETag"] == head["ETag"]
    assert s3.head_object(Bucket="lake", Key="raw/k.json.gz")["Metadata"]["run-id"] == "r1"
    # And different records replace the object
    changed = writer.write_page("raw/k.json.gz", [{"id": 2}], {"run-id": "r3"})
    stored = s3.get_object(Bucket="lake", Key="raw/k.json.gz")
    assert changed.written
    assert [json.loads(line) for line in gzip.decompress(stored["Body"].read()).splitlines()] == [{"id": 2}]
    assert stored["Metadata"]["sha256"] == changed.sha256
    assert stored["Metadata"]["record-count"] == "1"


@mock_aws
def test_a_new_page_costs_one_request_and_a_redelivered_one_two() -> None:
    # Given an empty lake bucket, and a record of the S3 calls made
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    calls: list[str] = []
    s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    writer = LakeWriter(s3, "lake")
    # When a new page is written
    writer.write_page("raw/k.json.gz", [{"id": 1}], {})
    # Then that is one conditional PutObject
    assert calls == ["PutObject"]
    # And writing it again is a refused create and a HEAD, no overwrite
    calls.clear()
    writer.write_page("raw/k.json.gz", [{"id": 1}], {})
    assert calls == ["PutObject", "HeadObject"]


def test_the_same_records_give_the_same_bytes() -> None:
    records = [{"id": i, "at": "2026-11-25"} for i in range(1000)]
    assert encode_page(records) == encode_page([dict(r) for r in records])


@mock_aws
def test_create_if_absent_creates_once_and_leaves_what_is_there() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="lake")
    # The first create wins, with the PutObject parameters given
    assert create_if_absent(s3, "lake", "ledger/k.json", b"first", ContentType="application/json")
    etag = s3.head_object(Bucket="lake", Key="ledger/k.json")["ETag"]
    # A second one answers "already there" and changes nothing
    assert not create_if_absent(s3, "lake", "ledger/k.json", b"second", ContentType="application/json")
    stored = s3.get_object(Bucket="lake", Key="ledger/k.json")
    assert stored["Body"].read() == b"first" and stored["ETag"] == etag and stored["ContentType"] == "application/json"


@pytest.mark.parametrize(
    ("code", "status"),
    [("PreconditionFailed", 412), ("ConditionalRequestConflict", 409)],
    ids=["the key exists", "another create of the key is in flight"],
)
def test_create_if_absent_answers_already_there_when_s3_refuses_the_create(code: str, status: int) -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    with Stubber(s3) as stub:
        stub.add_client_error(
            "put_object",
            service_error_code=code,
            http_status_code=status,
            expected_params={"Bucket": "lake", "Key": "k", "Body": b"x", "IfNoneMatch": "*"},
        )
        assert create_if_absent(s3, "lake", "k", b"x") is False


def test_create_if_absent_raises_any_other_error() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    with Stubber(s3) as stub:
        stub.add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
        with pytest.raises(ClientError, match="AccessDenied"):
            create_if_absent(s3, "lake", "k", b"x")


def test_a_page_larger_than_a_chunk_is_encoded_whole_with_its_hash_of_the_ndjson() -> None:
    # Given a page of ~1 MB of NDJSON: several encoding chunks
    records = [{"id": n, "text": "é" * 200, "nested": {"n": n}} for n in range(2_500)]
    expected = b"".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for r in records)
    assert len(expected) > 3 * ENCODE_CHUNK_BYTES
    # When it is encoded / Then the gzip holds exactly that NDJSON and the hash is the NDJSON's
    digest, compressed = encode_page(records)
    assert gzip.decompress(compressed) == expected
    assert digest == hashlib.sha256(expected).hexdigest()
