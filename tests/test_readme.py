"""The README's code runs as written: every ```python block, in order, in a fresh process, and
every ```bash block that starts with the marker comment below, each in a fresh folder (the set-up
commands, which create a virtualenv, are what CI itself runs)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHELL_BLOCK = re.compile(r"^```bash\n(# from a shell where the project is installed.*?)^```", re.S | re.M)


def run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        # the installed console script and `python` must be this interpreter's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    blocks = PYTHON_BLOCK.findall(README.read_text(encoding="utf-8"))
    assert len(blocks) >= 5, "the README should show runnable Python"
    script = "\n\n".join(f"# --- README block {index}\n{block}" for index, block in enumerate(blocks, 1))
    (tmp_path / "readme_blocks.py").write_text(script, encoding="utf-8")
    result = run([sys.executable, "readme_blocks.py"], tmp_path)
    assert result.returncode == 0, f"README blocks failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


SHELL_BLOCKS = SHELL_BLOCK.findall(README.read_text(encoding="utf-8"))
# The Docker block mounts the folder this export writes.
SERVING_EXPORT = "--out serving/sentiment/1"


def test_readme_marks_its_shell_blocks_runnable_and_one_exports_for_serving():
    assert SHELL_BLOCKS, "the README's command-line section should be marked runnable"
    assert any(SERVING_EXPORT in block for block in SHELL_BLOCKS), f"no runnable block exports {SERVING_EXPORT}"


# One test per block (each block sets up what it uses), so parallel workers can share them out.
@pytest.mark.slow
@pytest.mark.parametrize("block", SHELL_BLOCKS, ids=[f"block{index}" for index in range(1, len(SHELL_BLOCKS) + 1)])
def test_readme_shell_blocks_run(tmp_path, block):
    result = run(["bash", "-euo", "pipefail", "-c", block], tmp_path)
    assert result.returncode == 0, (
        f"README shell block failed:\n{block}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    if SERVING_EXPORT in block:
        assert (tmp_path / "serving" / "sentiment" / "1" / "saved_model.pb").is_file()
