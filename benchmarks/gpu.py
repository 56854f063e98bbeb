"""GPU benchmark (issue 15, item 1): ours against transformers, eager and with ``torch.compile``.

    python benchmarks/gpu.py --out benchmarks/results        # on a machine with a CUDA GPU, < 10 min on an H200
    python benchmarks/gpu.py --dry-run --out /tmp/gpu        # the same code paths on the CPU, tiny sizes

On the lent GPU machine (no TensorFlow, Keras or network there): ``bash benchmarks/gpu_kit.sh`` here, then the
one ``device`` call in benchmarks/README.md ("GPUs").

Same weights for everyone: random init (seeded) written once with our ``save_pretrained`` and
loaded by transformers. Ours runs on the JAX backend under ``jax.jit`` with ``stateless_call``
(this process); the TensorFlow and PyTorch Keras backends run in a subprocess each where their
GPU builds see a GPU (skipped with the reason otherwise). Shapes 256 x 128, 32 x 128, 1 x 128 in
float32 and bfloat16 (weights stored in bf16), sequences per second from the median of 20 timed
calls after warm-up, each synchronised with the device. Float32 runs with full float32 matmuls on
both sides (JAX's default on GPUs is TF32; torch's is float32), and parity is checked to 1e-4.
The training step: sentiment head, batch 64 x 128, bf16 mixed precision, AdamW, ours with
``train_on_batch`` (``jit_compile=True``) against transformers with ``torch.autocast``.

Writes ``gpu.json`` and ``gpu.md`` (the GPU named). Without a GPU it says "no GPU: nothing
measured", still runs every code path on the CPU at a tiny size (so the script is tested where
no GPU is), writes those files marked as a dry run, and exits 0.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = os.environ.get("DH_GPU_BENCH_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# JAX would otherwise take 75% of the GPU's memory up front and leave torch little.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402  (after the backend is chosen)

from benchmarks.fixtures import TINY_ENCODER  # noqa: E402  (the repository root is on sys.path from here)
from benchmarks.timing import summarize  # noqa: E402

SEED = 0
PARITY_TOLERANCE = 1e-4
FULL = {
    "shapes": [(256, 128), (32, 128), (1, 128)],
    "train_shape": (64, 128),
    "repeats": 20,
    "warmup": 3,
    "encoder": {"variant": "base"},
}
# The dry run: the same code on the CPU, with a model and inputs small enough for a test.
TINY = {
    "shapes": [(4, 16), (1, 16)],
    "train_shape": (4, 16),
    "repeats": 2,
    "warmup": 1,
    "encoder": TINY_ENCODER,
}
DTYPES = ("float32", "bfloat16")
CONTENDERS = ("ours/jax", "transformers", "transformers+torch.compile")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where gpu.json/gpu.md go")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device is there (CPU)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the shared weights go (default: a temp dir)")
    parser.add_argument("--no-compile", action="store_true", help="skip transformers + torch.compile")
    parser.add_argument(
        "--backends",
        default="tensorflow,torch",
        help="other Keras backends to time ours on, each in a subprocess (default: tensorflow,torch; '' for none)",
    )
    # Internal: run ours on another Keras backend in this (sub)process and print its JSON.
    parser.add_argument("--ours-only", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- devices --------------------------------------------------------------------------------------
def jax_gpu() -> str | None:
    """The first JAX GPU's name, or None."""
    import jax

    try:
        devices = jax.devices("gpu")
    except RuntimeError:
        return None
    return devices[0].device_kind if devices else None


def torch_gpu() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def backend_gpu(backend: str) -> str | None:
    """Whether the Keras backend running in this process sees a GPU (its GPU build is installed)."""
    if backend == "jax":
        return jax_gpu()
    if backend == "torch":
        return torch_gpu()
    import tensorflow as tf

    devices = tf.config.list_physical_devices("GPU")
    return devices[0].name if devices else None


def take_the_gpu_attention_path() -> None:
    """Make the encoder take the attention path it takes on a GPU (fused attention, one QKV matmul).

    For the dry run: on the CPU the encoder keeps its CPU path (`layers.use_fused_attention`), so
    without this the dry run would not compile or check the code the GPU runs.
    """
    from distilbert_heads.encoder import layers

    layers.use_fused_attention = lambda: True
    layers.use_fused_qkv = lambda: True


