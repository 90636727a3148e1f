"""The training scripts: metrics against hand-counted cases, a whole run end to end on tiny data,
resuming that repeats an uninterrupted run bit for bit, clear errors for bad input, nothing of
the user's overwritten, and the host-device traffic of a training epoch on the stand-in GPU."""
import argparse
import csv
import json
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minigrad
import optim
from datasets import (DataLoader, Dataset, ImageFiles, SyntheticCarColours, ToArray, eval_transform, image_folder,
                      stratified_split, train_transform)
from minigrad import backend
from minigrad.nn import Parameter
from minigrad.testing import fake_gpu
from swin import VARIANTS, swin_mini

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import benchmark  # noqa: E402
import predict  # noqa: E402
import reporting  # noqa: E402
import train_dvm  # noqa: E402
import train_folder  # noqa: E402
import train_stanford_cars  # noqa: E402
import training  # noqa: E402
from test_dvm import viewpoint_of, write_image_table, write_tree  # noqa: E402
from test_stanford_cars import NAMES, make_cars  # noqa: E402

TINY = ["--model", "swin_mini", "--img-size", "32", "--synthetic-size", "44", "--batch-size", "8",
        "--epochs", "2", "--workers", "0"]


def run_dvm(argv):
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    return training.main(parser, train_dvm.load_data, "dvm", argv)


def usage_error(capsys, run, argv) -> str:
    """Run a script that must stop with a usage error; return its message."""
    with pytest.raises(SystemExit) as stop:
        run(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Metrics


def test_confusion_matrix_counts_each_pair():
    labels = np.array([0, 0, 1, 2, 2, 2])
    predictions = np.array([0, 1, 1, 2, 0, 2])
    expected = np.array([[1, 1, 0],
                         [0, 1, 0],
                         [1, 0, 2]])
    np.testing.assert_array_equal(reporting.confusion_matrix(labels, predictions, 3), expected)


def test_accuracy_and_f1_by_hand():
    confusion = np.array([[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert reporting.accuracy(confusion) == pytest.approx(4 / 6)
    # F1 = 2TP / (2TP + FP + FN): class 0: 2/(2+1+1), class 1: 2/(2+1+0), class 2: 4/(4+0+1)
    f1 = [2 / 4, 2 / 3, 4 / 5]
    np.testing.assert_allclose(reporting.per_class_f1(confusion), f1)
    assert reporting.macro_f1(confusion) == pytest.approx(np.mean(f1))


def test_macro_f1_leaves_out_a_class_neither_present_nor_predicted():
    confusion = reporting.confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 4)
    scores = reporting.per_class_f1(confusion)
    assert np.isnan(scores[2]) and np.isnan(scores[3])
    assert reporting.macro_f1(confusion) == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_macro_f1_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels, predictions = rng.integers(0, 7, 300), rng.integers(0, 6, 300)
    confusion = reporting.confusion_matrix(labels, predictions, 9)
    assert reporting.macro_f1(confusion) == pytest.approx(metrics.f1_score(labels, predictions, average="macro"))


def test_confusion_matrix_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        reporting.confusion_matrix(np.zeros(3, int), np.zeros(4, int), 2)


def test_scores_of_an_empty_confusion_matrix_are_zero():
    empty = np.zeros((3, 3), dtype=np.int64)
    assert reporting.accuracy(empty) == 0.0 and reporting.macro_f1(empty) == 0.0


@pytest.fixture
def drawn_axes(monkeypatch) -> list:
    """The axes of every figure reporting draws, in order, kept for a look at what was drawn on them."""
    axes, subplots = [], reporting.plt.subplots

    def recording(*args, **kwargs):
        figure, made = subplots(*args, **kwargs)
        axes.extend(np.atleast_1d(made))
        return figure, made

    monkeypatch.setattr(reporting.plt, "subplots", recording)
    return axes


def test_the_confusion_plot_colours_each_cell_by_its_share_of_the_true_class(tmp_path, drawn_axes):
    confusion = np.array([[3, 1, 0], [0, 0, 0], [2, 0, 6]])
    reporting.plot_confusion(confusion, ["a", "b", "c"], tmp_path / "confusion.png", "title")
    assert (tmp_path / "confusion.png").is_file()
    # Rows are true classes: 3 of 4 a's predicted a; no b at all (its row stays 0); 2 of 8 c's predicted a.
    np.testing.assert_allclose(drawn_axes[0].images[0].get_array(), [[0.75, 0.25, 0], [0, 0, 0], [0.25, 0, 0.75]])
    assert sorted(text.get_text() for text in drawn_axes[0].texts) == ["1", "2", "3", "6"]
    # Counts on a dark cell (over half of the true class) are written in white, the others in black.
    colours = {text.get_text(): text.get_color() for text in drawn_axes[0].texts}
    assert colours == {"3": "white", "1": "black", "2": "black", "6": "white"}


def test_the_confusion_plot_of_more_than_30_classes_draws_only_the_colours(tmp_path, drawn_axes):
    for count in (30, 31):
        reporting.plot_confusion(np.eye(count, dtype=np.int64), [f"c{i}" for i in range(count)],
                                 tmp_path / f"{count}.png", "title")
    assert len(drawn_axes[0].texts) == 30 and len(drawn_axes[0].get_xticklabels()) == 30
    assert len(drawn_axes[1].texts) == 0 and drawn_axes[1].images[0].get_array().shape == (31, 31)


def test_the_confusion_image_of_stanford_cars_196_classes_stays_a_readable_size(tmp_path):
    # At 0.45 inch a class it was a 10,764 x 10,584 image that took 4.5 GB and 16 s to draw.
    reporting.plot_confusion(np.eye(196, dtype=np.int64), [f"class {i}" for i in range(196)],
                             tmp_path / "confusion.png", "title")
    with Image.open(tmp_path / "confusion.png") as image:
        assert max(image.size) <= 2000


def test_long_class_names_widen_the_confusion_plot_instead_of_squeezing_the_matrix(tmp_path):
    for name, label in (("short", "Red"), ("long", "Bentley Continental Flying Spur Speed")):
        reporting.plot_confusion(np.eye(3, dtype=np.int64), [f"{label} {i}" for i in range(3)],
                                 tmp_path / f"{name}.png", "title")
    with Image.open(tmp_path / "short.png") as short, Image.open(tmp_path / "long.png") as long:
        assert long.width > short.width + 200 and long.height > short.height + 200


def test_the_curves_of_a_single_epoch_mark_its_points_at_a_whole_epoch(tmp_path, drawn_axes):
    # A line through one point draws nothing: a run of one epoch gave empty panels.
    row = {"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "train_acc": 0.1, "val_acc": 0.2, "val_f1": 0.15}
    reporting.plot_curves({"adam": [row]}, tmp_path / "curves.png")
    for axis in drawn_axes:
        assert all(line.get_marker() not in ("None", "", None) for line in axis.get_lines())
        ticks = [tick for tick in axis.get_xticks() if axis.get_xlim()[0] <= tick <= axis.get_xlim()[1]]
        assert ticks == [1]


def test_the_curves_draw_each_optimizers_columns_in_a_colour_of_its_own(tmp_path, drawn_axes):
    histories = {
        "adam": [{"epoch": 1, "train_loss": 2.0, "val_loss": 2.5, "train_acc": 0.1, "val_acc": 0.2, "val_f1": 0.15},
                 {"epoch": 2, "train_loss": 1.5, "val_loss": 2.25, "train_acc": 0.3, "val_acc": 0.4, "val_f1": 0.35}],
        "radam": [{"epoch": 1, "train_loss": 2.1, "val_loss": 2.6, "train_acc": 0.12, "val_acc": 0.22,
                   "val_f1": 0.17}]}
    reporting.plot_curves(histories, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").is_file()
    loss, acc, f1 = drawn_axes
    drawn = {axis.get_title(): {line.get_label(): (list(line.get_xdata()), list(line.get_ydata()),
                                                   line.get_linestyle(), line.get_color())
                                for line in axis.get_lines()} for axis in drawn_axes}
    assert drawn["loss"] == {"adam train": ([1, 2], [2.0, 1.5], "-", "C0"),
                             "adam validation": ([1, 2], [2.5, 2.25], "--", "C0"),
                             "radam train": ([1], [2.1], "-", "C1"),
                             "radam validation": ([1], [2.6], "--", "C1")}
    assert drawn["accuracy"]["adam train"][1] == [0.1, 0.3] and drawn["accuracy"]["adam validation"][1] == [0.2, 0.4]
    assert drawn["validation macro-F1"] == {"adam validation": ([1, 2], [0.15, 0.35], "--", "C0"),
                                            "radam validation": ([1], [0.17], "--", "C1")}


def test_summary_gives_the_best_epoch_the_scores_and_the_median_speed():
    history = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}, {"epoch": 2, "val_acc": 0.75, "images_per_s": 40.0},
               {"epoch": 3, "val_acc": 0.625, "images_per_s": 100.0}]
    confusion = np.array([[3, 1], [0, 2]])  # accuracy 5/6; F1 6/7 and 4/5, macro 0.8286
    summary = training.summarize({"adam": {"confusion": confusion, "history": history}}, ["Red", "Black"], "test")
    assert "| adam | 2 | 0.7500 | 0.8333 | 0.8286 | 40.0 |" in summary
    assert "| Red | 0.857 |" in summary and "| Black | 0.800 |" in summary


def test_summary_gives_each_optimizer_its_column_and_the_first_epoch_of_a_tie():
    tied = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}, {"epoch": 2, "val_acc": 0.75, "images_per_s": 10.0},
            {"epoch": 3, "val_acc": 0.75, "images_per_s": 10.0}]
    results = {"adam": {"confusion": np.array([[3, 1], [0, 2]]), "history": tied},  # F1 6/7 and 4/5
               "sgd": {"confusion": np.array([[0, 4], [0, 2]]), "history": tied[:1]}}  # F1 0 and 4/8
    summary = training.summarize(results, ["Red", "Black"], "validation")
    # The best checkpoint keeps the first epoch of a tie: the summary names that one.
    assert "| adam | 2 | 0.7500 | 0.8333 | 0.8286 | 10.0 |" in summary
    assert "| sgd | 1 | 0.5000 | 0.3333 | 0.2500 | 10.0 |" in summary
    assert "| class | adam | sgd |" in summary and "validation accuracy" in summary
    assert "| Red | 0.857 | 0.000 |" in summary and "| Black | 0.800 | 0.500 |" in summary


def test_summary_marks_a_class_absent_from_the_test_split_and_never_predicted():
    history = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}]
    confusion = np.array([[2, 0, 1], [0, 0, 0], [0, 0, 3]])  # no Black, and none predicted
    summary = training.summarize({"adam": {"confusion": confusion, "history": history}}, ["Red", "Black", "Blue"],
                                 "test")
    assert "| Black | - |" in summary and "nan" not in summary
    assert "-: a class neither in the test split nor predicted, left out of macro-F1." in summary
    assert "left out" not in training.summarize({"adam": {"confusion": np.eye(2, dtype=int), "history": history}},
                                                ["Red", "Black"], "test")


