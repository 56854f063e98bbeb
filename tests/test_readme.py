"""Every ```python block of the README runs as written, in order, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    blocks = BLOCK.findall(README.read_text(encoding="utf-8"))
    assert blocks, "the README should show runnable Python"
    script = "\n\n".join(f"# --- README block {index}\n{block}" for index, block in enumerate(blocks, 1))
    (tmp_path / "readme_blocks.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    result = subprocess.run(
        [sys.executable, "readme_blocks.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"README blocks failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
