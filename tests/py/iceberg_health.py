#!/usr/bin/env python3
"""Table-health helper for the integration tests, with pyiceberg and pyarrow (independent of
Tributary's writer): a spec check of manifests, storage figures, and another engine's writes.

usage: iceberg_health.py WAREHOUSE NAMESPACE.TABLE COMMAND [ARGS]

  stats                      JSON: current metadata file size, metadata files on disk,
                             snapshots, manifests and live files of the current snapshot
  check                      checks every manifest of every snapshot kept (see `check`); prints
                             JSON figures, exits 1 naming the first violation
  other-writer IDS ROW_JSON  deletes the rows whose order_id is in IDS (comma-separated),
                             appends ROW_JSON (a row of the table, timestamps in µs) and
                             partitions the table by bucket(4, customer_id) from then on
  tag NAME INDEX             tags the INDEX-th oldest snapshot; prints its id and every file
                             it reads (manifest list, manifests, data and delete files)

WAREHOUSE is a directory with its SQLite catalog at WAREHOUSE/catalog.db.
"""
import datetime
import decimal
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import In
from pyiceberg.transforms import BucketTransform
from pyiceberg.avro.file import AvroFile
from pyiceberg.manifest import MANIFEST_ENTRY_SCHEMAS, DataFileContent, ManifestEntryStatus
from pyiceberg.types import (
    BinaryType,
    DateType,
    DecimalType,
    StringType,
    TimestampType,
    TimestamptzType,
    LongType,
)

FILE_PATH_ID = 2147483546
POS_ID = 2147483545
TRUNCATE = 16


def local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(1)


def referenced_data_files(table, manifest_path: str) -> dict:
    """file path → referenced_data_file of a manifest's entries, read with the v3 entry schema
    (pyiceberg's own v2 reader leaves the field out)."""
    schema = MANIFEST_ENTRY_SCHEMAS[3]
    data_file = schema.find_field(2).field_type
    names = [f.field_id for f in data_file.fields]
    path_at, referenced_at = names.index(100), names.index(143)
    data_file_at = [f.field_id for f in schema.fields].index(2)
    out = {}
    with AvroFile(table.io.new_input(manifest_path), schema, read_types={}, read_enums={}) as reader:
        for entry in reader:
            described = entry[data_file_at]
            out[described[path_at]] = described[referenced_at]
    return out


def live_entries(table, snapshot):
    """path → manifest entry of each of a snapshot's live files."""
    live = {}
    for manifest in snapshot.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            live[entry.data_file.file_path] = entry
    return live


def python_value(column: pa.ChunkedArray, value):
    """A pyarrow min/max scalar as the value pyiceberg decodes a bound to."""
    if value is None:
        return None
    if pa.types.is_timestamp(column.type):
        return value.cast(pa.int64()).as_py()
    if pa.types.is_date(column.type):
        return (value.as_py() - datetime.date(1970, 1, 1)).days
    return value.as_py()


def check_bounds(path, field, column, entry_file, figures):
    """The metrics of one column of one data file against the file itself."""
    fid = field.field_id
    values = entry_file.value_counts or {}
    nulls = entry_file.null_value_counts or {}
    if values.get(fid) != len(column):
        fail(f"{path}: value count of {field.name} is {values.get(fid)}, the file has {len(column)}")
    if nulls.get(fid) != column.null_count:
        fail(f"{path}: null count of {field.name} is {nulls.get(fid)}, the file has {column.null_count}")
    if column.null_count == len(column):
        return
    stats = pc.min_max(column)
    low, high = python_value(column, stats["min"]), python_value(column, stats["max"])
    lower = (entry_file.lower_bounds or {}).get(fid)
    upper = (entry_file.upper_bounds or {}).get(fid)
    if lower is None or upper is None:
        fail(f"{path}: no bounds for {field.name}")
    lower, upper = from_bytes(field.field_type, lower), from_bytes(field.field_type, upper)
    if isinstance(field.field_type, (StringType, BinaryType)):
        if not (low[:TRUNCATE] == lower and lower <= low):
            fail(f"{path}: lower bound of {field.name} {lower!r} is not the truncated minimum {low!r}")
        if len(high) <= TRUNCATE and upper != high:
            fail(f"{path}: upper bound of {field.name} {upper!r} is not the maximum {high!r}")
        if not upper >= high:
            fail(f"{path}: upper bound of {field.name} {upper!r} is below the maximum {high!r}")
        figures["truncated_bounds"] += len(high) > TRUNCATE
    else:
        if isinstance(field.field_type, DecimalType):
            low, high = decimal.Decimal(low), decimal.Decimal(high)
        if (lower, upper) != (low, high):
            fail(f"{path}: bounds of {field.name} are {lower!r}..{upper!r}, the file has {low!r}..{high!r}")
    figures["bounds_checked"] += 1


