#!/usr/bin/env bash
# Issue 27, "same learning": the CIFAR-10 subset supernet (benchmarks/tasks/cifar10-subset.yaml, 30 epochs)
# trained through Ray Data from a local S3 server (moto), to compare with the DataLoader run that
# benchmarks/trust_experiments.sh makes (RUNS/cifar-entangled): smallest and largest subnet search top-1 within
# one score's interval of it (docs/data.md).
#
#   nohup bash benchmarks/ingest_learning.sh > RUNS/ingest-learning.log 2>&1 &
#
# moto keeps its objects in memory, so every start packs the subset again (the same shards and fingerprint
# each time); the training's checkpoints are on local storage, so a second start resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-/work/bench-runs}
DATA=${DATA:-/work/shared/data/cifar10-10k}
PORT=${PORT:-5123}
AF=${AF:-.venv/bin/autoformer}
PY=${PY:-.venv/bin/python}
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_DEFAULT_REGION=us-east-1
mkdir -p "$RUNS"
"$(dirname "$PY")/moto_server" -H 127.0.0.1 -p "$PORT" > "$RUNS/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO' EXIT
sleep 3
$PY -c "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"
start=$(date +%s)
$AF data pack "$DATA" s3://bench/cifar10-10k-packed
echo "pack $(( $(date +%s) - start )) s" >> "$RUNS/times.txt"
start=$(date +%s)
$AF train benchmarks/tasks/cifar10-subset.yaml --set data.root=s3://bench/cifar10-10k-packed \
  --set data.ingest=ray_data --storage "$RUNS" --name cifar-entangled-raydata
echo "train-entangled-raydata $(( $(date +%s) - start )) s" >> "$RUNS/times.txt"
