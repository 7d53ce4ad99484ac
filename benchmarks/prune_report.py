"""results.md for benchmarks/prune.py, from its results.json state: MACs against measured latency,
accuracy on the artifact per recovery, latency-guided against uniform at the same latency, the
issue's goal, and what the gate (edgekd.prune.gate) decides for each pruned student."""

from __future__ import annotations

import statistics

from edgekd.prune.gate import ArtifactMeasurement, decide

GOAL_SPEEDUP, GOAL_DROP_PT = 1.5, 0.5


def render(state: dict) -> str:
    s, rows, c = state["settings"], state["rows"], state.get("conditions", {})
    lines = [
        "# Structured pruning on x86-cpu: MACs vs measured latency, accuracy on the artifact (issue 14)",
        "",
        f"Command: `{c.get('command', 'python benchmarks/prune.py')}`; {c.get('started', '?')} to {c.get('finished', '?')}; "
        f"{c.get('device', '?')}, {c.get('runtime', '?')} ({c.get('precision_hint', '?')}, {c.get('threads', '?')}), "
        f"NNCF {c.get('nncf', '?')}, torch {c.get('torch', '?')} ({c.get('torch_threads', '?')} threads). "
        f"Channel multiple {c.get('channel_multiple', '?')} (targets/x86-cpu.yaml).",
        "",
        f"Data: Fashion-MNIST, the first {s['train']:,} images of the training split (split seed {s['seed']}) for training, "
        f"{s['val']:,} validation images (best epoch), accuracy on {s['test']:,} test images. Teacher {s['teacher']} "
        f"({s['teacher_epochs']} epochs, labels); students {', '.join(s['students'])} ({s['student_epochs']} epochs, "
        f"Hinton KD from the teacher). Pruning: magnitude importance; recovery {s['recovery_epochs']} epoch(s) at lr "
        f"{s['recovery_lr']:g} (KD: the same Hinton loss; labels: cross-entropy). One seed: differences under ~0.5 pt "
        "are within seed noise.",
        "",
        "Scope: accuracy is trained and measured at 1x28x28 (training at 224x224 is out of reach on 2 CPU cores); "
        "latency is measured at 1x28x28 and at 3x224x224 (the same network with a 3-channel first convolution). "
        "A 224 row pairs the latency of an architecture at 224 with the accuracy of the same channel plan at 28x28. "
        "Accuracy is that of the exported OpenVINO IR (fp32; INT8 by NNCF PTQ on "
        f"{s['calibration']} training images). Latency: batch 1, {s['rounds']} interleaved rounds of "
        f"{s['warmup']} warm-up + {s['runs']} runs (latency = fastest run, median over rounds; p50 beside it); every "
        "artifact of one input size timed in the same run; INT8 "
        "latency artifacts are NNCF PTQ of the fp32 IR (edgekd.quantizers.nncf_int8.quantize_ir, the same quantizer "
        "preset), which is also what the latency-guided search times (fastest of its runs).",
        "",
    ]
    lines += _teacher_students(rows, s)
    for student in s["students"]:
        lines += _latency_table(rows, student)
        lines += _accuracy_table(rows, student)
        lines += _guided_vs_uniform(rows, student, s["goal_speedup"])
    lines += _goal_and_gate(rows, s)
    lines += _load_notes(rows)
    return "\n".join(lines) + "\n"


def _teacher_students(rows, s) -> list[str]:
    out = ["## Teacher and students", "", "| model | arch | params | test accuracy (torch) | unpruned IR fp32 | unpruned IR INT8 |",
           "|---|---|---|---|---|---|"]
    teacher = rows.get("teacher", {})
    out.append(f"| teacher | {teacher.get('arch', '?')} | {teacher.get('params', 0):,} | {_pct(teacher.get('test_accuracy_torch'))} | | |")
    for student in s["students"]:
        acc = rows.get(f"accuracy:{student}:unpruned:none", {})
        model = rows.get(f"model:{student}", {})
        out.append(f"| student | {student} | {model.get('params', 0):,} | {_pct(acc.get('torch'))} | {_pct(acc.get('fp32'))} "
                   f"| {_pct(acc.get('int8'))} |")
    return out + [""]


def _plan_ids(rows, student) -> list[str]:
    return [key.split(":")[2] for key in rows if key.startswith(f"plan:{student}:")]


def _timing(rows, size, student, plan_id, precision, stat: str = "fastest_ms") -> float | None:
    """An artifact's latency: by default the median over rounds of its fastest run, the statistic
    that measures the artifact rather than the neighbours' load (interleaved_timing.py)."""
    timing = rows.get(f"latency:{size}", {}).get("timings", {}).get(f"{student}|{plan_id}|{precision}")
    return None if timing is None else timing[stat]