class Named(Dataset):
    def __init__(self, names, labels, classes=("a", "b")):
        self.names, self.labels, self.classes = names, np.asarray(labels, dtype=np.int64), list(classes)

    def example_names(self):
        return self.names


def test_the_split_digest_tells_apart_where_the_splits_part_and_the_labels():
    def digest(train, val, test=None):
        return training.split_digest(training.Splits(Named(*train), Named(*val), test and Named(*test)))

    same = digest((["p", "q"], [0, 1]), (["r"], [0]))
    assert same == digest((["p", "q"], [0, 1]), (["r"], [0]))
    assert same != digest((["p"], [0]), (["q", "r"], [1, 0]))  # a photo moved from training to validation
    assert same != digest((["p", "q"], [0, 0]), (["r"], [0]))  # a photo relabelled
    assert same != digest((["p", "q"], [0, 1]), ([], []), (["r"], [0]))  # validated before, tested now


def test_resume_refuses_data_whose_classes_were_renamed(tmp_path):
    """A class folder renamed keeps every photo's name and label, so the split digest alone cannot tell."""
    args = argparse.Namespace(resume=False, out=tmp_path / "run", model="swin_mini", img_size=32)
    before = training.Splits(Named(["p", "q"], [0, 1], ["Black", "Red"]), Named(["r"], [1], ["Black", "Red"]), None)
    folder = training.output_folder(args, "folder", before)
    args.resume = True
    assert training.output_folder(args, "folder", before) == folder
    after = training.Splits(*(Named(split.names, split.labels, ["Black", "Crimson"]) for split in before[:2]), None)
    with pytest.raises(ValueError, match="other classes"):
        training.output_folder(args, "folder", after)


def test_the_cosine_schedule_warms_up_then_decays_over_every_epoch():
    args = argparse.Namespace(schedule="cosine", epochs=4, warmup_epochs=0.3)
    optimizer = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    schedule = training.make_schedule(args, optimizer, steps_per_epoch=6)
    # 24 steps in all; the warm-up round(0.3 * 6) = 2 steps, then a half cosine over the other 22.
    expected = [step / 2 if step < 2 else 0.5 * (1 + np.cos(np.pi * (step - 2) / 22)) for step in range(25)]
    rates = []
    for _ in range(25):
        rates.append(schedule.get_last_lr()[0])
        schedule.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-12)


def test_stratified_split_holds_out_a_fraction_of_each_class():
    labels = np.repeat(np.arange(4), [10, 20, 2, 1])
    kept, held_out = stratified_split(labels, 0.1, seed=3)
    assert sorted(np.concatenate([kept, held_out]).tolist()) == list(range(len(labels)))
    np.testing.assert_array_equal(np.bincount(labels[held_out], minlength=4), [1, 2, 1, 0])
    again = stratified_split(labels, 0.1, seed=3)
    np.testing.assert_array_equal(again[1], held_out)
    with pytest.raises(ValueError, match="fraction"):
        stratified_split(labels, 1.0)


def test_stratified_split_rounds_each_class_count_and_draws_members_by_seed():
    labels = np.repeat([0, 1], [7, 11])
    # 0.25 * 7 = 1.75 and 0.25 * 11 = 2.75: rounded to 2 and 3, not truncated.
    held_outs = [stratified_split(labels, 0.25, seed)[1] for seed in range(8)]
    for held_out in held_outs:
        np.testing.assert_array_equal(np.bincount(labels[held_out], minlength=2), [2, 3])
    assert len({tuple(held_out.tolist()) for held_out in held_outs}) > 1  # which members: the seed's draw
    assert set(np.concatenate(held_outs).tolist()) != set(held_outs[0].tolist())


# --------------------------------------------------------------------------------------------
# A whole run


def read_history(folder: Path) -> list[dict[str, str]]:
    with open(folder / "history.csv") as file:
        return list(csv.DictReader(file))


def test_a_run_on_the_synthetic_set_writes_every_report(tmp_path):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run")])
    for name in ("config.json", "history.csv", "curves.png", "confusion_adam.png", "confusion_radam.png",
                 "summary.md", "adam/last.npz", "adam/best.npz", "radam/last.npz", "radam/best.npz"):
        assert (folder / name).is_file(), name
    rows = read_history(folder)
    assert [(row["optimizer"], row["epoch"]) for row in rows] == [("adam", "1"), ("adam", "2"),
                                                                   ("radam", "1"), ("radam", "2")]
    assert all(0.0 <= float(row["val_acc"]) <= 1.0 for row in rows)
    with Image.open(folder / "curves.png") as image:
        assert image.width > 500
    summary = (folder / "summary.md").read_text()
    assert "| adam |" in summary and "| radam |" in summary and "| Beige |" in summary
    checkpoint = minigrad.load(folder / "adam" / "last.npz")
    assert checkpoint["classes"] == list(SyntheticCarColours().classes)
    assert [row["epoch"] for row in checkpoint["history"]] == [1, 2]


def test_an_optimizers_run_does_not_depend_on_the_one_before_it(tmp_path):
    # Same initial weights, same batches, same drop-path draws, whatever trained first.
    argv = TINY + ["--epochs", "1", "--max-steps", "3"]
    alone = run_dvm(argv + ["--out", str(tmp_path / "alone"), "--optimizers", "sgd"])
    second = run_dvm(argv + ["--out", str(tmp_path / "second"), "--optimizers", "adam", "sgd"])
    expected = minigrad.load(alone / "sgd" / "last.npz")["model"]
    actual = minigrad.load(second / "sgd" / "last.npz")["model"]
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_resuming_repeats_an_uninterrupted_run_exactly(tmp_path):
    straight = run_dvm(TINY + ["--out", str(tmp_path / "straight"), "--optimizers", "radam"])
    interrupted = tmp_path / "interrupted"
    run_dvm(TINY + ["--out", str(interrupted), "--optimizers", "radam", "--epochs", "1"])
    run_dvm(TINY + ["--out", str(interrupted), "--optimizers", "radam", "--resume"])
    expected = minigrad.load(straight / "radam" / "last.npz")
    resumed = minigrad.load(interrupted / "radam" / "last.npz")
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)
    assert [row["train_loss"] for row in resumed["history"]] == [row["train_loss"] for row in expected["history"]]


