"""Bad input: one clear line on stderr, exit code 2, and nothing created or overwritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny_recipe import tiny_args

from edgekd.cli import main
from edgekd.models import build_model


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("edgekd: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def make_image_folder(root: Path, classes: dict[str, int]) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for index in range(count):
            Image.new("L", (8, 8), color=index * 20).save(root / name / f"{index}.png")
    return root


def test_unknown_target_lists_known_and_suggests_closest(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--target", "x86cpu", "--runs-dir", str(tmp_path))
    assert code == 2
    line = error_line(err)
    assert "unknown target 'x86cpu'" in line and "did you mean 'x86-cpu'" in line and "known:" in line
    assert list(tmp_path.iterdir()) == []


def test_missing_data_path(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--data", str(tmp_path / "nope"), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "does not exist" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_image_folder_with_one_class(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"cat": 5})
    code, err = run_cli(capsys, "compress", "--data", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "class" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_image_folder_with_an_empty_class(tmp_path, capsys):
    data = make_image_folder(tmp_path / "images", {"cat": 5, "dog": 5})
    (data / "bird").mkdir()
    code, err = run_cli(capsys, "compress", "--data", str(data), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "bird" in error_line(err)


def test_corrupt_checkpoint(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    checkpoint.write_bytes(b"\x00not a checkpoint" * 10)
    code, err = run_cli(capsys, "compress", "--teacher", str(checkpoint), "--teacher-arch", "resnet_s",
                        "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "corrupt" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_state_dict_that_does_not_fit_the_architecture(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    torch.save(build_model("resnet_xs", 1, 10).state_dict(), checkpoint)
    code, err = run_cli(capsys, "compress", "--teacher", str(checkpoint), "--teacher-arch", "resnet_s",
                        "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "does not fit architecture 'resnet_s'" in error_line(err)


def test_state_dict_for_other_class_count(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    torch.save(build_model("resnet_xs", 1, 5).state_dict(), checkpoint)
    code, err = run_cli(capsys, "compress", "--teacher", str(checkpoint), "--teacher-arch", "resnet_xs",
                        "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "10 classes" in error_line(err)


def test_pickle_needs_trust_pickle(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    torch.save(build_model("resnet_xs", 1, 10), checkpoint)  # the whole module: a pickle
    code, err = run_cli(capsys, "compress", "--teacher", str(checkpoint), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "--trust-pickle" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_unknown_teacher_arch_suggests(tmp_path, capsys):
    checkpoint = tmp_path / "teacher.pt"
    torch.save(build_model("resnet_xs", 1, 10).state_dict(), checkpoint)
    code, err = run_cli(capsys, "compress", "--teacher", str(checkpoint), "--teacher-arch", "resnet-s",
                        "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "did you mean 'resnet_s'" in error_line(err)


def test_unknown_recipe_key_suggests(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--set", "distill.epoch=3", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "did you mean 'epochs'" in error_line(err)


def test_budget_no_candidate_meets_names_the_fastest(tmp_path, capsys):
    args = [a if a != "1000" else "0.0001" for a in tiny_args()]
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), "--name", "tight", *args)
    line = error_line(err)
    assert code == 2
    assert "no candidate meets the budget of 0.0001 ms" in line and "the fastest was resnet_" in line
    assert " ms measured (int8 p50 on x86-cpu)" in line


def test_existing_run_dir_is_refused_and_kept(tmp_path, capsys):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("my results")
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), "--name", "mine")
    assert code == 2 and "already exists" in error_line(err) and "--resume" in err
    # --overwrite never deletes a folder edgekd did not make
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), "--name", "mine", "--overwrite")
    assert code == 2 and "not an edgekd run dir" in error_line(err)
    assert (run_dir / "notes.txt").read_text() == "my results"


def test_resume_refuses_new_options(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"target": {}, "recipe": {}}))
    code, err = run_cli(capsys, "compress", "--resume", str(run_dir), "--budget-ms", "3")
    assert code == 2 and "--budget-ms" in error_line(err)


def test_resume_of_something_that_is_not_a_run(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--resume", str(tmp_path))
    assert code == 2 and "not an edgekd run dir" in error_line(err)


def test_help_mentions_the_main_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--target", "--teacher", "--teacher-arch", "--data", "--budget-ms", "--resume", "--trust-pickle"):
        assert option in text


def test_unknown_architecture_in_the_recipe_fails_before_any_work(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--set", "teacher.arch=resnet_q", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "unknown architecture 'resnet_q'" in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_unknown_kd_loss_lists_the_known_ones_before_any_work(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--set", "distill.loss=dsit", "--runs-dir", str(tmp_path / "runs"))
    line = error_line(err)
    assert code == 2 and "did you mean 'dist'" in line and "known: hinton, dist, dkd" in line
    assert not (tmp_path / "runs").exists()


def test_corrupted_study_is_a_clear_error_and_is_kept(tmp_path, capsys):
    """A search study file that is not a database: exit 2, say what to do, touch nothing."""
    code, _ = run_cli(capsys, "search", "--runs-dir", str(tmp_path), "--name", "s", *tiny_args())
    assert code == 0
    study = tmp_path / "s" / "search" / "study.db"
    study.write_bytes(b"garbage" * 200)
    code, err = run_cli(capsys, "search", "--resume", str(tmp_path / "s"))
    assert code == 2 and "corrupted" in error_line(err)
    assert study.read_bytes() == b"garbage" * 200


def test_unreachable_study_storage_is_a_clear_error(tmp_path, capsys):
    code, err = run_cli(capsys, "search", "--runs-dir", str(tmp_path), "--name", "s", *tiny_args(),
                        "--storage", f"sqlite:///{tmp_path / 'no-such-dir' / 'study.db'}")
    assert code == 2 and "cannot open the search study storage" in error_line(err)


def test_malformed_device_url_fails_before_any_work(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), "--device", "jetson.local")
    assert code == 2 and "ssh://" in error_line(err)
    assert not any(tmp_path.iterdir())


def test_calibration_manifest_pointing_at_missing_files(tmp_path, capsys):
    manifest = tmp_path / "calib.yaml"
    manifest.write_text("name: broken\ninput_shape: [1, 8, 8]\nimages: [gone-1.png, gone-2.png]\n")
    runs = tmp_path / "runs"
    code, err = run_cli(capsys, "compress", "--runs-dir", str(runs), "--name", "r", *tiny_args(),
                        "--set", f"distill.calibration='{manifest}'")
    assert code == 2
    line = error_line(err)
    assert "2 of 2 image files are missing" in line and "gone-1.png" in line
    assert not (runs / "r").exists()


def test_unknown_int8_mode(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), *tiny_args(), "--set", "distill.mode='qta'")
    assert code == 2 and "distill.mode 'qta' is unknown" in error_line(err)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--budget-ms", "nan"], "--budget-ms must be a positive number of milliseconds, got nan"),
    (["--budget-ms", "inf"], "--budget-ms must be a positive number of milliseconds, got inf"),
    (["--budget-ms", "0"], "--budget-ms must be a positive number of milliseconds, got 0.0"),
    (["--set", "bench.runs=0"], "bench.runs must be >= 1, got 0"),
    (["--set", "distill.epochs=-1"], "distill.epochs must be >= 1, got -1"),
    (["--set", "distill.lr=0"], "distill.lr must be > 0, got 0"),
    (["--set", "search.latency_margin=1.5"], "search.latency_margin must be <= 1, got 1.5"),
    (["--set", "distill.loss='hintn'"], "distill.loss 'hintn' is unknown (did you mean 'hinton'?)"),
])
def test_invalid_values_fail_before_any_work_with_the_recipe_key(tmp_path, capsys, argv, message):
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path / "runs"), *argv)
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_a_nan_in_a_recipe_file_names_the_key(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("distill:\n  temperature: .nan\n")
    code, err = run_cli(capsys, "compress", "--recipe", str(recipe), "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "distill.temperature must be a finite number, got nan" in error_line(err)


def test_a_budget_far_below_any_student_says_so_in_readable_ms(tmp_path, capsys):
    code, err = run_cli(capsys, "compress", "--runs-dir", str(tmp_path), "--name", "r", *tiny_args()[2:],
                        "--budget-ms", "0.000001")
    line = error_line(err)
    assert code == 2 and "no candidate meets the budget of 1e-06 ms" in line and "0.0000 ms" not in line


def test_cuda_training_asked_on_a_machine_without_cuda(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: --train-device cuda is valid here")
    code, err = run_cli(capsys, "compress", "--train-device", "cuda", "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and "--train-device cuda: torch sees no CUDA GPU here" in error_line(err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("argv, message", [
    (["--mean", "0.5,0.5", "--std", "0.5,0.5"], "data.mean and data.std need one value per channel (1 or 3 each), got 2"),
    (["--mean", "imagenet"], "data.mean and data.std go together"),
    (["--mean", "imagenet", "--std", "imagenet"], "give 1 (or one for all), or convert the images with --channels 3"),
    (["--mean", "half", "--std", "0.5"], "--mean must be 'imagenet' or comma-separated numbers"),
])
def test_a_normalisation_that_does_not_fit_the_data(tmp_path, capsys, argv, message):
    code, err = run_cli(capsys, "compress", *argv, "--runs-dir", str(tmp_path / "runs"))
    assert code == 2 and message in error_line(err)
    assert not (tmp_path / "runs").exists()


def test_a_folder_of_mixed_sizes_without_an_image_size_lists_them(tmp_path, capsys):
    root = tmp_path / "mixed"
    for name, size in (("a", (16, 16)), ("b", (20, 12))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", size, (i * 30, 50, 90)).save(root / name / f"{i}.png")
    code, err = run_cli(capsys, "compress", "--data", str(root), "--runs-dir", str(tmp_path / "runs"))
    line = error_line(err)
    assert code == 2 and "16x16 (4)" in line and "20x12 (4)" in line and "--image-size" in line
    assert not (tmp_path / "runs").exists()
