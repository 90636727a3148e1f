"""DVM-Car colours on tiny copies of the real folder layouts, written to a temporary folder."""
import functools
import warnings
from pathlib import Path

import numpy
import pytest
from PIL import Image

from datasets.core import DataLoader
from datasets.dvm import (advert_split, dvm_colours, find_image_folder, names_in_viewpoints, parse_image_name,
                          scan_images, top_colours)
from datasets.transforms import ToArray, eval_transform, train_transform

PAINT = {"Black": (15, 15, 15), "White": (240, 240, 240), "Blue": (20, 40, 200), "Red": (200, 20, 20),
         "Green": (20, 160, 40), "Unlisted": (128, 0, 128), "Multicolour": (0, 128, 128), "": (128, 128, 0)}
# Adverts per colour: Blue and Red tie, and the left-out values are the most frequent of all.
ADVERTS = {"Black": 5, "White": 4, "Blue": 3, "Red": 3, "Green": 1, "Unlisted": 6, "Multicolour": 6, "": 6}
MODELS = [("Land Rover", "Range Rover Sport", "57_9"), ("Mercedes-Benz", "E-Class", "59_31"),
          ("Rolls-Royce", "Silver Shadow", "83_2")]
PHOTOS = 2


def file_name(maker, genmodel, year, colour, genmodel_id, adv_seq, image):
    return "$$".join([maker, genmodel, str(year), colour, genmodel_id, str(adv_seq), f"image_{image}.jpg"])


def write_tree(folder: Path, adverts=ADVERTS, fronts=False, first_seq=0) -> None:
    """The adverts as JPEGs of their paint, in the layout of resized_DVM (or confirmed_fronts)."""
    seq = first_seq
    for colour, count in adverts.items():
        for _ in range(count):
            maker, genmodel, genmodel_id = MODELS[seq % len(MODELS)]
            year = 2010 + seq % 3
            for image in range(PHOTOS):
                name = file_name(maker, genmodel, year, colour, genmodel_id, seq, image)
                subfolder = Path(maker, str(year)) if fronts else Path(maker, genmodel, str(year), colour)
                path = folder / subfolder / name
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (20, 20), PAINT[colour]).save(path, quality=95)
            seq += 1


def test_parse_image_name_splits_on_dollars_only():
    name = parse_image_name("Land Rover$$Range Rover Sport$$2014$$Grey$$57_9$$12$$image_3.jpg")
    assert (name.maker, name.genmodel, name.year, name.colour) == ("Land Rover", "Range Rover Sport", "2014", "Grey")
    assert (name.genmodel_id, name.adv_seq, name.image) == ("57_9", "12", "image_3.jpg")
    assert name.advert == "57_9$$12"
    assert parse_image_name("Mercedes-Benz$$E-Class$$2000$$$$59_3$$1$$image_0.jpg").colour == ""


@pytest.mark.parametrize("name", ["image_0.jpg", "Bentley$$Arnage$$2000$$Silver$$10_1$$image_0.jpg",
                                  "Bentley$$Arnage$$2000$$Silver$$10_1$$1$$x$$image_0.jpg"])
def test_parse_image_name_rejects_other_names(name):
    with pytest.raises(ValueError, match=r"seven \$\$-joined fields.*Bentley\$\$Arnage"):
        parse_image_name(name)


def test_top_colours_ranks_by_count_then_name_and_leaves_out_non_colours():
    colours = ["Red"] * 2 + ["Blue"] * 2 + ["Green", "Black"] + ["Unlisted", "Multicolour", ""] * 3
    assert top_colours(colours, k=3) == ["Blue", "Red", "Black"]
    assert top_colours(reversed(colours), k=4) == ["Blue", "Red", "Black", "Green"]


def test_top_colours_names_the_counts_when_k_is_too_large():
    with pytest.raises(ValueError, match="top 3 colours.*2 usable.*Red: 2, Blue: 1"):
        top_colours(["Red", "Red", "Blue", "Unlisted"], k=3)


