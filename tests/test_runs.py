"""A run's command line and folder (examples/runs.py): clear errors for bad settings before anything
is written, nothing of the user's overwritten, the run's lock, the split's digest, and --resume
going on with the settings the run started with."""
import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import minigrad
from datasets import Dataset, ImageFiles
from minigrad import backend

from example_scripts import TINY, read_history, run_dvm, run_folder, usage_error, write_class_folders
import runs
import train_dvm
import train_folder
import training


# --------------------------------------------------------------------------------------------
# Bad input: a clear message, and nothing of the user's touched


def test_an_out_folder_with_files_is_never_overwritten(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    message = usage_error(capsys, run_dvm, TINY + ["--out", str(folder)])
    assert "already holds files" in message and "--resume" in message
    assert [path.name for path in folder.iterdir()] == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "precious"


@pytest.mark.skipif(sys.platform == "win32", reason="runs go unlocked where there is no fcntl (Windows)")
def test_a_run_that_is_training_cannot_be_resumed_by_a_second_process(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "1",
                             "--optimizers", "sgd"])
    before = (folder / "sgd" / "last.npz").read_bytes()
    import fcntl
    with open(folder / "config.json", "rb") as held:  # as the process still training it holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        message = usage_error(capsys, run_dvm, ["--resume", "--out", str(folder), "--epochs", "2", "--workers", "0"])
        assert f"another process is training the run in {folder} now" in message
        assert (folder / "sgd" / "last.npz").read_bytes() == before and len(read_history(folder)) == 1
    run_dvm(["--resume", "--out", str(folder), "--epochs", "2", "--workers", "0"])  # once it has ended
    assert len(read_history(folder)) == 2


def test_a_new_run_never_writes_over_the_config_of_a_run_begun_meanwhile(tmp_path, capsys, monkeypatch):
    check_new_folder, checks = runs.check_new_folder, []

    def another_run_begins_after_the_last_check(args, name):
        check_new_folder(args, name)
        checks.append(1)
        if len(checks) == 2:  # the check as the folder is made, after the data were read
            (args.out / "config.json").write_text("the other run's")

    monkeypatch.setattr(runs, "check_new_folder", another_run_begins_after_the_last_check)
    (tmp_path / "run").mkdir()
    message = usage_error(capsys, run_dvm, TINY + ["--out", str(tmp_path / "run")])
    assert "another run has just begun in" in message
    assert (tmp_path / "run" / "config.json").read_text() == "the other run's"


def test_an_image_size_the_model_cannot_take_names_sizes_it_can(capsys):
    message = usage_error(capsys, run_dvm, ["--img-size", "50", "--out", "unused"])
    assert "img_size=50" in message and "Sizes that fit" in message


@pytest.mark.parametrize("model, size", [("swin_mini", "8"), ("swin_mini", "50"), ("swin_t", "32")])
def test_an_image_size_the_model_cannot_take_is_refused_before_the_data_are_read(tmp_path, capsys, model, size):
    parser = runs.make_parser("test")
    train_folder.add_data_arguments(parser)
    read = []
    message = usage_error(capsys, lambda argv: runs.main(parser, read.append, "folder", argv),
                          ["--data", str(tmp_path), "--model", model, "--img-size", size])
    assert f"img_size={size} does not fit {model}" in message and "Sizes that fit" in message
    assert read == []  # a scan of a large folder takes minutes


def test_ctrl_c_while_the_data_are_read_ends_with_a_message_and_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_dvm, "load_data", interrupted)
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(tmp_path / "run")])
    assert stop.value.code == 130
    assert "interrupted before training began" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_gpu_without_cupy_says_what_to_install(capsys, monkeypatch):
    monkeypatch.delenv("MINIGRAD_FAKE_GPU", raising=False)
    if backend.is_gpu_available():
        pytest.skip("this machine has a GPU")
    message = usage_error(capsys, run_dvm, TINY + ["--device", "gpu"])
    assert "pip install" in message and "[gpu]" in message