def check_file(table, entry, referenced, spec_of, figures):
    data_file = entry.data_file
    path = local(data_file.file_path)
    contents = pq.read_table(path)
    if data_file.record_count != contents.num_rows:
        fail(f"{path}: record count {data_file.record_count}, the file has {contents.num_rows}")
    if data_file.content == DataFileContent.POSITION_DELETES:
        named = contents.column("file_path")
        distinct = pc.unique(named).to_pylist()
        lower = (data_file.lower_bounds or {}).get(FILE_PATH_ID)
        upper = (data_file.upper_bounds or {}).get(FILE_PATH_ID)
        if lower is None or upper is None:
            fail(f"{path}: a position-delete file without file_path bounds")
        bounds = (from_bytes(StringType(), lower), from_bytes(StringType(), upper))
        if bounds != (min(distinct), max(distinct)):
            fail(f"{path}: file_path bounds {bounds} are not the paths it names {distinct[:3]}…")
        for named_file in distinct:
            if named_file in spec_of and spec_of[named_file] != data_file.spec_id:
                fail(f"{path}: partition spec {data_file.spec_id}, its data file {named_file} has {spec_of[named_file]}")
        if len(distinct) == 1:
            figures["single_file_deletes"] += 1
            if referenced is not None and referenced != distinct[0]:
                fail(f"{path}: referenced_data_file {referenced} but it deletes from {distinct[0]}")
            figures["referenced_data_file"] += referenced == distinct[0]
        elif referenced is not None:
            fail(f"{path}: referenced_data_file set on deletes of {len(distinct)} files")
        return
    schema = table.schema()
    by_id = {}
    for i, field in enumerate(contents.schema):
        meta = field.metadata or {}
        fid = meta.get(b"PARQUET:field_id")
        if fid is not None:
            by_id[int(fid)] = i
    for field in schema.fields:
        if field.field_id in by_id:
            check_bounds(path, field, contents.column(by_id[field.field_id]), data_file, figures)


def check(table) -> dict:
    """Every manifest of every snapshot kept: each file added is described as it is (record
    count, value and null counts, bounds recomputed from the Parquet file, file_path bounds and
    referenced_data_file of position deletes); each file a snapshot drops from its parent's live
    files has a DELETED entry in that snapshot's manifests."""
    figures = {
        "snapshots": 0,
        "manifests": 0,
        "files_checked": 0,
        "bounds_checked": 0,
        "truncated_bounds": 0,
        "deleted_entries": 0,
        "single_file_deletes": 0,
        "referenced_data_file": 0,
        "replace_snapshots": 0,
    }
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number)
    by_id = {s.snapshot_id: s for s in snapshots}
    seen_manifests, checked = set(), set()
    spec_of = {}
    for snapshot in snapshots:
        for manifest in snapshot.manifests(table.io):
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.data_file.content == DataFileContent.DATA:
                    spec_of[entry.data_file.file_path] = entry.data_file.spec_id
    figures["partition_specs"] = len(set(spec_of.values()))
    for snapshot in snapshots:
        figures["snapshots"] += 1
        deleted_here = set()
        for manifest in snapshot.manifests(table.io):
            entries = manifest.fetch_manifest_entry(table.io, discard_deleted=False)
            referenced = {}
            if any(e.data_file.content == DataFileContent.POSITION_DELETES for e in entries):
                referenced = referenced_data_files(table, manifest.manifest_path)
            for entry in entries:
                if entry.status == ManifestEntryStatus.DELETED and entry.snapshot_id == snapshot.snapshot_id:
                    deleted_here.add(entry.data_file.file_path)
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            figures["manifests"] += 1
            for entry in entries:
                if entry.status == ManifestEntryStatus.DELETED:
                    figures["deleted_entries"] += 1
                    continue
                path = entry.data_file.file_path
                if path in checked or not os.path.exists(local(path)):
                    if not os.path.exists(local(path)):
                        fail(f"{path}: live in snapshot {snapshot.snapshot_id} but not on disk")
                    continue
                checked.add(path)
                check_file(table, entry, referenced.get(path), spec_of, figures)
                figures["files_checked"] += 1
        parent = by_id.get(snapshot.parent_snapshot_id)
        if parent is not None:
            dropped = set(live_entries(table, parent)) - set(live_entries(table, snapshot))
            missing = dropped - deleted_here
            if missing:
                fail(f"snapshot {snapshot.snapshot_id} ({snapshot.summary.operation}) drops {len(missing)} files without DELETED entries, e.g. {sorted(missing)[0]}")
            if dropped:
                figures["replace_snapshots"] += 1
    return figures


