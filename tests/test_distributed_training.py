"""Data-parallel training (`distilbert_heads.training.distributed`): two JAX processes on localhost (gloo) and two
virtual CPU devices in one process train the weights a single-process run trains on the same global batches; a
distributed run killed after a checkpoint resumes to the same end; backends and settings that cannot distribute are
refused, never run on one device."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import TINY_TRAINING, assert_mentions, demo_rows, train_worker_command

from distilbert_heads.cli import main
from distilbert_heads.training import distributed, streaming
from distilbert_heads.training.checkpointing import LAST, STATE
from distilbert_heads.training.settings import TrainingError

# 24 rows in global batches of 4: 6 steps an epoch, 12 in 2 epochs.
RUN = {"epochs": 2, "batch_size": 4, "max_length": 32, "seed": 3, "token_dropout": 0.2}
STEPS = 12
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_workers(
    directory: Path, data: Path, settings: dict, *, processes: int = 0, kill_at: int = 0, env: dict | None = None
) -> list[tuple[list[np.ndarray], dict]]:
    """Train on ``data`` with ``settings`` (the tiny encoder added) in ``processes`` processes joined on a free
    localhost port (0: one plain process), each killed (SIGKILL, no cleanup) right after step ``kill_at`` (when not 0)
    once the step has finished in every process; each one's final weights and report (`helpers.train_worker`). A
    process that fails or hangs fails the test with its output."""
    directory.mkdir(parents=True, exist_ok=True)
    environment = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "JAX_PLATFORMS": "cpu",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(env or {}),
    }
    port = _free_port()
    launched = []
    for index in range(max(processes, 1)):
        spec = dict(settings)
        if processes:
            spec["distribution"] = {
                **spec.get("distribution", {}),
                "coordinator": f"127.0.0.1:{port}",
                "num_processes": processes,
                "process_id": index,
            }
        out = directory / f"weights{index}.npz"
        command = train_worker_command("sentiment", str(data), {**spec, **TINY_TRAINING}, kill_at=kill_at, report=out)
        log = open(directory / f"log{index}.txt", "w")
        launched.append((subprocess.Popen(command, env=environment, stdout=log, stderr=subprocess.STDOUT), out, log))
    results = []
    for process, out, log in launched:
        try:
            process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for other, _, _ in launched:
                other.kill()
            pytest.fail(f"a training process hung; its output: {log.name}")
        log.close()
        if kill_at:
            assert process.returncode == -9, Path(log.name).read_text()[-3000:]
            continue
        assert process.returncode == 0, Path(log.name).read_text()[-3000:]
        with np.load(out) as saved:
            weights = [saved[key] for key in saved.files]
        results.append((weights, json.loads(Path(f"{out}.json").read_text())))
    return results


def assert_close(first: list[np.ndarray], second: list[np.ndarray], atol: float) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("data")
    paths = {"train": directory / "train.jsonl", "eval": directory / "eval.jsonl"}
    paths["train"].write_text("".join(json.dumps(r) + "\n" for r in demo_rows("sentiment", 24)), encoding="utf-8")
    paths["eval"].write_text("".join(json.dumps(r) + "\n" for r in demo_rows("sentiment", 10, "test")), "utf-8")
    return paths


@pytest.fixture(scope="module")
def single(files, tmp_path_factory) -> list[np.ndarray]:
    """One process, one device: the weights the distributed runs must reproduce."""
    directory = tmp_path_factory.mktemp("single")
    [(weights, report)] = run_workers(directory, files["train"], {**RUN, "eval_file": str(files["eval"])})
    assert report["distribution"] is None
    return weights


@pytest.mark.slow
def test_two_processes_train_the_single_process_weights(files, single, tmp_path):
    """Two processes on localhost, each feeding half of every global batch, end with identical weights equal to the
    single-process run's; held-out scoring runs in both; only process 0 writes the model and the checkpoints."""
    settings = {
        **RUN,
        "eval_file": str(files["eval"]),
        "out": str(tmp_path / "model.keras"),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "checkpoint_every": 4,
    }
    (first, report0), (second, report1) = run_workers(tmp_path / "run", files["train"], settings, processes=2)
    assert_close(first, second, atol=0)  # one model, replicated: bit for bit
    assert_close(first, single, atol=1e-5)
    assert report0["distribution"] == {"strategy": "data-parallel", "replicas": 2, "processes": 2, "process_id": 0}
    assert report1["distribution"]["process_id"] == 1
    assert report0["path"] == settings["out"] and report1["path"] is None
    assert Path(settings["out"]).is_file()
    state = json.loads((tmp_path / "checkpoints" / LAST / STATE).read_text())
    assert (state["global_step"], state["finished"]) == (STEPS, True)
    assert set(report0["history"]) >= {"loss", "val_accuracy"}


def test_two_devices_in_one_process_train_the_single_device_weights(files, single, tmp_path):
    """Two virtual CPU devices (XLA_FLAGS) split each batch: the weights equal the one-device run's."""
    settings = {**RUN, "eval_file": str(files["eval"]), "distribution": {"devices": 2}}
    [(weights, report)] = run_workers(
        tmp_path, files["train"], settings, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    )
    assert report["distribution"] == {"strategy": "data-parallel", "replicas": 2, "processes": 1, "process_id": 0}
    assert_close(weights, single, atol=1e-5)


