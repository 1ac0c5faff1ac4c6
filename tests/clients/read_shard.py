"""Reads cbr embedding shards with pyarrow (a Parquet reader cbr did not
write) and prints what it found as JSON: rows, embedding lengths, labels,
image ids and the embedder recorded in the metadata."""
import json
import sys

import pyarrow.parquet as pq

rows, dims, labels, ids, embedders = 0, set(), set(), [], set()
for path in sys.argv[1:]:
    table = pq.read_table(path)
    meta = pq.read_metadata(path).metadata
    embedders.add(json.loads(meta[b"cbr.embedder"])["name"])
    rows += table.num_rows
    dims.update(len(e) for e in table.column("embedding").to_pylist())
    labels.update(table.column("label").to_pylist())
    ids.extend(table.column("image_id").to_pylist())
print(json.dumps({"rows": rows, "dims": sorted(dims), "labels": sorted(labels), "unique_ids": len(set(ids)), "embedders": sorted(embedders)}))
