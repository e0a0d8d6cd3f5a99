"""The metric protocols' versions (recorded beside every number they produce)."""

# Bump a protocol's version whenever any value it produces could change.
# -2: numbers in JSONL text fields are read as written (3, not pandas' 3.0)
PROTOCOL_VERSIONS: dict[str, str] = {"3drad": "3drad-2", "spatial": "spatial-2"}
