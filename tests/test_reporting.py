"""What a run reports (examples/reporting.py): accuracy, macro-F1 and the confusion matrix against
hand-counted cases and scikit-learn, the plots, and the summary table."""
import numpy as np
import pytest
from PIL import Image

import example_scripts  # noqa: F401 (it puts examples/ on the path)
import reporting


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


# --------------------------------------------------------------------------------------------
# Plots


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
        curves = [line for line in axis.get_lines() if "best epoch" not in line.get_label()]
        assert curves and all(line.get_marker() not in ("None", "", None) for line in curves)
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
                                for line in axis.get_lines() if "best epoch" not in line.get_label()}
             for axis in drawn_axes}
    assert drawn["loss"] == {"adam train": ([1, 2], [2.0, 1.5], "-", "C0"),
                             "adam validation": ([1, 2], [2.5, 2.25], "--", "C0"),
                             "radam train": ([1], [2.1], "-", "C1"),
                             "radam validation": ([1], [2.6], "--", "C1")}
    assert drawn["accuracy"]["adam train"][1] == [0.1, 0.3] and drawn["accuracy"]["adam validation"][1] == [0.2, 0.4]
    assert drawn["validation macro-F1"] == {"adam validation": ([1, 2], [0.15, 0.35], "--", "C0"),
                                            "radam validation": ([1], [0.17], "--", "C1")}


# --------------------------------------------------------------------------------------------
# The summary


def test_the_curves_keep_each_optimizers_colour_whatever_the_order_and_mark_its_best_epoch(tmp_path, drawn_axes):
    def rows(accuracies):
        return [{"epoch": epoch, "train_loss": 1.0, "val_loss": 1.0, "train_acc": 0.5, "val_acc": accuracy,
                 "val_f1": accuracy} for epoch, accuracy in enumerate(accuracies, 1)]

    histories = {"radam": rows([0.2, 0.6, 0.6]), "sgd": rows([0.1, 0.2, 0.3]), "adam": rows([0.5, 0.4, 0.45])}
    reporting.plot_curves(histories, tmp_path / "curves.png")
    for axis, quantity in zip(drawn_axes, ("cross-entropy", "accuracy", "macro-F1")):
        assert axis.get_xlabel() == "epoch" and axis.get_ylabel() == quantity
        lines = {line.get_label(): line for line in axis.get_lines()}
        for name, colour, best in (("adam", "C0", 1), ("radam", "C1", 2), ("sgd", "C3", 3)):
            assert lines[f"{name} validation"].get_color() == colour
            marker = lines[f"{name} best epoch ({best})"]  # the first epoch of a tie, as best.npz
            assert list(marker.get_xdata()) == [best, best] and marker.get_color() == colour


def test_summary_gives_the_best_epoch_the_scores_and_the_median_speed():
    history = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}, {"epoch": 2, "val_acc": 0.75, "images_per_s": 40.0},
               {"epoch": 3, "val_acc": 0.625, "images_per_s": 100.0}]
    confusion = np.array([[3, 1], [0, 2]])  # accuracy 5/6; F1 6/7 and 4/5, macro 0.8286
    settings = {"model": "swin_mini", "optimizers": ["adam", "radam"], "lr": 0.001, "pretrained": None}
    summary = reporting.summarize({"adam": {"confusion": confusion, "history": history}}, ["Red", "Black"], "test",
                                  settings)
    assert "| adam | 3 | 2 | 0.7500 | 0.8333 | 0.8286 | 40.0 |" in summary  # 3 epochs, the best the second
    for line in ("| model | swin_mini |", "| optimizers | adam radam |", "| lr | 0.001 |", "| pretrained | - |"):
        assert line in summary.split("Settings:")[1]
    assert "| Red | 0.857 |" in summary and "| Black | 0.800 |" in summary


def test_summary_gives_each_optimizer_its_column_and_the_first_epoch_of_a_tie():
    tied = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}, {"epoch": 2, "val_acc": 0.75, "images_per_s": 10.0},
            {"epoch": 3, "val_acc": 0.75, "images_per_s": 10.0}]
    results = {"adam": {"confusion": np.array([[3, 1], [0, 2]]), "history": tied},  # F1 6/7 and 4/5
               "sgd": {"confusion": np.array([[0, 4], [0, 2]]), "history": tied[:1]}}  # F1 0 and 4/8
    summary = reporting.summarize(results, ["Red", "Black"], "validation", {})
    # The best checkpoint keeps the first epoch of a tie: the summary names that one.
    assert "| adam | 3 | 2 | 0.7500 | 0.8333 | 0.8286 | 10.0 |" in summary
    assert "| sgd | 1 | 1 | 0.5000 | 0.3333 | 0.2500 | 10.0 |" in summary
    assert "| class | adam | sgd |" in summary and "validation accuracy" in summary
    assert "| Red | 0.857 | 0.000 |" in summary and "| Black | 0.800 | 0.500 |" in summary


def test_summary_marks_a_class_absent_from_the_test_split_and_never_predicted():
    history = [{"epoch": 1, "val_acc": 0.5, "images_per_s": 10.0}]
    confusion = np.array([[2, 0, 1], [0, 0, 0], [0, 0, 3]])  # no Black, and none predicted
    summary = reporting.summarize({"adam": {"confusion": confusion, "history": history}}, ["Red", "Black", "Blue"],
                                 "test", {})
    assert "| Black | - |" in summary and "nan" not in summary
    assert "-: a class neither in the test split nor predicted, left out of macro-F1." in summary
    assert "left out" not in reporting.summarize({"adam": {"confusion": np.eye(2, dtype=int), "history": history}},
                                                ["Red", "Black"], "test", {})
