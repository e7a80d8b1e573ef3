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


def test_custom_sink_example_writes_every_record_once(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "custom_sink.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = (tmp_path / "items.csv").read_text().splitlines()
    assert lines[0] == "id,name,price"
    ids = [int(line.split(",")[0]) for line in lines[1:]]
    assert sorted(ids) == list(range(1, 2001))
