"""The training run the example scripts share: several optimizers (Adam and RAdam by default)
train the same Swin from the same initial weights on one data set, each with a progress bar, a
checkpoint after every epoch, and accuracy and macro-F1 on the validation split; at the end the
best model of each is scored on the test split, and the curves and confusion matrices are drawn.

A run writes into a folder of its own, ``runs/<name>`` (``runs/<name>-2``, ... if that exists):

    config.json                 the arguments, and the classes
    <optimizer>/last.npz        model, optimizer, schedule and history after the latest epoch
    <optimizer>/best.npz        the same at the best validation accuracy so far
    history.csv                 one row per optimizer and epoch
    curves.png                  loss, accuracy and macro-F1 of every optimizer, per epoch
    confusion_<optimizer>.png   the confusion matrix of the best model on the test split
    summary.md                  the scores and the speed

``--resume`` continues a run in its folder from each optimizer's ``last.npz`` (after Ctrl-C too),
with the settings it started with; nothing already there is overwritten by a new run, and while a
process trains a run, a second one (a --resume in another terminal) stops at once. On the GPU
a training step reads nothing back from the device: the running loss and accuracy stay there and
reach the progress bar once per ``--log-every`` steps.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy
from tqdm import tqdm

try:
    import fcntl
except ImportError:  # Windows: runs there go unlocked
    fcntl = None

import minigrad
import optim
from datasets import DataLoader, Dataset
from minigrad import backend
from minigrad import functional as F
from reporting import accuracy, confusion_matrix, macro_f1, per_class_f1, plot_confusion, plot_curves
from swin import VARIANTS, SwinTransformer, build, load_pretrained
from swin.model import unusable_size_reason, usable_sizes

OPTIMIZERS = ("adam", "radam", "adamw", "sgd")
# --resume takes every setting not given from the run's config.json, except those of this session
# (the machine, and a cap on its steps); it may change how long the run goes, which optimizers go
# on (each has its own checkpoints), and where its files are now.
SESSION_SETTINGS = ("out", "resume", "device", "workers", "log_every", "max_steps")
RESUME_MAY_CHANGE = ("epochs", "optimizers", "data", "pretrained")


class Splits(NamedTuple):
    train: Dataset
    val: Dataset
    test: Dataset | None  # None: the best models are scored on the validation split instead


def make_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every training script takes; the script adds its data arguments."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(VARIANTS),
                       help="Swin variant (default: swin_mini on the synthetic set, swin_t on real data)")
    model.add_argument("--img-size", type=int, help="image side in pixels (default: the variant's, 64 or 224)")
    model.add_argument("--pretrained", type=Path,
                       help="official or timm Swin weights (.npz, .safetensors, .pth) to start from; the head "
                            "is left out when the class count differs")
    model.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the variant's)")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=["adam", "radam"],
                          help="optimizers to compare, each from the same initial weights (default: adam radam)")
    training.add_argument("--epochs", type=int, default=5)
    training.add_argument("--batch-size", type=int, default=32)
    training.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default: 5e-4)")
    training.add_argument("--weight-decay", type=float, default=0.0,
                          help="L2 for adam/radam/sgd, decoupled for adamw; never on biases, norms, bias tables")
    training.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                          help="learning-rate schedule (default: constant, so Adam and RAdam differ only in "
                               "RAdam's rectification)")
    training.add_argument("--warmup-epochs", type=float, default=0.0, help="linear warm-up (cosine schedule only)")
    training.add_argument("--label-smoothing", type=float, default=0.0)
    training.add_argument("--clip-grad", type=float, default=5.0, help="max gradient norm; 0 turns clipping off")
    training.add_argument("--max-steps", type=int, help="stop each optimizer after this many steps (smoke runs)")
    system = parser.add_argument_group("system")
    system.add_argument("--device", default="cpu", help="cpu or gpu (needs CuPy: pip install -e '.[gpu]')")
    system.add_argument("--seed", type=int, default=0)
    system.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads decoding images (default: the number of cores, at most 8)")
    system.add_argument("--log-every", type=int, default=10, help="steps between progress-bar updates")
    system.add_argument("--out", type=Path, help="the run's folder (default: runs/<name>, or the next free one)")
    system.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    return parser


def main(parser: argparse.ArgumentParser, load_data: Callable[[argparse.Namespace], Splits], name: str,
         argv: Sequence[str] | None = None) -> Path:
    """Parse the arguments, check everything that can be checked before training (device, data,
    model, output folder), then run. A problem found here ends with a message, not a traceback."""
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as held:  # the run's lock, let go however main ends
        try:
            if args.resume:
                restore_settings(args, parser, given_options(parser, argv), name)
                held.enter_context(run_lock(args.out))  # before the data: another process may train it now
            args.device = backend.normalize_device(args.device)
            args.model = args.model or ("swin_mini" if getattr(args, "data", None) is None else "swin_t")
            if args.img_size is None:  # not `or`: --img-size 0 is refused, not read as "the default"
                args.img_size = VARIANTS[args.model].get("img_size", 224)
            check_settings(args)
            check_image_size(args)  # these before the data: scanning a large set takes minutes
            if not args.resume:
                check_new_folder(args, name)
            data = load_data(args)
            for split, split_name in (("train", "training"), ("val", "validation"), ("test", "test")):
                if getattr(data, split) is not None and len(getattr(data, split)) == 0:
                    raise ValueError(f"the {split_name} split is empty: the data set is too small for it")
            initial_weights = initial_model(args, data.train.classes).state_dict()
            folder = output_folder(args, name, data)
            if not args.resume:
                held.enter_context(run_lock(folder))
        except (OSError, ValueError, RuntimeError) as error:
            # The arguments parsed: what is wrong is the data, the model or the machine, not the usage.
            parser.exit(2, f"{parser.prog}: error: {error}\n")
        except KeyboardInterrupt:  # Ctrl-C while the data are scanned, which takes minutes on a large set
            parser.exit(130, f"\n{parser.prog}: interrupted before training began; no epoch was run\n")
        try:
            run(args, data, folder, initial_weights)
        except KeyboardInterrupt:
            parser.exit(130, f"\n{parser.prog}: interrupted. Every finished epoch is saved in {folder}; "
                             f"to go on, run the same command with --resume --out {folder}\n")
        except FloatingPointError as error:
            parser.exit(1, f"{parser.prog}: error: {error}.\nThe epochs before it are saved in {folder}; a new run "
                           f"with other settings starts over from the same initial weights.\n")
        except (OSError, ValueError) as error:  # an image that cannot be read, a full disk, a damaged checkpoint
            parser.exit(1, f"{parser.prog}: error: {error}\nEvery finished epoch is saved in {folder}; once that is "
                           f"fixed, --resume --out {folder} goes on (and refuses if the data now splits otherwise)\n")
    return folder


def given_options(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The settings named on the command line (as ``args`` attributes), not left at their defaults."""
    without_defaults = copy.deepcopy(parser)
    for action in without_defaults._actions:
        action.default = argparse.SUPPRESS
    return set(vars(without_defaults.parse_args(argv)))


