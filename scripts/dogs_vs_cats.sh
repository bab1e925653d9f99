#!/usr/bin/env bash
# The main job: the tutorial's stages on the Dogs vs Cats split beside the checkout.
#   scripts/dogs_vs_cats.sh [RUN]      (default RUN=runs/dvc; DATA and MODEL can be overridden from the environment)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${1:-runs/dvc}
data=${DATA:-../shared/data/dogs_vs_cats}
model=${MODEL:-../shared/models/vgg16_keras_notop.onnx}
cargo build --release -p bottleneck-cli
bin=target/release/bottleneck
$bin extract --data "$data" --model "$model" --preprocess caffe --run "$run"
$bin train-head --run "$run" --force