@pytest.mark.parametrize("option, value", [
    ("--epochs", "0"), ("--batch-size", "0"), ("--lr", "-1"), ("--max-steps", "0"), ("--optimizers", "adam adam"),
    ("--label-smoothing", "1.5"), ("--warmup-epochs", "-1"), ("--drop-path", "1"), ("--workers", "-1"),
    ("--weight-decay", "-0.1"), ("--clip-grad", "-1"), ("--lr", "0"), ("--log-every", "0"),
    ("--label-smoothing", "-0.1"), ("--drop-path", "-0.1"), ("--lr", "nan"), ("--lr", "inf"),
    ("--weight-decay", "nan"), ("--warmup-epochs", "inf"), ("--clip-grad", "nan"), ("--img-size", "0"),
    ("--img-size", "-32")])
def test_settings_out_of_range_are_refused_before_anything_is_written(tmp_path, capsys, option, value):
    message = usage_error(capsys, run_dvm, TINY + [option, *value.split(), "--out", str(tmp_path / "run")])
    assert option in message
    assert not (tmp_path / "run").exists()


def test_settings_at_the_ends_of_their_ranges_are_accepted():
    parser = runs.make_parser("test")
    for argv in (["--label-smoothing", "1", "--drop-path", "0", "--weight-decay", "0", "--clip-grad", "0",
                  "--warmup-epochs", "0", "--workers", "0", "--epochs", "1", "--batch-size", "1", "--log-every", "1",
                  "--max-steps", "1"],
                 ["--label-smoothing", "0", "--drop-path", "0.999"]):
        runs.check_settings(parser.parse_args(argv))  # raises nothing


def test_the_default_model_is_swin_mini_on_the_synthetic_set_and_swin_t_on_real_data(tmp_path, capsys):
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    seen = []

    def load_data(args):
        seen.append((args.model, args.img_size))
        raise ValueError("no data in this test")

    for argv in ([], ["--data", str(tmp_path)], ["--model", "swin_t", "--img-size", "384"], ["--model", "swin_b"]):
        with pytest.raises(SystemExit):
            runs.main(parser, load_data, "dvm", argv)
    # The image size is the variant's: 64 px for swin_mini, 224 for the others.
    assert seen == [("swin_mini", 64), ("swin_t", 224), ("swin_t", 384), ("swin_b", 224)]
    assert "no data in this test" in capsys.readouterr().err


class Fixed(Dataset):
    """``size`` examples of ``classes``, labelled in turn."""

    def __init__(self, size: int, classes: list[str]):
        self.labels, self.classes = np.arange(size) % len(classes), classes

    def example_names(self) -> list[str]:
        return [f"example {index}" for index in range(len(self))]


def test_one_class_is_refused_and_splits_too_small_to_score_are_warned_of():
    with pytest.raises(ValueError, match="at least two classes, the data have 1 \\(Black\\)"):
        runs.check_data(training.Splits(Fixed(50, ["Black"]), Fixed(30, ["Black"]), None), 8)
    with pytest.warns(UserWarning) as caught:
        runs.check_data(training.Splits(Fixed(50, ["Black", "Red"]), Fixed(2, ["Black", "Red"]),
                                        Fixed(19, ["Black", "Red"])), 8)
    assert [str(warning.message).split(":")[0] for warning in caught] == [
        "the validation split holds only 2 images", "the test split holds only 19 images"]
    assert "steps of 50%" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        runs.check_data(training.Splits(Fixed(50, ["Black", "Red"]), Fixed(20, ["Black", "Red"]), None), 8)


def test_dvm_colours_below_two_are_refused_before_the_scan(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_dvm, "dvm_colours", lambda *args, **kwargs: pytest.fail("the data were scanned"))
    message = usage_error(capsys, run_dvm, ["--data", str(tmp_path), "--colours", "1", "--model", "swin_mini"])
    assert "--colours must be at least 2, got 1" in message


def test_a_large_model_from_scratch_on_the_cpu_is_warned_of():
    parser = runs.make_parser("test")
    messages = {}
    for argv in (["--model", "swin_t"], ["--model", "swin_t", "--pretrained", "w.npz"], ["--model", "swin_mini"],
                 ["--model", "swin_t", "--device", "cuda"]):
        args = parser.parse_args(argv)
        args.img_size, args.device = 224, args.device.replace("cuda", "gpu")  # as main leaves them
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runs.warn_of_a_slow_start(args)
        messages[" ".join(argv)] = [str(warning.message) for warning in caught]
    [message] = messages.pop("--model swin_t")
    assert all(not found for found in messages.values()), messages
    assert "swin_t at 224 px trains from scratch on the CPU" in message
    assert "--device gpu and --pretrained" in message and "--model swin_mini" in message


