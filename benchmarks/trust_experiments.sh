#!/usr/bin/env bash
# Issue 28's measurements on the CIFAR-10 subset (docs/fidelity.md, "Know when to trust"), in order of value:
#
#   nohup bash benchmarks/trust_experiments.sh > RUNS/trust.log 2>&1 &
#
# Each step is skipped when its result exists and resumes when interrupted (see experiment_steps.sh), so the chain
# continues across sessions. Then
#   python benchmarks/probe_history.py RUNS/cifar-entangled RUNS/cifar-entangled-75
# prints the probe histories and where stop rules would have fired, and fidelity.json / candidates.parquet of the
# runs below hold the re-ranking figures. Wall times go to $RUNS/times.txt. On 2 CPU cores: the 30-epoch supernet
# about 17 minutes, the 75-epoch one about 45, the re-ranked search about 5 minutes plus 8 x 100 steps, the
# fidelity report hours (16 stand-alone trainings of 15 epochs, 20-35 minutes each, two side by side).
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_steps.sh  # RUNS, DATA, TASK, AF, PY, LIMIT, FRONT and the shared steps

# 1. The 30-epoch entangled supernet (its probe history: probe.parquet, 16 architectures, probe_every auto).
supernet entangled

# 2. Re-ranking's cost: the front search with its shortlist (8) fine-tuned 100 steps each; the rerank lines and
#    "[rerank] done: ... in S s" against the supernet's training time (times.txt).
search entangled cifar-rerank "${FRONT[@]}" --rerank-top 8 --rerank-steps 100

# 3. The 75-epoch supernet: does the probe tell it from the 30-epoch one, and when would a stop rule have fired?
step train-entangled-75 "$RUNS/cifar-entangled-75/supernet/config.json" \
  $AF train $TASK --set data.root="$DATA" --set train.epochs=75 --storage "$RUNS" --name cifar-entangled-75

# 4. The fidelity report with the ceiling and re-ranked columns: 8 architectures, 2 seeds of stand-alone training
#    (15 epochs), each also scored after 50, 100 and 200 fine-tuning steps from inherited weights.
step fidelity-rerank "$RUNS/cifar-fidelity-rerank/fidelity.json" \
  $AF fidelity --supernet "$RUNS/cifar-entangled/supernet" --archs 8 --seeds 2 --rerank-steps 50 100 200 \
  --set data.root="$DATA" --set retrain.epochs=15 --set retrain.warmup_epochs=1 --storage "$RUNS" \
  --name cifar-fidelity-rerank --cpus-per-trial 1
# 5. What the probe costs: 3 epochs scored after each; "[train] probe of 16 architectures (N evaluations, S s: P %
#    of the training time)" and probe.parquet's seconds against the epochs' epoch_time_s (supernet/config.json).
step probe-cost "$RUNS/cifar-probe-cost/supernet/config.json" \
  $AF train $TASK --set data.root="$DATA" --set train.epochs=3 --set train.probe_every=1 --storage "$RUNS" \
  --name cifar-probe-cost
echo "== all steps done"
