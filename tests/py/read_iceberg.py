#!/usr/bin/env python3
"""Independent reader for the integration tests: opens a Tributary warehouse's SQLite catalog
with pyiceberg and prints one table as JSON: every snapshot (oldest first) with its summary, and
the rows of each snapshot (or of the current one only, with --current), sorted.

usage: read_iceberg.py WAREHOUSE NAMESPACE.TABLE [--current] [--catalog PATH|postgresql://…|http://…]

WAREHOUSE is a directory (catalog at WAREHOUSE/catalog.db unless --catalog says otherwise) or
s3://BUCKET/PREFIX (then --catalog is required; the S3 endpoint and credentials come from
TRIBUTARY_S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION).
"""
import json
import os
import sys
import time

import pyarrow as pa
from pyiceberg.catalog.rest import RestCatalog
from pyiceberg.catalog.sql import SqlCatalog


def plain(table: pa.Table) -> list:
    """Rows as JSON-friendly dicts: timestamps as integer microseconds, decimals as text, dates
    as YYYY-MM-DD, binary as hex."""
    columns = {}
    for name in table.column_names:
        column = table.column(name)
        if pa.types.is_timestamp(column.type):
            column = column.cast(pa.int64())
        values = column.to_pylist()
        if pa.types.is_decimal(column.type):
            values = [None if v is None else str(v) for v in values]
        elif pa.types.is_date(column.type):
            values = [None if v is None else v.isoformat() for v in values]
        elif pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            values = [None if v is None else v.hex() for v in values]
        columns[name] = values
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())]
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def main() -> None:
    warehouse, name = sys.argv[1], sys.argv[2]
    options = sys.argv[3:]
    current_only = "--current" in options
    catalog_path = options[options.index("--catalog") + 1] if "--catalog" in options else None
    properties = {}
    if warehouse.startswith("s3://"):
        properties = {
            "s3.endpoint": os.environ["TRIBUTARY_S3_ENDPOINT"],
            "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
            "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
            "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            "s3.force-virtual-addressing": "false",
        }
    else:
        catalog_path = catalog_path or f"{warehouse}/catalog.db"
        warehouse = f"file://{warehouse}"
    if catalog_path.startswith("http"):
        if os.environ.get("TRIBUTARY_REST_TOKEN"):
            properties["token"] = os.environ["TRIBUTARY_REST_TOKEN"]
        catalog = RestCatalog("tributary", uri=catalog_path, **properties)
    else:
        if catalog_path.startswith("postgres"):
            uri = "postgresql+psycopg2://" + catalog_path.split("://", 1)[1]
        else:
            uri = f"sqlite:///{catalog_path}"
        catalog = SqlCatalog("tributary", uri=uri, warehouse=warehouse, **properties)
    table = catalog.load_table(name)
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number)
    current = table.current_snapshot()
    out = []
    started = time.monotonic()
    for snapshot in snapshots:
        if current_only and snapshot.snapshot_id != current.snapshot_id:
            continue
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        out.append(
            {
                "snapshot_id": snapshot.snapshot_id,
                "sequence_number": snapshot.sequence_number,
                "operation": str(snapshot.summary.operation) if snapshot.summary else None,
                "summary": summary,
                "rows": plain(table.scan(snapshot_id=snapshot.snapshot_id).to_arrow()),
            }
        )
    json.dump({"snapshots": out, "read_seconds": time.monotonic() - started}, sys.stdout)


if __name__ == "__main__":
    main()
