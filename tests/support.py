"""What many tests share: running the real command line and reading its exit code."""
from __future__ import annotations

import pytest

from talkinghead.interfaces.cli import main


def cli_exit_code(argv) -> int:
    """Run `talkinghead ARGV` in this process (the real CLI, argument parsing included); its exit code."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code