def restore_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, given: set[str], name: str) -> None:
    """--resume: take the run's settings from its config.json, so that it goes on as it started
    (the same split, model, batches and learning rate); refuse an option that would change one."""
    if args.out is None or not (args.out / "config.json").is_file():
        raise FileNotFoundError(f"--resume needs --out, the folder of an earlier run (one with config.json); "
                                f"got {args.out}")
    saved = json.loads((args.out / "config.json").read_text())
    if saved.get("script") != name:
        raise ValueError(f"--resume: {args.out} holds a run of train_{saved.get('script')}.py, not of "
                         f"train_{name}.py; resume it with that script")
    types = {action.dest: action.type for action in parser._actions}
    changed = []
    for key, value in saved.items():
        if key in SESSION_SETTINGS or not hasattr(args, key):
            continue
        if key not in given:
            setattr(args, key, Path(value) if value is not None and types.get(key) is Path else value)
        elif key not in RESUME_MAY_CHANGE and getattr(args, key) != value:
            changed.append(f"--{key.replace('_', '-')} {getattr(args, key)} (the run has {value})")
    if changed:
        raise ValueError(f"--resume goes on with the settings {args.out} started with; these would change them: "
                         f"{', '.join(changed)}. Leave them out, or start a new run.")


def check_settings(args: argparse.Namespace) -> None:
    # argparse's float() takes "nan" and "inf", which pass every comparison below (or fail it
    # with a misleading message); a NaN rate would train NaN weights for a whole epoch.
    for option in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "clip_grad", "drop_path"):
        value = getattr(args, option)
        if value is not None and not math.isfinite(value):
            raise ValueError(f"--{option.replace('_', '-')} must be a finite number, got {value}")
    for option in ("epochs", "batch_size", "log_every"):
        if getattr(args, option) < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {getattr(args, option)}")
    if args.max_steps is not None and args.max_steps < 1:
        raise ValueError(f"--max-steps must be at least 1, got {args.max_steps}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    at_least_zero = {"workers": args.workers, "weight-decay": args.weight_decay, "clip-grad": args.clip_grad,
                     "warmup-epochs": args.warmup_epochs}
    for option, value in at_least_zero.items():
        if value < 0:
            raise ValueError(f"--{option} must be at least 0, got {value}")
    if not 0 <= args.label_smoothing <= 1:
        raise ValueError(f"--label-smoothing must lie in [0, 1], got {args.label_smoothing}")
    if args.drop_path is not None and not 0 <= args.drop_path < 1:
        raise ValueError(f"--drop-path must lie in [0, 1), got {args.drop_path}")
    if len(set(args.optimizers)) != len(args.optimizers):
        raise ValueError(f"--optimizers names one twice: {' '.join(args.optimizers)}")


