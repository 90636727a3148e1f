"""A training run's command line and its folder: the options every training script shares and
their checks, the run's folder, its lock, the split's digest and ``--resume``'s settings. ``main``
checks all it can before training, then hands over to ``training.run``.

A run writes into a folder of its own, ``runs/<name>`` (``runs/<name>-2``, ... if that exists):

    config.json                 the arguments, and the classes
    <optimizer>/last.npz        model, optimizer, schedule and history after the latest epoch
    <optimizer>/best.npz        the same at the best validation accuracy so far
    history.csv                 one row per optimizer and epoch
    curves.png                  loss, accuracy and macro-F1 of every optimizer, per epoch
    confusion_<optimizer>.png   the confusion matrix of the best model on the test split
    summary.md                  the scores, the speed and the settings

``--resume`` continues a run in its folder from each optimizer's ``last.npz`` (after Ctrl-C too),
with the settings it started with; nothing already there is overwritten by a new run, and while a
process trains a run, a second one (a --resume in another terminal) stops at once.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: runs there go unlocked
    fcntl = None

from cli import HelpFormatter, add_device_argument
from minigrad import backend, distributed
from minigrad.serialization import temporary_files_of
from swin import VARIANTS, settings_of
from swin.model import unusable_size_reason, usable_sizes
from training import OPTIMIZERS, Splits, initial_model, run, say

# --resume takes every setting not given from the run's config.json, except those of this session
# (the machine, and a cap on its steps); it may change how long the run goes, which optimizers go
# on (each has its own checkpoints), and where its files are now.
SESSION_SETTINGS = ("out", "resume", "device", "workers", "log_every", "max_steps")
RESUME_MAY_CHANGE = ("epochs", "optimizers", "data", "pretrained")
# A validation or test split smaller than this is warned of: its accuracy moves in steps of 5 % or more.
MIN_SCORED_IMAGES = 20


def make_parser(description: str, default_model: str = "swin_t at 224 px") -> argparse.ArgumentParser:
    """The arguments every training script takes; the script adds its data arguments.
    ``default_model`` says which variant the script trains without --model."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=sorted(VARIANTS), help=f"Swin variant (default: {default_model})")
    model.add_argument("--img-size", type=int, help="image side in pixels (default: the variant's, 64 or 224)")
    model.add_argument("--pretrained", type=Path,
                       help="official or timm Swin weights (.npz, .safetensors, .pth) to start from; the head "
                            "is left out when the class count differs (default: none, from scratch)")
    model.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the variant's)")
    training = parser.add_argument_group("training")
    training.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=["adam", "radam"],
                          help="optimizers to compare, each from the same initial weights")
    training.add_argument("--epochs", type=int, default=5, help="epochs per optimizer")
    training.add_argument("--batch-size", type=int, default=16, help="images per step")
    training.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    training.add_argument("--weight-decay", type=float, default=0.0,
                          help="L2 for adam/radam/sgd, decoupled for adamw; never on biases, norms, bias tables")
    training.add_argument("--schedule", choices=("constant", "cosine"), default="cosine",
                          help="learning-rate schedule: constant, or linear warm-up then cosine decay to 0")
    training.add_argument("--warmup-epochs", type=float, default=1.0,
                          help="linear warm-up (cosine schedule only); 0 for none")
    training.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    training.add_argument("--clip-grad", type=float, default=5.0, help="max gradient norm; 0 turns clipping off")
    training.add_argument("--max-steps", type=int,
                          help="stop each optimizer after this many steps, for smoke runs (default: no cap)")
    system = parser.add_argument_group("system")
    add_device_argument(system)
    system.add_argument("--seed", type=int, default=0, help="seed of the weights, the split, the order and "
                                                             "the augmentation")
    system.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="threads decoding images (the number of cores here, at most 8)")
    system.add_argument("--log-every", type=int, default=10, help="steps between progress-bar updates")
    system.add_argument("--out", type=Path, help="the run's folder (default: runs/<name>, or the next free one)")
    system.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoints")
    return parser


