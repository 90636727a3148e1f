"""What the tests of the example scripts share: examples/ on the import path, a tiny run's options,
the scripts run in-process (their usage errors caught), and small data written on the fly."""
import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
import runs  # noqa: E402
import train_dvm  # noqa: E402
import train_folder  # noqa: E402

TINY = ["--model", "swin_mini", "--img-size", "32", "--synthetic-size", "44", "--batch-size", "8",
        "--epochs", "2", "--workers", "0"]


def run_dvm(argv):
    parser = runs.make_parser("test")
    train_dvm.add_data_arguments(parser)
    return runs.main(parser, train_dvm.load_data, "dvm", argv)


def usage_error(capsys, run, argv) -> str:
    """Run a script that must stop with a usage error; return its message."""
    with pytest.raises(SystemExit) as stop:
        run(argv)
    assert stop.value.code == 2
    return capsys.readouterr().err


def read_history(folder: Path) -> list[dict[str, str]]:
    with open(folder / "history.csv") as file:
        return list(csv.DictReader(file))


def loads_alike(split, index: int = 0) -> bool:
    """Whether an example comes out the same from two random generators (no augmentation)."""
    first, second = (split.load(index, np.random.default_rng(seed))[0] for seed in (1, 2))
    return np.array_equal(first, second)


def write_class_folders(root: Path, counts: dict[str, int]) -> None:
    for name, count in counts.items():
        (root / name / "nested").mkdir(parents=True)
        colour = (200, 30, 30) if name == "Red" else (20, 20, 20)
        for index in range(count):
            folder = root / name / ("nested" if index % 2 else "")
            Image.new("RGB", (40, 30), colour).save(folder / f"photo {index}.PNG")


def run_folder(argv):
    parser = runs.make_parser("test")
    train_folder.add_data_arguments(parser)
    return runs.main(parser, train_folder.load_data, "folder", argv)