def test_top_colours_refuses_k_below_one():
    with pytest.raises(ValueError, match="top 0 colours"):
        top_colours(["Red", "Blue"], k=0)


def test_advert_split_respects_the_fractions_and_the_seed():
    adverts = [f"{model}_1$${seq}" for model in range(10) for seq in range(50)]
    splits = [advert_split(advert, 0.2, 0.1, seed=0) for advert in adverts]
    for split, fraction in [("train", 0.7), ("val", 0.2), ("test", 0.1)]:
        assert abs(splits.count(split) / len(adverts) - fraction) < 0.06
    assert splits != [advert_split(advert, 0.2, 0.1, seed=1) for advert in adverts]


@pytest.mark.parametrize("folder", ["resized_DVM", "resized_DVM_clean"])
@pytest.mark.parametrize("pass_parent", [True, False])
def test_find_image_folder_accepts_the_parent_or_the_folder(tmp_path, folder, pass_parent):
    (tmp_path / folder).mkdir()
    root = tmp_path if pass_parent else tmp_path / folder
    assert find_image_folder(root) == tmp_path / folder


def test_a_missing_folder_says_what_was_expected_and_where_to_get_it(tmp_path):
    (tmp_path / "resized_DVM").mkdir()  # not what "fronts" asks for
    with pytest.raises(FileNotFoundError) as error:
        find_image_folder(tmp_path, images="fronts")
    message = str(error.value)
    for needed in ["confirmed_fronts", "<Maker>/<Year>", "19586296", "deepvisualmarketing", "--data", "synthetic"]:
        assert needed in message


