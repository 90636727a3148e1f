"""The training loop (examples/training.py): a whole run end to end on tiny data, resuming that
repeats an uninterrupted run bit for bit, the schedule, an epoch's means, evaluation, pretrained
weights, a loss that stops being finite, and the host-device traffic of an epoch on the stand-in GPU."""
import argparse
import pickle
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import minigrad
import optim
from datasets import DataLoader, PrefetchLoader, SyntheticCarColours, eval_transform, train_transform
from minigrad import backend
from minigrad.nn import Parameter
from minigrad.testing import fake_gpu
from swin import swin_mini

from example_scripts import TINY, read_history, run_dvm, usage_error
from reporting import confusion_matrix
import runs
import train_dvm
import training


# --------------------------------------------------------------------------------------------
# A whole run


def test_a_run_on_the_synthetic_set_writes_every_report(tmp_path, capsys, monkeypatch):
    titles = []
    monkeypatch.setattr(training, "plot_confusion", lambda confusion, classes, path, title: (titles.append(title),
                                                                                           path.write_bytes(b"png")))
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run")])
    for name in ("config.json", "history.csv", "curves.png", "confusion_adam.png", "confusion_radam.png",
                 "summary.md", "adam/last.npz", "adam/best.npz", "radam/last.npz", "radam/best.npz"):
        assert (folder / name).is_file(), name
    rows = read_history(folder)
    assert [(row["optimizer"], row["epoch"]) for row in rows] == [("adam", "1"), ("adam", "2"),
                                                                   ("radam", "1"), ("radam", "2")]
    assert all(0.0 <= float(row["val_acc"]) <= 1.0 for row in rows)
    with Image.open(folder / "curves.png") as image:
        assert image.width > 500
    summary = (folder / "summary.md").read_text()
    assert "| adam | 2 |" in summary and "| radam | 2 |" in summary and "| Beige |" in summary
    assert "| batch-size | 8 |" in summary and "| model | swin_mini |" in summary and "| lr |" in summary
    assert all(re.fullmatch(r"swin_mini, (adam|radam): test accuracy [01]\.\d{3}, macro-F1 [01]\.\d{3}", title)
               for title in titles) and len(titles) == 2
    # The end of the run says where everything went.
    end = capsys.readouterr().out.split(f"Everything is in {folder}:")[1]
    for name in ("summary.md", "curves.png", "history.csv", "confusion_adam.png", "adam/best.npz", "radam/last.npz",
                 f"--resume --out {folder}", f"predict.py {folder / 'radam' / 'best.npz'}"):
        assert name in end, name
    checkpoint = minigrad.load(folder / "adam" / "last.npz")
    assert checkpoint["classes"] == list(SyntheticCarColours().classes)
    assert [row["epoch"] for row in checkpoint["history"]] == [1, 2]


def test_an_optimizers_run_does_not_depend_on_the_one_before_it(tmp_path):
    # Same initial weights, same batches, same drop-path draws, whatever trained first.
    argv = TINY + ["--epochs", "1", "--max-steps", "3"]
    alone = run_dvm(argv + ["--out", str(tmp_path / "alone"), "--optimizers", "sgd"])
    second = run_dvm(argv + ["--out", str(tmp_path / "second"), "--optimizers", "adam", "sgd"])
    expected = minigrad.load(alone / "sgd" / "last.npz")["model"]
    actual = minigrad.load(second / "sgd" / "last.npz")["model"]
    for key in expected:
        np.testing.assert_array_equal(actual[key], expected[key], err_msg=key)


def test_resuming_repeats_an_uninterrupted_run_exactly(tmp_path):
    straight = run_dvm(TINY + ["--out", str(tmp_path / "straight"), "--optimizers", "radam"])
    interrupted = tmp_path / "interrupted"
    run_dvm(TINY + ["--out", str(interrupted), "--optimizers", "radam", "--epochs", "1"])
    run_dvm(TINY + ["--out", str(interrupted), "--optimizers", "radam", "--resume"])
    expected = minigrad.load(straight / "radam" / "last.npz")
    resumed = minigrad.load(interrupted / "radam" / "last.npz")
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)
    assert [row["train_loss"] for row in resumed["history"]] == [row["train_loss"] for row in expected["history"]]


