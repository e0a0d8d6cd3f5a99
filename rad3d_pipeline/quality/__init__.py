"""Quality: cross-LLM scoring consistency, judges, spatial-question classification, statistics, review."""
