"""examples/predict.py: a saved model on one's own photos, and clear messages for bad input."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minigrad
from datasets import DataLoader, ImageFiles, SyntheticCarColours, eval_transform, normalize_pixels
from swin import swin_mini

from example_scripts import TINY, run_dvm, usage_error
import predict
from reporting import confusion_matrix
import training


def test_predict_ranks_the_classes_of_saved_photos(tmp_path, capsys):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--optimizers", "adam"])
    photos = SyntheticCarColours(5, 40, split="test")
    paths = []
    for index in range(len(photos)):
        paths.append(tmp_path / f"car {index}.png")
        photos.image(index).save(paths[-1])
    model, classes = predict.load_classifier(folder / "adam" / "best.npz", "cpu")
    ranked = predict.predict(model, classes, paths, top=len(classes))
    for guesses in ranked:
        probabilities = [probability for _, probability in guesses]
        assert sorted(probabilities, reverse=True) == probabilities
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert sorted(name for name, _ in guesses) == sorted(classes)
    # The same photos through the training code's evaluation give the same top class.
    saved = ImageFiles(paths, photos.labels, classes, eval_transform(32))
    _, confusion = training.evaluate(model, DataLoader(saved, 2), "cpu", "test", len(classes))
    top = [classes.index(guesses[0][0]) for guesses in ranked]
    np.testing.assert_array_equal(confusion, confusion_matrix(photos.labels, top, len(classes)))

    capsys.readouterr()
    predict.main([str(folder / "adam" / "best.npz"), *map(str, paths[:2]), "--top", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]}: {ranked[0][0][0]} ")
    (tmp_path / "notes.txt").write_text("not a photo")
    predict.main([str(folder / "adam" / "best.npz"), str(tmp_path)])  # a folder: the photos in it
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(path) for path in sorted(paths)]


def test_predict_reads_a_folders_photos_whatever_the_case_of_their_suffix(tmp_path):
    for name in ["IMG_2040.JPG", "b.png", "c.Jpeg", "notes.txt", "older/a.png"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    # The photos directly in the folder; not those of its subfolders.
    assert predict.image_paths([tmp_path]) == [tmp_path / "IMG_2040.JPG", tmp_path / "b.png", tmp_path / "c.Jpeg"]


def test_a_loaded_classifier_is_in_eval_mode_and_predicts_the_same_twice(tmp_path):
    model = swin_mini(img_size=32, num_classes=3)
    minigrad.save({"model": model.state_dict(), "classes": ["a", "b", "c"],
                   "architecture": {"name": "swin_mini", "img_size": 32}}, tmp_path / "best.npz")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "car.png")
    loaded, classes = predict.load_classifier(tmp_path / "best.npz", "cpu")
    assert classes == ["a", "b", "c"] and not loaded.training
    first, second = (predict.predict(loaded, classes, [tmp_path / "car.png"]) for _ in range(2))
    assert first == second


def test_predict_prints_the_top_classes_with_their_probabilities(tmp_path, capsys):
    minigrad.manual_seed(3)
    model = swin_mini(img_size=32, num_classes=4)
    classes = ["a", "b", "c", "d"]
    minigrad.save({"model": model.state_dict(), "classes": classes,
                   "architecture": {"name": "swin_mini", "img_size": 32}}, tmp_path / "best.npz")
    photo = tmp_path / "car.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    image = normalize_pixels(eval_transform(32)(Image.open(photo).convert("RGB"), np.random.default_rng(0)))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(image[None])).data[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-probabilities)
    for top, shown in (("2", 2), ("1", 1), ("9", 4)):
        predict.main([str(tmp_path / "best.npz"), str(photo), "--top", top])
        (line,) = capsys.readouterr().out.splitlines()
        path, guesses = line.split(": ")
        assert path == str(photo) and len(guesses.split(", ")) == shown
        for guess, k in zip(guesses.split(", "), order):
            name, percent = guess.split(" ")
            assert name == classes[k] and float(percent.rstrip("%")) == pytest.approx(100 * probabilities[k], abs=0.06)


def test_predict_explains_bad_input(tmp_path, capsys):
    message = usage_error(capsys, predict.main, [str(tmp_path / "none.npz"), "car.jpg"])
    assert "no checkpoint" in message
    for top in ("0", "-2"):
        message = usage_error(capsys, predict.main, [str(tmp_path / "none.npz"), "car.jpg", "--top", top])
        assert f"--top must be at least 1, got {top}" in message
    minigrad.save({"weight": np.zeros(3)}, tmp_path / "bare.npz")
    Image.new("RGB", (8, 8)).save(tmp_path / "car.jpg")
    message = usage_error(capsys, predict.main, [str(tmp_path / "bare.npz"), str(tmp_path / "car.jpg")])
    assert "not a checkpoint of examples/train_" in message
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--optimizers", "sgd"])
    message = usage_error(capsys, predict.main, [str(folder / "sgd" / "last.npz"), str(tmp_path / "no car.jpg")])
    assert f"no image or folder at {tmp_path / 'no car.jpg'}" in message
    (tmp_path / "empty").mkdir()
    message = usage_error(capsys, predict.main, [str(folder / "sgd" / "last.npz"), str(tmp_path / "empty")])
    assert f"no images (.jpg, .jpeg, .png, .bmp, .webp) in the folder {tmp_path / 'empty'}" in message


def save_classifier(path: Path) -> Path:
    minigrad.save({"model": swin_mini(img_size=32, num_classes=3).state_dict(), "classes": ["a", "b", "c"],
                   "architecture": {"name": "swin_mini", "img_size": 32}}, path)
    return path


def test_predict_tells_imagenet_weights_and_a_run_folder_from_a_checkpoint(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "car.jpg")
    for name in ("swin_tiny_patch4_window7_224.safetensors", "swin_tiny_patch4_window7_224.pth"):
        (tmp_path / name).write_bytes(b"weights")  # were called a damaged .npz archive
        message = usage_error(capsys, predict.main, [str(tmp_path / name), str(tmp_path / "car.jpg")])
        assert "not a checkpoint of examples/train_*.py" in message and "--pretrained" in message
        assert "damaged" not in message
    run = tmp_path / "run"
    for optimizer in ("adam", "radam"):
        (run / optimizer).mkdir(parents=True)
    save_classifier(run / "adam" / "best.npz").parent.joinpath("last.npz").write_bytes(b"")
    save_classifier(run / "radam" / "best.npz")
    message = usage_error(capsys, predict.main, [str(run), str(tmp_path / "car.jpg")])
    assert f"{run} is a folder; pass a checkpoint, one of {run / 'adam' / 'best.npz'}, {run / 'radam' / 'best.npz'}" \
        in message


def test_predict_classifies_a_folders_photos_and_names_the_files_it_cannot_open(tmp_path, capsys):
    checkpoint = save_classifier(tmp_path / "best.npz")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.jpg", "c.png"):
        Image.new("RGB", (40, 30), (200, 20, 20)).save(photos / name)
    (photos / "._a.jpg").write_bytes(b"\0\5\26\7Mac OS X")  # macOS's copy of a.jpg's metadata: no photo
    (photos / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (photos / "b.jpg").write_bytes(b"")
    (photos / "d.jpg").write_text("<html>404 Not Found</html>")
    with pytest.raises(SystemExit) as stop:
        predict.main([str(checkpoint), str(photos)])
    output = capsys.readouterr()
    assert stop.value.code == 1
    assert [line.split(": ")[0] for line in output.out.splitlines()] == [str(photos / "a.jpg"), str(photos / "c.png")]
    assert "error: Pillow cannot open these as images: " in output.err
    assert str(photos / "b.jpg") in output.err and str(photos / "d.jpg") in output.err and "._a" not in output.err


def test_predict_says_the_checkpoint_comes_first(tmp_path, capsys):
    checkpoint = save_classifier(tmp_path / "best.npz")
    Image.new("RGB", (40, 30)).save(tmp_path / "car.JPG")
    message = usage_error(capsys, predict.main, [str(tmp_path / "car.JPG"), str(checkpoint)])
    assert "car.JPG is a photo, not a checkpoint: the checkpoint comes first" in message
