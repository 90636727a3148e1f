"""examples/train_dvm.py: the synthetic set's splits, DVM-Car's options reaching the loader, and a run on
DVM-Car's own layout."""
import argparse
import json
import re

import numpy as np

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
