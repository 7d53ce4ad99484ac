"""Predicted latency of an architecture on a target: its blocks' table costs, calibrated by
whole-model measurements.

    table_ms(record)   = overhead_ms + sum of cost(block) over layer_plan(record)
    predict_ms(record) = scale * table_ms(record) + offset

cost(block) is the block's row in the table (edgekd/latency/lut.py). A block the table lacks is
estimated from the rows of its kind by least squares, ms ~ c0 + c1 * MMACs + c2 * M activation
elements, when the kind has at least 3 rows; else ms ~ MACs x (sum of ms / sum of MACs) of its
kind's rows, or of all rows. Such blocks are listed in `last_missing` after each prediction, so
callers can label the number "extrapolated".

(scale, offset) come from `calibrate(records)`, the target's measured whole models at the same
input shape and precision: least squares of measured p50 on table_ms with 3 records or more,
scale only (offset 0, least squares through the origin) with fewer or when the line is refused.
A fit is refused when its scale is outside [MIN_SCALE, MAX_SCALE] or it predicts a non-positive
latency for the fastest record: a table that far off is wrong and should be rebuilt
(`edgekd lut --force`), not stretched to fit.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekd.errors import UserError
from edgekd.latency.lut import LatencyTable, block_features, table_path
from edgekd.latency.records import load_records
from edgekd.models.blocks import block_key, layer_plan

log = logging.getLogger(__name__)

MIN_SCALE, MAX_SCALE = 0.2, 5.0


class LatencyPredictor:
    """Batch-1 p50 latency in ms of architecture records, for one table and class count."""

    def __init__(self, table: LatencyTable, num_classes: int):
        if table.overhead_ms is None:
            raise UserError(f"the latency table of {table.target} holds no measured block yet; run `edgekd lut`")
        self.table = table
        self.num_classes = num_classes
        self.scale, self.offset = 1.0, 0.0
        self.calibration: dict[str, Any] = {"method": "none", "records": 0}
        self.stale: str | None = None  # why the table may no longer match the installed runtime
        self.last_missing: list[str] = []  # block keys estimated (not in the table) by the last prediction
        self._features: dict[str, dict[str, Any]] = {}
        self._models: dict[str, tuple[str, np.ndarray]] = {}

    @classmethod
    def load(cls, target_name: str, input_shape: tuple[int, int, int], precision: str, num_classes: int,
             *, calibrate: bool = True) -> LatencyPredictor:
        """The saved table of (target, input shape, precision), calibrated on the target's records."""
        path = table_path(target_name, precision, input_shape)
        if not path.is_file():
            c, h, w = input_shape
            raise UserError(f"no latency table for {target_name} at {precision} {c}x{h}x{w} ({path}); build it with "
                            f"`edgekd lut --target {target_name} --input-size {c}x{h}x{w} --precision {precision}`")
        predictor = cls(LatencyTable.load(path), num_classes)
        predictor.stale = stale_reason(predictor.table)
        if predictor.stale:
            log.warning("latency table %s: %s; its predictions may be off, rebuild it with `edgekd lut --force`",
                        path, predictor.stale)
        if calibrate:
            predictor.calibrate(load_records(target_name, input_shape, precision))
        return predictor

    def predict_ms(self, record: dict[str, Any] | str) -> float:
        return self.scale * self.table_ms(record) + self.offset

    def table_ms(self, record: dict[str, Any] | str, num_classes: int | None = None) -> float:
        """Uncalibrated: overhead + the sum of the record's block costs."""
        total, missing = self._sum(record, num_classes or self.num_classes)
        self.last_missing = missing
        return total

    def detail(self, record: dict[str, Any] | str) -> dict[str, Any]:
        """Every number behind one prediction, for reports and for checking by hand."""
        blocks = []
        for spec in self._plan(record, self.num_classes):
            ms, source = self._cost_ms(spec)
            blocks.append({"kind": spec["kind"], "key": block_key(spec), "ms": ms, "source": source})
        table_ms = self.table.overhead_ms + sum(block["ms"] for block in blocks)
        missing = [block["key"] for block in blocks if block["source"] == "extrapolated"]
        self.last_missing = missing
        return {"overhead_ms": self.table.overhead_ms, "blocks": blocks, "table_ms": table_ms,
                "scale": self.scale, "offset": self.offset, "predicted_ms": self.scale * table_ms + self.offset,
                "extrapolated": len(missing)}

    def calibrate(self, records: list[dict[str, Any]]) -> tuple[float, float]:
        """Fit measured_p50 = scale * table_ms + offset on `records` (module doc) and use it."""
        xs, ys = [], []
        for record in records:
            if list(record.get("input_shape", self.table.input_shape)) != self.table.input_shape:
                continue
            try:
                x, _ = self._sum(record["arch"], record.get("num_classes") or self.num_classes)
            except (UserError, ValueError, KeyError, TypeError) as exc:  # e.g. a module-derived arch: no plan
                log.debug("calibration skips a record: %s", exc)
                continue
            xs.append(x)
            ys.append(float(record["measured_p50_ms"]))
        self.scale, self.offset, method = fit_calibration(np.array(xs), np.array(ys))
        self.calibration = {"method": method, "records": len(xs), "scale": self.scale, "offset": self.offset}
        log.info("latency predictor: %s calibration on %d records: measured = %.4g x table + %.4g ms",
                 method, len(xs), self.scale, self.offset)
        return self.scale, self.offset

    def _plan(self, record: dict[str, Any] | str, num_classes: int) -> list[dict[str, Any]]:
        c, h, w = self.table.input_shape
        return layer_plan(record, c, num_classes, (h, w))

    def _sum(self, record: dict[str, Any] | str, num_classes: int) -> tuple[float, list[str]]:
        total, missing = self.table.overhead_ms, []
        for spec in self._plan(record, num_classes):
            ms, source = self._cost_ms(spec)
            total += ms
            if source == "extrapolated":
                missing.append(block_key(spec))
        return total, missing

    def _cost_ms(self, spec: dict[str, Any]) -> tuple[float, str]:
        ms = self.table.cost_ms(spec)
        if ms is not None:
            return ms, "table"
        return self._extrapolate_ms(spec), "extrapolated"

    def _extrapolate_ms(self, spec: dict[str, Any]) -> float:
        key = block_key(spec)
        if key not in self._features:
            self._features[key] = block_features(spec)
        kind = spec["kind"]
        if kind not in self._models:
            self._models[kind] = self._fit_kind(kind)
        form, coef = self._models[kind]
        macs, activations = self._features[key]["macs"], self._features[key]["activations"]
        if form == "linear":
            return max(float(coef @ [1.0, macs / 1e6, activations / 1e6]), 0.0)
        return float(coef[0] * macs)

    def _fit_kind(self, kind: str) -> tuple[str, np.ndarray]:
        rows = [self._row_features(row) for row in self.table.blocks.values() if row["spec"]["kind"] == kind]
        if len(rows) >= 3:
            design = np.array([[1.0, macs / 1e6, acts / 1e6] for macs, acts, _ in rows])
            coef, *_ = np.linalg.lstsq(design, np.array([ms for _, _, ms in rows]), rcond=None)
            return "linear", coef
        if not rows:
            rows = [self._row_features(row) for row in self.table.blocks.values()]
        total_macs = sum(macs for macs, _, _ in rows)
        return "ratio", np.array([sum(ms for _, _, ms in rows) / total_macs if total_macs else 0.0])

    def _row_features(self, row: dict[str, Any]) -> tuple[int, int, float]:
        if "macs" not in row or "activations" not in row:
            row = {**row, **block_features(row["spec"])}
        return row["macs"], row["activations"], row["ms"]


