"""Cost of the plugin system: ``import distilbert_heads`` and head lookups with 20 plugins.

Import time is measured in fresh interpreters (median of several), next to ``import keras``
alone so the part that is ours is visible. Lookups use a fresh `HeadRegistry` each time, with
20 throwaway third-party distributions (``*.dist-info`` + a module each, in the real
``distilbert_heads`` entry-point group) on a temporary ``sys.path`` entry, against the same
lookups without them. The plugin modules are dropped from ``sys.modules`` before each lookup,
so a lookup that imports a plugin pays for that import every time.
"""

from __future__ import annotations

import importlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NUM_PLUGINS = 20
PLUGIN_TEMPLATE = """\
from distilbert_heads import hookimpl
from distilbert_heads.plugins.head import TaskHead


class Bench{index:02d}Head(TaskHead):
    task_types = ("bench_task_{index:02d}",)
    output_names = ("logits",)

    def call(self, hidden_states, attention_mask, training=None):
        return {{"logits": hidden_states[:, 0, :1]}}


@hookimpl
def register_heads(register):
    register(Bench{index:02d}Head)
"""


def import_times(repeats: int, env: dict[str, str]) -> dict[str, Any]:
    """Median wall time of ``import X`` in a fresh interpreter, for our package and for keras."""
    results: dict[str, Any] = {}
    for label, statement in (("import keras", "import keras"), ("import distilbert_heads", "import distilbert_heads")):
        code = f"import time; s = time.perf_counter(); {statement}; print(time.perf_counter() - s)"
        samples = []
        for _ in range(repeats):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            samples.append(float(out.stdout.strip().splitlines()[-1]))
        results[label] = {"median_s": statistics.median(samples), "min_s": min(samples), "n": len(samples)}
    return results


def write_fake_plugins(root: Path, count: int = NUM_PLUGINS) -> list[str]:
    """``count`` installed-looking distributions, one head each; returns their module names."""
    modules = []
    for index in range(count):
        module = f"dhbench_plugin_{index:02d}"
        (root / module).mkdir()
        (root / module / "__init__.py").write_text(PLUGIN_TEMPLATE.format(index=index))
        info = root / f"distilbert_head_bench{index:02d}-1.0.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: distilbert-head-bench{index:02d}\nVersion: 1.0.0\n"
        )
        (info / "entry_points.txt").write_text(f"[distilbert_heads]\nbench_{index:02d} = {module}\n")
        modules.append(module)
    return modules


def _time_lookup(task_type: str, modules: list[str], repeats: int) -> dict[str, Any]:
    from distilbert_heads.plugins.registry import HeadRegistry

    samples = []
    for _ in range(repeats):
        for name in modules:
            sys.modules.pop(name, None)
        start = time.perf_counter()
        HeadRegistry().get_head(task_type)
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "n": len(samples)}


def lookup_times(repeats: int) -> dict[str, Any]:
    """Fresh-registry lookups of a built-in and of a plugin's task type, with 20 plugins vs none."""
    import distilbert_heads.plugins.registry  # noqa: F401  (imported before timing)

    # Built-in head modules are imported once here: every registry after that only registers them.
    from distilbert_heads.plugins.registry import HeadRegistry

    HeadRegistry().get_head("sentiment")
    results: dict[str, Any] = {"none": {}, "with_20_plugins": {}}
    results["none"]["builtin"] = _time_lookup("sentiment", [], repeats)
    with tempfile.TemporaryDirectory(prefix="dh-bench-plugins-") as tmp:
        root = Path(tmp)
        modules = write_fake_plugins(root)
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
        try:
            found = HeadRegistry().get_head("bench_task_13")
            assert found.distribution == "distilbert-head-bench13", found
            results["with_20_plugins"]["builtin"] = _time_lookup("sentiment", modules, repeats)
            results["with_20_plugins"]["plugin"] = _time_lookup("bench_task_13", modules, repeats)
        finally:
            sys.path.remove(str(root))
            for name in modules:
                sys.modules.pop(name, None)
            importlib.invalidate_caches()
    base = results["none"]["builtin"]["median_s"]
    results["extra_ms_builtin"] = (results["with_20_plugins"]["builtin"]["median_s"] - base) * 1e3
    results["extra_ms_plugin"] = (results["with_20_plugins"]["plugin"]["median_s"] - base) * 1e3
    return results


def run(quick: bool, env: dict[str, str]) -> dict[str, Any]:
    return {
        "import": import_times(3 if quick else 7, env),
        "lookup": lookup_times(20 if quick else 100),
        "num_plugins": NUM_PLUGINS,
    }
