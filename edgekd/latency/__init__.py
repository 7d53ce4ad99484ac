"""Latency on the target without exporting every candidate: per-block tables, a predictor, records.

- `records`: measured whole-model latencies per target (benchmarks/<target>/records.jsonl), the
  feedback that keeps predictions honest;
- `lut`: per-block latency tables measured on the target backend by differential timing
  (`edgekd lut`);
- `predictor`: overhead + the sum of a model's block costs from the table, calibrated on the
  records. Its numbers are predictions and are labelled so wherever they appear.

Importing this package imports torch but no runtime: backends load when a table is built.
"""

from edgekd.latency.lut import LatencyTable, block_features, build_lut, table_path
from edgekd.latency.predictor import LatencyPredictor, fit_calibration
from edgekd.latency.records import append_record, load_records, records_path, target_dir

__all__ = [
    "LatencyPredictor",
    "LatencyTable",
    "append_record",
    "block_features",
    "build_lut",
    "fit_calibration",
    "load_records",
    "records_path",
    "table_path",
    "target_dir",
]
