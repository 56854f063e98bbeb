"""The CPU benchmark's encoder section (issue 15, item 3): every path we offer (TensorFlow graph and XLA,
the JAX and PyTorch Keras backends in child processes, our ONNX export) and every peer in its float32
and bf16 modes, run end to end on a tiny model so that none of these code paths can rot unnoticed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import machine  # noqa: E402  (after the repository root is on sys.path)

OUR_PATHS = ("tf-graph", "tf-xla", "jax-jit", "torch-eager")
OUR_DTYPES = ("float32", "bfloat16", "mixed_bfloat16")


@pytest.mark.slow
def test_tiny_encoder_benchmark_times_every_path_and_every_peer_in_both_dtypes(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    command = [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--tiny", "--quick", "--only", "gemm,encoder"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path)], capture_output=True, text=True, timeout=900, env={**os.environ}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "latest.json").read_text())
    encoder = report["encoder"]
    assert report["machine"]["cpu"]["kind"] == machine.cpu_info()["kind"]
    expected = {f"ours/{path}/{dtype}" for path in OUR_PATHS for dtype in OUR_DTYPES} | {
        "ours/onnxruntime/float32",
        "peer/transformers/float32",
        "peer/transformers/bf16-weights",
        "peer/transformers/autocast-bf16",
        "peer/onnxruntime/float32",
    }
    for label in ("throughput", "latency"):
        shape = encoder["shapes"][label]
        rows = shape["rows"]
        assert expected <= set(rows), (label, sorted(expected - set(rows)), encoder["skipped"])
        assert all(row["median_s"] > 0 and row["n"] >= 2 for row in rows.values())
        # The children's rows carry no CPU time of this process (it only waited on them).
        assert "cpu_median_s" not in rows["ours/jax-jit/float32"] and "cpu_median_s" in rows["ours/tf-graph/float32"]
        for kind in ("float32", "bf16"):
            entry = shape["by_dtype"][kind]
            assert entry["fastest_ours"].startswith("ours/") and rows[entry["fastest_ours"]]["dtype"] == kind
            assert entry["best_peer"].startswith("peer/") and rows[entry["best_peer"]]["dtype"] == kind
            ours = [row["median_s"] for name, row in rows.items() if name.startswith("ours/") and row["dtype"] == kind]
            assert rows[entry["fastest_ours"]]["median_s"] == min(ours)
            ratio = rows[entry["best_peer"]]["median_s"] / rows[entry["fastest_ours"]]["median_s"]
            assert entry["speed_vs_best_peer"] == pytest.approx(ratio)
    # Same weights everywhere: float32 contenders agree with ours, bf16 ones (ours on every backend, peers)
    # keep the per-token direction of our float32 output.
    agreement = encoder["agreement"]
    for name in ("ours/jax-jit/float32", "ours/torch-eager/float32", "peer/transformers/float32"):
        assert agreement["max_abs_diff_vs_ours_float32"][name] < 1e-4, name
    bf16 = {name for name in expected if not name.endswith("/float32")}
    assert bf16 <= set(agreement["bf16_cosine_per_token"])
    assert min(value["min"] for value in agreement["bf16_cosine_per_token"].values()) > 0.999
    # ONNX Runtime's missing CPU bf16 mode is said, not silently left out.
    assert "no CPU bf16 mode" in encoder["skipped"]["ort_bf16"]
    text = (tmp_path / "latest.md").read_text()
    for fact in (
        "Fastest path we offer vs best peer",
        "TINY model",
        report["machine"]["cpu"]["kind"],
        "no CPU bf16 mode",
    ):
        assert fact in text, fact


@pytest.mark.parametrize(
    ("vendor", "flags", "kind"),
    [
        (
            "GenuineIntel",
            ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"],
            "Intel with AMX (bf16, int8)",
        ),
        ("AuthenticAMD", ["avx2", "avx512f", "avx512_bf16", "avx512_vnni"], "AMD with AVX-512 (BF16, VNNI), no AMX"),
        ("AuthenticAMD", ["avx2", "avx512f"], "AMD with AVX-512, no AMX"),
        ("GenuineIntel", ["avx2", "fma"], "Intel with AVX2, no AVX-512"),
        ("", [], "unknown vendor, no AVX2"),
        ("GenuineIntel", ["amx_tile"], "Intel, no AVX2"),  # AMX tiles without AMX-BF16 are not a bf16 machine
    ],
)
def test_machine_kind_names_vendor_and_widest_matrix_instructions(vendor, flags, kind):
    assert machine.machine_kind(vendor, flags) == kind
