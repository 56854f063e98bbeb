#!/usr/bin/env bash
# Puts into .whl/ (git-ignored) the wheels benchmarks/gpu.py needs on the lent GPU machine that its
# image lacks: Keras, pydantic and their small dependencies, and this project's own wheel. That
# machine runs Python 3.12 with CUDA builds of JAX, PyTorch and transformers, has no TensorFlow
# and reaches no package registry, so the wheels travel with the working tree. The versions are
# the ones installed here, which the tests passed with. The command that installs and runs them
# there is in benchmarks/README.md ("GPUs").
set -euo pipefail
cd "$(dirname "$0")/.."

mapfile -t pins < <(python - <<'PY'
from importlib.metadata import version

for name in ("keras", "namex", "optree", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
             "typing-extensions"):
    print(f"{name}=={version(name)}")
PY
)
platforms=(--platform manylinux2014_x86_64)
for glibc in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${glibc}_x86_64"); done

rm -rf .whl
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "${pins[@]}"
python -m pip wheel -q --no-deps --no-build-isolation -w .whl .
ls -1 .whl
du -sh .whl
