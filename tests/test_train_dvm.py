"""examples/train_dvm.py: the synthetic set's splits, DVM-Car's options reaching the loader, and a run on
DVM-Car's own layout."""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest

import minigrad

from example_scripts import loads_alike, run_dvm, usage_error
import train_dvm
from test_dvm import viewpoint_of, write_image_table, write_tree


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


def test_a_missing_dvm_folder_says_where_to_get_the_data(tmp_path, capsys):
    message = usage_error(capsys, run_dvm, ["--data", str(tmp_path / "DVM")])
    assert "resized_DVM" in message and "deepvisualmarketing" in message


def damage(paths) -> tuple:
    """Make the first of ``paths`` a 0-byte file and cut the second short, as a copy that stopped would."""
    empty, cut = paths[0], paths[1]
    empty.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:len(cut.read_bytes()) // 2])
    return empty, cut


def test_a_dvm_tree_with_an_empty_and_a_truncated_jpeg_trains_to_the_end_with_one_warning_naming_both(tmp_path):
    write_tree(tmp_path / "DVM" / "resized_DVM", adverts={"Black": 12, "White": 12})
    photos = sorted((tmp_path / "DVM").rglob("*.jpg"))
    empty, cut = damage([photos[0], photos[-1]])
    argv = ["--data", str(tmp_path / "DVM"), "--colours", "2", "--model", "swin_mini", "--img-size", "32",
            "--epochs", "2", "--optimizers", "sgd", "--workers", "0", "--batch-size", "8"]
    with pytest.warns(UserWarning, match="left out the 2 images Pillow cannot open") as caught:
        folder = run_dvm(argv + ["--out", str(tmp_path / "run")])
    [warning] = [str(w.message) for w in caught if "Pillow cannot open" in str(w.message)]
    assert str(empty) in warning and str(cut) in warning and "deleting them leaves a run's splits as they are" in warning
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "last.npz")["history"]] == [1, 2]
    # Deleting them later leaves the splits as they were: --resume goes on.
    empty.unlink()
    cut.unlink()
    run_dvm(["--resume", "--out", str(folder), "--epochs", "3"])
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "last.npz")["history"]] == [1, 2, 3]


def test_a_capped_dvm_split_stays_the_same_when_an_unreadable_image_is_deleted(tmp_path):
    write_tree(tmp_path / "DVM" / "resized_DVM", adverts={"Black": 30, "White": 20})
    settings = argparse.Namespace(data=tmp_path / "DVM", img_size=32, seed=0, colours=2, images="all",
                                  max_per_class=3, viewpoints=None)
    before = train_dvm.load_data(settings)
    damage([Path(before.train.paths[0]), Path(before.val.paths[0])])
    with pytest.warns(UserWarning, match="left out the 2 images"):
        damaged = train_dvm.load_data(settings)
    assert all(np.bincount(split.labels, minlength=2).max() <= 3 for split in damaged)
    assert before.train.paths[0] not in damaged.train.paths and len(damaged.train) == len(before.train)
    Path(before.train.paths[0]).unlink()
    Path(before.val.paths[0]).unlink()
    after = train_dvm.load_data(settings)
    assert [split.example_names() for split in after] == [split.example_names() for split in damaged]
