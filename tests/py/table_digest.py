#!/usr/bin/env python3
"""Independent reader for large tables: opens a Tributary warehouse's SQLite catalog with
pyiceberg, reads one table's current snapshot and prints a digest of COLUMNS as JSON:
{"rows": N, "digest": D, "keys": K}, where D is the sum over rows of the first 8 hex digits of
md5("v1|v2|…") (NULL as "NULL") and K the number of distinct values of the first column. The
tests compute the same digest in PostgreSQL, so a table of millions of rows is compared without
moving it.

usage: table_digest.py WAREHOUSE NAMESPACE.TABLE COLUMN [COLUMN …]
"""
import hashlib
import json
import sys

from pyiceberg.catalog.sql import SqlCatalog


def main() -> None:
    warehouse, name, columns = sys.argv[1], sys.argv[2], sys.argv[3:]
    catalog = SqlCatalog(
        "tributary", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}"
    )
    table = catalog.load_table(name).scan(selected_fields=tuple(columns)).to_arrow()
    values = [table.column(c).to_pylist() for c in columns]
    digest = 0
    for row in zip(*values):
        text = "|".join("NULL" if v is None else str(v) for v in row)
        digest += int(hashlib.md5(text.encode()).hexdigest()[:8], 16)
    print(json.dumps({"rows": table.num_rows, "digest": digest, "keys": len(set(values[0]))}))


if __name__ == "__main__":
    main()