def test_ctrl_c_says_how_to_resume_and_resuming_repeats_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    straight = run_dvm(TINY + ["--out", str(tmp_path / "straight"), "--optimizers", "adam"])
    train_epoch, calls = training.train_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted_in_epoch_2)
    folder = tmp_path / "interrupted"
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(folder), "--optimizers", "adam"])
    assert stop.value.code == 130
    assert f"interrupted. Every finished epoch is saved in {folder}; to go on, run the same command with " \
           f"--resume --out {folder}" in capsys.readouterr().err
    assert [row["epoch"] for row in minigrad.load(folder / "adam" / "last.npz")["history"]] == [1]
    monkeypatch.setattr(training, "train_epoch", train_epoch)
    run_dvm(TINY + ["--out", str(folder), "--optimizers", "adam", "--resume"])
    expected, resumed = (minigrad.load(run / "adam" / "last.npz") for run in (straight, folder))
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)


def test_ctrl_c_while_an_epoch_is_saved_loses_neither_its_best_checkpoint_nor_its_history(tmp_path, monkeypatch):
    """--resume goes on after the epoch in last.npz: by the time that is written, the epoch's best.npz
    and history.csv row must be written too, or a Ctrl-C between them loses them for good."""
    accuracies = iter([0.5, 0.75, 0.75])  # epoch 2 is the best; the resumed run draws the third if it retrains it
    monkeypatch.setattr(training, "scores", lambda labels, predictions, classes: {"acc": next(accuracies), "f1": 0.5})
    save = minigrad.save

    def interrupted_at_epoch_2s_best(state, path):
        if Path(path).name == "best.npz" and len(state["history"]) == 2:
            raise KeyboardInterrupt
        save(state, path)

    monkeypatch.setattr(training.minigrad, "save", interrupted_at_epoch_2s_best)
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--out", str(folder)])
    assert stop.value.code == 130
    monkeypatch.setattr(training.minigrad, "save", save)
    run_dvm(["--resume", "--out", str(folder), "--workers", "0"])
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "best.npz")["history"]] == [1, 2]
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "last.npz")["history"]] == [1, 2]
    assert [(row["optimizer"], row["epoch"]) for row in read_history(folder)] == [("sgd", "1"), ("sgd", "2")]


def test_resuming_one_optimizer_keeps_the_others_history(tmp_path):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "2"])
    run_dvm(TINY + ["--out", str(folder), "--resume", "--optimizers", "radam", "--max-steps", "4"])
    rows = [(row["optimizer"], row["epoch"]) for row in read_history(folder)]
    assert rows == [("adam", "1"), ("radam", "1"), ("radam", "2")]
    # --max-steps counts the steps the run has already taken: 2 before, 2 more now.
    assert [int(row["steps"]) for row in read_history(folder) if row["optimizer"] == "radam"] == [2, 2]
    summary = (folder / "summary.md").read_text()
    assert "| adam | 1 |" in summary and "| radam |" in summary  # the report still shows both


def test_each_epoch_draws_a_new_order_and_a_set_smaller_than_a_batch_still_trains(tmp_path, monkeypatch):
    orders = []

    class Recording(DataLoader):
        def batch_indices(self):
            batches = super().batch_indices()
            if self.shuffle:  # the training loader
                orders.append((self.epoch, [index for batch in batches for index in batch.tolist()]))
            return batches

    monkeypatch.setattr(training, "DataLoader", Recording)
    run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--out", str(tmp_path / "run")])
    # 6 training images, fewer than a batch of 8: each epoch is one batch of all six, in an order of its own.
    assert [epoch for epoch, _ in orders] == [1, 2]
    assert all(sorted(order) == list(range(6)) for _, order in orders)
    assert orders[0][1] != orders[1][1]
    # The order is drawn from --seed too. (--synthetic-size 6 with another seed: the same six labels,
    # shuffled otherwise, so only the order may tell the runs apart.)
    run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--epochs", "1", "--seed", "1",
                    "--out", str(tmp_path / "seed 1")])
    assert orders[2][0] == 1 and orders[2][1] != orders[0][1]


def test_the_best_checkpoint_is_the_first_epoch_of_the_best_validation_accuracy(tmp_path, monkeypatch):
    accuracies = iter([0.5, 0.75, 0.75])
    monkeypatch.setattr(training, "scores", lambda labels, predictions, classes: {"acc": next(accuracies), "f1": 0.5})
    evaluate, tested = training.evaluate, {}

    def recording(model, loader, device, description):
        if description == "sgd test":
            tested.update({key: np.array(value) for key, value in model.state_dict().items()})
        return evaluate(model, loader, device, description)

    monkeypatch.setattr(training, "evaluate", recording)
    folder = run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--epochs", "3",
                             "--out", str(tmp_path / "run")])
    best, last = (minigrad.load(folder / "sgd" / name) for name in ("best.npz", "last.npz"))
    assert [row["epoch"] for row in best["history"]] == [1, 2]
    assert [row["epoch"] for row in last["history"]] == [1, 2, 3]
    # The test split scores the best model, not the last.
    assert not all(np.array_equal(best["model"][key], last["model"][key]) for key in best["model"])
    for key in best["model"]:
        np.testing.assert_array_equal(tested[key], best["model"][key], err_msg=key)


def test_max_steps_stops_each_optimizer(tmp_path):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "7", "--epochs", "5"])
    rows = read_history(folder)
    for name in ("adam", "radam"):
        assert sum(int(row["steps"]) for row in rows if row["optimizer"] == name) == 7


def test_runs_without_out_take_the_next_free_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--epochs", "1", "--max-steps", "1", "--optimizers", "adam"]
    assert run_dvm(argv) == Path("runs/dvm")
    assert run_dvm(argv) == Path("runs/dvm-2")


def test_an_empty_out_folder_is_the_runs(tmp_path):
    (tmp_path / "run").mkdir()  # made beforehand, say for a log file to come
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--optimizers", "sgd"])
    assert folder == tmp_path / "run" and (folder / "sgd" / "last.npz").is_file()


def interrupt_in_epoch(epoch: int, monkeypatch) -> None:
    """Make training raise KeyboardInterrupt (Ctrl-C) as the given epoch starts."""
    train_epoch, calls = training.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted)


def test_resuming_a_cosine_schedule_goes_on_where_its_rate_was(tmp_path, monkeypatch):
    settings = TINY + ["--optimizers", "adam", "--schedule", "cosine"]
    straight = run_dvm(settings + ["--out", str(tmp_path / "straight")])
    interrupt_in_epoch(2, monkeypatch)
    with pytest.raises(SystemExit):
        run_dvm(settings + ["--out", str(tmp_path / "interrupted")])
    monkeypatch.undo()
    run_dvm(["--resume", "--out", str(tmp_path / "interrupted"), "--workers", "0"])
    expected, resumed = (minigrad.load(run / "adam" / "last.npz") for run in (straight, tmp_path / "interrupted"))
    # 44 images in batches of 8: 5 steps an epoch, 10 in all; epoch 2 starts half-way down the cosine.
    for history in (expected["history"], resumed["history"]):
        assert [row["lr"] for row in history] == pytest.approx([5e-4, 5e-4 * 0.5 * (1 + np.cos(np.pi * 5 / 10))])
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)


def test_drop_path_draws_are_new_each_epoch_alike_for_every_optimizer_and_follow_the_seed(tmp_path, monkeypatch):
    draws, current = {}, []
    random_uniform, train_epoch = backend.random_uniform, training.train_epoch

    def recording_uniform(shape, dtype, device):
        values = random_uniform(shape, dtype, device)
        if current:
            draws.setdefault(current[-1], []).append(np.array(backend.asnumpy(values)))
        return values

    def labelled(model, optimizer, schedule, loader, args, description, max_steps):
        current.append((args.seed, description))
        try:
            return train_epoch(model, optimizer, schedule, loader, args, description, max_steps)
        finally:
            current.pop()

    monkeypatch.setattr(backend, "random_uniform", recording_uniform)
    monkeypatch.setattr(training, "train_epoch", labelled)
    for seed in ("0", "1"):
        run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "adam", "--seed", seed,
                        "--out", str(tmp_path / seed)])

    def same(one, other):
        return len(one) == len(other) and all(np.array_equal(a, b) for a, b in zip(one, other))

    assert draws[(0, "sgd epoch 1/2")]  # swin_mini drops paths (rate 0.1)
    assert same(draws[(0, "sgd epoch 1/2")], draws[(0, "adam epoch 1/2")])
    assert same(draws[(0, "sgd epoch 2/2")], draws[(0, "adam epoch 2/2")])
    assert not same(draws[(0, "sgd epoch 1/2")], draws[(0, "sgd epoch 2/2")])
    assert not same(draws[(0, "sgd epoch 1/2")], draws[(1, "sgd epoch 1/2")])
    assert not same(draws[(0, "sgd epoch 2/2")], draws[(1, "sgd epoch 2/2")])