def test_ctrl_c_says_how_to_resume_and_resuming_repeats_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    straight = run_dvm(TINY + ["--out", str(tmp_path / "straight"), "--optimizers", "adam"])
    train_epoch, calls = training.train_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted_in_epoch_2)
    folder = tmp_path / "interrupted"
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(folder), "--optimizers", "adam"])
    assert stop.value.code == 130
    assert f"interrupted. Every finished epoch is saved in {folder}; to go on, run the same command with " \
           f"--resume --out {folder}" in capsys.readouterr().err
    assert [row["epoch"] for row in minigrad.load(folder / "adam" / "last.npz")["history"]] == [1]
    monkeypatch.setattr(training, "train_epoch", train_epoch)
    run_dvm(TINY + ["--out", str(folder), "--optimizers", "adam", "--resume"])
    expected, resumed = (minigrad.load(run / "adam" / "last.npz") for run in (straight, folder))
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)


def test_ctrl_c_while_an_epoch_is_saved_loses_neither_its_best_checkpoint_nor_its_history(tmp_path, monkeypatch):
    """--resume goes on after the epoch in last.npz: by the time that is written, the epoch's best.npz
    and history.csv row must be written too, or a Ctrl-C between them loses them for good."""
    accuracies = iter([0.5, 0.75, 0.75])  # epoch 2 is the best; the resumed run draws the third if it retrains it
    monkeypatch.setattr(training, "scores", lambda confusion: {"acc": next(accuracies), "f1": 0.5})
    save = minigrad.save

    def interrupted_at_epoch_2s_best(state, path):
        if Path(path).name == "best.npz" and len(state["history"]) == 2:
            raise KeyboardInterrupt
        save(state, path)

    monkeypatch.setattr(training.minigrad, "save", interrupted_at_epoch_2s_best)
    folder = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--out", str(folder)])
    assert stop.value.code == 130
    monkeypatch.setattr(training.minigrad, "save", save)
    run_dvm(["--resume", "--out", str(folder), "--workers", "0"])
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "best.npz")["history"]] == [1, 2]
    assert [row["epoch"] for row in minigrad.load(folder / "sgd" / "last.npz")["history"]] == [1, 2]
    assert [(row["optimizer"], row["epoch"]) for row in read_history(folder)] == [("sgd", "1"), ("sgd", "2")]


def test_resuming_one_optimizer_keeps_the_others_history(tmp_path):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--epochs", "1", "--max-steps", "2"])
    run_dvm(TINY + ["--out", str(folder), "--resume", "--optimizers", "radam", "--max-steps", "4"])
    rows = [(row["optimizer"], row["epoch"]) for row in read_history(folder)]
    assert rows == [("adam", "1"), ("radam", "1"), ("radam", "2")]
    # --max-steps counts the steps the run has already taken: 2 before, 2 more now.
    assert [int(row["steps"]) for row in read_history(folder) if row["optimizer"] == "radam"] == [2, 2]
    summary = (folder / "summary.md").read_text()
    assert "| adam | 1 | 1 |" in summary and "| radam | 2 |" in summary  # the report still shows both


def test_each_epoch_draws_a_new_order_and_a_set_smaller_than_a_batch_still_trains(tmp_path, monkeypatch):
    orders = []

    class Recording(DataLoader):
        def batch_indices(self):
            batches = super().batch_indices()
            if self.shuffle:  # the training loader
                orders.append((self.epoch, [index for batch in batches for index in batch.tolist()]))
            return batches

    monkeypatch.setattr(training, "DataLoader", Recording)
    run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--out", str(tmp_path / "run")])
    # 6 training images, fewer than a batch of 8: each epoch is one batch of all six, in an order of its own.
    assert [epoch for epoch, _ in orders] == [1, 2]
    assert all(sorted(order) == list(range(6)) for _, order in orders)
    assert orders[0][1] != orders[1][1]
    # The order is drawn from --seed too. (--synthetic-size 6 with another seed: the same six labels,
    # shuffled otherwise, so only the order may tell the runs apart.)
    run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--epochs", "1", "--seed", "1",
                    "--out", str(tmp_path / "seed 1")])
    assert orders[2][0] == 1 and orders[2][1] != orders[0][1]


