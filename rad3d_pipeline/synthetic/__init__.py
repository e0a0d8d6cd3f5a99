"""Synthetic sample data: CT-RATE-shaped CSVs and phantom volumes for the demo and the tests."""
