"""Stanford Cars loader on tiny on-disk copies written in the real formats: MATLAB struct arrays
(``savemat``), JPEGs, the original and the Kaggle layouts."""
import numpy
import pytest
from PIL import Image
from scipy.io import savemat

from datasets.core import DataLoader
from datasets.stanford_cars import find_layout, has_test_labels, stanford_cars
from datasets.transforms import eval_transform

# Three classes, not 196: the loader must take the count from cars_meta.mat.
NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi TTS Coupe 2012"]
WIDTH, HEIGHT = 40, 30
# (bbox_x1, bbox_y1, bbox_x2, bbox_y2, class, fname): 1-based inclusive corners, 1-based classes.
TRAIN = [(5, 4, 24, 20, 2, "00001.jpg"), (1, 1, 40, 30, 3, "00002.jpg"), (10, 12, 11, 13, 1, "00003.jpg")]
TEST = [(2, 3, 30, 25, 3, "00001.jpg"), (7, 8, 9, 10, 3, "00002.jpg")]


def gradient() -> numpy.ndarray:
    """A HEIGHT x WIDTH RGB image whose red counts columns and green rows, so a crop shows where it came from."""
    image = numpy.full((HEIGHT, WIDTH, 3), 128, dtype=numpy.uint8)
    image[..., 0] = 6 * numpy.arange(WIDTH)[None, :]
    image[..., 1] = 8 * numpy.arange(HEIGHT)[:, None]
    return image


def write_annotations(path, rows, with_class: bool = True) -> None:
    """As MATLAB saves them: a 1xN struct array whose fields hold 1x1 numbers and a char array."""
    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else []) + ["fname"]
    annotations = numpy.empty((1, len(rows)), dtype=[(field, object) for field in fields])
    for i, row in enumerate(rows):
        numbers = row[:5] if with_class else row[:4]
        annotations[0, i] = tuple(numpy.array([[n]], dtype=numpy.uint16) for n in numbers) + (numpy.array([row[5]]),)
    savemat(path, {"annotations": annotations})


def make_cars(root, train=TRAIN, test=TEST, kaggle: bool = False, test_labels: str | None = "root", names=NAMES):
    """A copy of Stanford Cars under ``root``; ``test_labels`` is where the labels go: "root", "devkit" or None."""
    train_dir, test_dir = (root / "cars_train", root / "cars_test")
    devkit = root / "car_devkit" / "devkit" if kaggle else root / "devkit"
    if kaggle:
        train_dir, test_dir = train_dir / "cars_train", test_dir / "cars_test"
    for folder, rows in ((train_dir, train), (test_dir, test)):
        folder.mkdir(parents=True)
        for row in rows:
            Image.fromarray(gradient()).save(folder / row[5], quality=100, subsampling=0)
    devkit.mkdir(parents=True)
    cell = numpy.empty((1, len(names)), dtype=object)  # a 1xK cell array of strings
    cell[0, :] = names
    savemat(devkit / "cars_meta.mat", {"class_names": cell})
    write_annotations(devkit / "cars_train_annos.mat", train)
    write_annotations(devkit / "cars_test_annos.mat", test, with_class=False)
    if test_labels is not None:
        write_annotations((root if test_labels == "root" else devkit) / "cars_test_annos_withlabels.mat", test)
    return root


def pixels(image: Image.Image, rng: numpy.random.Generator) -> numpy.ndarray:
    """A transform that keeps the raw (H, W, 3) pixels, to see exactly what was cropped."""
    return numpy.asarray(image)


def assert_matches_boxes(dataset, rows) -> None:
    assert len(dataset) == len(rows)
    for index, (x1, y1, x2, y2, label, _) in enumerate(rows):
        image, loaded_label = dataset[index]
        assert loaded_label == label - 1
        assert image.shape == (y2 - y1 + 1, x2 - x1 + 1, 3)
        # A crop one pixel off differs by 6 (red) or 8 (green) everywhere; JPEG at quality 100 by 3 at most.
        error = numpy.abs(image.astype(int) - gradient()[y1 - 1:y2, x1 - 1:x2].astype(int))
        assert error.max() <= 4


@pytest.mark.parametrize("kaggle", [False, True])
def test_train_split_labels_names_and_boxes(tmp_path, kaggle):
    dataset = stanford_cars(make_cars(tmp_path, kaggle=kaggle), "train", transform=pixels)
    assert dataset.classes == NAMES and all(type(name) is str for name in dataset.classes)
    assert dataset.num_classes == 3
    assert dataset.labels.tolist() == [row[4] - 1 for row in TRAIN]
    assert_matches_boxes(dataset, TRAIN)


def test_class_k_is_the_kth_name_in_cars_meta_in_its_order(tmp_path):
    names = ["Audi TTS Coupe 2012", "AM General Hummer SUV 2000", "Acura RL Sedan 2012"]  # not sorted
    dataset = stanford_cars(make_cars(tmp_path, names=names), transform=pixels)
    assert dataset.classes == names
    assert [dataset.classes[label] for label in dataset.labels] == [names[row[4] - 1] for row in TRAIN]


def test_find_layout_resolves_both_layouts(tmp_path):
    original, kaggle = make_cars(tmp_path / "original"), make_cars(tmp_path / "kaggle", kaggle=True)
    assert find_layout(original) == (original / "cars_train", original / "cars_test", original / "devkit")
    assert find_layout(kaggle) == (kaggle / "cars_train" / "cars_train", kaggle / "cars_test" / "cars_test",
                                   kaggle / "car_devkit" / "devkit")


