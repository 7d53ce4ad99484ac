"""The report stage: report.json and report.md from a run dir (stage.py)."""
