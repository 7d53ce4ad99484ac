"""The bench stage: latency, throughput, size and accuracy of the exported artifacts (stage.py)."""
