"""A subscriber outside Rust: decodes vncguard records by their single-object fingerprint alone.

Reads JSON lines {"topic": ..., "payload_hex": ...} on stdin (payloads as consumed from Kafka) and
writes {"topic", "schema", "fingerprint", "record"} per line. It knows nothing but the repository's
.avsc files: each is loaded with fastavro's own loader, which resolves a reference to another
named type from the file named after that type's full name in the same folder (the Avro
convention the files follow), and fingerprinted as the Avro specification says: CRC-64-AVRO of
the Parsing Canonical Form. fastavro prints the fingerprint as the hex of its 8 little-endian
bytes, the order in which they follow C3 01 in the record header.
"""

import io
import json
import pathlib
import sys

from fastavro import schemaless_reader
from fastavro.schema import fingerprint, load_schema, to_parsing_canonical_form

avro_dir = pathlib.Path(sys.argv[1])
writers = {}
for path in sorted(avro_dir.glob("*.avsc")) + sorted(avro_dir.glob("history/*.avsc")):
    schema = load_schema(str(path))
    fp = fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO")
    writers[fp] = (path.name, schema)

for line in sys.stdin:
    message = json.loads(line)
    payload = bytes.fromhex(message["payload_hex"])
    if payload[:2] != b"\xc3\x01":
        sys.exit(f"{message['topic']}: no single-object marker")
    fp = payload[2:10].hex()
    if fp not in writers:
        sys.exit(f"{message['topic']}: fingerprint {fp} matches no .avsc file")
    name, schema = writers[fp]
    record = schemaless_reader(io.BytesIO(payload[10:]), schema, None)
    print(json.dumps({"topic": message["topic"], "schema": name, "fingerprint": fp, "record": record}))
