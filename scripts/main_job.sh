#!/usr/bin/env bash
# The main job, from a fresh clone: tiger/cat body-length regressor end to end.
#   1. set up .venv;  2. fetch the ImageNet VGG16 weights into weights/ (verified by sha256);
#   3. download the tutorial's ImageNet URL lists into data/tiger, data/kittycat (validated, resumable);
#   4. where the image hosts can't be reached, use $VGGTRANSFER_DATA, else ../shared/data/morvan_tiger_kittycat/data;
#   5. train, evaluate on a held-out split, predict the demo photos from a fresh process, write plots.
# Extra arguments go to examples/train_length_regressor.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

if [ -z "${VGGTRANSFER_WEIGHTS:-}" ]; then
  vggtransfer fetch-weights --cache-dir weights
  export VGGTRANSFER_WEIGHTS="$PWD/weights/vgg16_conv_imagenet.npy"
fi

count_images() { find "$1/tiger" "$1/kittycat" -type f 2>/dev/null | wc -l; }
data="${VGGTRANSFER_DATA:-data}"
if [ "$data" = data ] && [ "$(count_images data)" -lt 100 ]; then
  lists_args=()  # local copies of the two URL lists where ../shared has them, else fetched from GitHub
  [ -f ../shared/data/morvan_tiger_kittycat/imagenet_tiger.txt ] && lists_args=(--lists ../shared/data/morvan_tiger_kittycat)
  python examples/download_imagenet_urls.py --data data --max-per-class 400 --no-progress "${lists_args[@]}" || true
  if [ "$(count_images data)" -lt 100 ]; then
    shared=../shared/data/morvan_tiger_kittycat/data
    if [ -d "$shared" ]; then
      echo "The image hosts could not be reached; using the images in $shared instead."
      data="$shared"
    else
      echo "error: too few images in data/ and no ../shared copy; see README section 'Images'." >&2
      exit 2
    fi
  fi
fi
demo_args=()
if [ -d "$data/../demo" ]; then :; elif [ -d ../shared/data/morvan_tiger_kittycat/demo ]; then
  demo_args=(--demo ../shared/data/morvan_tiger_kittycat/demo/tiger/391412.jpg ../shared/data/morvan_tiger_kittycat/demo/kittycat/000129037.jpg)
fi
exec python examples/train_length_regressor.py --data "$data" "${demo_args[@]}" "$@"