def attention_path() -> dict[str, bool]:
    """The encoder's attention levers in this process (see `layers.use_fused_attention`)."""
    from distilbert_heads.encoder import layers

    return {"fused_attention": layers.use_fused_attention(), "fused_qkv": layers.use_fused_qkv()}


# -- timing ---------------------------------------------------------------------------------------
def median_time(fn: Callable[[], Any], repeats: int, warmup: int) -> dict[str, float]:
    """Median wall seconds of ``fn`` (which must wait for the device itself) after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarize(times)


def token_batch(batch: int, length: int, vocab_size: int, seed: int = SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[0, length // 2 :] = 0  # one padded row, so the mask path is timed and checked too
    ids = rng.integers(1, vocab_size, (batch, length)).astype("int32") * mask
    return {"input_ids": ids, "attention_mask": mask}


# -- shared weights -------------------------------------------------------------------------------
def write_weights(directory: Path, encoder_settings: dict[str, Any]) -> Path:
    """Random-init weights (seeded), written by our save_pretrained: the one checkpoint everyone loads."""
    import keras

    from distilbert_heads import DistilBERT

    if not (directory / "config.json").exists():
        keras.utils.set_random_seed(SEED)
        settings = dict(encoder_settings)
        variant = settings.pop("variant", None)
        encoder = DistilBERT.from_variant(variant) if variant else DistilBERT(**settings)
        encoder.save_pretrained(directory)
    return directory


def vocab_size(directory: Path) -> int:
    return int(json.loads((directory / "config.json").read_text())["vocab_size"])


# -- ours: JAX (this process) ---------------------------------------------------------------------
def ours_jax_compiled(weights: Path, dtype: str, batch: dict[str, np.ndarray]) -> tuple[Any, tuple[Any, ...]]:
    """Ours as one ``jax.jit(stateless_call)`` function returning the hidden states, and its arguments."""
    import jax

    from distilbert_heads import DistilBERT

    encoder = DistilBERT.from_pretrained(weights, dtype=dtype)
    trainable = [v.value for v in encoder.trainable_variables]
    frozen = [v.value for v in encoder.non_trainable_variables]
    inputs = {key: jax.device_put(value) for key, value in batch.items()}

    @jax.jit
    def forward(trainable: Any, frozen: Any, inputs: Any) -> Any:
        outputs, _ = encoder.stateless_call(trainable, frozen, inputs, training=False)
        return outputs["last_hidden_state"]

    return forward, (trainable, frozen, inputs)


def ours_jax_forward(weights: Path, dtype: str, batch: dict[str, np.ndarray]) -> Callable[[], Any]:
    """Ours under ``jax.jit(stateless_call)``; the call returns the hidden states, waited for."""
    forward, args = ours_jax_compiled(weights, dtype, batch)
    return lambda: forward(*args).block_until_ready()


# The custom-call targets of JAX's cuDNN fused attention (``__cudnn$fmhaSoftmax``, ``...ScaleBiasSoftmax``, ...).
CUDNN_ATTENTION_CALL = "__cudnn$fmha"


def attention_kernel(forward: Any, args: tuple[Any, ...]) -> str:
    """Which attention kernel ours runs (``forward, args`` from `ours_jax_compiled`): cuDNN's fused (flash)
    attention, or XLA's own ops.

    Read from the lowered program, so it reports what was built, not what was asked for: Keras and JAX choose
    cuDNN at trace time where the GPU, cuDNN version, dtype and shapes allow it and otherwise fall back to XLA
    (always on the CPU, and in float32); the choice is a custom call in the program. Lowering is not compiling:
    this costs no second compile of the model.
    """
    return (
        "cuDNN fused attention"
        if CUDNN_ATTENTION_CALL in forward.lower(*args).as_text()
        else "XLA (not fused by cuDNN)"
    )


def ours_jax_train_step(weights: Path, batch: dict[str, np.ndarray], labels: np.ndarray) -> Callable[[], Any]:
    """One ``train_on_batch`` of a sentiment model under mixed_bfloat16 with AdamW, XLA-compiled."""
    import keras

    from distilbert_heads import create_distilbert_with_head

    model = create_distilbert_with_head(
        task_type="sentiment", pretrained=str(weights), dtype="mixed_bfloat16", num_classes=2
    )
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-5), jit_compile=True)

    def step() -> Any:
        return model.train_on_batch(batch, labels)  # returns the loss as a host float: waits for the device

    return step


# -- ours on another backend (subprocess) ---------------------------------------------------------
def ours_other_backend(weights: Path, config: dict[str, Any], dry_run: bool) -> dict[str, Any]:
    """Forward timings of ours on this process's Keras backend (TensorFlow or torch), or why skipped."""
    import keras

    from distilbert_heads import DistilBERT

    backend = keras.backend.backend()
    gpu = backend_gpu(backend)
    if gpu is None and not dry_run:
        return {"skipped": f"the {backend} build installed sees no GPU"}
    rows: dict[str, Any] = {}
    for dtype in DTYPES:
        encoder = DistilBERT.from_pretrained(weights, dtype=dtype)
        for batch_size, length in config["shapes"]:
            batch = token_batch(batch_size, length, vocab_size(weights))
            if backend == "torch":
                import torch

                on = "cuda" if torch.cuda.is_available() else "cpu"  # where the torch backend puts variables
                inputs = {key: torch.as_tensor(value, device=on) for key, value in batch.items()}

                def run(encoder: Any = encoder, inputs: Any = inputs) -> Any:
                    with torch.no_grad():
                        out = encoder(inputs, training=False)["last_hidden_state"]
                    if torch.cuda.is_available():
                        torch.cuda.synchronize()
                    return out

            else:
                import tensorflow as tf

                fn = tf.function(lambda d, e=encoder: e(d, training=False)["last_hidden_state"], jit_compile=True)
                inputs = {key: tf.constant(value) for key, value in batch.items()}

                def run(fn: Any = fn, inputs: Any = inputs) -> Any:
                    return fn(inputs).numpy()  # .numpy() waits for the device

            stat = median_time(run, config["repeats"], config["warmup"])
            rows[f"{dtype} {batch_size}x{length}"] = {**stat, "seq_per_s": batch_size / stat["median_s"]}
    return {"device": gpu or "cpu", "rows": rows}