def test_the_best_checkpoint_is_the_first_epoch_of_the_best_validation_accuracy(tmp_path, monkeypatch):
    accuracies = iter([0.5, 0.75, 0.75])
    monkeypatch.setattr(training, "scores", lambda confusion: {"acc": next(accuracies), "f1": 0.5})
    evaluate, tested = training.evaluate, {}

    def recording(model, loader, device, description, num_classes):
        if description == "sgd test":
            tested.update({key: np.array(value) for key, value in model.state_dict().items()})
        return evaluate(model, loader, device, description, num_classes)

    monkeypatch.setattr(training, "evaluate", recording)
    folder = run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "--epochs", "3",
                             "--out", str(tmp_path / "run")])
    best, last = (minigrad.load(folder / "sgd" / name) for name in ("best.npz", "last.npz"))
    assert [row["epoch"] for row in best["history"]] == [1, 2]
    assert [row["epoch"] for row in last["history"]] == [1, 2, 3]
    # The test split scores the best model, not the last.
    assert not all(np.array_equal(best["model"][key], last["model"][key]) for key in best["model"])
    for key in best["model"]:
        np.testing.assert_array_equal(tested[key], best["model"][key], err_msg=key)


def test_max_steps_stops_each_optimizer(tmp_path):
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "7", "--epochs", "5"])
    rows = read_history(folder)
    for name in ("adam", "radam"):
        assert sum(int(row["steps"]) for row in rows if row["optimizer"] == name) == 7


def test_runs_without_out_take_the_next_free_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = TINY + ["--epochs", "1", "--max-steps", "1", "--optimizers", "adam"]
    assert run_dvm(argv) == Path("runs/dvm")
    assert run_dvm(argv) == Path("runs/dvm-2")


def test_an_empty_out_folder_is_the_runs(tmp_path):
    (tmp_path / "run").mkdir()  # made beforehand, say for a log file to come
    folder = run_dvm(TINY + ["--out", str(tmp_path / "run"), "--max-steps", "1", "--optimizers", "sgd"])
    assert folder == tmp_path / "run" and (folder / "sgd" / "last.npz").is_file()


def interrupt_in_epoch(epoch: int, monkeypatch) -> None:
    """Make training raise KeyboardInterrupt (Ctrl-C) as the given epoch starts."""
    train_epoch, calls = training.train_epoch, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(training, "train_epoch", interrupted)


def test_resuming_a_cosine_schedule_goes_on_where_its_rate_was(tmp_path, monkeypatch):
    settings = TINY + ["--optimizers", "adam", "--schedule", "cosine", "--lr", "5e-4", "--warmup-epochs", "0"]
    straight = run_dvm(settings + ["--out", str(tmp_path / "straight")])
    interrupt_in_epoch(2, monkeypatch)
    with pytest.raises(SystemExit):
        run_dvm(settings + ["--out", str(tmp_path / "interrupted")])
    monkeypatch.undo()
    run_dvm(["--resume", "--out", str(tmp_path / "interrupted"), "--workers", "0"])
    expected, resumed = (minigrad.load(run / "adam" / "last.npz") for run in (straight, tmp_path / "interrupted"))
    # 44 images in batches of 8: 5 steps an epoch, 10 in all; epoch 2 starts half-way down the cosine.
    for history in (expected["history"], resumed["history"]):
        assert [row["lr"] for row in history] == pytest.approx([5e-4, 5e-4 * 0.5 * (1 + np.cos(np.pi * 5 / 10))])
    for key in expected["model"]:
        np.testing.assert_array_equal(resumed["model"][key], expected["model"][key], err_msg=key)


