"""Ingest: CT-RATE reports, labels and metadata, patients and shards, drop fingerprints."""