def main(parser: argparse.ArgumentParser, load_data: Callable[[argparse.Namespace], Splits], name: str,
         argv: Sequence[str] | None = None) -> Path:
    """Parse the arguments, check everything that can be checked before training (device, data,
    model, output folder), then run. A problem found here ends with a message, not a traceback.

    Under mpiexec every rank runs this; rank 0 alone makes, locks and writes the run's folder, and
    an error on any rank ends them all (instead of leaving the others waiting for it)."""
    args = parser.parse_args(argv)
    backend.keep_freed_host_memory()  # a step's temporaries reuse the last step's pages
    main_rank = distributed.is_main()
    who = distributed.label() + parser.prog  # "[rank 1 of 2] train_dvm.py" under mpiexec: who stopped
    with distributed.ending_all_ranks_on_error(), contextlib.ExitStack() as held:  # the lock, let go however main ends
        if not main_rank:  # rank 0 warns of what every rank would
            held.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            if args.resume and main_rank:
                restore_settings(args, parser, given_options(parser, argv), name)
                held.enter_context(run_lock(args.out))  # before the data: another process may train it now
                remove_unfinished_writes(args.out)
            if args.resume:  # the other ranks take the settings from rank 0, which alone reads the folder
                vars(args).update(distributed.broadcast_object(vars(args) if main_rank else None))
            if str(args.device).lower() in ("gpu", "cuda"):
                distributed.use_local_gpu()  # before the check below starts CUDA on a GPU not this rank's
            args.device = backend.normalize_device(args.device)
            args.model = args.model or ("swin_mini" if getattr(args, "data", None) is None else "swin_t")
            if args.img_size is None:  # not `or`: --img-size 0 is refused, not read as "the default"
                args.img_size = VARIANTS[args.model].get("img_size", 224)
            check_settings(args)
            check_image_size(args)  # these before the data: scanning a large set takes minutes
            if not args.resume and main_rank:
                check_new_folder(args, name)
            data = load_data(args)
            check_data(data, args.batch_size)
            warn_of_a_slow_start(args)
            initial_weights = initial_model(args, data.train.classes).state_dict()
            distributed.broadcast_(initial_weights.values())  # every rank starts from rank 0's weights
            folder = distributed.broadcast_object(output_folder(args, name, data) if main_rank else None)
            if not args.resume and main_rank:
                held.enter_context(run_lock(folder))
        except (OSError, ValueError, RuntimeError) as error:
            # The arguments parsed: what is wrong is the data, the model or the machine, not the usage.
            parser.exit(2, f"{who}: error: {error}\n")
        except KeyboardInterrupt:  # Ctrl-C while the data are scanned, which takes minutes on a large set
            parser.exit(130, f"\n{who}: interrupted before training began; no epoch was run\n")
        try:
            run(args, data, folder, initial_weights)
        except KeyboardInterrupt:
            parser.exit(130, f"\n{who}: interrupted. Every finished epoch is saved in {folder}; "
                             f"to go on, run the same command with --resume --out {folder}\n")
        except FloatingPointError as error:
            parser.exit(1, f"{who}: error: {error}.\nThe epochs before it are saved in {folder}; a new run "
                           f"with other settings starts over from the same initial weights.\n")
        except (OSError, ValueError) as error:  # an image that cannot be read, a full disk, a damaged checkpoint
            parser.exit(1, f"{who}: error: {error}\nEvery finished epoch is saved in {folder}; once that is "
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
    ranks = distributed.world_size()
    if args.batch_size % ranks:
        raise ValueError(f"--batch-size {args.batch_size} does not split evenly over the {ranks} processes of "
                         f"mpiexec: pass a multiple of {ranks}")
    if len(set(args.optimizers)) != len(args.optimizers):
        raise ValueError(f"--optimizers names one twice: {' '.join(args.optimizers)}")


def check_data(data: Splits, batch_size: int) -> None:
    """Refuse data a classifier cannot learn from or be scored on; warn of a split too small for its
    scores to mean anything (with 2 validation images, accuracy is 0, 0.5 or 1)."""
    if len(data.train.classes) < 2:
        raise ValueError(f"a classifier needs at least two classes, the data have {len(data.train.classes)} "
                         f"({', '.join(data.train.classes)}): with one, every answer is right")
    for split, split_name in (("train", "training"), ("val", "validation"), ("test", "test")):
        if getattr(data, split) is not None and len(getattr(data, split)) == 0:
            raise ValueError(f"the {split_name} split is empty: the data set is too small for it")
    if distributed.world_size() > 1 and len(data.train) < batch_size:
        raise ValueError(f"the training split holds {len(data.train)} images, less than one batch of {batch_size}: "
                         f"the {distributed.world_size()} processes would have no whole batch to share; lower "
                         f"--batch-size")
    for split, split_name in (("val", "validation"), ("test", "test")):
        size = len(getattr(data, split)) if getattr(data, split) is not None else MIN_SCORED_IMAGES
        if size < MIN_SCORED_IMAGES:
            warnings.warn(f"the {split_name} split holds only {size} images: its accuracy moves in steps of "
                          f"{1 / size:.0%}, too coarse to pick the best epoch or compare optimizers; use more data "
                          f"(or a larger held-out fraction)", stacklevel=2)


def warn_of_a_slow_start(args: argparse.Namespace) -> None:
    """A large Swin from scratch on a CPU trains for days; say so before it starts."""
    if args.device == "cpu" and args.pretrained is None and args.model != "swin_mini":
        warnings.warn(f"{args.model} at {args.img_size} px trains from scratch on the CPU: Swin-T goes at about one "
                      f"image a second on 2 cores, hours an epoch, and learns little from scratch on a small data "
                      f"set. Pass --device gpu and --pretrained ImageNet weights, or --model swin_mini for a "
                      f"quick try", stacklevel=2)


def check_image_size(args: argparse.Namespace) -> None:
    """Refuse an --img-size the variant cannot take, naming sizes it can, without building the model
    (Swin-L takes seconds to build)."""
    if args.img_size < 1:
        raise ValueError(f"--img-size must be at least 1, got {args.img_size}")
    settings = settings_of(args.model, img_size=args.img_size)  # what swin.build would build
    window, patch, stages = settings["window_size"], settings.get("patch_size", 4), len(settings["depths"])
    reason = unusable_size_reason(args.img_size, patch, window, stages)
    if reason is not None:
        raise ValueError(f"img_size={args.img_size} does not fit {args.model} (patch_size={patch}, "
                         f"window_size={window}, {stages} stages): {reason}. Sizes that fit: "
                         f"{usable_sizes(args.img_size, patch, window, stages)}")


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


def remove_unfinished_writes(folder: Path) -> None:
    """Delete the checkpoints an earlier process of the run was writing when it was killed (kill -9,
    a power cut): minigrad.save's temporary files beside each optimizer's last.npz and best.npz, and
    nothing else. Called with the run's lock held, so that no other process is writing them now."""
    unfinished = [temporary for name in OPTIMIZERS for checkpoint in ("last.npz", "best.npz")
                  for temporary in temporary_files_of(folder / name / checkpoint)]
    for path in unfinished:
        path.unlink()
    if unfinished:
        say(f"Removed what a process killed while saving left unfinished: "
            f"{', '.join(str(path.relative_to(folder)) for path in unfinished)}")


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
