"""Set-up and start-up: the README's set-up commands are what CI runs, the build ships the demo data
without warnings, the package imports without Keras yet still registers its Keras classes, and the
command line answers --help and argument errors before TensorFlow, without its C++ start-up lines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SCRIPT = Path(sys.executable).with_name("distilbert-heads")
FIXTURES = ROOT / "tests" / "fixtures" / "v0_1"
TF_STARTUP_LINE = re.compile(r"port\.cc|cpu_feature_guard|cudart_stub|absl::InitializeLog|^[IWE]\d{4} ", re.MULTILINE)


def set_up_commands() -> list[str]:
    section = re.search(r"^## Set-up\n(.*?)(?=^## )", README.read_text(encoding="utf-8"), re.DOTALL | re.MULTILINE)
    assert section, "README.md has no '## Set-up' section"
    return re.findall(r"^```bash\n(.*?)^```", section.group(1), re.DOTALL | re.MULTILINE)


def fresh_python(code: str, *, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


# -- the README's set-up is what CI runs ---------------------------------------------------------------
def test_ci_runs_the_readme_set_up_commands_verbatim(tmp_path):
    """.ci/run executes exactly the README's blocks: run it on a copy whose README commands only record."""
    first, second = set_up_commands()
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text(encoding="utf-8"), encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    recorder = 'echo "$0" >> ran.txt # '  # each block becomes: record that it ran, then a comment
    fake = readme.replace(f"```bash\n{first}", f"```bash\n{recorder}{first}").replace(
        f"```bash\n{second}", f"```bash\n{recorder}{second}"
    )
    (tmp_path / "README.md").write_text(fake, encoding="utf-8")
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran.txt").read_text().count("\n") == 2
    assert result.stdout.count(first.strip()) == 1 and result.stdout.count(second.strip()) == 1