def test_single_annotation_survives_the_squeeze(tmp_path):
    dataset = stanford_cars(make_cars(tmp_path, train=TRAIN[:1]), transform=pixels)
    assert dataset.labels.tolist() == [TRAIN[0][4] - 1]
    assert_matches_boxes(dataset, TRAIN[:1])


def test_without_crop_keeps_the_whole_image(tmp_path):
    dataset = stanford_cars(make_cars(tmp_path), transform=pixels, crop_to_box=False)
    image, _ = dataset[0]
    assert image.shape == (HEIGHT, WIDTH, 3)
    assert numpy.abs(image.astype(int) - gradient().astype(int)).max() <= 4


@pytest.mark.parametrize("place", ["root", "devkit"])
@pytest.mark.parametrize("kaggle", [False, True])
def test_test_split_reads_labels_beside_folders_or_in_devkit(tmp_path, place, kaggle):
    root = make_cars(tmp_path, kaggle=kaggle, test_labels=place)
    assert has_test_labels(root)
    dataset = stanford_cars(root, "test", transform=pixels)
    assert dataset.labels.tolist() == [row[4] - 1 for row in TEST]
    assert_matches_boxes(dataset, TEST)


def test_missing_test_labels_says_what_and_where(tmp_path):
    root = make_cars(tmp_path, kaggle=True, test_labels=None)  # cars_test_annos.mat alone has no labels
    assert not has_test_labels(root)
    with pytest.raises(FileNotFoundError) as error:
        stanford_cars(root, "test", transform=pixels)
    message = str(error.value)
    assert "cars_test_annos_withlabels.mat" in message
    assert str(root / "cars_test_annos_withlabels.mat") in message
    assert "train_stanford_cars.py" in message


@pytest.mark.parametrize("folder", ["cars_train", "cars_test", "devkit"])
def test_missing_folder_names_it_and_says_where_to_get_the_data(tmp_path, folder):
    root = make_cars(tmp_path)
    (root / folder).rename(root / "elsewhere")
    with pytest.raises(FileNotFoundError) as error:
        stanford_cars(root, transform=pixels)
    message = str(error.value)
    assert str(root / folder) in message
    assert "kaggle.com/datasets/jessicali9530/stanford-cars-dataset" in message
    assert "ai.stanford.edu" in message
    assert "cars_test_annos_withlabels.mat" in message and "beside the folders" in message


def test_missing_image_is_named(tmp_path):
    root = make_cars(tmp_path)
    (root / "cars_train" / "00002.jpg").unlink()
    (root / "cars_train" / "00003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"2 of the 3 images .* the first .*00002\.jpg"):
        stanford_cars(root, transform=pixels)


@pytest.mark.parametrize("bad_class, found", [(0, "0 to 3"), (4, "2 to 4")])  # the classes: 1 to 3
def test_labels_outside_the_classes_are_refused(tmp_path, bad_class, found):
    train = TRAIN[:2] + [TRAIN[2][:4] + (bad_class,) + TRAIN[2][5:]]  # classes 2, 3 and the bad one
    with pytest.raises(ValueError, match=f"labels must run from 1 to 3 .*found {found}"):
        stanford_cars(make_cars(tmp_path, train=train), transform=pixels)


@pytest.mark.parametrize("file", ["cars_meta.mat", "cars_train_annos.mat"])
@pytest.mark.parametrize("damage", ["cut short", "empty", "a web page"])
def test_a_damaged_devkit_file_is_named_with_what_to_do(tmp_path, file, damage):
    """The original download page is gone: a link to it saves an error page under the file's name."""
    root = make_cars(tmp_path)
    path = root / "devkit" / file
    whole = path.read_bytes()
    path.write_bytes({"cut short": whole[:len(whole) // 2], "empty": b"",
                      "a web page": b"<html><body><h1>404 Not Found</h1></body></html>"}[damage])
    with pytest.raises(ValueError, match=f"{file} cannot be read as a MATLAB file .* Download it again"):
        stanford_cars(root, transform=pixels)


def test_annotations_without_labels_are_named(tmp_path):
    """cars_test_annos.mat, which has no labels, put where the labelled file belongs."""
    root = make_cars(tmp_path, test_labels=None)
    (root / "devkit" / "cars_test_annos.mat").rename(root / "cars_test_annos_withlabels.mat")
    with pytest.raises(ValueError, match="cars_test_annos_withlabels.mat: the annotations lack class"):
        stanford_cars(root, "test", transform=pixels)


def test_invalid_split(tmp_path):
    with pytest.raises(ValueError, match="split"):
        stanford_cars(make_cars(tmp_path), "val", transform=pixels)


def test_dataloader_batches_with_eval_transform(tmp_path):
    dataset = stanford_cars(make_cars(tmp_path), transform=eval_transform(16))
    batches = list(DataLoader(dataset, batch_size=2))
    assert [images.shape for images, _ in batches] == [(2, 3, 16, 16), (1, 3, 16, 16)]
    assert all(images.dtype == numpy.uint8 for images, _ in batches)
    assert numpy.concatenate([labels for _, labels in batches]).tolist() == [row[4] - 1 for row in TRAIN]
