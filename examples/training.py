"""The training loop the example scripts share, top to bottom: build the model, train an epoch,
evaluate, train with one optimizer (saving a checkpoint after every epoch), and run every optimizer
(Adam and RAdam by default) from the same initial weights, scoring each best model on the test split.

On the GPU a training step reads nothing back from the device: the running loss and accuracy stay
there and reach the progress bar once per ``--log-every`` steps. The command line, the run's folder,
its lock and ``--resume``'s settings are in runs.py; the scores, plots and tables in reporting.py.

Under ``mpiexec -n N`` the same code trains data-parallel (minigrad.distributed): each rank loads
and computes its 1/N of every batch, the gradients are averaged before clipping, and the losses
and confusion counts are summed over the ranks; rank 0 alone writes files and draws progress bars.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy
from tqdm import tqdm

import minigrad
import optim
from datasets import DataLoader, Dataset, PrefetchLoader
from minigrad import backend, distributed
from minigrad import functional as F
from reporting import (accuracy, confusion_matrix, macro_f1, plot_confusion, plot_curves, summarize,
                       write_history)
from swin import SwinTransformer, build, load_pretrained

OPTIMIZERS = ("adam", "radam", "adamw", "sgd")
# A mean training loss this many times log(classes), a uniform guess's, means training diverges.
DIVERGED = 10


class Splits(NamedTuple):
    train: Dataset
    val: Dataset
    test: Dataset | None  # None: the best models are scored on the validation split instead


def build_model(args: argparse.Namespace, classes: Sequence[str]) -> SwinTransformer:
    """The Swin variant the arguments ask for, freshly (seeded) initialised."""
    minigrad.manual_seed(args.seed)
    overrides: dict[str, Any] = dict(num_classes=len(classes), img_size=args.img_size)
    if args.drop_path is not None:
        overrides["drop_path_rate"] = args.drop_path
    return build(args.model, **overrides)


def initial_model(args: argparse.Namespace, classes: Sequence[str]) -> SwinTransformer:
    """The model every optimizer starts from: seeded, and with the pretrained weights if given."""
    model = build_model(args, classes)
    if args.pretrained is not None:
        if not args.pretrained.exists():
            raise FileNotFoundError(f"--pretrained {args.pretrained}: no such file")
        try:
            load_pretrained(model, args.pretrained)
        except ImportError as error:  # a .pth of PyTorch before 1.6: the message says how to convert it
            raise ValueError(f"--pretrained {error}") from error
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"--pretrained {args.pretrained} does not fit {args.model} with {len(classes)} classes "
                             f"at {args.img_size} px: {error}") from error
    return model


def make_optimizer(name: str, model: SwinTransformer, lr: float, weight_decay: float) -> optim.Optimizer:
    groups = optim.weight_decay_groups(model, weight_decay)
    if name == "sgd":
        return optim.SGD(groups, lr=lr, momentum=0.9)
    return {"adam": optim.Adam, "radam": optim.RAdam, "adamw": optim.AdamW}[name](groups, lr=lr)


def make_schedule(args: argparse.Namespace, optimizer: optim.Optimizer, steps_per_epoch: int):
    if args.schedule == "constant":
        return optim.lr_scheduler.ConstantLR(optimizer)
    total = args.epochs * steps_per_epoch
    return optim.lr_scheduler.WarmupCosineLR(optimizer, total, warmup_steps=min(total, round(args.warmup_epochs
                                                                                            * steps_per_epoch)))


def loader_of(dataset: Dataset, args: argparse.Namespace, shuffle: bool = False) -> DataLoader:
    """This rank's batches of ``dataset``: the training ones shuffled, dropping a last incomplete
    batch (unless it is the only one, in one process); under mpiexec, each rank's share of them."""
    ranks = distributed.world_size()
    return DataLoader(dataset, args.batch_size, shuffle=shuffle, seed=args.seed, num_workers=args.workers,
                      drop_last=shuffle and (len(dataset) > args.batch_size or ranks > 1),
                      rank=distributed.rank(), world_size=ranks)


def progress_bar(iterable, description: str) -> tqdm:
    """A progress bar on rank 0 (when its output is a terminal), none on the others."""
    return tqdm(iterable, desc=description, unit="step", leave=False, dynamic_ncols=True,
                disable=None if distributed.is_main() else True)