def check_image_size(args: argparse.Namespace) -> None:
    """Refuse an --img-size the variant cannot take, naming sizes it can, without building the model
    (Swin-L takes seconds to build)."""
    if args.img_size < 1:
        raise ValueError(f"--img-size must be at least 1, got {args.img_size}")
    settings = VARIANTS[args.model]
    # The window swin.build gives the variant: its own, else 12 at 384 px and 7 at other sizes.
    window = settings.get("window_size", 12 if args.img_size == 384 else 7)
    patch, stages = settings.get("patch_size", 4), len(settings["depths"])
    reason = unusable_size_reason(args.img_size, patch, window, stages)
    if reason is not None:
        raise ValueError(f"img_size={args.img_size} does not fit {args.model} (patch_size={patch}, "
                         f"window_size={window}, {stages} stages): {reason}. Sizes that fit: "
                         f"{usable_sizes(args.img_size, patch, window, stages)}")


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


def split_digest(data: Splits) -> str:
    """Which examples (by name) with which labels each split holds, as one digest. --resume compares
    it: data that now splits otherwise (a photo added, removed or renamed) would put photos the
    model trained on into the validation or test split."""
    digest = hashlib.sha256()
    for split in data:
        if split is not None:
            for example, label in zip(split.example_names(), split.labels.tolist()):
                digest.update(f"{example}\t{label}\n".encode())
        digest.update(b"--\n")
    return digest.hexdigest()[:16]


def check_new_folder(args: argparse.Namespace, name: str) -> None:
    """Refuse an --out that would overwrite files or mix the run into its own data."""
    data_folder = getattr(args, "data", None)
    if data_folder is not None and (Path(args.out or "runs").resolve() / "_").is_relative_to(data_folder.resolve()):
        # A scan of the class folders would take the run's plots for photos of a class "runs" next
        # time, and --resume would find the data changed.
        raise ValueError(f"the run's folder {args.out or Path('runs') / name} lies inside the data folder "
                         f"{data_folder}; pass an --out outside it")
    if args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise FileExistsError(f"--out {args.out} is a file; name a folder for the run")
        if args.out.exists() and any(args.out.iterdir()):
            raise FileExistsError(f"--out {args.out} already holds files; choose another folder, or pass "
                                  f"--resume to continue the run in it")


