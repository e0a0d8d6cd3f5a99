"""Small helpers shared by the stages: errors, atomic Parquet writes, progress, task names, table files."""
