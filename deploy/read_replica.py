#!/usr/bin/env python3
"""Print a Tributary Iceberg table from the compose stack with pyiceberg.

Tributary keeps its catalog in SQLite (the JDBC-catalog layout pyiceberg's SqlCatalog reads,
catalog name `tributary`) on the tributary-state volume, and the table's metadata and data in
MinIO. Copy the catalog out, then read:

    docker compose cp tributary:/state/catalog.db ./catalog.db
    pip install "pyiceberg[sql-sqlite,pyarrow]"
    python3 deploy/read_replica.py ./catalog.db

(The direct profile's catalog is /state/catalog-direct.db in `tributary-direct`.) Prints the
current snapshot's Tributary summary (epoch, source positions), the row count, count and revenue
by status (what `orders-replica` prints as `status`, to compare with PostgreSQL), and the last
rows by key.

usage: read_replica.py CATALOG_DB [--table demo.orders_realtime_replica] [--rows 10]
                       [--endpoint http://localhost:9000] [--warehouse s3://warehouse/tributary]
"""
import argparse
from decimal import Decimal

from pyiceberg.catalog.sql import SqlCatalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("catalog", help="path of the SQLite catalog copied from /state")
    parser.add_argument("--table", default="demo.orders_realtime_replica")
    parser.add_argument("--rows", type=int, default=10, help="how many rows to print (last by key)")
    parser.add_argument("--endpoint", default="http://localhost:9000", help="MinIO's S3 API")
    parser.add_argument(
        "--warehouse",
        default="s3://warehouse/tributary",
        help="only used for tables created from here; existing ones carry their own location",
    )
    args = parser.parse_args()

    catalog = SqlCatalog(
        "tributary",
        uri=f"sqlite:///{args.catalog}",
        warehouse=args.warehouse,
        **{
            "s3.endpoint": args.endpoint,
            "s3.access-key-id": "minioadmin",
            "s3.secret-access-key": "minioadmin",
            "s3.region": "us-east-1",
            # MinIO serves buckets by path (http://host:9000/warehouse/…). pyiceberg's PyArrow
            # FileIO already does that with an endpoint override and reads the second key;
            # the first is the Iceberg property Java readers (S3FileIO) use.
            "s3.path-style-access": "true",
            "s3.force-virtual-addressing": "false",
        },
    )
    table = catalog.load_table(args.table)
    snapshot = table.current_snapshot()
    if snapshot is None:
        print(f"{args.table}: no snapshot yet (Tributary commits every --commit-ms)")
        return
    summary = snapshot.summary.additional_properties if snapshot.summary else {}
    print(f"table      {args.table}  ({table.metadata_location})")
    print(f"snapshot   {snapshot.snapshot_id}, sequence {snapshot.sequence_number}")
    for key in ("tributary.pipeline", "tributary.epoch", "tributary.source-positions"):
        if key in summary:
            print(f"{key:<27}{summary[key]}")

    rows = table.scan().to_arrow().to_pylist()
    print(f"rows       {len(rows)}")

    if rows and {"status", "quantity", "price"} <= rows[0].keys():
        by_status: dict = {}
        for row in rows:
            count, revenue = by_status.get(row["status"], (0, Decimal(0)))
            if row["quantity"] is not None and row["price"] is not None:
                revenue += row["quantity"] * row["price"]
            by_status[row["status"]] = (count + 1, revenue)
        print("\nstatus      order_count  total_revenue")
        for status in sorted(by_status, key=lambda s: (s is None, s)):
            count, revenue = by_status[status]
            print(f"{str(status):<11} {count:>11}  {revenue:>13}")

    if rows and args.rows > 0:
        key = next(iter(rows[0]))  # the first column is the key (order_id)
        shown = sorted(rows, key=lambda r: (r[key] is None, r[key]))[-args.rows :]
        columns = list(rows[0])
        cells = [[str(r[c]) for c in columns] for r in shown]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
        print()
        print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
        for row in cells:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


if __name__ == "__main__":
    main()