def run_other_backend(backend: str, weights: Path, dry_run: bool, scratch: Path) -> dict[str, Any]:
    out = scratch / f"ours-{backend}.json"
    command = [sys.executable, __file__, "--ours-only", str(out), "--workdir", str(weights.parent)]
    command += ["--dry-run"] if dry_run else []
    env = {**os.environ, "DH_GPU_BENCH_BACKEND": backend}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"skipped": f"the {backend} backend failed: {done.stderr.strip().splitlines()[-1:]}"}
    return json.loads(out.read_text())


# -- transformers ---------------------------------------------------------------------------------
def hf_forward(model: Any, batch: dict[str, np.ndarray], device: str) -> Callable[[], Any]:
    import torch

    ids = torch.as_tensor(batch["input_ids"], dtype=torch.int64, device=device)
    mask = torch.as_tensor(batch["attention_mask"], dtype=torch.int64, device=device)

    def run() -> Any:
        with torch.inference_mode():
            out = model(input_ids=ids, attention_mask=mask).last_hidden_state
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    return run


def hf_train_step(weights: Path, batch: dict[str, np.ndarray], labels: np.ndarray, device: str) -> Callable[[], Any]:
    import torch
    import transformers

    model = transformers.DistilBertForSequenceClassification.from_pretrained(weights, num_labels=2).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    ids = torch.as_tensor(batch["input_ids"], dtype=torch.int64, device=device)
    mask = torch.as_tensor(batch["attention_mask"], dtype=torch.int64, device=device)
    target = torch.as_tensor(labels, dtype=torch.int64, device=device)

    def step() -> Any:
        with torch.autocast(device_type=device, dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=mask, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return step


# -- the run --------------------------------------------------------------------------------------
def measure(
    weights: Path,
    config: dict[str, Any],
    compile_peer: bool,
    backends: list[str],
    scratch: Path,
    dry_run: bool,
    progress: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Parity, the forward passes, the training step, then ours on the other backends; ``progress`` gets the
    result so far after each, so a run stopped at the GPU machine's time limit still leaves what it measured."""
    import jax
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    vocab = vocab_size(weights)
    hf = {
        "float32": transformers.DistilBertModel.from_pretrained(weights).to(device).eval(),
        "bfloat16": transformers.DistilBertModel.from_pretrained(weights, dtype=torch.bfloat16).to(device).eval(),
    }
    compiled = {dtype: torch.compile(model) for dtype, model in hf.items()} if compile_peer else {}
    result: dict[str, Any] = {
        "ours_device": str(jax.devices()[0].device_kind),
        "forward": {},
        "parity": {},
        "attention_kernel": {},
        "attention_path": attention_path(),
        "ours_other_backends": {},
    }

    # Parity in float32, full-precision matmuls on both sides, on every shape.
    with jax.default_matmul_precision("float32"):
        for batch_size, length in config["shapes"]:
            batch = token_batch(batch_size, length, vocab)
            ours = np.asarray(ours_jax_forward(weights, "float32", batch)(), np.float32)
            theirs = hf_forward(hf["float32"], batch, device)().float().cpu().numpy()
            keep = batch["attention_mask"].astype(bool)
            result["parity"][f"{batch_size}x{length}"] = float(np.abs(ours - theirs)[keep].max())
    progress(result)

    for dtype in DTYPES:
        for batch_size, length in config["shapes"]:
            batch = token_batch(batch_size, length, vocab)
            contenders = {"ours/jax": None, "transformers": hf_forward(hf[dtype], batch, device)}
            # Compiled at the first (largest) shape only: each shape is a recompile of a minute or so.
            if dtype in compiled and (batch_size, length) == config["shapes"][0]:
                contenders["transformers+torch.compile"] = hf_forward(compiled[dtype], batch, device)
            precision = "float32" if dtype == "float32" else "default"
            with jax.default_matmul_precision(precision):
                forward, args = ours_jax_compiled(weights, dtype, batch)
                contenders["ours/jax"] = lambda forward=forward, args=args: forward(*args).block_until_ready()
                result["attention_kernel"][f"{dtype} {batch_size}x{length}"] = attention_kernel(forward, args)
                for name, run in contenders.items():
                    stat = median_time(run, config["repeats"], config["warmup"])
                    key = f"{dtype} {batch_size}x{length}"
                    result["forward"].setdefault(key, {})[name] = {**stat, "seq_per_s": batch_size / stat["median_s"]}
            progress(result)

    batch_size, length = config["train_shape"]
    batch = token_batch(batch_size, length, vocab)
    labels = (np.arange(batch_size) % 2).astype("int32")
    result["train_step"] = {
        "shape": f"{batch_size}x{length}",
        "ours/jax": median_time(ours_jax_train_step(weights, batch, labels), config["repeats"], config["warmup"]),
        "transformers+autocast": median_time(
            hf_train_step(weights, batch, labels, device), config["repeats"], config["warmup"]
        ),
    }
    progress(result)
    result["ours_other_backends"] = {}
    for backend in backends:
        result["ours_other_backends"][backend] = run_other_backend(backend, weights, dry_run, scratch)
        progress(result)
    return result


def measured(result: dict[str, Any]) -> list[str]:
    """What ``result`` holds so far, in a few words (the progress lines)."""
    parts = [f"parity {len(result['parity'])} shapes", f"forward {len(result['forward'])} rows"]
    parts += ["training step"] if "train_step" in result else []
    return parts + [f"ours on {backend}" for backend in result["ours_other_backends"]]


def ratios(result: dict[str, Any]) -> dict[str, float]:
    """The issue's ratios (> 1: ours faster): per shape and dtype, ours vs each transformers mode."""
    out = {}
    for key, rows in result["forward"].items():
        for name, row in rows.items():
            if name != "ours/jax":
                out[f"{key} ours/{name}"] = rows["ours/jax"]["seq_per_s"] / row["seq_per_s"]
    train = result.get("train_step")
    if train is not None:
        out["train ours/transformers+autocast"] = (
            train["transformers+autocast"]["median_s"] / train["ours/jax"]["median_s"]
        )
    return out


INCOMPLETE = "**Incomplete: the run stopped before its end; what it measured so far.**"


def markdown(report: dict[str, Any]) -> str:
    r = report["result"]
    lines = [
        f"# distilbert-heads GPU benchmark{' (DRY RUN on the CPU: not GPU figures)' if report['dry_run'] else ''}",
        "",
        *([] if report["complete"] else [INCOMPLETE, ""]),
        f"{report['started']}. Device: {report['device']}; ours (JAX) ran on {r['ours_device']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in report["versions"].items() if v)
        + ".",
        "",
        "| dtype batch x length | " + " | ".join(CONTENDERS) + " |",
        "| --- |" + " ---: |" * len(CONTENDERS),
    ]
    for key, rows in r["forward"].items():
        cells = [f"{rows[name]['seq_per_s']:,.0f} seq/s" if name in rows else "" for name in CONTENDERS]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    train = r.get("train_step")
    if train is not None:
        lines += [
            "",
            f"Training step ({train['shape']}, sentiment head, bf16 mixed, AdamW): ours (JAX) "
            f"{train['ours/jax']['median_s'] * 1e3:.1f} ms, transformers + autocast "
            f"{train['transformers+autocast']['median_s'] * 1e3:.1f} ms.",
        ]
    lines += [
        "",
        f"Attention path of ours: {r['attention_path']}. Attention kernel (JAX, read from the compiled program): "
        + ", ".join(f"{k} {v}" for k, v in r["attention_kernel"].items())
        + ". The training step applies attention dropout (0.1), which the fused op lacks: it trains through"
        " the unfused attention.",
        "",
        "Float32 parity, max |ours - transformers| over real tokens: "
        + ", ".join(f"{k} {v:.2e}" for k, v in r["parity"].items())
        + f" (tolerance {PARITY_TOLERANCE:g}).",
        "",
        "Ratios (> 1: ours faster): " + ", ".join(f"{k} {v:.2f}x" for k, v in report["ratios"].items()) + ".",
        "",
    ]
    for backend, other in r["ours_other_backends"].items():
        if "skipped" in other:
            lines.append(f"Ours on {backend}: skipped ({other['skipped']}).")
        else:
            shown = ", ".join(f"{k} {row['seq_per_s']:,.0f} seq/s" for k, row in other["rows"].items())
            lines.append(f"Ours on {backend} ({other['device']}): {shown}.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = TINY if args.dry_run else FULL
    if args.dry_run:
        take_the_gpu_attention_path()
    if args.ours_only is not None:  # the subprocess for the TensorFlow or torch backend
        weights = args.workdir / "weights"
        args.ours_only.write_text(json.dumps(ours_other_backend(weights, config, args.dry_run)))
        return 0
    from benchmarks import machine

    gpu = jax_gpu() or torch_gpu()
    if gpu is None and not args.dry_run:
        print("no GPU: nothing measured (running the same code paths on the CPU at a tiny size)", flush=True)
        config, args.dry_run = TINY, True
        take_the_gpu_attention_path()
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    versions = machine.describe()["versions"]

    def write(result: dict[str, Any], complete: bool) -> dict[str, Any]:
        report = {
            "started": started,
            "complete": complete,
            "dry_run": args.dry_run,
            "device": gpu or "cpu",
            "jax_gpu": jax_gpu(),
            "torch_gpu": torch_gpu(),
            "versions": versions,
            "result": result,
            "ratios": ratios(result),
        }
        report["parity_ok"] = bool(result["parity"]) and all(v <= PARITY_TOLERANCE for v in result["parity"].values())
        args.out.mkdir(parents=True, exist_ok=True)
        for name, text in (("gpu.json", json.dumps(report, indent=2) + "\n"), ("gpu.md", markdown(report))):
            partial = args.out / f"{name}.partial"  # replaced whole: a kill mid-write leaves the last good file
            partial.write_text(text)
            partial.replace(args.out / name)
        if not complete:
            print(f"{time.strftime('%H:%M:%S')} measured so far: {', '.join(measured(result))}", flush=True)
        return report

    with tempfile.TemporaryDirectory(prefix="dh-gpu-") as tmp:
        workdir = args.workdir or Path(tmp)
        weights = write_weights(workdir / "weights", config["encoder"])
        backends = [name.strip() for name in args.backends.split(",") if name.strip()]
        progress = functools.partial(write, complete=False)
        result = measure(weights, config, not args.no_compile, backends, Path(tmp), args.dry_run, progress)
    report = write(result, complete=True)
    bad = {k: v for k, v in result["parity"].items() if not v <= PARITY_TOLERANCE}
    print(markdown(report))
    if gpu is None:
        print("no GPU: nothing measured", flush=True)
    if bad:
        print(f"PARITY FAILED: max abs diff {bad} above {PARITY_TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
