"""edgekd.compress called from a script that torchrun starts twice: one run dir, distilled by both
processes, with a torch Dataset and an nn.Module teacher that exist only inside each process."""

from __future__ import annotations

import json
from pathlib import Path

from launch import rank_log, torchrun

SCRIPT = Path(__file__).with_name("api_ranks.py")


def test_a_script_under_torchrun_distils_on_both_ranks(tmp_path):
    run_dir = tmp_path / "runs" / "from-script"
    done = torchrun([str(SCRIPT)], logs=tmp_path / "logs", timeout=240,
                    env={"EDGEKD_TEST_RECORD": str(tmp_path), "EDGEKD_TEST_RUN": str(run_dir)})
    assert done.returncode == 0, done.stderr[-2000:] + rank_log(tmp_path / "logs", 0)[-3000:]
    zero, one = (json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert zero == one  # the same run dir, and the same history: trained together
    assert zero["run_dir"] == str(run_dir) and zero["processes"] == 2
    assert len(zero["fp32"]) == 1 and len(zero["int8"]) == 1
    state = json.loads((run_dir / "state.json").read_text())
    assert list(state["completed"]) == ["search", "distill"]
    assert (run_dir / "distill" / "student_int8.pt").is_file()
    assert [p.name for p in (tmp_path / "runs" / ".teachers").iterdir()] == ["from-script-teacher.pt"]
