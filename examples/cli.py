"""What every example script's command line shares: a help that shows each option's default, and
the ``--device`` option (``cpu``, or ``gpu`` with its alias ``cuda``)."""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The script's docstring as written, and after each option's help its default, where it has
    one and the help does not say it already (an option without a default says what it does then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        # `is`, not `in (None, False)`: 0 == False, and a default of 0 is shown.
        if default is None or default is False or default is argparse.SUPPRESS or "default" in text:
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})".lstrip()


def add_device_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--device", default="cpu",
                        help="cpu, or gpu (alias cuda; needs CuPy: pip install -e '.[gpu]')")