@pytest.mark.gpu
def test_a_run_on_the_gpu_agrees_with_the_cpu(tmp_path, gpu):
    # Without drop-path: the GPU draws its masks from a stream of its own (cuRAND on CuPy).
    argv = TINY + ["--epochs", "1", "--max-steps", "3", "--optimizers", "sgd", "--drop-path", "0"]
    on_cpu = run_dvm(argv + ["--out", str(tmp_path / "cpu")])
    on_gpu = run_dvm(argv + ["--out", str(tmp_path / "gpu"), "--device", "gpu"])
    expected, actual = (minigrad.load(folder / "sgd" / "last.npz") for folder in (on_cpu, on_gpu))
    for key in ("train_loss", "val_loss"):
        assert actual["history"][0][key] == pytest.approx(expected["history"][0][key], rel=1e-5)
    for key in expected["model"]:
        np.testing.assert_allclose(actual["model"][key], expected["model"][key], rtol=1e-4, atol=1e-6, err_msg=key)
    # Resuming puts the saved model and optimizer state back on the GPU.
    run_dvm(TINY + ["--max-steps", "6", "--optimizers", "sgd", "--out", str(on_gpu), "--device", "gpu", "--resume"])
    assert [row["steps"] for row in minigrad.load(on_gpu / "sgd" / "last.npz")["history"]] == [3, 3]


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
    check_new_folder, checks = training.check_new_folder, []

    def another_run_begins_after_the_last_check(args, name):
        check_new_folder(args, name)
        checks.append(1)
        if len(checks) == 2:  # the check as the folder is made, after the data were read
            (args.out / "config.json").write_text("the other run's")

    monkeypatch.setattr(training, "check_new_folder", another_run_begins_after_the_last_check)
    (tmp_path / "run").mkdir()
    message = usage_error(capsys, run_dvm, TINY + ["--out", str(tmp_path / "run")])
    assert "another run has just begun in" in message
    assert (tmp_path / "run" / "config.json").read_text() == "the other run's"


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
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    config = {"script": "dvm", "data": str(tmp_path / "DVM"), "pretrained": str(tmp_path / "weights.npz"),
              "epochs": 3, "out": "elsewhere"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    argv = ["--resume", "--out", str(tmp_path)]
    args = parser.parse_args(argv)
    training.restore_settings(args, parser, training.given_options(parser, argv), "dvm")
    assert args.data == tmp_path / "DVM" and args.pretrained == tmp_path / "weights.npz"
    assert isinstance(args.data, Path) and isinstance(args.pretrained, Path)  # --pretrained calls .exists()
    assert args.epochs == 3 and args.out == tmp_path  # --out is the session's


def test_resume_leaves_the_sessions_settings_to_the_session(tmp_path):
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    config = {"script": "dvm", "device": "gpu", "workers": 0, "log_every": 1, "max_steps": 3, "seed": 4}
    (tmp_path / "config.json").write_text(json.dumps(config))
    defaults = parser.parse_args([])
    for session in ([], ["--device", "cpu", "--workers", "2", "--log-every", "5", "--max-steps", "9"]):
        argv = ["--resume", "--out", str(tmp_path)] + session
        args = parser.parse_args(argv)
        training.restore_settings(args, parser, training.given_options(parser, argv), "dvm")  # refuses none
        assert args.seed == 4  # the run's
        assert vars(args) == {**vars(parser.parse_args(argv)), "seed": 4}  # the rest: this session's
        if not session:
            assert (args.device, args.workers, args.log_every, args.max_steps) == \
                (defaults.device, defaults.workers, defaults.log_every, defaults.max_steps)


def test_resume_needs_an_earlier_run(tmp_path, capsys):
    message = usage_error(capsys, run_dvm, TINY + ["--resume", "--out", str(tmp_path / "nothing")])
    assert "config.json" in message


def test_an_image_size_the_model_cannot_take_names_sizes_it_can(capsys):
    message = usage_error(capsys, run_dvm, ["--img-size", "50", "--out", "unused"])
    assert "img_size=50" in message and "Sizes that fit" in message


@pytest.mark.parametrize("model, size", [("swin_mini", "8"), ("swin_mini", "50"), ("swin_t", "32")])
def test_an_image_size_the_model_cannot_take_is_refused_before_the_data_are_read(tmp_path, capsys, model, size):
    parser = training.make_parser("test")
    train_folder.add_data_arguments(parser)
    read = []
    message = usage_error(capsys, lambda argv: training.main(parser, read.append, "folder", argv),
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


def test_a_pth_of_pytorch_before_1_6_says_how_to_convert_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    (tmp_path / "old.pth").write_bytes(pickle.dumps({"not": "a zip"}))  # the old format: a bare pickle
    message = usage_error(capsys, run_dvm, TINY + ["--pretrained", str(tmp_path / "old.pth")])
    assert "format of PyTorch before 1.6" in message and "torch.save(torch.load('old.pth'" in message


def test_every_optimizer_starts_from_the_pretrained_weights(tmp_path):
    minigrad.manual_seed(7)  # weights unlike the run's own seeded initialisation
    pretrained = swin_mini(img_size=32, num_classes=11).state_dict()
    minigrad.save(pretrained, tmp_path / "weights.npz")
    folder = run_dvm(TINY + ["--pretrained", str(tmp_path / "weights.npz"), "--optimizers", "sgd", "adam",
                             "--max-steps", "1", "--lr", "1e-12", "--out", str(tmp_path / "run")])
    for name in ("sgd", "adam"):
        trained = minigrad.load(folder / name / "last.npz")["model"]
        for key in pretrained:  # one step of lr 1e-12 moves nothing visibly
            np.testing.assert_allclose(trained[key], pretrained[key], rtol=0, atol=1e-9, err_msg=f"{name} {key}")


def test_pretrained_weights_of_another_shape_are_named(tmp_path, capsys):
    minigrad.save(swin_mini(embed_dim=16, num_heads=(1, 1, 2, 2)).state_dict(), tmp_path / "other.npz")
    message = usage_error(capsys, run_dvm, TINY + ["--pretrained", str(tmp_path / "other.npz")])
    assert "does not fit swin_mini with 11 classes at 32 px" in message
    assert "patch_embed.proj.weight: the checkpoint has shape (16, 3, 4, 4), the model (32, 3, 4, 4)" in message
    assert "usage:" not in message  # the arguments were fine: only the problem is shown


def loads_alike(split, index: int = 0) -> bool:
    """Whether an example comes out the same from two random generators (no augmentation)."""
    first, second = (split.load(index, np.random.default_rng(seed))[0] for seed in (1, 2))
    return np.array_equal(first, second)


def test_the_synthetic_set_holds_out_a_quarter_each_unaugmented_drawn_from_the_seed():
    train, val, test = train_dvm.load_data(argparse.Namespace(data=None, img_size=32, synthetic_size=44, seed=0))
    assert (len(train), len(val), len(test)) == (44, 11, 11)
    assert not loads_alike(train) and loads_alike(val) and loads_alike(test)
    other = train_dvm.load_data(argparse.Namespace(data=None, img_size=32, synthetic_size=44, seed=1))
    assert not np.array_equal(other.val.load(0, None)[0], val.load(0, None)[0])


def test_the_dvm_scripts_options_reach_the_loader(tmp_path):
    write_tree(tmp_path / "DVM" / "resized_DVM", adverts={"Black": 30, "White": 20})
    write_tree(tmp_path / "DVM" / "confirmed_fronts", adverts={"Black": 3, "White": 2}, fronts=True, first_seq=100)

    def load(**options):
        settings = dict(data=tmp_path / "DVM", img_size=32, seed=0, colours=2, images="all", max_per_class=None,
                        viewpoints=None)
        return train_dvm.load_data(argparse.Namespace(**{**settings, **options}))

    everything = load()
    assert sum(map(len, everything)) == 2 * 50  # two photos an advert
    assert sum(map(len, load(images="fronts"))) == 2 * 5
    assert all(np.bincount(split.labels, minlength=2).max() <= 3 for split in load(max_per_class=3))
    assert load(seed=1).val.example_names() != everything.val.example_names()  # adverts split by seed


def test_the_dvm_script_trains_on_the_real_layout_with_chosen_viewpoints(tmp_path, capsys):
    write_tree(tmp_path / "DVM" / "resized_DVM", adverts={"Black": 20, "White": 16, "Blue": 12, "Red": 4})
    names = sorted(path.name for path in (tmp_path / "DVM").rglob("*.jpg"))
    write_image_table(tmp_path / "DVM" / "tables" / "Image_table.csv", [(name, viewpoint_of(name)) for name in names])
    folder = run_dvm(["--data", str(tmp_path / "DVM"), "--viewpoints", "0", "--colours", "3", "--model", "swin_mini",
                      "--img-size", "32", "--epochs", "1", "--optimizers", "sgd", "--workers", "0",
                      "--out", str(tmp_path / "run")])
    counts = re.search(r"(\d+) training, (\d+) validation, (\d+) test images", capsys.readouterr().out)
    assert sum(map(int, counts.groups())) == 20 + 16 + 12  # the front photo of each advert of the top 3 colours
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == ["Black", "White", "Blue"] and config["viewpoints"] == [0]
    state = minigrad.load(folder / "sgd" / "last.npz")
    assert state["classes"] == ["Black", "White", "Blue"] and state["history"][0]["epoch"] == 1


def test_a_first_run_on_the_gpu_warns_of_kernel_compilation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    cache = tmp_path / "kernel_cache"
    monkeypatch.setenv("CUPY_CACHE_DIR", str(cache))
    argv = TINY + ["--device", "gpu", "--max-steps", "1", "--optimizers", "sgd"]
    run_dvm(argv + ["--out", str(tmp_path / "first")])
    assert f"compile CuPy's GPU kernels, so the progress bar waits a while; they are kept in {cache}" in \
        capsys.readouterr().out
    cache.mkdir()
    (cache / "kernel.cubin").write_bytes(b"compiled")
    run_dvm(argv + ["--out", str(tmp_path / "second")])
    assert "compile CuPy's GPU kernels" not in capsys.readouterr().out


def test_a_missing_dvm_folder_says_where_to_get_the_data(tmp_path, capsys):
    message = usage_error(capsys, run_dvm, ["--data", str(tmp_path / "DVM")])
    assert "resized_DVM" in message and "deepvisualmarketing" in message


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
    parser = training.make_parser("test")
    for argv in (["--label-smoothing", "1", "--drop-path", "0", "--weight-decay", "0", "--clip-grad", "0",
                  "--warmup-epochs", "0", "--workers", "0", "--epochs", "1", "--batch-size", "1", "--log-every", "1",
                  "--max-steps", "1"],
                 ["--label-smoothing", "0", "--drop-path", "0.999"]):
        training.check_settings(parser.parse_args(argv))  # raises nothing


def test_the_default_model_is_swin_mini_on_the_synthetic_set_and_swin_t_on_real_data(tmp_path, capsys):
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    seen = []

    def load_data(args):
        seen.append((args.model, args.img_size))
        raise ValueError("no data in this test")

    for argv in ([], ["--data", str(tmp_path)], ["--model", "swin_t", "--img-size", "384"], ["--model", "swin_b"]):
        with pytest.raises(SystemExit):
            training.main(parser, load_data, "dvm", argv)
    # The image size is the variant's: 64 px for swin_mini, 224 for the others.
    assert seen == [("swin_mini", 64), ("swin_t", 224), ("swin_t", 384), ("swin_b", 224)]
    assert "no data in this test" in capsys.readouterr().err


def test_a_loss_that_becomes_nan_stops_the_run_with_what_to_check(tmp_path, capsys, monkeypatch):
    cross_entropy = training.F.cross_entropy
    monkeypatch.setattr(training.F, "cross_entropy", lambda *args, **kwargs: cross_entropy(*args, **kwargs) * np.nan)
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--log-every", "2"])
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert "the training loss became nan within the first 2 steps of adam epoch 1/2" in message
    assert "Lower --lr" in message and f"The epochs before it are saved in {tmp_path / 'run'}" in message


def test_a_loss_that_becomes_nan_between_progress_updates_stops_the_run_at_the_epochs_end(tmp_path, capsys,
                                                                                        monkeypatch):
    cross_entropy = training.F.cross_entropy
    monkeypatch.setattr(training.F, "cross_entropy", lambda *args, **kwargs: cross_entropy(*args, **kwargs) * np.nan)
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--log-every", "100"])  # 5 steps an epoch
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert "the training loss became nan within the first 5 steps of adam epoch 1/2" in message
    assert "a new run with other settings starts over from the same initial weights" in message
    assert not (tmp_path / "run" / "adam" / "last.npz").exists()  # nothing after that step is kept


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
# Stanford Cars


def run_cars(argv):
    parser = training.make_parser("test")
    train_stanford_cars.add_data_arguments(parser)
    return training.main(parser, train_stanford_cars.load_data, "stanford_cars", argv)


def test_stanford_cars_run_scores_on_the_test_split(tmp_path):
    train = [(1, 1, 40, 30, 1 + i % 3, f"{i + 1:05d}.jpg") for i in range(12)]  # four of each class
    make_cars(tmp_path / "cars", train=train)
    folder = run_cars(["--data", str(tmp_path / "cars"), "--model", "swin_mini", "--img-size", "32",
                       "--epochs", "1", "--batch-size", "4", "--optimizers", "adam", "--workers", "0",
                       "--val-fraction", "0.25", "--out", str(tmp_path / "run")])
    rows = read_history(folder)
    assert len(rows) == 1 and int(rows[0]["steps"]) == 2  # 9 training images: two full batches of 4
    summary = (folder / "summary.md").read_text()
    assert "test accuracy" in summary and NAMES[2] in summary


def test_stanford_cars_holds_out_unaugmented_validation_by_seed_and_crops_unless_told_not_to(tmp_path):
    train = [(5, 4, 24, 20, 1 + i % 3, f"{i + 1:05d}.jpg") for i in range(30)]  # ten of each class, boxed
    make_cars(tmp_path / "cars", train=train, test_labels=None)

    def load(**options):
        settings = dict(data=tmp_path / "cars", img_size=16, seed=0, val_fraction=0.2, no_crop=False)
        return train_stanford_cars.load_data(argparse.Namespace(**{**settings, **options}))

    cropped = load()
    assert cropped.test is None  # no test labels: scored on the validation split
    assert (len(cropped.train), len(cropped.val)) == (24, 6)
    assert not loads_alike(cropped.train) and loads_alike(cropped.val)
    assert load(seed=1).val.example_names() != cropped.val.example_names()
    whole = load(no_crop=True)
    image = Image.open(tmp_path / "cars" / "cars_train" / "00001.jpg")
    rng = np.random.default_rng(0)
    box = whole.val.dataset.paths.index(str(tmp_path / "cars" / "cars_train" / "00001.jpg"))
    np.testing.assert_allclose(whole.val.dataset.load(box, rng)[0], eval_transform(16)(image.convert("RGB"), rng),
                               atol=1e-6)
    assert not np.allclose(cropped.val.dataset.load(box, rng)[0], whole.val.dataset.load(box, rng)[0], atol=0.1)


def test_an_empty_validation_split_is_refused(tmp_path, capsys):
    make_cars(tmp_path / "cars")  # one image per class: nothing to hold out
    message = usage_error(capsys, run_cars, ["--data", str(tmp_path / "cars"), "--img-size", "32",
                                             "--model", "swin_mini"])
    assert "validation split is empty" in message


def test_stanford_cars_needs_data(capsys):
    message = usage_error(capsys, run_cars, [])
    assert "--data" in message


# --------------------------------------------------------------------------------------------
# The GPU path on the stand-in


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_an_epochs_loss_and_accuracy_are_the_means_over_its_examples(smoothing, monkeypatch):
    """With a learning rate of 0 and no drop-path the model never changes, so an epoch's running mean
    loss and accuracy must be those of the model on all its examples at once; 20 examples in batches
    of 8, 8 and 4 tell a mean over examples from one over batches."""
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    args = parser.parse_args(TINY + ["--drop-path", "0", "--log-every", "1", "--label-smoothing", str(smoothing)])
    data = SyntheticCarColours(20, 32, transform=eval_transform(32))
    model = training.initial_model(args, data.classes)
    optimizer = training.make_optimizer("sgd", model, 0.0, 0.0)
    postfixes = []

    class Recording(training.tqdm):
        def set_postfix(self, **kwargs):
            postfixes.append(kwargs)
            super().set_postfix(**kwargs)

    monkeypatch.setattr(training, "tqdm", Recording)
    result = training.train_epoch(model, optimizer, training.make_schedule(args, optimizer, 3), DataLoader(data, 8),
                                  args, "test", None)
    images, labels = next(iter(DataLoader(data, 20)))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(images)).data.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum_exp = np.log(np.exp(shifted).sum(axis=1))
    losses = log_sum_exp - shifted[np.arange(20), labels]
    # Label smoothing: the target puts 1 - s on the label and s spread evenly over all classes.
    smoothed = (1 - smoothing) * losses + smoothing * (log_sum_exp - shifted.mean(axis=1))
    correct = logits.argmax(axis=1) == labels
    assert result["steps"] == 3
    assert result["train_loss"] == pytest.approx(smoothed.mean(), rel=1e-5)
    assert result["train_acc"] == correct.mean()
    assert result["images_per_s"] == pytest.approx(20 / result["seconds"])
    # The progress bar (--log-every 1) shows the running means over the examples seen so far.
    assert len(postfixes) == 3
    for postfix, seen in zip(postfixes, (8, 16, 20)):
        assert float(postfix["loss"]) == pytest.approx(smoothed[:seen].mean(), abs=1e-4)
        assert float(postfix["acc"]) == pytest.approx(correct[:seen].mean(), abs=1e-3)
    loss, seen, predictions = training.evaluate(model, DataLoader(data, 8), "cpu", "test")
    assert loss == pytest.approx(losses.mean(), rel=1e-5)  # validation loss: never smoothed
    np.testing.assert_array_equal(seen, labels)
    np.testing.assert_array_equal(predictions, logits.argmax(axis=1))


def test_evaluation_switches_drop_path_off():
    model = swin_mini(img_size=32, num_classes=11, drop_path_rate=0.5)  # built in training mode
    data = SyntheticCarColours(8, 32, split="val", transform=eval_transform(32))
    images, labels = next(iter(DataLoader(data, 8)))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(images)).data.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(8), labels]
    loss, _, predictions = training.evaluate(model.train(), DataLoader(data, 8), "cpu", "test")
    assert loss == pytest.approx(losses.mean(), rel=1e-5)
    np.testing.assert_array_equal(predictions, logits.argmax(axis=1))


