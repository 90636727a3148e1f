"""examples/train_folder.py and the class folders it reads: one class per folder, what is left out,
the stratified split into validation and test, and resuming a run whose data moved."""
import argparse
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minigrad
from datasets import ToArray, eval_transform, image_folder, stratified_split
from datasets.folder import image_problem
from swin import swin_mini

from example_scripts import TINY, loads_alike, read_history, run_dvm, run_folder, usage_error, write_class_folders
import train_folder
import training


# --------------------------------------------------------------------------------------------
# Class folders


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


def test_an_image_cut_short_is_found_and_one_with_bytes_after_its_end_is_not(tmp_path):
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    noise.save(tmp_path / "whole.jpg", quality=95)
    noise.save(tmp_path / "whole.png")
    whole_jpeg, whole_png = (tmp_path / "whole.jpg").read_bytes(), (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole_jpeg[:len(whole_jpeg) * 2 // 3])
    (tmp_path / "cut.png").write_bytes(whole_png[:len(whole_png) * 2 // 3])
    (tmp_path / "trailer.jpg").write_bytes(whole_jpeg + b"camera notes")
    assert image_problem(tmp_path / "whole.jpg") is None and image_problem(tmp_path / "whole.png") is None
    assert image_problem(tmp_path / "trailer.jpg") is None
    assert "truncated" in image_problem(tmp_path / "cut.jpg").lower()
    assert image_problem(tmp_path / "cut.png") is not None
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert image_problem(tmp_path / "empty.jpg") is not None


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


# --------------------------------------------------------------------------------------------
# The stratified split


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
# The script


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

    def recording(model, loader, device, description, num_classes):
        scored.append((description, len(loader.dataset)))
        return evaluate(model, loader, device, description, num_classes)

    monkeypatch.setattr(training, "evaluate", recording)
    folder = run_folder(["--data", str(tmp_path / "photos"), "--model", "swin_mini", "--img-size", "32",
                         "--epochs", "1", "--batch-size", "4", "--optimizers", "adam", "--workers", "0",
                         "--out", str(tmp_path / "run")])
    assert "validation accuracy" in (folder / "summary.md").read_text()
    # 12 photos: 10 to train on, one of each class held out; the final scores are on those two.
    assert scored == [("adam validation", 2), ("adam validation", 2)]