@pytest.mark.slow
def test_killed_distributed_run_resumes_to_the_uninterrupted_weights(files, single, tmp_path):
    """Both processes killed (SIGKILL) after step 5, the last checkpoint at step 4: resumed over two processes, the
    run ends with the weights of the uninterrupted run."""
    settings = {
        **RUN,
        "eval_file": str(files["eval"]),
        "checkpoint_dir": str(tmp_path / "checkpoints"),
        "checkpoint_every": 4,
    }
    run_workers(tmp_path / "killed", files["train"], settings, processes=2, kill_at=5)
    state = json.loads((tmp_path / "checkpoints" / LAST / STATE).read_text())
    assert (state["epoch"], state["batch"], state["global_step"]) == (0, 4, 4)
    resumed = run_workers(tmp_path / "resumed", files["train"], {**settings, "resume": True}, processes=2)
    for weights, _ in resumed:
        assert_close(weights, single, atol=1e-5)


def _split(process: int, processes: int, replicas: int) -> distributed.DataParallelRun:
    return distributed.DataParallelRun(
        distributed.Distribution(),
        process_index=process,
        process_count=processes,
        replicas=replicas,
        scope=contextlib.nullcontext,
    )


@pytest.mark.parametrize(("processes", "replicas"), [(2, 2), (2, 4), (1, 4), (4, 4)])
def test_processes_share_out_the_single_process_batches(tmp_path, demo_tokenizer, processes, replicas):
    """Each process's rows of every batch, put together in process order, are the single-process batch: same rows,
    same order, same padded width; an epoch's short last batch is cut to what the replicas split, and says so."""
    from distilbert_heads.heads.sentiment import SentimentHead

    rows = [{"text": " ".join(["great"] * (1 + i % 37)), "label": float(i)} for i in range(50)]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    head = SentimentHead(16, "text_regression", {"num_classes": 1})

    def stream(split):
        encoder = streaming.ExampleEncoder(head, demo_tokenizer, 64, path)
        options = {"head_name": "h", "batch_size": 8, "seed": 3, "token_dropout": 0.3, "split": split}
        return streaming.TrainingStream(path, SentimentHead.example_schema, "sentiment", encoder, **options)

    whole = list(stream(None).batches(1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        shares = [list(stream(_split(p, processes, replicas)).batches(1)) for p in range(processes)]
    cut = 50 % 8 % replicas  # rows of the last batch (2) that do not split across the replicas
    assert [len(share) for share in shares] == [len(whole) - (cut == 2)] * processes
    for index, parts in enumerate(zip(*shares)):
        (x, y), usable = whole[index], 8 if index < 6 else 2 - cut
        for key in x:
            np.testing.assert_array_equal(np.concatenate([part[0][key] for part in parts]), x[key][:usable])
        np.testing.assert_array_equal(
            np.concatenate([part[1]["h"]["logits"] for part in parts]), y["h"]["logits"][:usable]
        )
    messages = [str(w.message) for w in caught if "replicas" in str(w.message)]
    assert bool(messages) == bool(cut)
    if cut:
        assert_mentions(messages[0], "rows.jsonl", "2 row(s)", f"{replicas} replicas", "left out")


@pytest.mark.parametrize(
    ("backend", "setting", "batch_size", "seed", "facts"),
    [
        ("torch", {}, 16, 1, ["PyTorch", "KERAS_BACKEND=jax"]),
        (
            "tensorflow",
            {"num_processes": 2, "coordinator": "h:1", "process_id": 0},
            16,
            1,
            ["keras-team/keras#20585", "KERAS_BACKEND=jax", "mirrored"],
        ),
        ("tensorflow", {}, 16, 1, ["prototype", "KERAS_BACKEND=jax", "mirrored"]),
        ("jax", {"strategy": "mirrored"}, 16, 1, ["MirroredStrategy", "TensorFlow", "data-parallel"]),
        (
            "jax",
            {"num_processes": 2, "coordinator": "h:1", "process_id": 0},
            5,
            1,
            ["batch_size 5", "2 processes", "6"],
        ),
        ("jax", {"num_processes": 2, "coordinator": "h:1", "process_id": 0}, 16, None, ["seed", "--seed"]),
        ("jax", {"num_processes": 2, "coordinator": "h:1", "process_id": 2}, 16, 1, ["process_id 2", "0 to 1"]),
        ("jax", {"num_processes": 2, "process_id": 0}, 16, 1, ["--coordinator HOST:PORT", "2 processes"]),
    ],
)
def test_a_distribution_that_cannot_run_is_refused(monkeypatch, backend, setting, batch_size, seed, facts):
    """Never a silent single-device run: the backend, the batch size and the process settings are checked first."""
    for name in (distributed.ENV_COORDINATOR, distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(keras.backend, "backend", lambda: backend)
    with pytest.raises(TrainingError) as error:
        distributed.setup(distributed.parse_distribution(setting), batch_size=batch_size, seed=seed)
    assert_mentions(error.value, *facts)


@pytest.mark.parametrize(
    ("value", "facts"),
    [
        ("model-parallel", ["model-parallel", "data-parallel", "mirrored"]),
        ({"devices": 0}, ["devices", "at least one"]),
        ({"devices": "cpu:0", "gpus": 2}, ["gpus"]),
    ],
)
def test_a_malformed_distribution_is_refused(value, facts):
    with pytest.raises(TrainingError) as error:
        distributed.parse_distribution(value)
    assert_mentions(error.value, *facts)


def test_environment_gives_the_process_settings(monkeypatch):
    monkeypatch.setenv(distributed.ENV_COORDINATOR, "10.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "3")
    setting = distributed.Distribution(process_id=1).from_environment()
    assert (setting.coordinator, setting.num_processes, setting.process_id) == ("10.0.0.1:1234", 4, 1)


def test_process_flags_without_distribution_are_refused(files, capsys, tmp_path):
    command = ["train", "--task", "sentiment", "--train", str(files["train"]), "--out", str(tmp_path / "m.keras")]
    code = main([*command, "--num-processes", "2"])
    assert code == 2
    assert_mentions(capsys.readouterr().err, "--num-processes", "--distribution data-parallel")
