#!/usr/bin/env bash
# The whole tutorial on the Dogs vs Cats split beside the checkout, in one resumable command:
# stage 1 (small convnet from scratch), extract, train-head, finetune, then RUN/report.md and RUN/report.html.
# Defaults are bottleneck's recipe (see README); pass --keras2016 for the 2016 tutorial's own settings.
#   scripts/tutorial.sh [RUN] [extra `bottleneck tutorial` flags…]
#       (default RUN=runs/tutorial; DATA and MODEL can be overridden from the environment)
# Run it again after an interruption: finished stages are reused and fine-tuning resumes from its checkpoint.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
run=${1:-runs/tutorial}
shift || true
data=${DATA:-../shared/data/dogs_vs_cats}
model=${MODEL:-../shared/models/vgg16_keras_notop.onnx}
if [ ! -d .ort/lib ]; then
  scripts/setup.sh
fi
cargo build --release -p bottleneck-cli
bin=target/release/bottleneck
$bin tutorial --data "$data" --model "$model" --preprocess caffe --run "$run" "$@"
echo "report: $run/report.md and $run/report.html"
