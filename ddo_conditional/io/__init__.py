"""Files: the report (tables, metrics.json, figures)."""
