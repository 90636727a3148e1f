"""Classify your own photos with a model the training scripts saved.

    python examples/predict.py runs/dvm/radam/best.npz my_car.jpg other_car.png --top 3
    python examples/predict.py runs/dvm/radam/best.npz my_photos/          # every image in the folder

The checkpoint carries the variant, the image size and the class names, so nothing else is
needed. Each photo is resized and centre-cropped as the validation images were. Files that
Pillow cannot open (an empty file, a web page saved as .jpg) are named at the end, and the exit
status is 1; the other photos are classified all the same.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy

import minigrad
from cli import HelpFormatter, add_device_argument
from datasets import DataLoader, ImageFiles, PrefetchLoader, eval_transform
from datasets.folder import IMAGE_SUFFIXES, image_problem, is_image_name, is_system_file
from minigrad import backend
from minigrad import functional as F
from swin import SwinTransformer, build


def load_classifier(checkpoint: Path, device: str) -> tuple[SwinTransformer, list[str]]:
    """The model saved in ``checkpoint`` (``last.npz`` or ``best.npz`` of a run), in eval mode."""
    if checkpoint.is_dir():  # the run's folder, or an optimizer's: name the checkpoints in it
        found = sorted(checkpoint.glob("best.npz")) + sorted(checkpoint.glob("*/best.npz"))
        raise IsADirectoryError(f"{checkpoint} is a folder; pass a checkpoint"
                                + (f", one of {', '.join(map(str, found))}" if found else ": a run's "
                                   "<optimizer>/best.npz or last.npz"))
    if not checkpoint.is_file():
        raise FileNotFoundError(f"no checkpoint at {checkpoint}: pass a run's <optimizer>/best.npz or last.npz")
    if is_image_name(checkpoint.name):
        raise ValueError(f"{checkpoint} is a photo, not a checkpoint: the checkpoint comes first, "
                         f"as in predict.py runs/dvm/radam/best.npz {checkpoint.name}")
    if checkpoint.suffix.lower() in (".safetensors", ".pth", ".pt", ".bin"):  # else called a damaged .npz
        raise ValueError(f"{checkpoint} is not a checkpoint of examples/train_*.py (an .npz file): ImageNet "
                         f"weights know nothing of your classes; train from them first, with --pretrained")
    state = minigrad.load(checkpoint)
    if not isinstance(state, dict) or not {"architecture", "classes", "model"} <= set(state):
        raise ValueError(f"{checkpoint} is not a checkpoint of examples/train_*.py (it lacks the architecture "
                         f"and class names); to use bare Swin weights, see swin.load_pretrained")
    architecture, classes = state["architecture"], state["classes"]
    model = build(architecture["name"], num_classes=len(classes), img_size=architecture["img_size"])
    model.load_state_dict(state["model"])
    return model.to(device).eval(), classes


def image_paths(arguments: Sequence[Path]) -> list[Path]:
    """The photos named on the command line, a folder standing for the images directly in it
    (not the files the operating system leaves there, such as macOS's ._ copies)."""
    paths = []
    for argument in arguments:
        if argument.is_dir():
            found = sorted(path for path in argument.iterdir()
                           if is_image_name(path.name) and not is_system_file(path.name))
            if not found:
                raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder {argument}")
            paths += found
        elif argument.is_file():
            paths.append(argument)
        else:
            raise FileNotFoundError(f"no image or folder at {argument}")
    return paths


def predict(model: SwinTransformer, classes: Sequence[str], paths: Sequence[Path], top: int = 3,
            device: str = "cpu") -> list[list[tuple[str, float]]]:
    """For each photo, the ``top`` most probable classes with their probabilities, most probable first."""
    photos = ImageFiles(paths, [0] * len(paths), classes, eval_transform(model.img_size))
    results = []
    with minigrad.no_grad():
        for images, _ in PrefetchLoader(DataLoader(photos, batch_size=32), device):
            logits = model(minigrad.tensor(images))
            probabilities = backend.asnumpy(F.softmax(logits, axis=-1).data)
            ranked = numpy.argsort(-probabilities, axis=1, kind="stable")[:, :top]
            results += [[(classes[k], float(row[k])) for k in order] for row, order in zip(probabilities, ranked)]
    return results


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a run's <optimizer>/best.npz or last.npz")
    parser.add_argument("images", type=Path, nargs="+", help="photos to classify, or folders of them")
    parser.add_argument("--top", type=int, default=3, help="how many classes to show per photo")
    add_device_argument(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser()
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be at least 1, got {args.top}")
    try:
        device = backend.normalize_device(args.device)
        model, classes = load_classifier(args.checkpoint, device)
        photos = image_paths(args.images)
        problems = [image_problem(path) for path in photos]
        paths = [path for path, problem in zip(photos, problems) if problem is None]
        results = predict(model, classes, paths, args.top, device) if paths else []
    except (OSError, ValueError, RuntimeError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for path, guesses in zip(paths, results):
        print(f"{path}: " + ", ".join(f"{name} {probability:.1%}" for name, probability in guesses))
    unreadable = [f"{path} ({problem})" for path, problem in zip(photos, problems) if problem is not None]
    if unreadable:
        parser.exit(1, f"{parser.prog}: error: Pillow cannot open these as images: {'; '.join(unreadable)}\n")


if __name__ == "__main__":
    main()