def training_step(model, optimizer, images, labels, args: argparse.Namespace):
    """Forward, loss, backward, the gradients averaged over the ranks, clipping and the update, on
    one batch (this rank's share of it). Returns the loss and the logits, left on the device."""
    with distributed.share_of_batch(len(labels)):  # drop-path masks cut from the whole batch's
        logits = model(minigrad.tensor(images))
    loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
    optimizer.zero_grad()
    loss.backward()
    if distributed.world_size() > 1:  # not even the packing's walk over the parameters in one process
        distributed.all_reduce_mean_(optim.packed_gradients(model.parameters()))
    if args.clip_grad > 0:
        optim.clip_grad_norm_(model.parameters(), args.clip_grad)
    optimizer.step()
    return loss, logits


def train_epoch(model, optimizer, schedule, loader: DataLoader, args: argparse.Namespace, description: str,
                max_steps: int | None) -> dict[str, float]:
    """One pass over ``loader`` (or ``max_steps`` steps of it); returns the mean loss, accuracy and speed,
    over all ranks."""
    model.train()
    loss_sum, correct, count, steps = 0.0, 0, 0, 0  # the first two become device scalars
    progress = progress_bar(PrefetchLoader(loader, args.device), description)
    start = time.perf_counter()
    for images, labels in progress:
        loss, logits = training_step(model, optimizer, images, labels, args)
        schedule.step()
        loss_sum = loss_sum + loss.data.astype("float64") * len(labels)
        correct = correct + (logits.data.argmax(axis=1) == labels).sum()
        count, steps = count + len(labels), steps + 1
        if steps % args.log_every == 0:
            running_loss, running_correct, running_count = summed_over_ranks(*read_back(loss_sum, correct), count)
            check_finite(running_loss, steps, description)
            progress.set_postfix(loss=f"{running_loss / running_count:.4f}",
                                 acc=f"{running_correct / running_count:.3f}")
        if steps == max_steps:
            break
    progress.close()
    # read_back also waits for the device to finish.
    total_loss, total_correct, count = summed_over_ranks(*read_back(loss_sum, correct), count)
    check_finite(total_loss, steps, description)
    warn_if_diverging(total_loss / count, logits.shape[-1], description, args)
    seconds = time.perf_counter() - start
    return {"train_loss": total_loss / count, "train_acc": total_correct / count, "steps": steps,
            "seconds": seconds, "images_per_s": count / seconds}


def check_finite(loss_sum: float, steps: int, description: str) -> None:
    """Stop a run whose loss has become NaN or infinite: nothing after that step can be trusted."""
    if not math.isfinite(loss_sum):
        raise FloatingPointError(
            f"the training loss became {loss_sum} within the first {steps} steps of {description}. Lower --lr or "
            f"turn on --clip-grad; and check the labels: on the GPU, one outside 0..classes-1 makes the loss NaN")


def warn_if_diverging(mean_loss: float, num_classes: int, description: str, args: argparse.Namespace) -> None:
    """Warn of a loss far above a uniform guess's, log(classes): the weights are running away, though
    still finite (a learning rate of 1e6 without clipping reached 2.4e14), and nothing is learnt."""
    if mean_loss > DIVERGED * math.log(num_classes):
        hint = "enable --clip-grad (e.g. 5)" if args.clip_grad == 0 else "lower --clip-grad"
        warnings.warn(f"the training loss of {description} is {mean_loss:.3g}, over {DIVERGED} times a uniform "
                      f"guess's ({math.log(num_classes):.2f}): training diverges. Lower --lr (it is {args.lr:g}) or "
                      f"{hint}", stacklevel=2)


def say(message: str) -> None:
    """Print between progress bars, at once even when the output goes to a log file (on rank 0)."""
    if distributed.is_main():
        tqdm.write(message)
        sys.stdout.flush()


def read_back(*scalars) -> list[float]:
    """Device scalars to Python floats in one transfer."""
    xp = backend.get_array_module(scalars[0])
    return backend.asnumpy(xp.stack([xp.asarray(s, dtype=xp.float64) for s in scalars])).tolist()


def summed_over_ranks(*numbers: float) -> list[float]:
    """Each number's sum over the ranks (itself, in one process), in one collective."""
    return distributed.all_reduce_sum(numpy.array(numbers, dtype=numpy.float64)).tolist()


