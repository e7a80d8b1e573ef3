"""The examples run as documented."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_basic_example_runs_against_the_demo_api() -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "basic.py")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("100 pages in ")