def test_a_damaged_checkpoint_met_on_resume_is_named_with_the_way_to_go_on(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--optimizers", "sgd", "--max-steps", "1"])
    (folder / "sgd" / "last.npz").write_bytes(b"cut short")
    with pytest.raises(SystemExit) as stop:
        run_dvm(["--resume", "--out", str(folder), "--workers", "0"])
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert f"{folder / 'sgd' / 'last.npz'} is damaged" in message and f"--resume --out {folder} goes on" in message


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("precious")
    message = usage_error(capsys, run_dvm, TINY + ["--out", str(tmp_path / "notes.txt")])
    assert "is a file" in message and (tmp_path / "notes.txt").read_text() == "precious"


def test_an_image_that_cannot_be_read_mid_run_is_named_with_the_way_to_go_on(tmp_path, capsys, monkeypatch):
    write_class_folders(tmp_path / "photos", {"Red": 10, "Black": 10})
    broken = tmp_path / "photos" / "Red" / "photo 0.PNG"
    argv = ["--data", str(tmp_path / "photos"), "--model", "swin_mini", "--img-size", "32", "--epochs", "1",
            "--batch-size", "4", "--optimizers", "adam", "--workers", "0", "--out", str(tmp_path / "run")]
    original = ImageFiles.load

    def breaks_after_the_check(self, index, rng):
        if self.paths[index] == str(broken):
            broken.write_bytes(b"not a PNG any more")
        return original(self, index, rng)

    monkeypatch.setattr(ImageFiles, "load", breaks_after_the_check)
    with pytest.raises(SystemExit) as stop:
        run_folder(argv)
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert f"cannot read the image {broken}" in message and f"--resume --out {tmp_path / 'run'}" in message


# --------------------------------------------------------------------------------------------
# --resume and the split's digest


def test_resume_refuses_a_run_of_another_model(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "1"])
    message = usage_error(capsys, run_dvm, TINY[:2] + ["--img-size", "64"] + TINY[4:] + ["--out", str(folder),
                                                                                          "--resume"])
    assert "--img-size 64 (the run has 32)" in message and "start a new run" in message


def test_resume_goes_on_with_the_settings_the_run_started_with(tmp_path):
    """A resumed run needs only --resume --out: the split, model, batches and learning rate are the run's."""
    settings = TINY + ["--optimizers", "adam", "--lr", "1e-3", "--seed", "3", "--max-steps", "8"]
    straight = run_dvm(settings + ["--out", str(tmp_path / "straight")])
    stopped = run_dvm(settings + ["--out", str(tmp_path / "stopped"), "--epochs", "1"])
    run_dvm(["--resume", "--out", str(stopped), "--epochs", "2", "--max-steps", "8", "--workers", "0"])
    expected, resumed = (minigrad.load(run / "adam" / "last.npz") for run in (straight, stopped))
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)


def test_max_steps_is_the_sessions_own_so_a_smoke_run_can_go_on(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--optimizers", "adam", "--max-steps", "2"])
    run_dvm(["--resume", "--out", str(folder), "--workers", "0", "--max-steps", "2"])  # the same cap: no step left
    assert "adam: the 2 steps of --max-steps are done; pass a larger one to go on" in capsys.readouterr().out
    assert [row["epoch"] for row in read_history(folder)] == ["1"]
    run_dvm(["--resume", "--out", str(folder), "--workers", "0"])  # the run's --epochs 2, no cap now
    assert [row["epoch"] for row in read_history(folder)] == ["1", "2"]
    run_dvm(["--resume", "--out", str(folder), "--workers", "0"])
    assert "adam: all 2 epochs are done; pass a larger --epochs to go on" in capsys.readouterr().out


def test_resume_refuses_a_setting_that_would_change_the_run(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "1", "--seed", "3"])
    message = usage_error(capsys, run_dvm, ["--resume", "--out", str(folder), "--seed", "5", "--batch-size", "16"])
    assert "--batch-size 16 (the run has 8), --seed 5 (the run has 3)" in message


