# Sourced by the other scripts: create .venv (once) and install vggtransfer into it (again when setup.py changes).
# PYTHON picks the interpreter (default python3, 3.10 or newer). The CPU build of TensorFlow is the default
# (extra "cpu"); set VGGTRANSFER_EXTRAS=gpu,onnx,ray,test for the GPU build.
set -euo pipefail
: "${PYTHON:=python3}"
: "${VGGTRANSFER_EXTRAS:=cpu,onnx,ray,test}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: $PYTHON is older than 3.10" >&2; exit 2; }
  "$PYTHON" -m venv .venv
fi
stamp="$(cat setup.py | sha256sum | cut -c1-16)-$VGGTRANSFER_EXTRAS"
if [ "$(cat .venv/.vggtransfer-installed 2>/dev/null)" != "$stamp" ]; then
  # pip and setuptools talk a lot (index warnings, build-backend notices): keep it in a log, shown only on failure.
  echo "Setting up .venv (vggtransfer[$VGGTRANSFER_EXTRAS]); the log is .venv/install.log" >&2
  if ! { .venv/bin/python -m pip install --upgrade pip \
         && .venv/bin/python -m pip install -e ".[$VGGTRANSFER_EXTRAS]"; } > .venv/install.log 2>&1; then
    tail -n 40 .venv/install.log >&2
    echo "error: installing vggtransfer into .venv failed (full log: .venv/install.log)" >&2
    exit 2
  fi
  echo "$stamp" > .venv/.vggtransfer-installed
fi
export PATH="$PWD/.venv/bin:$PATH"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
