"""dlt's contender: its REST API source (``rest_api_source``) to its filesystem destination (a local
folder, JSON lines, gzip: dlt's defaults for ``jsonl``), run by the peers' own environment
(.bench-peers, bench/peers/requirements.txt), never by the dev one.

dlt follows one resource's pages one after another, so each dataset is split into equal page ranges
(``page`` .. ``maximum_page``), one resource each, ``parallelized``, and the extract step gets as many
workers as there are resources (``--threads`` in all). 429s: dlt's own retry (it honours
``Retry-After``). The pipeline's state lives in a fresh folder of its own.

    python bench/peers/dlt_run.py --base-url URL --datasets a,b --pages 500 --records 100 --threads 8 --out DIR

Prints one JSON line: {"seconds": ..., "resources": [table names]}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any


def resources(datasets: list[str], pages: int, threads: int) -> list[dict[str, Any]]:
    """One resource per page range: ``threads`` ranges in all, spread over the datasets."""
    per_dataset = max(1, threads // len(datasets))
    span = math.ceil(pages / per_dataset)
    found = []
    for name in datasets:
        for part, first in enumerate(range(1, pages + 1, span)):
            last = min(first + span - 1, pages)
            paginator = {
                "type": "page_number",
                "base_page": 1,
                "page": first,
                "maximum_page": last + 1,  # dlt stops once the next page would reach it
                "total_path": None,
            }
            found.append(
                {
                    "name": f"{name.replace('-', '_')}_{part}",
                    "endpoint": {"path": f"page_number/{name}", "data_selector": "data", "paginator": paginator},
                }
            )
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="dlt's REST API source to its filesystem destination")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--datasets", required=True)
    parser.add_argument("--pages", type=int, required=True, help="pages per dataset")
    parser.add_argument("--records", type=int, required=True, help="records per page (per_page)")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--out", required=True, help="the destination folder")
    parser.add_argument("--work", required=True, help="the pipeline's own folder (state, load packages)")
    args = parser.parse_args(argv)
    found = resources(args.datasets.split(","), args.pages, args.threads)
    os.environ["EXTRACT__WORKERS"] = str(len(found))
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"

    import dlt  # type: ignore[import-not-found, unused-ignore]
    from dlt.sources.rest_api import rest_api_source  # type: ignore[import-not-found, unused-ignore]

    start = time.monotonic()
    source = rest_api_source(
        {
            "client": {"base_url": args.base_url},
            "resource_defaults": {
                "endpoint": {"params": {"per_page": args.records}},
                "parallelized": True,
                "write_disposition": "append",
            },
            "resources": found,
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="peers",
        pipelines_dir=str(Path(args.work)),
        destination=dlt.destinations.filesystem(bucket_url=Path(args.out).resolve().as_uri()),
        dataset_name="peers",
    )
    pipeline.run(source, loader_file_format="jsonl")
    seconds = time.monotonic() - start
    print(json.dumps({"seconds": seconds, "resources": [r["name"] for r in found]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