def output_folder(args: argparse.Namespace, name: str, data: Splits) -> Path:
    """The run's folder: a fresh one, or with --resume the one given, checked to hold this run."""
    config = {"script": name, "model": args.model, "img_size": args.img_size, "classes": list(data.train.classes),
              "split": split_digest(data)}
    if args.resume:  # restore_settings has found its config.json
        saved = json.loads((args.out / "config.json").read_text())
        if saved.get("split", config["split"]) != config["split"]:  # runs of older versions have no digest
            raise ValueError(f"--resume: the data now splits otherwise than when {args.out} started (a photo added, "
                             f"removed or renamed), so photos it trained on would be validated or tested; "
                             f"start a new run")
        changed = [key for key in config if saved.get(key) != config[key] and key != "split"]
        if changed:
            raise ValueError(f"--resume: {args.out} holds a run with other {', '.join(changed)} "
                             f"({', '.join(f'{key}={saved.get(key)!r}' for key in changed)}); start a new run instead")
        return args.out
    check_new_folder(args, name)  # again: the data took a while, and another run may have begun
    if args.out is not None:
        folder = args.out
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder, number = Path("runs") / name, 1
        while True:  # mkdir, not exists(): of two runs started together, each gets a folder of its own
            try:
                folder.mkdir(parents=True)
                break
            except FileExistsError:
                number += 1
                folder = Path("runs") / f"{name}-{number}"
    # Absolute paths, so that --resume finds the files from any working directory.
    settings = {key: str(value.absolute()) if isinstance(value, Path) else value for key, value in vars(args).items()}
    try:
        with open(folder / "config.json", "x") as file:  # "x": never over the config of a run begun meanwhile
            file.write(json.dumps({**settings, **config}, indent=2) + "\n")
    except FileExistsError:
        raise FileExistsError(f"another run has just begun in {folder}; choose another --out") from None
    return folder


@contextlib.contextmanager
def run_lock(folder: Path) -> Iterator[None]:
    """Hold the run's config.json locked while this process trains the run, so that a second one
    (a --resume typed while the run goes on in another terminal) stops at once instead of writing
    the same checkpoints and history. The system lets go of the lock when the process ends, also
    when it is killed."""
    with open(folder / "config.json", "rb") as file:
        if fcntl is not None:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FileExistsError(f"another process is training the run in {folder} now; let it finish (or "
                                      f"stop it), then --resume --out {folder} goes on from its last epoch") from None
            except OSError:  # a file system without locks (some network ones): go on unlocked
                pass
        yield


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