def test_drop_path_draws_are_new_each_epoch_alike_for_every_optimizer_and_follow_the_seed(tmp_path, monkeypatch):
    draws, current = {}, []
    random_uniform, train_epoch = backend.random_uniform, training.train_epoch

    def recording_uniform(shape, dtype, device):
        values = random_uniform(shape, dtype, device)
        if current:
            draws.setdefault(current[-1], []).append(np.array(backend.asnumpy(values)))
        return values

    def labelled(model, optimizer, schedule, loader, args, description, max_steps):
        current.append((args.seed, description))
        try:
            return train_epoch(model, optimizer, schedule, loader, args, description, max_steps)
        finally:
            current.pop()

    monkeypatch.setattr(backend, "random_uniform", recording_uniform)
    monkeypatch.setattr(training, "train_epoch", labelled)
    for seed in ("0", "1"):
        run_dvm(TINY + ["--synthetic-size", "6", "--optimizers", "sgd", "adam", "--seed", seed,
                        "--out", str(tmp_path / seed)])

    def same(one, other):
        return len(one) == len(other) and all(np.array_equal(a, b) for a, b in zip(one, other))

    assert draws[(0, "sgd epoch 1/2")]  # swin_mini drops paths (rate 0.1)
    assert same(draws[(0, "sgd epoch 1/2")], draws[(0, "adam epoch 1/2")])
    assert same(draws[(0, "sgd epoch 2/2")], draws[(0, "adam epoch 2/2")])
    assert not same(draws[(0, "sgd epoch 1/2")], draws[(0, "sgd epoch 2/2")])
    assert not same(draws[(0, "sgd epoch 1/2")], draws[(1, "sgd epoch 1/2")])
    assert not same(draws[(0, "sgd epoch 2/2")], draws[(1, "sgd epoch 2/2")])


@pytest.mark.gpu
def test_a_run_on_the_gpu_agrees_with_the_cpu(tmp_path, gpu):
    # Without drop-path: the GPU draws its masks from a stream of its own (cuRAND on CuPy).
    argv = TINY + ["--epochs", "1", "--max-steps", "3", "--optimizers", "sgd", "--drop-path", "0"]
    on_cpu = run_dvm(argv + ["--out", str(tmp_path / "cpu")])
    on_gpu = run_dvm(argv + ["--out", str(tmp_path / "gpu"), "--device", "gpu"])
    expected, actual = (minigrad.load(folder / "sgd" / "last.npz") for folder in (on_cpu, on_gpu))
    for key in ("train_loss", "val_loss"):
        assert actual["history"][0][key] == pytest.approx(expected["history"][0][key], rel=1e-5)
    for key in expected["model"]:
        np.testing.assert_allclose(actual["model"][key], expected["model"][key], rtol=1e-4, atol=1e-6, err_msg=key)
    # Resuming puts the saved model and optimizer state back on the GPU.
    run_dvm(TINY + ["--max-steps", "6", "--optimizers", "sgd", "--out", str(on_gpu), "--device", "gpu", "--resume"])
    assert [row["steps"] for row in minigrad.load(on_gpu / "sgd" / "last.npz")["history"]] == [3, 3]


# --------------------------------------------------------------------------------------------
# The schedule, the starting weights, a loss that is no longer finite


def test_the_cosine_schedule_warms_up_then_decays_over_every_epoch():
    args = argparse.Namespace(schedule="cosine", epochs=4, warmup_epochs=0.3)
    optimizer = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
    schedule = training.make_schedule(args, optimizer, steps_per_epoch=6)
    # 24 steps in all; the warm-up round(0.3 * 6) = 2 steps, then a half cosine over the other 22.
    expected = [step / 2 if step < 2 else 0.5 * (1 + np.cos(np.pi * (step - 2) / 22)) for step in range(25)]
    rates = []
    for _ in range(25):
        rates.append(schedule.get_last_lr()[0])
        schedule.step()
    np.testing.assert_allclose(rates, expected, rtol=1e-12, atol=1e-12)


def test_a_pth_of_pytorch_before_1_6_says_how_to_convert_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    (tmp_path / "old.pth").write_bytes(pickle.dumps({"not": "a zip"}))  # the old format: a bare pickle
    message = usage_error(capsys, run_dvm, TINY + ["--pretrained", str(tmp_path / "old.pth")])
    assert "format of PyTorch before 1.6" in message and "torch.save(torch.load('old.pth'" in message


def test_every_optimizer_starts_from_the_pretrained_weights(tmp_path):
    minigrad.manual_seed(7)  # weights unlike the run's own seeded initialisation
    pretrained = swin_mini(img_size=32, num_classes=11).state_dict()
    minigrad.save(pretrained, tmp_path / "weights.npz")
    folder = run_dvm(TINY + ["--pretrained", str(tmp_path / "weights.npz"), "--optimizers", "sgd", "adam",
                             "--max-steps", "1", "--lr", "1e-12", "--out", str(tmp_path / "run")])
    for name in ("sgd", "adam"):
        trained = minigrad.load(folder / name / "last.npz")["model"]
        for key in pretrained:  # one step of lr 1e-12 moves nothing visibly
            np.testing.assert_allclose(trained[key], pretrained[key], rtol=0, atol=1e-9, err_msg=f"{name} {key}")