def stats(table) -> dict:
    location = local(table.metadata_location)
    metadata_dir = os.path.dirname(location)
    current = table.current_snapshot()
    live = live_entries(table, current) if current else {}
    with open(location) as f:
        sequence = [s["sequence-number"] for s in json.load(f).get("snapshots", [])]
    return {
        "snapshots_in_sequence_order": sequence == sorted(sequence),
        "metadata_bytes": os.path.getsize(location),
        "metadata_files": len([f for f in os.listdir(metadata_dir) if f.endswith(".metadata.json")]),
        "snapshots": len(table.snapshots()),
        "manifests": len(current.manifests(table.io)) if current else 0,
        "live_data_files": sum(1 for e in live.values() if e.data_file.content == DataFileContent.DATA),
        "live_delete_files": sum(1 for e in live.values() if e.data_file.content != DataFileContent.DATA),
        "data_files_on_disk": len(os.listdir(os.path.join(os.path.dirname(metadata_dir), "data"))),
    }


def other_writer(table, ids: str, row: str) -> dict:
    wanted = [int(i) for i in ids.split(",") if i]
    table.delete(In("order_id", wanted))
    values = json.loads(row)
    arrow_schema = table.schema().as_arrow()
    columns = {}
    for field in arrow_schema:
        value = values.get(field.name)
        if pa.types.is_decimal(field.type) and value is not None:
            value = decimal.Decimal(value)
        if pa.types.is_timestamp(field.type) and value is not None:
            value = datetime.datetime.fromtimestamp(value / 1e6, tz=datetime.timezone.utc)
            if field.type.tz is None:
                value = value.replace(tzinfo=None)
        columns[field.name] = pa.array([value], type=field.type)
    table.append(pa.table(columns, schema=arrow_schema))
    # And partitions the table from now on (Tributary's deletes of older rows keep their
    # files' spec).
    with table.update_spec() as spec:
        spec.add_field("customer_id", BucketTransform(4), "customer_bucket")
    return {"deleted": len(wanted), "appended": 1}


def tag(table, name: str, index: str) -> dict:
    snapshot = sorted(table.snapshots(), key=lambda s: s.sequence_number)[int(index)]
    table.manage_snapshots().create_tag(snapshot.snapshot_id, name).commit()
    return {"snapshot_id": snapshot.snapshot_id, "files": snapshot_files(table, snapshot.snapshot_id)}


def snapshot_files(table, snapshot_id) -> list:
    snapshot = table.snapshot_by_id(int(snapshot_id))
    files = [local(p) for p in live_entries(table, snapshot)]
    files += [local(m.manifest_path) for m in snapshot.manifests(table.io)]
    files.append(local(snapshot.manifest_list))
    return sorted(files)


def main() -> None:
    warehouse, name, command, *args = sys.argv[1:]
    catalog = SqlCatalog(
        "tributary", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}"
    )
    table = catalog.load_table(name)
    if command == "stats":
        out = stats(table)
    elif command == "check":
        out = check(table)
    elif command == "other-writer":
        out = other_writer(table, *args)
    elif command == "tag":
        out = tag(table, *args)
    else:
        fail(f"unknown command {command}")
        return
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