def test_ci_fails_when_the_readme_set_up_section_is_not_two_commands(tmp_path):
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text((ROOT / ".ci" / "run").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp_path / "README.md").write_text("# x\n\n## Set-up\n\n```bash\ntrue\n```\n\n## Next\n", encoding="utf-8")
    result = subprocess.run(["bash", str(tmp_path / ".ci" / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "found 1" in result.stderr


def test_set_up_commands_suit_a_new_venvs_stock_pip():
    first, second = set_up_commands()
    for text in (first, second, (ROOT / ".ci" / "run").read_text(encoding="utf-8")):
        assert not re.search(r"install[^&\n]*(--upgrade|-U)\b[^&\n]*\bpip\b", text), "the set-up must not upgrade pip"
    # Older pip cannot resolve the plugin's dependency on a project named in the same call.
    for command in first.split("&&"):
        assert not ("plugins_example" in command and '-e "' in command), command
    assert "torch" not in first, "the main job's command must not install PyTorch"
    assert "distilbert-heads demo" in first
    torch_at, extras_at = second.index("pip install torch==2.13.0"), second.index(".[test")
    assert torch_at < extras_at and "bash .ci/test" in second


def test_readme_says_how_to_get_the_cpu_torch_from_the_public_index():
    section = README.read_text(encoding="utf-8").split("## Set-up", 1)[1].split("\n## ", 1)[0]
    assert "--index-url https://download.pytorch.org/whl/cpu" in section
    assert "2-core AMD EPYC" in section and "48 s" in section  # the demo's figures name their machine


@pytest.mark.slow
def test_wheel_builds_without_warnings_and_ships_the_demo_data(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "is absent from the `packages` configuration" not in output
    assert not re.search(r"(?i)warning(?!: (build_py|install_lib): byte-compiling is disabled)", output), output[-3000:]
    (wheel,) = tmp_path.glob("distilbert_heads-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        Path(name).name for name in names if name.startswith("distilbert_heads/demo/") and name.endswith(".jsonl")
    }
    expected = {path.name for path in (ROOT / "core" / "demo").glob("*.jsonl")}
    assert expected and shipped == expected
    subpackages = {path.parent.name for path in (ROOT / "core").glob("*/__init__.py")}
    assert {f"distilbert_heads/{name}/__init__.py" for name in subpackages} <= names
    assert "distilbert_heads/training/data_files.py" in names and "distilbert_heads/py.typed" in names


# -- the package imports lazily and still registers its Keras classes ------------------------------------
def test_package_import_is_lazy_and_keeps_its_public_names():
    code = """
import json, sys
import distilbert_heads
state = {"version": distilbert_heads.__version__, "heavy": sorted({"keras", "tensorflow"} & set(sys.modules)),
         "dir_has_all": set(distilbert_heads.__all__) <= set(dir(distilbert_heads))}
missing = [name for name in distilbert_heads.__all__ if getattr(distilbert_heads, name, None) is None]
import distilbert_heads.pipeline  # the submodule must not shadow the function of the same name
state.update(missing=missing, pipeline_is_function=callable(distilbert_heads.pipeline)
             and not isinstance(distilbert_heads.pipeline, type(sys)))
try:
    distilbert_heads.no_such_name
except AttributeError as error:
    state["unknown"] = str(error)
print(json.dumps(state))
"""
    result = fresh_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads(result.stdout.strip().splitlines()[-1])
    assert state["heavy"] == [] and state["version"] == "0.1.0" and state["dir_has_all"]
    assert state["missing"] == [] and state["pipeline_is_function"]
    assert "no_such_name" in state["unknown"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "prelude",
    [
        "import distilbert_heads\nimport keras",
        "import keras\nimport distilbert_heads",
        # keras first imported mid-way through ours
        "from distilbert_heads.encoder.distilbert import DistilBERT\nimport keras",
        "import distilbert_heads.text.tokenizer\nimport keras",
        "import distilbert_heads\nimport tensorflow as tf\nkeras = tf.keras",
    ],
    ids=["package-then-keras", "keras-then-package", "encoder-module", "tokenizer-module", "via-tf-keras"],
)
def test_load_model_needs_no_custom_objects_in_any_import_order(prelude):
    code = f"""{prelude}
import warnings
warnings.simplefilter("error", RuntimeWarning)
model = keras.models.load_model({str(FIXTURES / "sentiment.keras")!r})
print(type(model).__name__, sorted(model.heads))
"""
    result = fresh_python(code, env={"TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "DistilBertTaskModel ['sentiment']"


# -- the command line answers before TensorFlow, quietly ---------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["predict", "--model", "m.keras", "--text"], 2),  # a flag without its value
        (["train", "--task", "sentiment", "--train", "no-such-file.csv", "--out", "m.keras"], 2),
        (["evaluate", "--model", "m.keras", "--data", "."], 2),  # a directory where a file is expected
        (["nope"], 2),
    ],
    ids=["help", "command-help", "missing-value", "missing-train-file", "directory-as-file", "unknown-command"],
)
def test_help_and_argument_errors_answer_before_tensorflow_is_imported(argv, code):
    script = f"""
import json, sys
from distilbert_heads.cli import main
code = main({argv!r})
print(json.dumps([code, sorted({{"keras", "tensorflow"}} & set(sys.modules))]))
"""
    result = fresh_python(script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [code, []]
    if code:
        assert result.stderr.startswith("error:") and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_commands_hide_tensorflow_start_up_lines_unless_asked():
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"TF_CPP_MIN_LOG_LEVEL", "DISTILBERT_HEADS_TF_LOGS"} and not k.startswith("DISTILBERT_HEADS_")
    }
    quiet = subprocess.run([str(SCRIPT), "heads"], capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode in (0, 1), quiet.stderr[-3000:]  # 1: a plugin conflict in this environment
    assert "Task type" in quiet.stdout and "sentiment" in quiet.stdout
    assert not TF_STARTUP_LINE.search(quiet.stderr), quiet.stderr[-3000:]
    assert "\x1b[" not in quiet.stdout + quiet.stderr, "no colour codes into a pipe"
    asked = subprocess.run(
        [str(SCRIPT), "heads", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**env, "DISTILBERT_HEADS_TF_LOGS": "1"},
    )
    assert TF_STARTUP_LINE.search(asked.stderr), "the opt-out should show TensorFlow's own lines"
