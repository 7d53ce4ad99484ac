"""Per-block latency tables (LUTs), measured on the target backend by differential timing.

A table holds, for one (target, backend version, precision, input shape, threads), the cost in ms
of each block spec (edgekd/models/blocks.py) of a search space, and the constant per-inference
overhead; edgekd/latency/predictor.py predicts a model as overhead + the sum of its blocks.

Differential timing. A block at 8x8 costs microseconds, less than one inference's fixed cost
and its jitter, so a block is timed as the difference between two probes that differ by it:

    ms = p50(probe of `copies` copies) - p50(probe of 1 copy)      (divided by copies - 1)

- a block that keeps its input shape (stride 1, same channels) is chained: copy after copy, each
  feeding the next, as blocks do in a model;
- a block that changes the shape (stem, stride 2, channel change, head) cannot be chained, so its
  copies run side by side on the same input, each copy its own model output: no op is added to
  join them, and the runtime (LATENCY hint: one stream) runs one inference's ops one after
  another, so k branches cost k blocks.
Both probes pay the same fixed costs (the call, waking the runtime's threads, taking in the
input and, in INT8, quantizing it), so the difference is the block's marginal cost: what it
adds inside a model, where the block before it hands over an already quantized input (OpenVINO
fuses the next FakeQuantize into the previous op). On a shared machine one timing can be off by
tens of percent (another process takes a core for a while), so the two probes are timed in
`rounds` pairs, in alternating order (1-copy first, then the other first, ...) so that slow drift
cancels, and the block's cost is the median of the per-pair differences: one bad pair cannot move
it. A difference below zero (noise on a near-free block) counts as 0 and stays in the row as
`raw_ms`, with the pairs' spread as `spread_ms`.

Fixed cost. A model costs its blocks plus a per-inference overhead: `overhead_ms`, what a
one-block model costs beyond its block (p50(1 copy) - ms), the median over the table's stems
(they take the model's own input) or over all blocks when it has no stem. An empty model (input
returned as output) is also timed and kept as `empty_ms` for reference; it is no stand-in for
a model's fixed cost, as it runs no op at all (no thread hand-off, no quantization of the input).

Probes are built and quantized like the artifact that ships: the torch probe goes through the
target's quantizer (`prepare_int8`, NNCF PTQ, calibrated on random inputs at the block's input
shape: scales do not change what the INT8 kernels cost), then through the backend's `export`,
then its `benchmark` with the search's (shorter) protocol.

The table is saved after every block, so a killed build loses at most one block and the same call
resumes; a table measured with another backend version, threads setting or input shape is not
resumed but measured again. Cost: two exports per block (the 1-copy and the `copies` probe);
tracing and quantizing dominate (3-9 s per block at 8x8 on a busy 2-core machine), timing ~1 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import interrupt
from edgekd.backends import get_backend
from edgekd.errors import UserError
from edgekd.io import write_json
from edgekd.latency.machine_load import BUSY_SHARE, OtherLoad
from edgekd.latency.records import target_dir
from edgekd.measure import progress
from edgekd.models.blocks import block_input_shape, block_key, build_block
from edgekd.models.profile import count_macs
from edgekd.quantizers import get_quantizer
from edgekd.target import Target

log = logging.getLogger(__name__)

DEFAULT_COPIES = 2
DEFAULT_ROUNDS = 3
# What a table's numbers depend on: a saved table with other values is measured again.
_IDENTITY = ("target", "backend", "backend_version", "precision", "input_shape", "threads")


@dataclass
class LatencyTable:
    target: str
    backend: str
    backend_version: str
    precision: str
    input_shape: list[int]  # [C, H, W] of the model input
    threads: int | None  # None: the runtime's default
    overhead_ms: float | None = None  # per-inference fixed cost (module doc)
    empty_ms: float | None = None  # p50 of the empty model at input_shape, for reference
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # block_key -> row (spec, ms, ...)
    conditions: dict[str, Any] = field(default_factory=dict)  # device, protocol, dates

    def identity(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _IDENTITY}

    def cost_ms(self, spec: dict[str, Any]) -> float | None:
        row = self.blocks.get(block_key(spec))
        return None if row is None else row["ms"]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, dataclasses.asdict(self))  # atomic: a kill never leaves half a table

    @classmethod
    def load(cls, path: Path) -> LatencyTable:
        try:
            return cls(**json.loads(Path(path).read_text()))
        except (ValueError, TypeError) as exc:
            raise UserError(f"{path} is not a latency table ({exc}); rebuild it with `edgekd lut --force`") from exc


def table_path(target_name: str, precision: str, input_shape: tuple[int, ...] | list[int]) -> Path:
    c, h, w = (int(v) for v in input_shape)
    return target_dir(target_name) / f"lut-{precision}-{c}x{h}x{w}.json"


def block_features(spec: dict[str, Any]) -> dict[str, Any]:
    """MACs, activation elements (input + output) and output shape of one block at batch 1:
    what the predictor extrapolates from for blocks the table lacks."""
    block = build_block(spec)
    in_shape = block_input_shape(spec)
    with torch.no_grad():
        out_shape = list(block(torch.zeros(1, *in_shape)).shape[1:])
    elements = int(torch.tensor(in_shape).prod()) + int(torch.tensor(out_shape).prod())
    return {"macs": count_macs(block, in_shape), "activations": elements, "out_shape": out_shape}


def build_lut(
    target: Target,
    specs: list[dict[str, Any]],
    precision: str,
    *,
    input_shape: tuple[int, int, int],
    warmup: int,
    runs: int,
    threads: int | None = None,
    copies: int = DEFAULT_COPIES,
    rounds: int = DEFAULT_ROUNDS,
    calibration_samples: int = 16,
    force: bool = False,
) -> LatencyTable:
    """Time every distinct block of `specs` on `target` at `precision` and save the table to
    `table_path(target.name, precision, input_shape)` after each block (see the module doc).
    Blocks already in a matching saved table are kept unless `force`."""
    if precision not in target.precisions:
        raise UserError(f"target {target.name} runs {target.precisions}, not {precision!r}")
    if copies < 2 or rounds < 1 or warmup < 0 or runs < 1:
        raise ValueError(f"need copies >= 2, rounds >= 1, runs >= 1, warmup >= 0; got {copies}, {rounds}, {runs}, "
                         f"{warmup}")
    backend = get_backend(target.backend)
    quantizer = get_quantizer(target.quantizer) if precision == "int8" else None
    path = table_path(target.name, precision, input_shape)
    table = _start(path, LatencyTable(
        target=target.name, backend=backend.NAME, backend_version=backend.version(), precision=precision,
        input_shape=[int(v) for v in input_shape], threads=threads,
    ), force)
    from edgekd.measure import cpu_name

    now = dt.datetime.now().isoformat(timespec="seconds")
    unique = {block_key(spec): spec for spec in specs}
    todo = [spec for key, spec in unique.items() if key not in table.blocks]
    previous = table.conditions
    table.conditions = {
        "device": cpu_name(), "runtime_precision": backend.precision_note(), "warmup": warmup, "runs": runs,
        "copies": copies, "rounds": rounds, "quantizer": f"{target.quantizer} {quantizer.version()}" if quantizer else None,
        # "updated" moves only when a block is timed: a resumed, complete table stays byte-identical.
        "started": previous.get("started", now), "updated": now if todo else previous.get("updated", now),
    }
    log.info("lut: %s %s %s: timing %d blocks (%d already in %s)", target.name, precision,
             "x".join(map(str, input_shape)), len(todo), len(unique) - len(todo), path)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekd-lut-") as tmp, quiet_exports():
        prober = _Prober(backend, quantizer, Path(tmp), warmup=warmup, runs=runs, threads=threads,
                         copies=copies, rounds=rounds, calibration_samples=calibration_samples)
        if table.empty_ms is None:
            table.empty_ms = prober.empty_ms(tuple(input_shape))
        table.save(path)
        load = OtherLoad()
        disturbed: list[float] = []
        for spec in progress(todo, desc="lut blocks", total=len(todo)):
            interrupt.check()
            row = prober.time_block(spec)
            row["others_cpu_share"] = load.share()  # what other processes took while this block was timed
            if row["others_cpu_share"] is not None and row["others_cpu_share"] > BUSY_SHARE:
                if not disturbed:
                    log.warning("lut: other processes are using %.0f%% of the CPUs while blocks are timed; even "
                                "niced jobs inflate OpenVINO timings several-fold here: stop them, or rebuild "
                                "the table later with --force", 100 * row["others_cpu_share"])
                disturbed.append(row["others_cpu_share"])
            table.blocks[block_key(spec)] = row
            table.overhead_ms = overhead_ms(table)
            table.save(path)
    elapsed = time.perf_counter() - start
    log.info("lut: %d blocks timed in %.1f s (%.2f s per block); overhead %s ms; table %s", len(todo), elapsed,
             elapsed / max(len(todo), 1), table.overhead_ms, path)
    if disturbed:
        log.warning("lut: %d of %d blocks were timed while other processes used more than %.0f%% of the CPUs "
                    "(up to %.0f%%; each block's share is its others_cpu_share in %s)", len(disturbed), len(todo),
                    100 * BUSY_SHARE, 100 * max(disturbed), path)
    return table


@contextlib.contextmanager
def quiet_exports() -> Iterator[None]:
    """Probe exports are not artifacts: their per-file INFO lines would bury the progress."""
    logger = logging.getLogger("edgekd.backends")
    previous = logger.level
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def overhead_ms(table: LatencyTable) -> float | None:
    """Median fixed cost of the table's one-block probes: stems if any, else every block."""
    rows = [row for row in table.blocks.values() if row["spec"]["kind"] == "stem"] or list(table.blocks.values())
    if not rows:
        return None
    return float(statistics.median(row["one_ms"] - row["raw_ms"] for row in rows))