def test_pretrained_weights_of_another_shape_are_named(tmp_path, capsys):
    minigrad.save(swin_mini(embed_dim=16, num_heads=(1, 1, 2, 2)).state_dict(), tmp_path / "other.npz")
    message = usage_error(capsys, run_dvm, TINY + ["--pretrained", str(tmp_path / "other.npz")])
    assert "does not fit swin_mini with 11 classes at 32 px" in message
    assert "patch_embed.proj.weight: the checkpoint has shape (16, 3, 4, 4), the model (32, 3, 4, 4)" in message
    assert "usage:" not in message  # the arguments were fine: only the problem is shown


def test_a_loss_that_becomes_nan_stops_the_run_with_what_to_check(tmp_path, capsys, monkeypatch):
    cross_entropy = training.F.cross_entropy
    monkeypatch.setattr(training.F, "cross_entropy", lambda *args, **kwargs: cross_entropy(*args, **kwargs) * np.nan)
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--log-every", "2"])
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert "the training loss became nan within the first 2 steps of adam epoch 1/2" in message
    assert "Lower --lr" in message and f"The epochs before it are saved in {tmp_path / 'run'}" in message


def test_a_loss_that_explodes_while_staying_finite_is_warned_of_with_what_to_change(tmp_path, monkeypatch):
    cross_entropy = training.F.cross_entropy
    monkeypatch.setattr(training.F, "cross_entropy", lambda *args, **kwargs: cross_entropy(*args, **kwargs) * 1e4)
    with pytest.warns(UserWarning, match="training diverges") as caught:
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--optimizers", "sgd", "--clip-grad", "0", "--lr", "1e-8"])
    messages = [str(warning.message) for warning in caught if "diverges" in str(warning.message)]
    assert len(messages) == 2 and "sgd epoch 1/2" in messages[0] and "sgd epoch 2/2" in messages[1]
    assert "Lower --lr (it is 1e-08) or enable --clip-grad" in messages[0]


def test_a_healthy_loss_is_not_warned_of(tmp_path):
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*diverges")
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--optimizers", "sgd", "--epochs", "1"])


def test_a_loss_that_becomes_nan_between_progress_updates_stops_the_run_at_the_epochs_end(tmp_path, capsys,
                                                                                        monkeypatch):
    cross_entropy = training.F.cross_entropy
    monkeypatch.setattr(training.F, "cross_entropy", lambda *args, **kwargs: cross_entropy(*args, **kwargs) * np.nan)
    with pytest.raises(SystemExit) as stop:
        run_dvm(TINY + ["--out", str(tmp_path / "run"), "--log-every", "100"])  # 5 steps an epoch
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert "the training loss became nan within the first 5 steps of adam epoch 1/2" in message
    assert "a new run with other settings starts over from the same initial weights" in message
    assert not (tmp_path / "run" / "adam" / "last.npz").exists()  # nothing after that step is kept


# --------------------------------------------------------------------------------------------
# The GPU path on the stand-in