def test_a_training_epoch_reads_from_the_device_once_per_logging_interval(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    parser = training.make_parser("test")
    train_dvm.add_data_arguments(parser)
    args = parser.parse_args(TINY + ["--device", "gpu", "--log-every", "2"])
    model = training.initial_model(args, SyntheticCarColours().classes).to("gpu")
    optimizer = training.make_optimizer("radam", model, 1e-3, 0.05)
    schedule = training.make_schedule(args, optimizer, 5)
    data = SyntheticCarColours(40, 32, transform=train_transform(32))
    loader = DataLoader(data, 8)
    before = fake_gpu.transfer_count.count
    result = training.train_epoch(model, optimizer, schedule, loader, args, "test", None)
    # Each of the 5 steps uploads its images and labels; the running sums come back after steps 2
    # and 4 and once at the end; nothing else crosses.
    assert result["steps"] == 5
    assert fake_gpu.transfer_count.count - before == 2 * 5 + 3
    loss, labels, predictions = training.evaluate(model, DataLoader(SyntheticCarColours(
        16, 32, split="val", transform=eval_transform(32)), 8), "gpu", "test")
    assert predictions.shape == labels.shape == (16,) and isinstance(predictions, np.ndarray) and loss > 0


# --------------------------------------------------------------------------------------------
# Classifying one's own photos with a saved model


def test_predict_ranks_the_classes_of_saved_photos(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--optimizers", "adam"])
    photos = SyntheticCarColours(5, 40, split="test")
    paths = []
    for index in range(len(photos)):
        paths.append(tmp_path / f"car {index}.png")
        photos.image(index).save(paths[-1])
    model, classes = predict.load_classifier(folder / "adam" / "best.npz", "cpu")
    ranked = predict.predict(model, classes, paths, top=len(classes))
    for guesses in ranked:
        probabilities = [probability for _, probability in guesses]
        assert sorted(probabilities, reverse=True) == probabilities
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert sorted(name for name, _ in guesses) == sorted(classes)
    # The same photos through the training code's evaluation give the same top class.
    saved = ImageFiles(paths, photos.labels, classes, eval_transform(32))
    _, _, predictions = training.evaluate(model, DataLoader(saved, 2), "cpu", "test")
    assert [guesses[0][0] for guesses in ranked] == [classes[k] for k in predictions]

    capsys.readouterr()
    predict.main([str(folder / "adam" / "best.npz"), *map(str, paths[:2]), "--top", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]}: {ranked[0][0][0]} ")
    (tmp_path / "notes.txt").write_text("not a photo")
    predict.main([str(folder / "adam" / "best.npz"), str(tmp_path)])  # a folder: the photos in it
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(path) for path in sorted(paths)]


def test_predict_reads_a_folders_photos_whatever_the_case_of_their_suffix(tmp_path):
    for name in ["IMG_2040.JPG", "b.png", "c.Jpeg", "notes.txt", "older/a.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    # The photos directly in the folder; not those of its subfolders.
    assert predict.image_paths([tmp_path]) == [tmp_path / "IMG_2040.JPG", tmp_path / "b.png", tmp_path / "c.Jpeg"]


def test_a_loaded_classifier_is_in_eval_mode_and_predicts_the_same_twice(tmp_path):
    model = swin_mini(img_size=32, num_classes=3)
    minigrad.save({"model": model.state_dict(), "classes": ["a", "b", "c"],
                   "architecture": {"name": "swin_mini", "img_size": 32}}, tmp_path / "best.npz")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "car.png")
    loaded, classes = predict.load_classifier(tmp_path / "best.npz", "cpu")
    assert classes == ["a", "b", "c"] and not loaded.training
    first, second = (predict.predict(loaded, classes, [tmp_path / "car.png"]) for _ in range(2))
    assert first == second


def test_predict_prints_the_top_classes_with_their_probabilities(tmp_path, capsys):
    minigrad.manual_seed(3)
    model = swin_mini(img_size=32, num_classes=4)
    classes = ["a", "b", "c", "d"]
    minigrad.save({"model": model.state_dict(), "classes": classes,
                   "architecture": {"name": "swin_mini", "img_size": 32}}, tmp_path / "best.npz")
    photo = tmp_path / "car.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    image = eval_transform(32)(Image.open(photo).convert("RGB"), np.random.default_rng(0))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(image[None])).data[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)
    for top, shown in (("2", 2), ("0", 1), ("9", 4)):
        predict.main([str(tmp_path / "best.npz"), str(photo), "--top", top])
        (line,) = capsys.readouterr().out.splitlines()
        path, guesses = line.split(": ")
        assert path == str(photo) and len(guesses.split(", ")) == shown
        for guess, k in zip(guesses.split(", "), order):
            name, percent = guess.split(" ")
            assert name == classes[k] and float(percent.rstrip("%")) == pytest.approx(100 * probabilities[k], abs=0.06)


def test_predict_explains_bad_input(tmp_path, capsys):
    message = usage_error(capsys, predict.main, [str(tmp_path / "none.npz"), "car.jpg"])
    assert "no checkpoint" in message
    minigrad.save({"weight": np.zeros(3)}, tmp_path / "bare.npz")
    Image.new("RGB", (8, 8)).save(tmp_path / "car.jpg")
    message = usage_error(capsys, predict.main, [str(tmp_path / "bare.npz"), str(tmp_path / "car.jpg")])
    assert "not a checkpoint of examples/train_" in message
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--optimizers", "sgd"])
    message = usage_error(capsys, predict.main, [str(folder / "sgd" / "last.npz"), str(tmp_path / "no car.jpg")])
    assert f"no image or folder at {tmp_path / 'no car.jpg'}" in message
    (tmp_path / "empty").mkdir()
    message = usage_error(capsys, predict.main, [str(folder / "sgd" / "last.npz"), str(tmp_path / "empty")])
    assert f"no images (.jpg, .jpeg, .png, .bmp, .webp) in the folder {tmp_path / 'empty'}" in message


def save_classifier(path: Path) -> Path:
    minigrad.save({"model": swin_mini(img_size=32, num_classes=3).state_dict(), "classes": ["a", "b", "c"],
                   "architecture": {"name": "swin_mini", "img_size": 32}}, path)
    return path


def test_predict_tells_imagenet_weights_and_a_run_folder_from_a_checkpoint(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "car.jpg")
    for name in ("swin_tiny_patch4_window7_224.safetensors", "swin_tiny_patch4_window7_224.pth"):
        (tmp_path / name).write_bytes(b"weights")  # were called a damaged .npz archive
        message = usage_error(capsys, predict.main, [str(tmp_path / name), str(tmp_path / "car.jpg")])
        assert "not a checkpoint of examples/train_*.py" in message and "--pretrained" in message
        assert "damaged" not in message
    run = tmp_path / "run"
    for optimizer in ("adam", "radam"):
        (run / optimizer).mkdir(parents=True)
    save_classifier(run / "adam" / "best.npz").parent.joinpath("last.npz").write_bytes(b"")
    save_classifier(run / "radam" / "best.npz")
    message = usage_error(capsys, predict.main, [str(run), str(tmp_path / "car.jpg")])
    assert f"{run} is a folder; pass a checkpoint, one of {run / 'adam' / 'best.npz'}, {run / 'radam' / 'best.npz'}" \
        in message


def test_predict_classifies_a_folders_photos_and_names_the_files_it_cannot_open(tmp_path, capsys):
    checkpoint = save_classifier(tmp_path / "best.npz")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "c.png"):
        Image.new("RGB", (40, 30), (200, 20, 20)).save(photos / name)
    (photos / "._a.jpg").write_bytes(b"\0\5\26\7Mac OS X")  # macOS's copy of a.jpg's metadata: no photo
    (photos / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photos / "b.jpg").write_bytes(b"")
    (photos / "d.jpg").write_text("<html>404 Not Found</html>")
    with pytest.raises(SystemExit) as stop:
        predict.main([str(checkpoint), str(photos)])
    output = capsys.readouterr()
    assert stop.value.code == 1
    assert [line.split(": ")[0] for line in output.out.splitlines()] == [str(photos / "a.jpg"), str(photos / "c.png")]
    assert "error: Pillow cannot open these as images: " in output.err
    assert str(photos / "b.jpg") in output.err and str(photos / "d.jpg") in output.err and "._a" not in output.err


