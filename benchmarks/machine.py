"""What the benchmark ran on: CPU, cores, memory, load and every library's version."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import Any

LIBRARIES = (
    "distilbert-heads",
    "keras",
    "tensorflow",
    "jax",
    "torch",
    "transformers",
    "keras-hub",
    "onnxruntime",
    "onnx",
    "numpy",
    "tokenizers",
    "safetensors",
    "pluggy",
    "pydantic",
)
CPU_FLAGS_OF_INTEREST = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "avx512_fp16",
    "amx_bf16",
    "amx_int8",
    "amx_tile",
    "fma",
)


def machine_kind(vendor: str, flags: set[str] | list[str]) -> str:
    """The kind of CPU, as far as our matmuls care: whose, and its widest bf16/int8 matrix instructions."""
    flags = set(flags)
    whose = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor or "unknown vendor")
    if {"amx_bf16", "amx_tile"} <= flags:
        return f"{whose} with AMX (bf16{', int8' if 'amx_int8' in flags else ''})"
    if "avx512f" in flags:
        extras = [name for flag, name in (("avx512_bf16", "BF16"), ("avx512_vnni", "VNNI")) if flag in flags]
        return f"{whose} with AVX-512{' (' + ', '.join(extras) + ')' if extras else ''}, no AMX"
    if "avx2" in flags:
        return f"{whose} with AVX2, no AVX-512"
    return f"{whose}, no AVX2"


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                elif key in ("vendor_id", "cpu family", "model") and key not in fields:
                    fields[key] = value.strip()
    except OSError:
        pass
    return {
        "kind": machine_kind(fields.get("vendor_id", ""), flags),
        "model": model,
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),  # AMD 25 with AVX-512 is Zen 4
        "model_number": fields.get("model"),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "flags": [flag for flag in CPU_FLAGS_OF_INTEREST if flag in flags],
    }


def memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        return None
    return None


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def describe() -> dict[str, Any]:
    return {
        "cpu": cpu_info(),
        "memory_gb": memory_gb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "keras_backend": os.environ.get("KERAS_BACKEND"),
        "versions": versions(),
    }