def train_epoch(model, optimizer, schedule, loader: DataLoader, args: argparse.Namespace, description: str,
                max_steps: int | None) -> dict[str, float]:
    """One pass over ``loader`` (or ``max_steps`` steps of it); returns the mean loss, accuracy and speed."""
    model.train()
    loss_sum, correct, count, steps = 0.0, 0, 0, 0  # the first two become device scalars
    progress = tqdm(loader, desc=description, unit="step", leave=False, dynamic_ncols=True, disable=None)
    start = time.perf_counter()
    for images, labels in progress:
        images, labels = backend.to_device(images, args.device), backend.to_device(labels, args.device)
        logits = model(minigrad.tensor(images))
        loss = F.cross_entropy(logits, labels, label_smoothing=args.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        if args.clip_grad > 0:
            optim.clip_grad_norm_(model.parameters(), args.clip_grad)
        optimizer.step()
        schedule.step()
        loss_sum = loss_sum + loss.data.astype("float64") * len(labels)
        correct = correct + (logits.data.argmax(axis=1) == labels).sum()
        count, steps = count + len(labels), steps + 1
        if steps % args.log_every == 0:
            running_loss, running_correct = read_back(loss_sum, correct)
            check_finite(running_loss, steps, description)
            progress.set_postfix(loss=f"{running_loss / count:.4f}", acc=f"{running_correct / count:.3f}")
        if steps == max_steps:
            break
    progress.close()
    total_loss, total_correct = read_back(loss_sum, correct)  # also waits for the device to finish
    check_finite(total_loss, steps, description)
    seconds = time.perf_counter() - start
    return {"train_loss": total_loss / count, "train_acc": total_correct / count, "steps": steps,
            "seconds": seconds, "images_per_s": count / seconds}


def check_finite(loss_sum: float, steps: int, description: str) -> None:
    """Stop a run whose loss has become NaN or infinite: nothing after that step can be trusted."""
    if not math.isfinite(loss_sum):
        raise FloatingPointError(
            f"the training loss became {loss_sum} within the first {steps} steps of {description}. Lower --lr or "
            f"turn on --clip-grad; and check the labels: on the GPU, one outside 0..classes-1 makes the loss NaN")


def say(message: str) -> None:
    """Print between progress bars, at once even when the output goes to a log file."""
    tqdm.write(message)
    sys.stdout.flush()


def read_back(*scalars) -> list[float]:
    """Device scalars to Python floats in one transfer."""
    xp = backend.get_array_module(scalars[0])
    return backend.asnumpy(xp.stack([xp.asarray(s, dtype=xp.float64) for s in scalars])).tolist()


def evaluate(model, loader: DataLoader, device: str, description: str) -> tuple[float, numpy.ndarray, numpy.ndarray]:
    """Mean loss, true labels and predicted labels over ``loader``, in eval mode and without a graph."""
    model.eval()
    loss_sum, predictions, labels_seen = 0.0, [], []
    with minigrad.no_grad():
        for images, labels in tqdm(loader, desc=description, unit="step", leave=False, dynamic_ncols=True,
                                   disable=None):
            logits = model(minigrad.tensor(backend.to_device(images, device)))
            loss = F.cross_entropy(logits, backend.to_device(labels, device))
            loss_sum = loss_sum + loss.data.astype("float64") * len(labels)
            predictions.append(logits.data.argmax(axis=1))
            labels_seen.append(labels)
    xp = backend.get_array_module(predictions[0])
    labels_all = numpy.concatenate(labels_seen)
    return read_back(loss_sum)[0] / len(labels_all), labels_all, backend.asnumpy(xp.concatenate(predictions))


def scores(labels: numpy.ndarray, predictions: numpy.ndarray, num_classes: int) -> dict[str, float]:
    confusion = confusion_matrix(labels, predictions, num_classes)
    return {"acc": accuracy(confusion), "f1": macro_f1(confusion)}


def train_with(optimizer_name: str, args: argparse.Namespace, data: Splits, folder: Path,
               initial_weights: dict[str, Any], histories: dict[str, list]) -> SwinTransformer:
    """Train a fresh copy of the initial model with one optimizer, or go on with it from its last
    checkpoint; after each epoch save, log and plot. Return the model with its best weights."""
    model = build_model(args, data.train.classes)
    model.load_state_dict(initial_weights)  # the pretrained file is read once, in main
    model.to(args.device)
    train_loader = DataLoader(data.train, args.batch_size, shuffle=True, drop_last=len(data.train) > args.batch_size,
                              seed=args.seed, num_workers=args.workers)
    val_loader = DataLoader(data.val, args.batch_size, num_workers=args.workers)
    optimizer = make_optimizer(optimizer_name, model, args.lr, args.weight_decay)
    schedule = make_schedule(args, optimizer, len(train_loader))
    checkpoints = folder / optimizer_name
    checkpoints.mkdir(exist_ok=True)
    history: list[dict[str, float]] = []
    if args.resume and (checkpoints / "last.npz").exists():
        state = minigrad.load(checkpoints / "last.npz")
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
        val_loss, labels, predictions = evaluate(model, val_loader, args.device, f"{optimizer_name} validation")
        row.update(val_loss=val_loss, **{f"val_{key}": value for key, value in
                                         scores(labels, predictions, len(data.val.classes)).items()})
        history.append(row)
        if steps_left is not None:
            steps_left -= row["steps"]

        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "history": history, "classes": list(data.train.classes),
                 "architecture": {"name": args.model, "img_size": args.img_size}}
        if row["val_acc"] > max((earlier["val_acc"] for earlier in history[:-1]), default=-1.0):
            minigrad.save(state, checkpoints / "best.npz")
        write_history(optimizer_name, history, folder / "history.csv")
        plot_curves(histories, folder / "curves.png")
        # last.npz last: --resume goes on after the epoch it holds, so by then the epoch's best.npz and
        # history rows must be written; a Ctrl-C before it makes --resume train the epoch again.
        minigrad.save(state, checkpoints / "last.npz")
        say(f"{optimizer_name} epoch {epoch}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f} | "
            f"val loss {val_loss:.4f} acc {row['val_acc']:.3f} macro-F1 {row['val_f1']:.3f} | "
            f"{row['images_per_s']:.1f} img/s")
    return best_model(args, data.train.classes, checkpoints) if (checkpoints / "best.npz").exists() else model