def _macs(rows, size, student, plan_id) -> int | None:
    return rows.get(f"latency:{size}", {}).get("macs", {}).get(f"{student}|{plan_id}")


def _latency_table(rows, student) -> list[str]:
    out = [f"## {student}: MAC reduction against measured latency reduction", "",
           "Reduction = 1 - pruned / unpruned (MACs, or latency of the OpenVINO artifact: fastest run, median over "
           "rounds); speed-up = unpruned / pruned. The p50 (median of rounds) is given beside it: on this shared "
           "machine it swings with the neighbours' load.",
           "", "| plan | widths kept per group | size | MACs | MAC reduction | fp32 ms (p50) | fp32 reduction | "
           "INT8 ms (p50) | INT8 reduction | INT8 speed-up (by p50) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for plan_id in _plan_ids(rows, student):
        plan = rows[f"plan:{student}:{plan_id}"]["plan"]
        widths = ", ".join(f"{name.removesuffix('.0')} {kept}" for name, kept in plan.items()) if plan else "unpruned"
        for size in ("28", "224"):
            macs, base_macs = _macs(rows, size, student, plan_id), _macs(rows, size, student, "unpruned")
            cells = []
            for precision in ("fp32", "int8"):
                ms, base = _timing(rows, size, student, plan_id, precision), _timing(rows, size, student, "unpruned", precision)
                cells.append((ms, base))
            (f_ms, f_base), (i_ms, i_base) = cells
            f_p50, i_p50 = (_timing(rows, size, student, plan_id, p, "p50_ms") for p in ("fp32", "int8"))
            i_base_p50 = _timing(rows, size, student, "unpruned", "int8", "p50_ms")
            out.append(f"| {plan_id} | {widths if size == '28' else ''} | {'1x28x28' if size == '28' else '3x224x224'} | "
                       f"{_mmacs(macs)} | {_reduction(macs, base_macs)} | {_ms(f_ms)} ({_ms(f_p50)}) | "
                       f"{_reduction(f_ms, f_base)} | {_ms(i_ms)} ({_ms(i_p50)}) | {_reduction(i_ms, i_base)} | "
                       f"{_speedup(i_base, i_ms)} ({_speedup(i_base_p50, i_p50)}) |")
    return out + [""]


def _accuracy_table(rows, student) -> list[str]:
    out = [f"## {student}: accuracy of the artifact after recovery", "",
           "'unpruned, kd' is the control: the unpruned student given the same extra KD epoch as a recovery, so "
           "that a pruned row's change against it is what pruning costs, not what one more epoch of training "
           "gains. The last column compares with it.", "",
           "| plan | recovery | recovery val (torch) | test, IR fp32 | test, IR INT8 | INT8 vs unpruned + KD epoch |",
           "|---|---|---|---|---|---|"]
    base = _baseline_accuracy(rows, student)
    for plan_id in _plan_ids(rows, student):
        for mode in ("kd", "labels", "none"):
            acc = rows.get(f"accuracy:{student}:{plan_id}:{mode}")
            if acc is None:
                continue
            val = rows.get(f"recovery:{student}:{plan_id}:{mode}", {}).get("best_val_accuracy")
            delta = "" if base is None or (plan_id == "unpruned" and mode == "kd") else f"{(acc['int8'] - base) * 100:+.2f} pt"
            out.append(f"| {plan_id} | {mode} | {_pct(val)} | {_pct(acc['fp32'])} | {_pct(acc['int8'])} | {delta} |")
    return out + [""]


def _guided_vs_uniform(rows, student, goal_speedup: float) -> list[str]:
    search = rows.get(f"search:{student}")
    if search is None:
        return []
    guided = search["guided"]
    out = [f"## {student}: latency-guided against uniform at the same measured latency", "",
           f"Latency-guided search (OpenVINO INT8 at 3x224x224, fastest run per candidate; goal "
           f"{guided['goal_ms']:.3f} ms = the unpruned model's first timing / {goal_speedup:g}, re-timed at "
           f"{guided['baseline_ms']:.3f} ms when the search started): {len(guided['steps'])} steps, {guided['latency_calls']} "
           f"latency measurements, {search['search_s']} s; stopped: {guided['stop_reason']}. Uniform twin: ratio "
           f"{search['matched_ratio']:.3f}, bisected on the same latency function to the guided plan's latency.", "",
           "| plan | INT8 ms at 224 (search) | INT8 ms at 224 (interleaved run) | MACs at 224 | test IR INT8 after KD | no recovery |",
           "|---|---|---|---|---|---|"]
    searched = {"latency-guided": guided["final_ms"], "uniform-matched": search["matched_search_ms"]}
    for plan_id in ("latency-guided", "uniform-matched"):
        kd = rows.get(f"accuracy:{student}:{plan_id}:kd", {}).get("int8")
        none = rows.get(f"accuracy:{student}:{plan_id}:none", {}).get("int8")
        out.append(f"| {plan_id} | {_ms(searched[plan_id])} | {_ms(_timing(rows, '224', student, plan_id, 'int8'))} | "
                   f"{_mmacs(_macs(rows, '224', student, plan_id))} | {_pct(kd)} | {_pct(none)} |")
    out += ["", "Steps of the latency-guided search (group pruned, channels kept, INT8 ms after, ms saved):", ""]
    out += [f"{st['step']}. {st['group']} -> {st['kept']}: {st['latency_ms']:.3f} ms ({st['saved_ms']:+.3f})"
            for st in guided["steps"]]
    return out + [""]


def _goal_and_gate(rows, s) -> list[str]:
    out = ["## The goal and the gate", "",
           f"Goal (issue 14): at 3x224x224 the pruned INT8 artifact >= {GOAL_SPEEDUP}x faster than the unpruned INT8 "
           f"artifact (same run), within {GOAL_DROP_PT} pt accuracy after KD recovery (INT8 IR, 28x28; against the "
           "unpruned student given the same extra KD epoch). The gate column "
           "is edgekd.prune.gate.decide on the same two measurements (min_speedup 5%, max_accuracy_drop_pt 0.5).", "",
           "| student | plan | INT8 speed-up at 224 (by p50) | accuracy change after KD | goal met | gate |",
           "|---|---|---|---|---|---|"]
    for student in s["students"]:
        base_ms = _timing(rows, "224", student, "unpruned", "int8")
        base_acc = _baseline_accuracy(rows, student)
        for plan_id in _plan_ids(rows, student):
            kd = rows.get(f"accuracy:{student}:{plan_id}:kd", {}).get("int8")
            ms = _timing(rows, "224", student, plan_id, "int8")
            if plan_id == "unpruned" or None in (base_ms, base_acc, kd, ms):
                continue
            decision = decide(ArtifactMeasurement(f"{student} unpruned INT8", base_ms, "measured", base_acc),
                              ArtifactMeasurement(f"{student} {plan_id} INT8", ms, "measured", kd),
                              min_speedup=0.05, max_accuracy_drop_pt=GOAL_DROP_PT)
            met = base_ms / ms >= GOAL_SPEEDUP and decision.accuracy_drop_pt <= GOAL_DROP_PT
            by_p50 = _speedup(_timing(rows, "224", student, "unpruned", "int8", "p50_ms"),
                              _timing(rows, "224", student, plan_id, "int8", "p50_ms"))
            out.append(f"| {student} | {plan_id} | {base_ms / ms:.2f}x ({by_p50}) | {-decision.accuracy_drop_pt:+.2f} pt | "
                       f"{'**yes**' if met else 'no'} | {'ships' if decision.ship_candidate else 'rolled back'} |")
    out += ["", "INT8 against its fp32 twin (the same gate rule), unpruned students:", ""]
    for student in s["students"]:
        acc = rows.get(f"accuracy:{student}:unpruned:none", {})
        for size in ("28", "224"):
            f_ms, i_ms = _timing(rows, size, student, "unpruned", "fp32"), _timing(rows, size, student, "unpruned", "int8")
            if None in (f_ms, i_ms) or "int8" not in acc:
                continue
            decision = decide(ArtifactMeasurement(f"fp32 at {size}", f_ms, "measured", acc["fp32"]),
                              ArtifactMeasurement(f"INT8 at {size}", i_ms, "measured", acc["int8"]), step="INT8")
            out.append(f"- {student}, {size}: {decision.reason}")
    return out + [""]


def _baseline_accuracy(rows, student) -> float | None:
    """The unpruned student's INT8 IR accuracy after the same extra KD epoch a recovery gets (the
    control), or without it when the control is missing."""
    for mode in ("kd", "none"):
        acc = rows.get(f"accuracy:{student}:unpruned:{mode}")
        if acc is not None:
            return acc["int8"]
    return None


def _load_notes(rows) -> list[str]:
    out = []
    for size in ("28", "224"):
        shares = [r["others_share_during"] for r in rows.get(f"latency:{size}", {}).get("rounds", [])
                  if r.get("others_share_during") is not None]
        if shares:
            out.append(f"- {size}: other processes used {min(shares):.0%}-{max(shares):.0%} of the CPUs during the "
                       f"timing rounds (median {statistics.median(shares):.0%}).")
    return ["## Machine load while timing", "", *out, ""] if out else []


def _pct(value) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ms(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mmacs(value) -> str:
    return "-" if value is None else f"{value / 1e6:.1f} M"


def _reduction(value, base) -> str:
    return "-" if value is None or not base else f"{1 - value / base:.0%}"


def _speedup(base, value) -> str:
    return "-" if value is None or base is None else f"{base / value:.2f}x"