def test_predict_says_the_checkpoint_comes_first(tmp_path, capsys):
    checkpoint = save_classifier(tmp_path / "best.npz")
    Image.new("RGB", (40, 30)).save(tmp_path / "car.JPG")
    message = usage_error(capsys, predict.main, [str(tmp_path / "car.JPG"), str(checkpoint)])
    assert "car.JPG is a photo, not a checkpoint: the checkpoint comes first" in message


# --------------------------------------------------------------------------------------------
# One's own photos, one folder per class


def write_class_folders(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        (root / name / "nested").mkdir(parents=True)
        colour = (200, 30, 30) if name == "Red" else (20, 20, 20)
        for index in range(count):
            folder = root / name / ("nested" if index % 2 else "")
            Image.new("RGB", (40, 30), colour).save(folder / f"photo {index}.PNG")


def test_image_folder_reads_one_class_per_folder(tmp_path):
    write_class_folders(tmp_path, {"Red": 3, "Black": 2})
    (tmp_path / "Red" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"left out the files that are not .* images \(1 .txt\)"):
        photos = image_folder(tmp_path, eval_transform(16))
    assert photos.classes == ["Black", "Red"]
    np.testing.assert_array_equal(photos.labels, [0, 0, 1, 1, 1])
    image, label = photos[4]
    assert label == 1 and image.shape == (3, 16, 16)
    assert image[0].mean() > image[1].mean()  # red


def test_image_folder_explains_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match="one subfolder per class"):
        image_folder(tmp_path / "missing", ToArray())
    write_class_folders(tmp_path, {"Red": 2})
    (tmp_path / "Blue").mkdir()
    with pytest.raises(ValueError, match="without images: Blue"):
        image_folder(tmp_path, ToArray())


