"""What a training run reports, computed on the host: accuracy, macro-F1, the confusion matrix,
the plots (loss and accuracy curves per optimizer, the confusion matrix as an image), the history
of every epoch as CSV and the summary table.

Macro-F1 is the unweighted mean over classes of F1 = 2 TP / (2 TP + FP + FN), so a rare colour
counts as much as a common one. A class that is neither present nor predicted (F1 = 0 / 0) is
left out of the mean, as scikit-learn's ``f1_score(average="macro")`` does when it is not given
the label list; that matters only for validation sets too small to hold every class.
"""
from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display needed on a training server
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy  # noqa: E402


# Fixed, not by the order of --optimizers, so that two runs' curves read alike.
OPTIMIZER_COLOURS = {"adam": "C0", "radam": "C1", "adamw": "C2", "sgd": "C3"}


def confusion_matrix(labels: numpy.ndarray, predictions: numpy.ndarray, num_classes: int) -> numpy.ndarray:
    """counts[i, j]: examples of true class i predicted as class j."""
    labels, predictions = numpy.asarray(labels), numpy.asarray(predictions)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} differ in shape")
    pairs = labels.astype(numpy.int64) * num_classes + predictions.astype(numpy.int64)
    return numpy.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def accuracy(confusion: numpy.ndarray) -> float:
    total = confusion.sum()
    return float(numpy.trace(confusion) / total) if total else 0.0


def per_class_f1(confusion: numpy.ndarray) -> numpy.ndarray:
    """F1 of each class; NaN for a class absent from both labels and predictions."""
    true_positive = numpy.diag(confusion).astype(numpy.float64)
    denominator = confusion.sum(axis=0) + confusion.sum(axis=1)  # = 2 TP + FP + FN
    with numpy.errstate(invalid="ignore", divide="ignore"):
        return numpy.where(denominator > 0, 2 * true_positive / denominator, numpy.nan)


def macro_f1(confusion: numpy.ndarray) -> float:
    scores = per_class_f1(confusion)
    present = ~numpy.isnan(scores)
    return float(scores[present].mean()) if present.any() else 0.0


def plot_curves(histories: Mapping[str, Sequence[Mapping[str, float]]], path: Path) -> None:
    """Loss, accuracy and macro-F1 per epoch, one colour per optimizer whatever the order it trained
    in (train solid, validation dashed), and a dotted line at each one's best epoch (best validation
    accuracy, the epoch of its best.npz)."""
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = (("loss", "loss", "cross-entropy"), ("acc", "accuracy", "accuracy"),
              ("f1", "validation macro-F1", "macro-F1"))
    for (key, title, quantity), axis in zip(panels, axes):
        for name, rows in histories.items():
            if not rows:
                continue
            epochs = [row["epoch"] for row in rows]
            colour = optimizer_colour(name)
            if f"train_{key}" in rows[0]:
                axis.plot(epochs, [row[f"train_{key}"] for row in rows], color=colour, marker=".",
                          label=f"{name} train")
            axis.plot(epochs, [row[f"val_{key}"] for row in rows], color=colour, linestyle="--", marker=".",
                      label=f"{name} validation")
            best = max(rows, key=lambda row: row["val_acc"])  # the first of a tie, as the checkpoint
            axis.axvline(best["epoch"], color=colour, linestyle=":", alpha=0.7,
                         label=f"{name} best epoch ({best['epoch']})")
        axis.set(title=title, xlabel="epoch", ylabel=quantity)
        # Markers, and ticks on whole epochs even for one: a line through one point draws nothing,
        # and the locator would otherwise tick fractions of an epoch around it.
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def optimizer_colour(name: str) -> str:
    """The colour of an optimizer in every plot of every run: Adam's blue is Adam's in any run."""
    return OPTIMIZER_COLOURS.get(name, "C7")


def plot_confusion(confusion: numpy.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """The confusion matrix normalised by row (each true class sums to 1), with the counts written in.
    Beyond 30 classes the cells are too small for text and names, so only the colours are drawn, on
    a figure no larger than that of 30 (Stanford Cars' 196 classes at 0.45 inch each took 16 s and
    4.5 GB to draw, a 10,000-pixel image whose title no viewer could read)."""
    rows = confusion.sum(axis=1, keepdims=True)
    normalised = confusion / numpy.maximum(rows, 1)
    size = max(6.0, 0.45 * min(len(classes), 30))
    # Room for the names written beside and below the matrix, so that long ones do not squeeze it.
    names = 0.08 * max(map(len, classes)) if len(classes) <= 30 else 0.0
    figure, axis = plt.subplots(figsize=(size + 1.5 + names, size + names))
    image = axis.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="fraction of the true class")
    if len(classes) <= 30:
        ticks = numpy.arange(len(classes))
        axis.set_xticks(ticks, classes, rotation=60, ha="right")
        axis.set_yticks(ticks, classes)
        for (i, j), count in numpy.ndenumerate(confusion):
            if count:
                axis.text(j, i, str(count), ha="center", va="center", fontsize=7,
                          color="white" if normalised[i, j] > 0.5 else "black")
    axis.set(title=title, xlabel="predicted", ylabel="true")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_history(optimizer_name: str, history: list[dict[str, float]], path: Path) -> None:
    """Put ``history`` in the run's CSV file in place of the optimizer's earlier rows, keeping the
    rows of the other optimizers (also those a resumed run does not train again)."""
    rows = []
    if path.exists():
        with open(path, newline="") as file:
            rows = [row for row in csv.DictReader(file) if row["optimizer"] != optimizer_name]
    rows += [{"optimizer": optimizer_name, **row} for row in history]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["optimizer", *history[0]])
        writer.writeheader()
        writer.writerows(rows)


def summarize(results: dict[str, dict[str, Any]], classes: Sequence[str], test_name: str,
              settings: Mapping[str, Any]) -> str:
    """A Markdown report: per optimizer the epochs trained, the best one, the scores and the speed;
    per class the F1; then the settings the run trained with."""
    lines = [f"| optimizer | epochs | best epoch | best val accuracy | {test_name} accuracy | {test_name} macro-F1 "
             f"| images/s (median epoch) |", "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        best = max(result["history"], key=lambda row: row["val_acc"])
        speed = numpy.median([row["images_per_s"] for row in result["history"]])
        lines.append(f"| {name} | {len(result['history'])} | {best['epoch']} | {best['val_acc']:.4f} | "
                     f"{accuracy(result['confusion']):.4f} | {macro_f1(result['confusion']):.4f} | {speed:.1f} |")
    lines += ["", f"Per-class F1 on the {test_name} split:", "",
              "| class | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    per_class = {name: per_class_f1(result["confusion"]) for name, result in results.items()}
    for index, label in enumerate(classes):
        cells = ("-" if numpy.isnan(per_class[name][index]) else f"{per_class[name][index]:.3f}" for name in results)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(numpy.isnan(scores).any() for scores in per_class.values()):
        # F1 is 0/0 there: "nan" in a table of scores reads as a bug. Macro-F1 leaves these classes out.
        lines += ["", f"-: a class neither in the {test_name} split nor predicted, left out of macro-F1."]
    lines += ["", "Settings:", "", "| setting | value |", "|---|---|"]
    for key, value in settings.items():
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
        lines.append(f"| {key.replace('_', '-')} | {'-' if shown is None else shown} |")
    return "\n".join(lines) + "\n"
