"""Tasks 4-6: existence detection, temporal diagnosis, question templates."""
