#!/usr/bin/env bash
# Peak RSS (GNU time -v) of: importing TensorFlow alone, and a fresh process that restores a trained model from
# conv-only weights and predicts one image. Usage: bench/rss_predict.sh MODEL_DIR WEIGHTS IMAGE
set -euo pipefail
model="$1"; weights="$2"; image="$3"
py="${PYTHON:-python}"
rss() { /usr/bin/time -v "$@" 2>&1 >/dev/null | awk -F': ' '/Maximum resident set size/ {printf "%.0f MiB\n", $2/1024}'; }
echo "import tensorflow:            $(rss "$py" -c 'import tensorflow')"
echo "restore + predict one image:  $(rss "$py" -c "import sys; from vggtransfer import Vgg16; print(Vgg16(sys.argv[1], restore_from=sys.argv[2]).predict(sys.argv[3]))" "$weights" "$model" "$image")"