def evaluate(model, loader: DataLoader, device: str, description: str, num_classes: int) -> tuple[float, numpy.ndarray]:
    """Mean loss and confusion matrix over ``loader`` (over every rank's share of the split), in
    eval mode and without a graph."""
    model.eval()
    loss_sum, predictions, labels_seen = 0.0, [], []
    with minigrad.no_grad():
        for images, labels in progress_bar(PrefetchLoader(loader, device), description):
            logits = model(minigrad.tensor(images))
            loss = F.cross_entropy(logits, labels)
            loss_sum = loss_sum + loss.data.astype("float64") * len(labels)
            predictions.append(logits.data.argmax(axis=1))
            labels_seen.append(labels)
    if labels_seen:  # on the device: read back once, at the end
        xp = backend.get_array_module(labels_seen[0])
        labels_seen, predicted = (backend.asnumpy(xp.concatenate(arrays)) for arrays in (labels_seen, predictions))
    else:  # a rank may hold no image of a split smaller than the ranks: its share adds nothing
        labels_seen = predicted = numpy.zeros(0, dtype=numpy.int64)
    confusion = distributed.all_reduce_sum(confusion_matrix(labels_seen, predicted, num_classes))
    loss_sum, count = summed_over_ranks(*read_back(loss_sum), len(labels_seen))
    return loss_sum / count, confusion


def scores(confusion: numpy.ndarray) -> dict[str, float]:
    return {"acc": accuracy(confusion), "f1": macro_f1(confusion)}


def train_with(optimizer_name: str, args: argparse.Namespace, data: Splits, folder: Path,
               initial_weights: dict[str, Any], histories: dict[str, list]) -> SwinTransformer:
    """Train a fresh copy of the initial model with one optimizer, or go on with it from its last
    checkpoint; after each epoch save, log and plot. Return the model with its best weights."""
    model = build_model(args, data.train.classes)
    model.load_state_dict(initial_weights)  # the pretrained file is read once, in main
    model.to(args.device)
    train_loader, val_loader = loader_of(data.train, args, shuffle=True), loader_of(data.val, args)
    optimizer = make_optimizer(optimizer_name, model, args.lr, args.weight_decay)
    schedule = make_schedule(args, optimizer, len(train_loader))
    checkpoints = folder / optimizer_name
    if distributed.is_main():
        checkpoints.mkdir(exist_ok=True)
    history: list[dict[str, float]] = []
    last = checkpoints / "last.npz"
    state = read_on_rank_0(lambda: minigrad.load(last) if args.resume and last.exists() else None)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = state["history"]
        say(f"{optimizer_name}: resuming after epoch {history[-1]['epoch'] if history else 0}")
    histories[optimizer_name] = history
    steps_left = None if args.max_steps is None else args.max_steps - sum(row["steps"] for row in history)
    if len(history) >= args.epochs:
        say(f"{optimizer_name}: all {args.epochs} epochs are done; pass a larger --epochs to go on")
    elif steps_left is not None and steps_left <= 0:
        say(f"{optimizer_name}: the {args.max_steps} steps of --max-steps are done; pass a larger one to go on")
    for epoch in range(len(history) + 1, args.epochs + 1):
        if steps_left is not None and steps_left <= 0:
            break
        train_loader.set_epoch(epoch)
        # Drop-path draws fixed by (seed, epoch): the same for every optimizer, and a resumed run
        # repeats an uninterrupted one exactly.
        minigrad.manual_seed(int(numpy.random.SeedSequence([args.seed, epoch]).generate_state(1)[0]))
        row = {"epoch": epoch, "lr": schedule.get_last_lr()[0]}
        row.update(train_epoch(model, optimizer, schedule, train_loader, args,
                               f"{optimizer_name} epoch {epoch}/{args.epochs}", steps_left))
        val_loss, confusion = evaluate(model, val_loader, args.device, f"{optimizer_name} validation",
                                       len(data.val.classes))
        row.update(val_loss=val_loss, **{f"val_{key}": value for key, value in scores(confusion).items()})
        history.append(row)
        if steps_left is not None:
            steps_left -= row["steps"]
        if distributed.is_main():
            save_epoch(model, optimizer, schedule, args, data, folder, optimizer_name, histories)
        say(f"{optimizer_name} epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
            f"val loss {val_loss:.4f} acc {row['val_acc']:.3f} macro-F1 {row['val_f1']:.3f} | "
            f"{row['images_per_s']:.1f} img/s")
    best = best_model(args, data.train.classes, checkpoints)
    return model if best is None else best