def test_scan_skips_unparsable_files_with_one_warning(tmp_path):
    write_tree(tmp_path, {"Black": 2})
    maker_folder = tmp_path / "Land Rover"
    for name in ["Thumbs.jpg", "cover.PNG"]:
        Image.new("RGB", (4, 4)).save(maker_folder / name)
    (maker_folder / "notes.txt").write_text("not an image")
    upper = file_name("Rolls-Royce", "Silver Shadow", 2011, "Black", "83_2", 99, 0).replace(".jpg", ".JPG")
    Image.new("RGB", (4, 4)).save(maker_folder / upper, format="JPEG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = scan_images(tmp_path)
    assert len(caught) == 1 and "skipped 2 " in str(caught[0].message) and "Thumbs.jpg" in str(caught[0].message)
    assert len(found) == 2 * PHOTOS + 1 and str(maker_folder / upper) in [photo.path for photo in found]


def test_scan_passes_over_what_a_mac_leaves_beside_the_photos_without_a_word(tmp_path):
    write_tree(tmp_path / "resized_DVM", {"Black": 2})
    photos = sorted((tmp_path / "resized_DVM").rglob("*.jpg"))
    for photo in photos:  # AppleDouble files: metadata, named as the photo behind "._"
        (photo.parent / f"._{photo.name}").write_bytes(b"\0\5\26\7Mac OS X")
        (tmp_path / "resized_DVM" / "__MACOSX" / f"._{photo.name}").parent.mkdir(exist_ok=True)
        (tmp_path / "resized_DVM" / "__MACOSX" / f"._{photo.name}").write_bytes(b"\0\5\26\7Mac OS X")
    (photos[0].parent / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = scan_images(tmp_path / "resized_DVM")
    assert [photo.path for photo in found] == [str(photo) for photo in photos]


def test_a_tree_without_images_is_an_error(tmp_path):
    (tmp_path / "resized_DVM" / "Bentley").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no DVM-Car images"):
        dvm_colours(tmp_path, ToArray(), ToArray())


@pytest.mark.parametrize("val_fraction,test_fraction", [(-0.1, 0.1), (1.0, 0.0), (0.1, 1.0), (0.5, 0.5)])
def test_bad_fractions_fail_before_the_scan(tmp_path, val_fraction, test_fraction):
    with pytest.raises(ValueError, match="val_fraction and test_fraction"):
        dvm_colours(tmp_path / "missing", ToArray(), ToArray(), val_fraction=val_fraction,
                    test_fraction=test_fraction)


def adverts_of(dataset):
    return {parse_image_name(Path(path).name).advert for path in dataset.paths}


@pytest.mark.parametrize("folder", ["resized_DVM", "resized_DVM_clean"])
def test_splits_keep_each_advert_whole_and_label_the_top_colours(tmp_path, folder):
    write_tree(tmp_path / folder)
    train_tf, eval_tf = ToArray(), ToArray()
    splits = dvm_colours(tmp_path, train_tf, eval_tf, num_colours=3, val_fraction=0.4, test_fraction=0.2)
    assert [split.classes for split in splits] == [["Black", "White", "Blue"]] * 3
    assert [split.transform for split in splits] == [train_tf, eval_tf, eval_tf]
    assert sum(len(split) for split in splits) == PHOTOS * sum(ADVERTS[colour] for colour in ("Black", "White", "Blue"))
    assert all(len(split) > 0 for split in splits)
    train, val, test = map(adverts_of, splits)
    assert not (train & val or train & test or val & test)
    for name, adverts in zip(["train", "val", "test"], (train, val, test)):
        assert {advert_split(advert, 0.4, 0.2) for advert in adverts} == {name}
    for split in splits:
        for path, label in zip(split.paths, split.labels):
            assert parse_image_name(Path(path).name).colour == split.classes[label]


def test_load_returns_the_pixels_of_the_labelled_file(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    train, _, _ = dvm_colours(tmp_path / "resized_DVM", ToArray(), ToArray(), num_colours=4)
    for index in range(len(train)):
        image, label = train.load(index, numpy.random.default_rng(0))
        assert image.shape == (3, 20, 20) and image.dtype == numpy.float32
        expected = numpy.array(PAINT[train.classes[label]], dtype=numpy.float32) / 255
        assert numpy.allclose(image.mean(axis=(1, 2)), expected, atol=0.03)


def test_fronts_folder_and_eval_transform(tmp_path):
    write_tree(tmp_path / "confirmed_fronts_clean", fronts=True)
    _, val, _ = dvm_colours(tmp_path, ToArray(), eval_transform(16), num_colours=2, images="fronts",
                            val_fraction=0.5, test_fraction=0.2)
    assert val.classes == ["Black", "White"] and len(val) > 0
    image, label = val.load(0, numpy.random.default_rng(0))
    assert image.shape == (3, 16, 16) and image.dtype == numpy.uint8
    assert label == val.labels[0] and Path(val.paths[0]).parents[2].name == "confirmed_fronts_clean"


def test_adding_adverts_moves_no_existing_advert(tmp_path):
    folder = tmp_path / "resized_DVM"
    write_tree(folder)
    before = [adverts_of(split) for split in dvm_colours(folder, ToArray(), ToArray(), num_colours=3,
                                                          val_fraction=0.3, test_fraction=0.3)]
    write_tree(folder, {"Black": 10, "Blue": 10}, first_seq=100)
    after = [adverts_of(split) for split in dvm_colours(folder, ToArray(), ToArray(), num_colours=3,
                                                         val_fraction=0.3, test_fraction=0.3)]
    assert all(old <= new for old, new in zip(before, after))
    assert sum(map(len, after)) > sum(map(len, before))


def test_max_per_class_caps_each_class_in_each_split_deterministically(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    load = functools.partial(dvm_colours, tmp_path, ToArray(), ToArray(), num_colours=3, val_fraction=0.3,
                             test_fraction=0.3, seed=3)
    full, capped = load(), load(max_per_class=2)
    for whole, part in zip(full, capped):
        assert (part.class_counts() == numpy.minimum(whole.class_counts(), 2)).all()
        assert set(part.paths) <= set(whole.paths)
    assert [split.paths for split in capped] == [split.paths for split in load(max_per_class=2)]
    with pytest.raises(ValueError, match="max_per_class"):
        dvm_colours(tmp_path, ToArray(), ToArray(), max_per_class=0)


def test_max_per_class_keeps_the_scan_order_and_picks_by_file_name_and_seed(tmp_path):
    write_tree(tmp_path / "first" / "resized_DVM")
    load = functools.partial(dvm_colours, transform_train=ToArray(), transform_eval=ToArray(), num_colours=3,
                             val_fraction=0.0, test_fraction=0.0)
    full, _, _ = load(tmp_path / "first")
    capped, _, _ = load(tmp_path / "first", max_per_class=3)
    position = {path: index for index, path in enumerate(full.paths)}
    assert [position[path] for path in capped.paths] == sorted(position[path] for path in capped.paths)
    # The pick depends on the file names, not on where the folder is: a moved copy keeps the same photos.
    (tmp_path / "first").rename(tmp_path / "moved")
    moved, _, _ = load(tmp_path / "moved", max_per_class=3)
    assert [Path(path).name for path in moved.paths] == [Path(path).name for path in capped.paths]
    picks = {tuple(load(tmp_path / "moved", max_per_class=3, seed=seed)[0].paths) for seed in range(4)}
    assert len(picks) > 1  # and on the seed


def test_a_data_loader_batches_the_train_split(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    train, _, _ = dvm_colours(tmp_path, train_transform(16), eval_transform(16), num_colours=4, val_fraction=0.2,
                              test_fraction=0.2)
    loader = DataLoader(train, batch_size=4, shuffle=True, num_workers=2)
    seen = []
    for (images, labels), indices in zip(loader, loader.batch_indices()):
        assert images.shape == (len(indices), 3, 16, 16) and images.dtype == numpy.uint8
        assert (labels == train.labels[indices]).all()
        seen.extend(indices)
    assert sorted(seen) == list(range(len(train)))


# ---- viewpoints from Image_table.csv


def write_image_table(path: Path, rows):
    """An Image_table.csv as DVM-Car writes it: a byte-order mark, spaces in the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8-sig", newline="") as file:
        file.write(" Genmodel_ID, Image_ID, Image_name, Predicted_viewpoint, Quality_check\n")
        for name, viewpoint in rows:
            fields = parse_image_name(name)
            file.write(f'{fields.genmodel_id},{fields.advert}$${fields.image[6:-4]},"{name}",{viewpoint},\n')


def viewpoint_of(name: str) -> str:
    """Photo 0 of each advert faces the front (the table says 0 or 360), photo 1 the rear."""
    fields = parse_image_name(name)
    return "180" if fields.image == "image_1.jpg" else "360" if int(fields.adv_seq) % 2 else "0"


@pytest.mark.parametrize("tables", ["tables", "tables/tables", "."])
def test_viewpoints_keep_the_photos_the_image_table_puts_there(tmp_path, tables):
    write_tree(tmp_path / "resized_DVM")
    names = sorted(path.name for path in tmp_path.rglob("*.jpg"))
    write_image_table(tmp_path / tables / "Image_table.csv", [(name, viewpoint_of(name)) for name in names])
    fronts = dvm_colours(tmp_path, ToArray(), ToArray(), num_colours=3, viewpoints=[0])
    rears = dvm_colours(tmp_path, ToArray(), ToArray(), num_colours=3, viewpoints=[180])
    every = dvm_colours(tmp_path, ToArray(), ToArray(), num_colours=3, viewpoints=[0, 180])
    adverts = sum(ADVERTS[colour] for colour in ("Black", "White", "Blue"))
    both = {"image_0.jpg", "image_1.jpg"}
    for splits, images in ((fronts, {"image_0.jpg"}), (rears, {"image_1.jpg"}), (every, both)):
        paths = [path for split in splits for path in split.paths]
        assert len(paths) == adverts * len(images)
        assert {parse_image_name(Path(path).name).image for path in paths} == images
    assert [len(split) for split in every] == [len(split) for split in dvm_colours(tmp_path, ToArray(), ToArray(),
                                                                                     num_colours=3)]


def test_viewpoints_match_files_whose_apostrophes_the_kaggle_mirror_removed(tmp_path):
    write_tree(tmp_path / "resized_DVM_clean", adverts={"Black": 2, "White": 1})
    names = sorted(path.name for path in tmp_path.rglob("*.jpg"))
    assert names[0].startswith("Land Rover$$Range Rover Sport$$")
    rows = [(names[0].replace("Range Rover", "Range Rover'"), "45")] + [(name, "90") for name in names[1:]]
    write_image_table(tmp_path / "tables" / "Image_table.csv", rows)
    train, val, test = dvm_colours(tmp_path / "resized_DVM_clean", ToArray(), ToArray(), num_colours=1,
                                   viewpoints=[45], val_fraction=0.0, test_fraction=0.0)
    assert [Path(path).name for path in train.paths] == [names[0]] and len(val) == len(test) == 0


def test_viewpoint_360_is_the_front(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    names = sorted(path.name for path in tmp_path.rglob("*.jpg"))
    write_image_table(tmp_path / "Image_table.csv", [(name, viewpoint_of(name)) for name in names])
    fronts = {name for name in names if viewpoint_of(name) in ("0", "360")}
    assert names_in_viewpoints(tmp_path / "Image_table.csv", [360]) == fronts
    as_360, as_0 = (dvm_colours(tmp_path, ToArray(), ToArray(), num_colours=3, viewpoints=[angle]) for angle in (360, 0))
    assert [split.paths for split in as_360] == [split.paths for split in as_0]


def test_names_in_viewpoints_skips_rows_without_a_viewpoint(tmp_path):
    table = tmp_path / "Image_table.csv"
    table.write_text("Image_name,Predicted_viewpoint\nA$$b$$2000$$Red$$1_1$$1$$image_0.jpg,\n"
                     "A$$b$$2000$$Red$$1_1$$1$$image_1.jpg, 0 \n", encoding="utf-8")
    assert names_in_viewpoints(table, [0]) == {"A$$b$$2000$$Red$$1_1$$1$$image_1.jpg"}


def test_names_in_viewpoints_reads_rows_spaced_as_the_header(tmp_path):
    # Fields after ", " as in DVM-Car's header: the names come with a leading space, which is not part of the file's.
    table = tmp_path / "Image_table.csv"
    table.write_text(" Image_name, Predicted_viewpoint\n Land Rover$$Defender$$2000$$Red$$1_1$$1$$image_0.jpg, 0\n"
                     " Land Rover$$Defender$$2000$$Red$$1_1$$1$$image_1.jpg, 90\n", encoding="utf-8")
    assert names_in_viewpoints(table, [0]) == {"Land Rover$$Defender$$2000$$Red$$1_1$$1$$image_0.jpg"}


def test_a_table_without_the_columns_says_which_are_missing(tmp_path):
    table = tmp_path / "Image_table.csv"
    table.write_text("Image_ID,Viewpoint\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no column Image_name, Predicted_viewpoint"):
        names_in_viewpoints(table, [0])


def test_viewpoints_without_the_table_say_where_it_was_looked_for(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    with pytest.raises(FileNotFoundError) as error:
        dvm_colours(tmp_path / "resized_DVM", ToArray(), ToArray(), viewpoints=[0])
    message = str(error.value)
    assert str(tmp_path / "tables" / "tables" / "Image_table.csv") in message and "figshare" in message


@pytest.mark.parametrize("viewpoints", [[30], [0, 400], []])
def test_viewpoints_must_be_the_tables_angles(tmp_path, viewpoints):
    with pytest.raises(ValueError, match="viewpoints must be some of 0, 45, 90, 135, 180, 225, 270, 315"):
        dvm_colours(tmp_path / "nothing here", ToArray(), ToArray(), viewpoints=viewpoints)


def test_viewpoints_that_keep_no_photo_are_an_error(tmp_path):
    write_tree(tmp_path / "resized_DVM")
    names = sorted(path.name for path in tmp_path.rglob("*.jpg"))
    write_image_table(tmp_path / "Image_table.csv", [(name, "90") for name in names])
    with pytest.raises(ValueError, match="none of the photos .* has a viewpoint of 0, 45"):
        dvm_colours(tmp_path, ToArray(), ToArray(), viewpoints=[0, 45])
