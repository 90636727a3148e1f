"""examples/train_stanford_cars.py: a run scored on the test split, the held-out validation split, the
crops, and what the script needs."""
import argparse

import numpy as np
import pytest
from PIL import Image

from datasets import eval_transform

from example_scripts import loads_alike, read_history, usage_error
import runs
import train_stanford_cars
from test_stanford_cars import NAMES, make_cars


def run_cars(argv):
    parser = runs.make_parser("test")
    train_stanford_cars.add_data_arguments(parser)
    return runs.main(parser, train_stanford_cars.load_data, "stanford_cars", argv)


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


def test_stanford_cars_leaves_out_unreadable_images_with_one_warning_naming_them(tmp_path):
    train = [(1, 1, 40, 30, 1 + i % 3, f"{i + 1:05d}.jpg") for i in range(15)]
    make_cars(tmp_path / "cars", train=train)
    empty, cut = tmp_path / "cars" / "cars_train" / "00002.jpg", tmp_path / "cars" / "cars_test" / "00001.jpg"
    empty.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:300])
    with pytest.warns(UserWarning, match="Pillow cannot open") as caught:
        folder = run_cars(["--data", str(tmp_path / "cars"), "--model", "swin_mini", "--img-size", "32",
                           "--epochs", "1", "--batch-size", "4", "--optimizers", "adam", "--workers", "0",
                           "--val-fraction", "0.2", "--out", str(tmp_path / "run")])
    [message] = [str(w.message) for w in caught if "Pillow cannot open" in str(w.message)]
    assert "left out the 2 images" in message and str(empty) in message and str(cut) in message
    assert "Keep them where they are" in message
    assert (folder / "summary.md").is_file()
    with pytest.warns(UserWarning, match="Pillow cannot open"):
        loaded = train_stanford_cars.load_data(argparse.Namespace(data=tmp_path / "cars", img_size=16, seed=0,
                                                                  val_fraction=0.2, no_crop=False))
    assert "00002.jpg" not in loaded.train.example_names() + loaded.val.example_names()
    assert len(loaded.train) + len(loaded.val) == 14


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
