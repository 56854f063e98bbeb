"""Our encoder on another Keras backend (JAX or PyTorch), timed inside the TensorFlow benchmark's loop.

``run.py`` pins ``KERAS_BACKEND=tensorflow`` for its own process, and Keras picks its backend once
per process, so ours on JAX and on PyTorch runs in a child process each. The child loads the same
checkpoint the parent wrote, in every dtype mode, and then answers one request per line on stdin
with one JSON line on stdout:

    {"op": "run", "dtype": "bfloat16", "batch": 32, "length": 128}        -> {"ok": true}
    {"op": "save", "dtype": "float32", "batch": 4, "length": 128, "path": "out.npy"}  -> {"ok": true}

So the parent's round-robin loop (`benchmarks.timing.interleaved`) times one call of the child
exactly as it times its own contenders (A, B, C, A, B, C, ...), and load from elsewhere hits all of
them alike; the round trip through the pipe costs well under a millisecond. JAX runs
``jax.jit`` over ``stateless_call``, PyTorch runs eagerly under ``no_grad`` (the calls
`benchmarks.int8_backends.runner` makes). Inputs are `benchmarks.fixtures.token_batch`, rebuilt
from the same seed on both sides.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402  (after the repository root is on sys.path)

DTYPES = ("float32", "bfloat16", "mixed_bfloat16")
START_TIMEOUT_S = 600


class WorkerError(RuntimeError):
    """The child process failed to start or to answer; the message holds the tail of its log."""


class BackendWorker:
    """A child process running our encoder on ``backend``; `call` sends one request and waits for its answer."""

    def __init__(self, backend: str, weights: Path, log: Path, dtypes: Sequence[str] = DTYPES) -> None:
        self.backend, self.log = backend, log
        env = {**os.environ, "KERAS_BACKEND": backend}
        command = [sys.executable, str(Path(__file__).resolve()), "--weights", str(weights), "--dtypes", *dtypes]
        with open(log, "w", encoding="utf-8") as log_file:
            self.process = subprocess.Popen(
                command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log_file, text=True
            )
        self.dtypes: tuple[str, ...] = ()

    def wait_ready(self) -> BackendWorker:
        """Wait until the child has loaded every dtype mode (start several children first, then wait)."""
        self.dtypes = tuple(self._answer()["dtypes"])
        return self

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=60)
            raise WorkerError(
                f"our encoder on the {self.backend} backend exited (code {self.process.returncode}) without an "
                f"answer; the end of its log {self.log}: {self.log_tail()}"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"our encoder on the {self.backend} backend failed: {answer['error']}")
        return answer

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def runner(self, dtype: str, batch: int, length: int) -> Callable[[], Any]:
        """A zero-argument call that runs one batch in the child (for `benchmarks.timing.interleaved`)."""
        request = {"op": "run", "dtype": dtype, "batch": batch, "length": length}
        return lambda: self.call(request)

    def output(self, dtype: str, batch: int, length: int, path: Path) -> np.ndarray:
        """The child's ``last_hidden_state`` for `token_batch(batch, length)` in float32."""
        self.call({"op": "save", "dtype": dtype, "batch": batch, "length": length, "path": str(path)})
        return np.load(path)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- the child ------------------------------------------------------------------------------------
def serve(weights: Path, dtypes: Sequence[str], requests: IO[str], answers: IO[str]) -> None:
    from benchmarks.fixtures import token_batch
    from benchmarks.int8_backends import runner
    from distilbert_heads import DistilBERT

    def answer(payload: dict[str, Any]) -> None:
        answers.write(json.dumps(payload) + "\n")
        answers.flush()

    try:
        encoders = {dtype: DistilBERT.from_pretrained(weights, dtype=dtype) for dtype in dtypes}
        vocab_size = encoders[dtypes[0]].config.vocab_size
    except Exception as error:  # noqa: BLE001  (the parent shows the reason and skips these contenders)
        answer({"error": f"loading {weights}: {type(error).__name__}: {error}"})
        return
    answer({"dtypes": list(dtypes)})
    runners: dict[tuple[str, int, int], Callable[[], Any]] = {}
    for line in requests:
        try:
            request = json.loads(line)
            key = (request["dtype"], int(request["batch"]), int(request["length"]))
            if key not in runners:
                batch = token_batch(key[1], key[2], vocab_size=vocab_size)
                runners[key] = runner(encoders[key[0]], batch)
            output = runners[key]()
            if request["op"] == "save":
                np.save(request["path"], np.asarray(output, dtype=np.float32))
            answer({"ok": True})
        except Exception as error:  # noqa: BLE001  (answered, so the parent never waits on a dead pipe)
            answer({"error": f"{type(error).__name__}: {error}"})


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    args = parser.parse_args(argv)
    # Answers go to the real stdout; anything a library prints goes to stderr (the parent's log file).
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(args.weights, args.dtypes, sys.stdin, answers)


if __name__ == "__main__":
    main()