def save_epoch(model, optimizer, schedule, args: argparse.Namespace, data: Splits, folder: Path, optimizer_name: str,
               histories: dict[str, list]) -> None:
    """After an epoch: the checkpoints (best.npz when the validation accuracy is the best so far),
    the history and the curves."""
    history = histories[optimizer_name]
    checkpoints = folder / optimizer_name
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "history": history, "classes": list(data.train.classes),
             "architecture": {"name": args.model, "img_size": args.img_size}}
    if history[-1]["val_acc"] > max((earlier["val_acc"] for earlier in history[:-1]), default=-1.0):
        minigrad.save(state, checkpoints / "best.npz")
    write_history(optimizer_name, history, folder / "history.csv")
    plot_curves(histories, folder / "curves.png")
    # last.npz last: --resume goes on after the epoch it holds, so by then the epoch's best.npz and
    # history rows must be written; a Ctrl-C before it makes --resume train the epoch again.
    minigrad.save(state, checkpoints / "last.npz")


def best_model(args: argparse.Namespace, classes: Sequence[str], checkpoints: Path) -> SwinTransformer | None:
    """The model at the best validation accuracy of an optimizer's run, on the device (None before
    its first epoch is saved)."""
    best = checkpoints / "best.npz"
    weights = read_on_rank_0(lambda: minigrad.load(best)["model"] if best.exists() else None)
    if weights is None:
        return None
    model = build_model(args, classes)
    model.load_state_dict(weights)
    return model.to(args.device)


def read_on_rank_0(read: Callable[[], Any]) -> Any:
    """What ``read()``, a look into the run's folder, gives on rank 0, handed to every rank: only
    rank 0 uses the folder, so ranks on other machines need no shared disk for it."""
    return distributed.broadcast_object(read() if distributed.is_main() else None)


def run(args: argparse.Namespace, data: Splits, folder: Path, initial_weights: dict[str, Any]) -> None:
    """Train with each optimizer, score each best model on the test split, and report."""
    classes = data.train.classes
    test_set, test_name = (data.test, "test") if data.test is not None else (data.val, "validation")
    say(f"{args.model} at {args.img_size} px on {args.device}; {len(data.train)} training, "
        f"{len(data.val)} validation, {len(data.test) if data.test is not None else 0} test images, "
        f"{len(classes)} classes; writing to {folder}")
    empty_cache = cold_kernel_cache() if args.device == "gpu" else None
    if empty_cache is not None:
        say(f"The first steps compile CuPy's GPU kernels, so the progress bar waits a while; they are kept in "
            f"{empty_cache} for later runs.")
    # The run's other optimizers (with --resume) stay in its curves and summary.
    histories = read_on_rank_0(lambda: {name: minigrad.load(folder / name / "last.npz")["history"]
                                        for name in OPTIMIZERS if name not in args.optimizers
                                        and (folder / name / "last.npz").is_file()})
    others = list(histories)
    results = {}
    for name in others + args.optimizers:
        if name in args.optimizers:
            model = train_with(name, args, data, folder, initial_weights, histories)
        else:
            model = best_model(args, classes, folder / name)
        history = histories[name]
        if not history:
            continue
        _, confusion = evaluate(model, loader_of(test_set, args), args.device, f"{name} {test_name}", len(classes))
        if distributed.is_main():
            plot_confusion(confusion, classes, folder / f"confusion_{name}.png",
                           f"{args.model}, {name}: {test_name} accuracy {accuracy(confusion):.3f}, "
                           f"macro-F1 {macro_f1(confusion):.3f}")
        results[name] = {"confusion": confusion, "history": history}
    if results and distributed.is_main():
        summary = summarize(results, classes, test_name, settings_of(args))
        (folder / "summary.md").write_text(summary)
        say(summary)
        say(where_everything_went(folder, list(results)))


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The settings that decide what a run learns, for its summary (not where its files go)."""
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()
            if key not in ("out", "resume", "log_every")}


def where_everything_went(folder: Path, optimizers: Sequence[str]) -> str:
    lines = [f"Everything is in {folder}:",
             "  summary.md                  the scores above, and the settings",
             "  curves.png                  loss, accuracy and macro-F1 per epoch; history.csv, the numbers"]
    for name in optimizers:
        lines += [f"  {f'confusion_{name}.png':<27} the confusion matrix of {name}'s best model",
                  f"  {f'{name}/best.npz':<27} that model (python examples/predict.py {folder / name / 'best.npz'} "
                  f"photo.jpg)",
                  f"  {f'{name}/last.npz':<27} the last epoch's (--resume --out {folder} goes on from it)"]
    return "\n".join(lines)


def cold_kernel_cache() -> Path | None:
    """CuPy's kernel cache folder when it is still empty (a first run on this machine), else None."""
    folder = Path(os.environ.get("CUPY_CACHE_DIR") or Path.home() / ".cupy" / "kernel_cache")
    return None if folder.is_dir() and any(folder.iterdir()) else folder
