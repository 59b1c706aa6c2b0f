#!/usr/bin/env bash
# The supernet-training comparisons of docs/fidelity.md ("Better subnets"), on the CIFAR-10 subset:
# uniform sampling (the entangled supernet of fidelity_experiments.sh) against the sandwich rule, the sandwich
# rule with in-place distillation (KL and alpha-divergence), and distillation from a teacher (the largest
# architecture of the space, retrained with the task's recipe); at the uniform run's wall-clock (the issue's goal:
# fewer epochs, since a sandwich step trains 4 subnets) and at its epochs.
# Each supernet gets a front search (the same protocol as cifar-front) and a fidelity report against the stand-alone
# trainings of cifar-fidelity (fidelity --standalone: the same 16 architectures, scored with this supernet's
# inherited weights; the trainings do not depend on the supernet).
#
#   RUNS=/work/bench-runs nohup bash benchmarks/distillation_experiments.sh > RUNS/distillation.log 2>&1 &
#
# Run after fidelity_experiments.sh (it needs cifar-entangled, cifar-front and cifar-fidelity). Every step is
# skipped when done and resumes when interrupted. Then
#   python benchmarks/fidelity_tables.py --runs $RUNS
# prints the comparison table with the others.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_steps.sh  # RUNS, DATA, TASK, AF, PY, LIMIT and step

variant() {  # variant NAME SETTINGS...: a supernet trained with SETTINGS, its front search and fidelity report
  local name=$1
  shift
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  step "train-$name" "$RUNS/cifar-$name/supernet/config.json" \
    $AF train $TASK --set data.root="$DATA" "${sets[@]}" --storage "$RUNS" --name "cifar-$name"
  local resume=()
  [ -d "$RUNS/cifar-front-$name" ] && resume=(--resume)
  step "search-front-$name" "$RUNS/cifar-front-$name/pareto.parquet" \
    $AF search $TASK --set data.root="$DATA" --supernet "$RUNS/cifar-$name/supernet" --storage "$RUNS" \
    --name "cifar-front-$name" "${resume[@]}" --objective pareto --population 30 --generations 6 \
    --max-params $LIMIT --evaluators 2 --cpus-per-evaluator 0.99
  step "fidelity-$name" "$RUNS/cifar-fidelity-$name/fidelity.json" \
    $AF fidelity --supernet "$RUNS/cifar-$name/supernet" --standalone "$RUNS/cifar-fidelity" \
    --set data.root="$DATA" --set retrain.epochs=15 --set retrain.warmup_epochs=1 --set retrain.teacher=none \
    --storage "$RUNS" --name "cifar-fidelity-$name"
}

# In order of what the comparison needs first: the teacher, the sandwich rule with in-place KL at the uniform
# supernet's wall-clock (the goal's setting), a teacher at its epochs, then the sandwich rules at its epochs
# (each several hours here), alpha-divergence last.

# The teacher: the space's largest architecture, retrained from scratch with the task's recipe (30 epochs).
$AF arch sample --space compact-32 --largest > "$RUNS/largest-architecture.json"
step retrain-largest "$RUNS/cifar-retrain-largest/model/config.json" \
  $AF retrain $TASK --set data.root="$DATA" --arch "$RUNS/largest-architecture.json" --storage "$RUNS" \
  --name cifar-retrain-largest --cpus-per-worker 2

# Same wall-clock as the uniform supernet: its images/s against the sandwich-kl rule's, both measured here back to
# back (2-epoch runs, the same data pipeline; the 30-epoch runs' own speeds depend on what else ran beside them).
speed_run() {  # speed_run NAME SETTINGS...
  local name=$1
  shift
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  step "speed-$name" "$RUNS/cifar-speed-$name/supernet/config.json" \
    $AF train $TASK --set data.root="$DATA" "${sets[@]}" --set train.epochs=2 --set train.warmup_epochs=1 \
    --storage "$RUNS" --name "cifar-speed-$name"
}
speed_run uniform train.sampling=uniform
speed_run sandwich-kl train.sampling=sandwich train.inplace_distillation=kl
epochs=$($PY - "$RUNS" <<'EOF'
import json, sys
speed = lambda name: json.load(open(f"{sys.argv[1]}/cifar-speed-{name}/supernet/config.json"))["training"]["images_per_s"]
print(max(1, round(30 * speed("sandwich-kl") / speed("uniform"))))
EOF
)
[ -n "$epochs" ] && variant "sandwich-kl-${epochs}ep" train.sampling=sandwich train.inplace_distillation=kl \
  train.epochs="$epochs" train.warmup_epochs=1

[ -e "$RUNS/cifar-retrain-largest/model/config.json" ] && variant teacher \
  train.teacher="$RUNS/cifar-retrain-largest/model" train.distill=hard
variant sandwich-kl train.sampling=sandwich train.inplace_distillation=kl
variant sandwich train.sampling=sandwich
variant sandwich-alpha train.sampling=sandwich train.inplace_distillation=alpha_divergence
echo "== all steps done"
