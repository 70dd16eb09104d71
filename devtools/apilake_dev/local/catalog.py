"""Cataloging the raw zone where no crawler runs: one Glue table per source, one partition per
(ingestion_date, shard), column types inferred from the records as the crawler would."""

from __future__ import annotations

import contextlib
import gzip
import json
import re
from typing import Any

from apilake.lake import source_prefix
from apilake.names import table_name

SAMPLE_RECORDS = 500
_PARTITION = re.compile(r"/ingestion_date=([^/]+)/shard=([^/]+)/")


def hive_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double"
    if isinstance(value, dict):
        if not value:
            return "string"
        return "struct<" + ",".join(f"{key}:{hive_type(inner)}" for key, inner in value.items()) + ">"
    if isinstance(value, list):
        kinds = {hive_type(item) for item in value}
        return f"array<{kinds.pop() if len(kinds) == 1 else 'string'}>"
    return "string"


def merge_types(first: str | None, second: str) -> str:
    if first is None or first == second:
        return second
    if {first, second} == {"bigint", "double"}:
        return "double"
    return "string"


def infer_columns(records: list[dict[str, Any]]) -> list[dict[str, str]]:
    types: dict[str, str | None] = {}
    for record in records:
        for key, value in record.items():
            if value is None:
                types.setdefault(key, None)
            else:
                types[key] = merge_types(types.get(key), hive_type(value))
    return [{"Name": key.lower(), "Type": kind or "string"} for key, kind in types.items()]


def catalog_source(glue: Any, s3: Any, bucket: str, database: str, source: str) -> dict[str, Any]:
    """Create (or replace) the source's table and its partitions; returns what was cataloged."""
    prefix = source_prefix(source)
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
        if obj["Key"].endswith(".json.gz")
    ]
    records: list[dict[str, Any]] = []
    for key in keys:
        if len(records) >= SAMPLE_RECORDS:
            break
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        records += [r for r in (json.loads(line) for line in body.splitlines()) if isinstance(r, dict)]
    location = f"s3://{bucket}/{prefix}"
    columns = infer_columns(records[:SAMPLE_RECORDS])
    storage: dict[str, Any] = {
        "Columns": columns,
        "Location": location,
        "InputFormat": "org.apache.hadoop.mapred.TextInputFormat",
        "OutputFormat": "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
        "Compressed": True,
        "SerdeInfo": {"SerializationLibrary": "org.openx.data.jsonserde.JsonSerDe"},
    }
    name = table_name(source)
    table = {
        "Name": name,
        "TableType": "EXTERNAL_TABLE",
        "Parameters": {"classification": "json", "compressionType": "gzip"},
        "StorageDescriptor": storage,
        "PartitionKeys": [{"Name": "ingestion_date", "Type": "string"}, {"Name": "shard", "Type": "string"}],
    }
    try:
        glue.create_table(DatabaseName=database, TableInput=table)
    except glue.exceptions.AlreadyExistsException:
        glue.update_table(DatabaseName=database, TableInput=table)
    partitions = sorted({m.groups() for key in keys if (m := _PARTITION.search(key))})
    existing = {
        tuple(p["Values"])
        for page in glue.get_paginator("get_partitions").paginate(DatabaseName=database, TableName=name)
        for p in page["Partitions"]
    }
    new = [values for values in partitions if values not in existing]
    for start in range(0, len(new), 100):
        glue.batch_create_partition(
            DatabaseName=database,
            TableName=name,
            PartitionInputList=[
                {
                    "Values": list(values),
                    "StorageDescriptor": {
                        **storage,
                        "Location": f"{location}ingestion_date={values[0]}/shard={values[1]}/",
                    },
                }
                for values in new[start : start + 100]
            ],
        )
    return {"table": name, "columns": len(columns), "partitions": len(partitions), "objects": len(keys)}


def ensure_database(glue: Any, database: str) -> None:
    with contextlib.suppress(glue.exceptions.AlreadyExistsException):
        glue.create_database(DatabaseInput={"Name": database, "Description": "apilake raw zone (local)"})
