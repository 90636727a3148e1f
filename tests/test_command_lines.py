"""Every example script's command line: --help shows each option's default (or says what happens
without the option), and the options the scripts share are named alike."""
import argparse
import subprocess
import sys

import pytest

from example_scripts import EXAMPLES
import benchmark
import predict
import runs
import train_dvm
import train_folder
import train_stanford_cars


def trainer(script) -> argparse.ArgumentParser:
    parser = runs.make_parser(script.__doc__, script.DEFAULT_MODEL)
    script.add_data_arguments(parser)
    return parser


PARSERS = {"train_dvm": lambda: trainer(train_dvm), "train_folder": lambda: trainer(train_folder),
           "train_stanford_cars": lambda: trainer(train_stanford_cars), "benchmark": benchmark.make_parser,
           "predict": predict.make_parser}


def options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {action.option_strings[0]: action for action in parser._actions
            if action.option_strings and action.option_strings[0] != "-h"}


@pytest.mark.parametrize("script", PARSERS)
def test_help_shows_every_default(script):
    parser = PARSERS[script]()
    whole = " ".join(parser.format_help().split())  # argparse wraps lines anywhere
    for option, action in options(parser).items():
        entry = parser._get_formatter()._expand_help(action)  # the option's help as --help shows it
        assert " ".join(entry.split()) in whole
        if action.default is None or action.default is False:  # no value: the help says what happens without the option
            assert isinstance(action, argparse._StoreTrueAction) or "default" in entry, (option, entry)
        else:
            default = action.default
            shown = " ".join(map(str, default)) if isinstance(default, list) else str(default)
            assert f"(default: {shown})" in entry, (option, entry)


def test_the_real_data_scripts_name_their_own_default_model():
    for script in (train_folder, train_stanford_cars):
        text = " ".join(trainer(script).format_help().split())
        assert "Swin variant (default: swin_t at 224 px)" in text and "synthetic" not in text
    text = " ".join(trainer(train_dvm).format_help().split())
    assert "default: swin_mini at 64 px without --data, swin_t at 224 px with it" in text


def test_the_options_the_scripts_share_are_named_alike():
    shared = {"--model", "--batch-size", "--device"}
    for script in ("train_dvm", "train_folder", "train_stanford_cars", "benchmark"):
        assert shared <= set(options(PARSERS[script]())), script
    assert options(PARSERS["predict"]())["--device"].help == options(PARSERS["train_dvm"]())["--device"].help
    assert "cuda" in options(PARSERS["benchmark"]())["--device"].help


def test_radam_rectification_answers_help_without_printing_its_table():
    result = subprocess.run([sys.executable, str(EXAMPLES / "radam_rectification.py"), "--help"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.startswith("usage:") and "rho_t" in result.stdout and "first t" not in result.stdout
    typo = subprocess.run([sys.executable, str(EXAMPLES / "radam_rectification.py"), "--beta"],
                          capture_output=True, text=True)
    assert typo.returncode == 2 and "unrecognized arguments: --beta" in typo.stderr