def test_image_folder_lists_photos_in_sorted_order_and_skips_hidden_folders(tmp_path):
    names = ["f.png", "b.png", "e.jpg", "a.png", "d.png", "c.png"]
    nested = ["sub c/x.png", "sub a/z.png", "sub e/v.png", "sub b/y.png", "sub d/w.png"]
    for name in names + nested + ["z.png"]:
        path = tmp_path / ("Red" if name != "z.png" else "Black") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(path)
    (tmp_path / ".thumbnails").mkdir()  # a hidden folder, say a viewer's cache, is no class
    Image.new("RGB", (4, 4)).save(tmp_path / ".thumbnails" / "t.png")
    photos = image_folder(tmp_path, ToArray())
    assert photos.classes == ["Black", "Red"]
    # The files of a folder in sorted order, then its subfolders in sorted order.
    expected = ["z.png"] + sorted(names) + sorted(nested)
    assert [Path(path).relative_to(tmp_path).as_posix().split("/", 1)[1] for path in photos.paths] == expected


def test_image_folder_passes_over_what_the_operating_system_leaves_without_a_word(tmp_path):
    write_class_folders(tmp_path, {"Red": 2, "Black": 2})
    for junk in ["Red/.DS_Store", "Red/._photo 0.PNG", "Black/Thumbs.db", "Black/desktop.ini",
                 "Black/.thumbnails/photo 0.PNG", "__MACOSX/Red/._photo 0.PNG", ".DS_Store"]:
        (tmp_path / junk).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / junk).write_bytes(b"\0\5\26\7Mac OS X")  # an AppleDouble header: no image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        photos = image_folder(tmp_path, ToArray())
    assert photos.classes == ["Black", "Red"]
    assert sorted(Path(path).name for path in photos.paths) == ["photo 0.PNG", "photo 0.PNG", "photo 1.PNG",
                                                                 "photo 1.PNG"]


def test_a_class_folder_holding_only_what_a_mac_leaves_is_a_class_without_images(tmp_path):
    write_class_folders(tmp_path, {"Red": 2, "Black": 2})
    (tmp_path / "Blue").mkdir()
    (tmp_path / "Blue" / "._car.jpg").write_bytes(b"\0\5\26\7Mac OS X")  # the photo itself did not come along
    with pytest.raises(ValueError, match="without images: Blue"):
        image_folder(tmp_path, ToArray())


def test_image_folder_leaves_out_other_files_and_images_pillow_cannot_open_with_one_warning_each(tmp_path):
    write_class_folders(tmp_path, {"Red": 2, "Black": 2})
    (tmp_path / "Red" / "notes.txt").write_text("not an image")
    (tmp_path / "Red" / "empty.jpg").write_bytes(b"")
    (tmp_path / "Red" / "page.jpg").write_text("<html>404 Not Found</html>")
    (tmp_path / "Black" / "IMG_0001.HEIC").write_bytes(b"\0\0\0\30ftypheic")
    (tmp_path / "Black" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.warns(UserWarning) as caught:
        photos = image_folder(tmp_path, ToArray())
    other, unreadable = (str(warning.message) for warning in caught)
    assert other == (f"{tmp_path}: left out the files that are not .jpg, .jpeg, .png, .bmp, .webp images "
                     "(1 .heic, 1 .txt)")
    assert unreadable.startswith(f"{tmp_path}: left out the 3 images Pillow cannot open: ")
    assert all(name in unreadable for name in ("empty.jpg", "page.jpg", "gone.jpg"))
    np.testing.assert_array_equal(photos.labels, [0, 0, 1, 1])
    assert all(photos[index][0].shape == (3, 30, 40) for index in range(4))  # nothing left to fail mid-run


def test_image_folder_follows_links_to_folders_and_reads_a_folder_once(tmp_path):
    write_class_folders(tmp_path / "photos", {"Red": 2, "Black": 2})
    Image.new("RGB", (4, 4)).save(tmp_path / "elsewhere.png")
    (tmp_path / "more").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "more" / "linked.png")
    (tmp_path / "photos" / "Red" / "more").symlink_to(tmp_path / "more")
    (tmp_path / "photos" / "Red" / "file.png").symlink_to(tmp_path / "elsewhere.png")
    (tmp_path / "photos" / "Red" / "nested" / "loop").symlink_to(tmp_path / "photos" / "Red")  # would never end
    photos = image_folder(tmp_path / "photos", ToArray())
    red = [Path(path).relative_to(tmp_path / "photos" / "Red").as_posix() for path, label in
           zip(photos.paths, photos.labels) if label == 1]
    assert red == ["file.png", "photo 0.PNG", "more/linked.png", "nested/photo 1.PNG"]


def test_image_folder_needs_two_classes(tmp_path):
    write_class_folders(tmp_path, {"Red": 2})
    with pytest.raises(ValueError, match="at least two class folders.*found 1: Red$"):
        image_folder(tmp_path, ToArray())


def run_folder(argv):
    parser = training.make_parser("test")
    train_folder.add_data_arguments(parser)
    return training.main(parser, train_folder.load_data, "folder", argv)


def test_a_run_on_class_folders_holds_out_validation_and_test(tmp_path):
    write_class_folders(tmp_path / "photos", {"Red": 10, "Black": 10})
    folder = run_folder(["--data", str(tmp_path / "photos"), "--model", "swin_mini", "--img-size", "32",
                         "--epochs", "1", "--batch-size", "4", "--optimizers", "adam", "--workers", "0",
                         "--out", str(tmp_path / "run")])
    assert int(read_history(folder)[0]["steps"]) == 4  # 16 training photos: 8 of each, 1 and 1 held out
    assert "test accuracy" in (folder / "summary.md").read_text()
    splits = train_folder.load_data(argparse.Namespace(data=tmp_path / "photos", img_size=32, seed=0,
                                                       val_fraction=0.1, test_fraction=0.1))
    train, val, test = ({split.dataset.paths[i] for i in split.indices} for split in splits)
    assert (len(train), len(val), len(test)) == (16, 2, 2)
    assert len(train | val | test) == 20  # no photo in two splits


def test_a_run_folder_inside_the_data_folder_is_refused_before_the_scan(tmp_path, capsys, monkeypatch):
    # Else the next scan takes the run's plots for photos of a class "run", and --resume finds the data changed.
    write_class_folders(tmp_path / "photos", {"Red": 10, "Black": 10})
    argv = ["--model", "swin_mini", "--img-size", "32", "--epochs", "1", "--optimizers", "sgd", "--workers", "0"]
    scans = []
    monkeypatch.setattr(train_folder, "image_folder", lambda *args: scans.append(args))
    message = usage_error(capsys, run_folder, argv + ["--data", str(tmp_path / "photos"),
                                                      "--out", str(tmp_path / "photos" / "run")])
    assert "lies inside the data folder" in message and "--out" in message
    monkeypatch.chdir(tmp_path / "photos" / "Red")
    message = usage_error(capsys, run_folder, argv + ["--data", ".."])  # the default runs/ of the working folder
    assert "runs/folder lies inside the data folder .." in message
    assert scans == [] and sorted(path.name for path in (tmp_path / "photos").iterdir()) == ["Black", "Red"]


