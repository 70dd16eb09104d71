-- Records per source and ingestion date
SELECT source, ingestion_date, shard, count(*) AS records, count(DISTINCT id) AS distinct_ids
FROM raw GROUP BY ALL ORDER BY ALL;

-- The latest records of api-b
SELECT id, updated_at, amount, currency, customer.country AS country
FROM source_api_b ORDER BY updated_at DESC LIMIT 5;

-- Every version of api-e's records (source_api_e, raw), and the latest one of each (source_api_e_current, curated)
SELECT (SELECT count(*) FROM source_api_e) AS versions, count(*) AS records, max(updated_at) AS newest
FROM source_api_e_current;

-- The latest version of each api-e record, typed (source_api_e_current), by the ingestion date it came from
SELECT ingestion_date, count(*) AS records, count(*) FILTER (WHERE active) AS active, round(sum(amount), 2) AS amount,
  min(updated_at) AS oldest_update, max(updated_at) AS newest_update
FROM source_api_e_current GROUP BY ingestion_date ORDER BY ingestion_date;

-- Bytes per source, raw vs curated: gzip NDJSON pages vs Parquet (ZSTD) files, from lake_files (local only)
SELECT source, sum(bytes) FILTER (WHERE zone = 'raw') AS raw_bytes, sum(bytes) FILTER (WHERE zone = 'curated') AS curated_bytes,
  round(sum(bytes) FILTER (WHERE zone = 'curated') / sum(bytes) FILTER (WHERE zone = 'raw'), 2) AS curated_to_raw
FROM lake_files GROUP BY source ORDER BY source;