def best_model(args: argparse.Namespace, classes: Sequence[str], checkpoints: Path) -> SwinTransformer:
    """The model at the best validation accuracy of an optimizer's run, on the device."""
    model = build_model(args, classes)
    model.load_state_dict(minigrad.load(checkpoints / "best.npz")["model"])
    return model.to(args.device)


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
    others = [name for name in OPTIMIZERS if name not in args.optimizers and (folder / name / "last.npz").is_file()]
    histories = {name: minigrad.load(folder / name / "last.npz")["history"] for name in others}
    results = {}
    for name in others + args.optimizers:
        if name in args.optimizers:
            model = train_with(name, args, data, folder, initial_weights, histories)
        else:
            model = best_model(args, classes, folder / name)
        history = histories[name]
        if not history:
            continue
        _, labels, predictions = evaluate(model, DataLoader(test_set, args.batch_size, num_workers=args.workers),
                                          args.device, f"{name} {test_name}")
        confusion = confusion_matrix(labels, predictions, len(classes))
        plot_confusion(confusion, classes, folder / f"confusion_{name}.png",
                       f"{args.model}, {name}: {test_name} accuracy {accuracy(confusion):.3f}")
        results[name] = {"confusion": confusion, "history": history}
    if results:
        summary = summarize(results, classes, test_name)
        (folder / "summary.md").write_text(summary)
        say(summary)


def cold_kernel_cache() -> Path | None:
    """CuPy's kernel cache folder when it is still empty (a first run on this machine), else None."""
    folder = Path(os.environ.get("CUPY_CACHE_DIR") or Path.home() / ".cupy" / "kernel_cache")
    return None if folder.is_dir() and any(folder.iterdir()) else folder


def summarize(results: dict[str, dict[str, Any]], classes: Sequence[str], test_name: str) -> str:
    """A Markdown report: per optimizer the best epoch, the scores and the speed; per class the F1."""
    lines = [f"| optimizer | best epoch | best val accuracy | {test_name} accuracy | {test_name} macro-F1 "
             f"| images/s (median epoch) |", "|---|---|---|---|---|---|"]
    for name, result in results.items():
        best = max(result["history"], key=lambda row: row["val_acc"])
        speed = numpy.median([row["images_per_s"] for row in result["history"]])
        lines.append(f"| {name} | {best['epoch']} | {best['val_acc']:.4f} | {accuracy(result['confusion']):.4f} | "
                     f"{macro_f1(result['confusion']):.4f} | {speed:.1f} |")
    lines += ["", f"Per-class F1 on the {test_name} split:", "",
              "| class | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    per_class = {name: per_class_f1(result["confusion"]) for name, result in results.items()}
    for index, label in enumerate(classes):
        cells = ("-" if numpy.isnan(per_class[name][index]) else f"{per_class[name][index]:.3f}" for name in results)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(numpy.isnan(scores).any() for scores in per_class.values()):
        # F1 is 0/0 there: "nan" in a table of scores reads as a bug. Macro-F1 leaves these classes out.
        lines += ["", f"-: a class neither in the {test_name} split nor predicted, left out of macro-F1."]
    return "\n".join(lines) + "\n"