def _start(path: Path, fresh: LatencyTable, force: bool) -> LatencyTable:
    """The saved table to resume, or `fresh` when there is none, it is stale, or `force`."""
    if force or not path.is_file():
        return fresh
    try:
        saved = LatencyTable.load(path)
    except UserError as exc:
        log.warning("%s; measuring a new table", exc)
        return fresh
    changed = [f"{name} {saved.identity()[name]!r} (now {value!r})"
               for name, value in fresh.identity().items() if saved.identity()[name] != value]
    if changed:
        log.warning("lut: %s was measured with %s; measuring a new table", path, ", ".join(changed))
        return fresh
    return saved


class _Chain(nn.Module):
    """Copies one after another. A module with forward, not nn.Sequential: NNCF adds a submodule
    to the model it quantizes, and Sequential would call it as a layer."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class _Parallel(nn.Module):
    """Copies side by side on one input, each its own output (nothing joins them)."""

    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(block(x) for block in self.blocks)


class _Empty(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _Prober:
    """Exports and times probes; one empty model per input shape, exported once."""

    def __init__(self, backend, quantizer, workdir: Path, *, warmup: int, runs: int, threads: int | None,
                 copies: int, rounds: int, calibration_samples: int):
        self.backend, self.quantizer, self.workdir = backend, quantizer, workdir
        self.warmup, self.runs, self.threads = warmup, runs, threads
        self.copies, self.rounds, self.calibration_samples = copies, rounds, calibration_samples
        self._empty: dict[tuple[int, ...], Path] = {}

    def _p50_ms(self, path: Path) -> float:
        stats = self.backend.benchmark(path, warmup=self.warmup, runs=self.runs, threads=self.threads)
        return stats.p50_ms

    def empty_ms(self, shape: tuple[int, ...]) -> float:
        if shape not in self._empty:
            name = "empty-" + "x".join(map(str, shape)) + self.backend.SUFFIX
            self._empty[shape] = self.backend.export(
                _Empty(), torch.zeros(1, *shape), self.workdir / name, metadata={"purpose": "latency table baseline"})
        return self._p50_ms(self._empty[shape])

    def _export_probe(self, spec: dict[str, Any], copies: int, chained: bool) -> Path:
        in_shape = block_input_shape(spec)
        torch.manual_seed(copies)
        probe: nn.Module = (_Chain if chained else _Parallel)([build_block(spec) for _ in range(copies)]).eval()
        example = torch.rand(self.calibration_samples, *in_shape)
        if self.quantizer is not None:
            probe = self.quantizer.prepare_int8(probe, example)
        return self.backend.export(probe, example[:1], self.workdir / f"probe{copies}{self.backend.SUFFIX}",
                                   metadata={"purpose": "latency table probe", "block": block_key(spec)})

    def time_block(self, spec: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        features = block_features(spec)
        chained = features["out_shape"] == list(block_input_shape(spec))
        one_path = self._export_probe(spec, 1, chained)
        many_path = self._export_probe(spec, self.copies, chained)
        ones, manys, diffs = [], [], []
        for pair in range(self.rounds):
            first, second = (one_path, many_path) if pair % 2 == 0 else (many_path, one_path)
            p50 = {first: self._p50_ms(first), second: self._p50_ms(second)}
            ones.append(p50[one_path])
            manys.append(p50[many_path])
            diffs.append(p50[many_path] - p50[one_path])
        one_ms, many_ms = statistics.median(ones), statistics.median(manys)
        raw_ms = statistics.median(diffs) / (self.copies - 1)
        row = {
            "spec": spec, "ms": max(raw_ms, 0.0), "raw_ms": raw_ms, "one_ms": one_ms, "many_ms": many_ms,
            "spread_ms": (max(diffs) - min(diffs)) / (self.copies - 1), "rounds": self.rounds,
            "copies": self.copies, "scheme": "chain" if chained else "parallel",
            "macs": features["macs"], "activations": features["activations"],
            "seconds": round(time.perf_counter() - start, 2),
        }
        log.debug("lut: %s %s: %.5f ms (1 copy %.4f ms, %d copies %.4f ms)", spec["kind"], row["scheme"], raw_ms,
                  one_ms, self.copies, many_ms)
        return row
