-- Records per source and ingestion date
SELECT source, ingestion_date, shard, count(*) AS records, count(DISTINCT id) AS distinct_ids
FROM raw GROUP BY ALL ORDER BY ALL;

-- The latest records of api-b
SELECT id, updated_at, amount, currency, customer.country AS country
FROM source_api_b ORDER BY updated_at DESC LIMIT 5;

-- Every version of api-e's records, and the latest one of each (source_api_e_current)
SELECT (SELECT count(*) FROM source_api_e) AS versions, count(*) AS records, max(updated_at) AS newest
FROM source_api_e_current;