def test_resume_restores_paths_as_paths(tmp_path):
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    config = {"script": "dvm", "data": str(tmp_path / "DVM"), "pretrained": str(tmp_path / "weights.npz"),
              "epochs": 3, "out": "elsewhere"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv = ["--resume", "--out", str(tmp_path)]
    args = parser.parse_args(argv)
    runs.restore_settings(args, parser, runs.given_options(parser, argv), "dvm")
    assert args.data == tmp_path / "DVM" and args.pretrained == tmp_path / "weights.npz"
    assert isinstance(args.data, Path) and isinstance(args.pretrained, Path)  # --pretrained calls .exists()
    assert args.epochs == 3 and args.out == tmp_path  # --out is the session's


def test_resume_leaves_the_sessions_settings_to_the_session(tmp_path):
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    config = {"script": "dvm", "device": "gpu", "workers": 0, "log_every": 1, "max_steps": 3, "seed": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    defaults = parser.parse_args([])
    for session in ([], ["--device", "cpu", "--workers", "2", "--log-every", "5", "--max-steps", "9"]):
        argv = ["--resume", "--out", str(tmp_path)] + session
        args = parser.parse_args(argv)
        runs.restore_settings(args, parser, runs.given_options(parser, argv), "dvm")  # refuses none
        assert args.seed == 4  # the run's
        assert vars(args) == {**vars(parser.parse_args(argv)), "seed": 4}  # the rest: this session's
        if not session:
            assert (args.device, args.workers, args.log_every, args.max_steps) == \
                (defaults.device, defaults.workers, defaults.log_every, defaults.max_steps)


def test_resume_needs_an_earlier_run(tmp_path, capsys):
    message = usage_error(capsys, run_dvm, TINY + ["--resume", "--out", str(tmp_path / "nothing")])
    assert "config.json" in message


class Named(Dataset):
    def __init__(self, names, labels, classes=("a", "b")):
        self.names, self.labels, self.classes = names, np.asarray(labels, dtype=np.int64), list(classes)

    def example_names(self):
        return self.names


def test_the_split_digest_tells_apart_where_the_splits_part_and_the_labels():
    def digest(train, val, test=None):
        return runs.split_digest(training.Splits(Named(*train), Named(*val), test and Named(*test)))

    same = digest((["p", "q"], [0, 1]), (["r"], [0]))
    assert same == digest((["p", "q"], [0, 1]), (["r"], [0]))
    assert same != digest((["p"], [0]), (["q", "r"], [1, 0]))  # a photo moved from training to validation
    assert same != digest((["p", "q"], [0, 0]), (["r"], [0]))  # a photo relabelled
    assert same != digest((["p", "q"], [0, 1]), ([], []), (["r"], [0]))  # validated before, tested now


def test_resume_refuses_data_whose_classes_were_renamed(tmp_path):
    """A class folder renamed keeps every photo's name and label, so the split digest alone cannot tell."""
    args = argparse.Namespace(resume=False, out=tmp_path / "run", model="swin_mini", img_size=32)
    before = training.Splits(Named(["p", "q"], [0, 1], ["Black", "Red"]), Named(["r"], [1], ["Black", "Red"]), None)
    folder = runs.output_folder(args, "folder", before)
    args.resume = True
    assert runs.output_folder(args, "folder", before) == folder
    after = training.Splits(*(Named(split.names, split.labels, ["Black", "Crimson"]) for split in before[:2]), None)
    with pytest.raises(ValueError, match="other classes"):
        runs.output_folder(args, "folder", after)


def test_resume_removes_the_unfinished_checkpoints_a_killed_process_left_and_nothing_else(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--optimizers", "sgd"])
    # What minigrad.save leaves when kill -9 stops it mid-write (its temporary name, before os.replace):
    written = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", lambda source, target: written.append(Path(source)))
        minigrad.save({"x": np.zeros(3)}, folder / "sgd" / "last.npz")
    [unfinished] = written
    assert unfinished.exists() and unfinished.parent == folder / "sgd"
    mine = [folder / "sgd" / "notes.tmp", folder / "notes.npz.tmp", folder / "sgd" / ".last.npz.tmp.txt"]
    for path in mine:
        path.write_text("the user's")
    run_dvm(["--resume", "--out", str(folder), "--epochs", "2"])
    assert not unfinished.exists()
    assert f"left unfinished: sgd/{unfinished.name}" in capsys.readouterr().out
    assert all(path.read_text() == "the user's" for path in mine)
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "last.npz")["history"]] == [1, 2]