def test_the_folder_script_checks_its_fractions_and_holds_out_unaugmented_photos_by_seed(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("Red", "Black"):
        (tmp_path / "photos" / name).mkdir(parents=True)
        for index in range(10):  # noise, so that a random crop or flip shows
            Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / name /
                                                                                      f"{index}.png")

    def load(**options):
        settings = dict(data=tmp_path / "photos", img_size=16, seed=0, val_fraction=0.1, test_fraction=0.1)
        return train_folder.load_data(argparse.Namespace(**{**settings, **options}))

    for val_fraction, test_fraction in ((0, 0.1), (0.5, 0.5), (0.1, -0.1)):
        with pytest.raises(ValueError, match="need --val-fraction > 0, --test-fraction >= 0 and their sum < 1"):
            load(val_fraction=val_fraction, test_fraction=test_fraction)
    splits = load()
    assert not loads_alike(splits.train) and loads_alike(splits.val) and loads_alike(splits.test)
    other = load(seed=1)
    assert (other.val.example_names(), other.test.example_names()) != (splits.val.example_names(),
                                                                      splits.test.example_names())
    without_test = load(val_fraction=0.2, test_fraction=0)
    assert without_test.test is None and (len(without_test.train), len(without_test.val)) == (16, 4)


def test_resume_finds_the_data_from_another_folder_and_after_it_moved(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "photos", {"Red": 10, "Black": 10})
    monkeypatch.chdir(tmp_path)
    folder = run_folder(["--data", "photos", "--model", "swin_mini", "--img-size", "32", "--epochs", "1",
                         "--batch-size", "4", "--optimizers", "adam", "--workers", "0", "--out", "run"]).absolute()
    monkeypatch.chdir(tmp_path / "photos")  # the relative path "photos" leads nowhere from here
    run_folder(["--resume", "--out", str(folder), "--epochs", "2"])
    (tmp_path / "photos").rename(tmp_path / "moved")
    run_folder(["--resume", "--out", str(folder), "--epochs", "3", "--data", str(tmp_path / "moved")])
    assert [row["epoch"] for row in read_history(folder)] == ["1", "2", "3"]


def test_resume_takes_the_pretrained_weights_from_where_they_are_now(tmp_path):
    minigrad.save(swin_mini(img_size=32, num_classes=11).state_dict(), tmp_path / "weights.npz")
    folder = run_dvm(TINY + ["--pretrained", str(tmp_path / "weights.npz"), "--optimizers", "sgd", "--max-steps", "1",
                             "--out", str(tmp_path / "run")])
    (tmp_path / "weights.npz").rename(tmp_path / "moved.npz")
    run_dvm(["--resume", "--out", str(folder), "--workers", "0", "--max-steps", "2",
             "--pretrained", str(tmp_path / "moved.npz")])
    assert [row["epoch"] for row in read_history(folder)] == ["1", "2"]


def test_resume_refuses_data_that_now_splits_otherwise(tmp_path, capsys):
    """A photo deleted (say, one that could not be read) reshuffles its class: photos trained on
    would land in validation or test."""
    write_class_folders(tmp_path / "photos", {"Red": 10, "Black": 10})
    argv = ["--data", str(tmp_path / "photos"), "--model", "swin_mini", "--img-size", "32", "--epochs", "1",
            "--batch-size", "4", "--optimizers", "adam", "--workers", "0", "--out", str(tmp_path / "run")]
    folder = run_folder(argv)
    (tmp_path / "photos" / "Red" / "photo 0.PNG").unlink()
    message = usage_error(capsys, run_folder, ["--resume", "--out", str(folder), "--epochs", "2"])
    assert "the data now splits otherwise" in message and "start a new run" in message


def test_resume_names_the_script_whose_run_it_is(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "1"])
    message = usage_error(capsys, run_folder, ["--resume", "--out", str(folder)])
    assert "holds a run of train_dvm.py, not of train_folder.py" in message


def test_too_few_photos_for_a_test_split_score_on_validation(tmp_path, monkeypatch):
    write_class_folders(tmp_path / "photos", {"Red": 6, "Black": 6})
    evaluate, scored = training.evaluate, []

    def recording(model, loader, device, description):
        scored.append((description, len(loader.dataset)))
        return evaluate(model, loader, device, description)

    monkeypatch.setattr(training, "evaluate", recording)
    folder = run_folder(["--data", str(tmp_path / "photos"), "--model", "swin_mini", "--img-size", "32",
                         "--epochs", "1", "--batch-size", "4", "--optimizers", "adam", "--workers", "0",
                         "--out", str(tmp_path / "run")])
    assert "validation accuracy" in (folder / "summary.md").read_text()
    # 12 photos: 10 to train on, one of each class held out; the final scores are on those two.
    assert scored == [("adam validation", 2), ("adam validation", 2)]


# --------------------------------------------------------------------------------------------
# The benchmark and the table of variants


def run_benchmark(monkeypatch, argv):
    monkeypatch.setattr(sys, "argv", ["benchmark.py", *argv])
    benchmark.main()


@pytest.mark.parametrize("option", ["--batch", "--classes", "--repeats"])
def test_the_benchmark_refuses_counts_below_one(monkeypatch, capsys, option):
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), [option, "0"])
    assert f"{option} must be at least 1, got 0" in message


def test_the_benchmark_refuses_to_time_the_stand_in_gpu(monkeypatch, capsys):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    message = usage_error(capsys, lambda argv: run_benchmark(monkeypatch, argv), ["--device", "gpu"])
    assert "MINIGRAD_FAKE_GPU=1 serves 'gpu' on the CPU" in message and "unset it" in message


def test_the_benchmark_times_a_step_on_the_cpu(monkeypatch, capsys):
    run_benchmark(monkeypatch, ["--variant", "swin_mini", "--batch", "1", "--repeats", "1", "--warmup", "0",
                                "--update"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "swin_mini, batch 1, 64 px, forward + backward + clipping + AdamW, median of 1, on cpu"
    assert re.fullmatch(r"  minigrad +\d+\.\d ms/step +\d+\.\d images/s", lines[1])
    assert lines[2].startswith("  PyTorch eager   not measured")  # no timm name for swin_mini


def test_the_benchmark_reports_the_ratio_of_the_times(monkeypatch, capsys):
    monkeypatch.setattr(benchmark, "minigrad_step_time", lambda args, images, labels: 0.5)
    monkeypatch.setattr(benchmark, "torch_step_time", lambda args, images, labels: 0.2)
    run_benchmark(monkeypatch, ["--variant", "swin_mini", "--batch", "4"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["minigrad", "500.0", "ms/step", "8.0", "images/s"]
    assert lines[2].split() == ["PyTorch", "eager", "200.0", "ms/step", "20.0", "images/s"]
    assert lines[3] == "  minigrad / PyTorch time ratio: 2.50"


def test_a_timing_warms_up_then_takes_the_median_of_the_clock():
    steps, times = [], iter([3.0, 1.0, 10.0])

    def clock(step):
        step()
        return next(times)

    assert benchmark.median_seconds(lambda: steps.append(1), 3, 2, clock) == 3.0
    assert len(steps) == 2 + 3


def test_python_m_swin_answers_help_and_a_typo_without_building_a_model(monkeypatch, capsys):
    import swin.__main__ as table

    def build(*args, **kwargs):
        raise AssertionError("built a model")

    monkeypatch.setattr(table, "build", build)
    with pytest.raises(SystemExit) as stop:
        table.main(["--help"])
    assert stop.value.code == 0 and "python -m swin" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        table.main(["--variant", "swin_t"])
    assert stop.value.code == 2 and "unrecognized arguments: --variant swin_t" in capsys.readouterr().err


def test_python_m_swin_lists_each_variant_at_its_image_sizes(monkeypatch, capsys):
    import swin.__main__ as table

    class Built:
        def __init__(self, name, img_size):
            self.window_size, self.name, self.img_size = img_size // 32, name, img_size

        def num_parameters(self):
            return 1000 * len(self.name) + self.img_size

        def flops(self):
            return 10**6 * self.img_size

    monkeypatch.setattr(table, "build", lambda name, img_size: Built(name, img_size))
    table.main()
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["variant", "image", "window", "parameters", "multiply-adds"]
    expected = [(name, size) for name in VARIANTS for size in ((64,) if name == "swin_mini" else (224, 384))]
    assert [tuple(row.split()[:2]) for row in rows] == [(name, str(size)) for name, size in expected]
    assert rows[0].split()[2:] == ["7", f"{1000 * 6 + 224:,}", f"{224 * 10**6:,}"]  # swin_t at 224