def stale_reason(table: LatencyTable) -> str | None:
    """Why `table` may not describe the runtime installed here (None: it does, or the runtime is
    not installed here, as when predicting for a device that is not attached)."""
    from edgekd.backends import get_backend

    try:
        installed = get_backend(table.backend).version()
    except UserError:
        return None
    if installed != table.backend_version:
        return f"measured with {table.backend} {table.backend_version}, {installed} is installed"
    return None


def fit_calibration(table_ms: np.ndarray, measured_ms: np.ndarray) -> tuple[float, float, str]:
    """(scale, offset, method): "affine", "scale", "none" (no records) or "refused"."""
    if len(table_ms) == 0:
        return 1.0, 0.0, "none"
    if len(table_ms) >= 3:
        design = np.stack([table_ms, np.ones_like(table_ms)], axis=1)
        (scale, offset), *_ = np.linalg.lstsq(design, measured_ms, rcond=None)
        if _sane(scale, offset, table_ms):
            return float(scale), float(offset), "affine"
        log.info("latency calibration: the line measured = %.3g x table + %.3g ms is refused; scale only",
                 scale, offset)
    scale = float(table_ms @ measured_ms / (table_ms @ table_ms))
    if _sane(scale, 0.0, table_ms):
        return scale, 0.0, "scale"
    log.warning("latency calibration refused: measured latencies are %.3g x the table's; the table looks wrong "
                "for this device, rebuild it with `edgekd lut --force`", scale)
    return 1.0, 0.0, "refused"


def _sane(scale: float, offset: float, table_ms: np.ndarray) -> bool:
    return bool(MIN_SCALE <= scale <= MAX_SCALE and scale * table_ms.min() + offset > 0)