def test_a_first_run_on_the_gpu_warns_of_kernel_compilation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    cache = tmp_path / "kernel_cache"
    monkeypatch.setenv("CUPY_CACHE_DIR", str(cache))
    argv = TINY + ["--device", "gpu", "--max-steps", "1", "--optimizers", "sgd"]
    run_dvm(argv + ["--out", str(tmp_path / "first")])
    assert f"compile CuPy's GPU kernels, so the progress bar waits a while; they are kept in {cache}" in \
        capsys.readouterr().out
    cache.mkdir()
    (cache / "kernel.cubin").write_bytes(b"compiled")
    run_dvm(argv + ["--out", str(tmp_path / "second")])
    assert "compile CuPy's GPU kernels" not in capsys.readouterr().out


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_an_epochs_loss_and_accuracy_are_the_means_over_its_examples(smoothing, monkeypatch):
    """With a learning rate of 0 and no drop-path the model never changes, so an epoch's running mean
    loss and accuracy must be those of the model on all its examples at once; 20 examples in batches
    of 8, 8 and 4 tell a mean over examples from one over batches."""
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    args = parser.parse_args(TINY + ["--drop-path", "0", "--log-every", "1", "--label-smoothing", str(smoothing)])
    data = SyntheticCarColours(20, 32, transform=eval_transform(32))
    model = training.initial_model(args, data.classes)
    optimizer = training.make_optimizer("sgd", model, 0.0, 0.0)
    postfixes = []

    class Recording(training.tqdm):
        def set_postfix(self, **kwargs):
            postfixes.append(kwargs)
            super().set_postfix(**kwargs)

    monkeypatch.setattr(training, "tqdm", Recording)
    result = training.train_epoch(model, optimizer, training.make_schedule(args, optimizer, 3), DataLoader(data, 8),
                                  args, "test", None)
    images, labels = next(iter(PrefetchLoader(DataLoader(data, 20), "cpu")))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(images)).data.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum_exp = np.log(np.exp(shifted).sum(axis=1))
    losses = log_sum_exp - shifted[np.arange(20), labels]
    # Label smoothing: the target puts 1 - s on the label and s spread evenly over all classes.
    smoothed = (1 - smoothing) * losses + smoothing * (log_sum_exp - shifted.mean(axis=1))
    correct = logits.argmax(axis=1) == labels
    assert result["steps"] == 3
    assert result["train_loss"] == pytest.approx(smoothed.mean(), rel=1e-5)
    assert result["train_acc"] == correct.mean()
    assert result["images_per_s"] == pytest.approx(20 / result["seconds"])
    # The progress bar (--log-every 1) shows the running means over the examples seen so far.
    assert len(postfixes) == 3
    for postfix, seen in zip(postfixes, (8, 16, 20)):
        assert float(postfix["loss"]) == pytest.approx(smoothed[:seen].mean(), abs=1e-4)
        assert float(postfix["acc"]) == pytest.approx(correct[:seen].mean(), abs=1e-3)
    loss, confusion = training.evaluate(model, DataLoader(data, 8), "cpu", "test", 11)
    assert loss == pytest.approx(losses.mean(), rel=1e-5)  # validation loss: never smoothed
    np.testing.assert_array_equal(confusion, confusion_matrix(labels, logits.argmax(axis=1), 11))


def test_evaluation_switches_drop_path_off():
    model = swin_mini(img_size=32, num_classes=11, drop_path_rate=0.5)  # built in training mode
    data = SyntheticCarColours(8, 32, split="val", transform=eval_transform(32))
    images, labels = next(iter(PrefetchLoader(DataLoader(data, 8), "cpu")))
    with minigrad.no_grad():
        logits = model.eval()(minigrad.tensor(images)).data.astype(np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(8), labels]
    loss, confusion = training.evaluate(model.train(), DataLoader(data, 8), "cpu", "test", 11)
    assert loss == pytest.approx(losses.mean(), rel=1e-5)
    np.testing.assert_array_equal(confusion, confusion_matrix(labels, logits.argmax(axis=1), 11))


def test_a_training_epoch_reads_from_the_device_once_per_logging_interval(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGRAD_FAKE_GPU", "1")
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    args = parser.parse_args(TINY + ["--device", "gpu", "--log-every", "2"])
    model = training.initial_model(args, SyntheticCarColours().classes).to("gpu")
    optimizer = training.make_optimizer("radam", model, 1e-3, 0.05)
    schedule = training.make_schedule(args, optimizer, 5)
    data = SyntheticCarColours(40, 32, transform=train_transform(32))
    loader = DataLoader(data, 8)
    before = fake_gpu.transfer_count.count
    result = training.train_epoch(model, optimizer, schedule, loader, args, "test", None)
    # Each of the 5 steps uploads its images and labels, the pass the normalisation's mean and std; the
    # running sums come back after steps 2 and 4 and once at the end; nothing else crosses.
    assert result["steps"] == 5
    assert fake_gpu.transfer_count.count - before == 2 * 5 + 1 + 3
    loss, confusion = training.evaluate(model, DataLoader(SyntheticCarColours(
        16, 32, split="val", transform=eval_transform(32)), 8), "gpu", "test", 11)
    assert isinstance(confusion, np.ndarray) and confusion.sum() == 16 and loss > 0
