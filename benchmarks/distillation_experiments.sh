#!/usr/bin/env bash
# The supernet-training comparisons of docs/fidelity.md ("Better subnets"), on the CIFAR-10 subset:
# uniform sampling (the entangled supernet of fidelity_experiments.sh) against the sandwich rule, the sandwich
# rule with in-place distillation (KL and alpha-divergence), and distillation from a teacher (the largest
# architecture of the space, retrained with the task's recipe); at the uniform run's wall-clock (the issue's goal:
# fewer epochs, since a sandwich step trains 4 subnets) and at its epochs. Each supernet gets the same front search
# as the uniform one and a fidelity report against the same 16 stand-alone trainings (fidelity --standalone: the
# trainings do not depend on the supernet).
#
#   RUNS=/work/bench-runs nohup bash benchmarks/distillation_experiments.sh > RUNS/distillation.log 2>&1 &
#
# Runs on its own: the uniform supernet and its front are fidelity_experiments.sh's steps, run here first unless
# that chain made them already. Every step is skipped when done and resumes when interrupted. The order is what
# fits a session on a new machine first (run outputs may not outlive the machine): on 2 cores, alone, the steps
# up to the teacher variant take about two hours, the stand-alone trainings 70 minutes, each short variant
# with its search about 17 minutes, each 30-epoch sandwich supernet about 45 minutes and its search 6, the
# 75-epoch uniform one about 40. Then
#   python benchmarks/fidelity_tables.py --runs $RUNS
# prints the comparison table with the others.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_steps.sh  # RUNS, DATA, TASK, AF, PY, LIMIT, FRONT and the shared steps

variant() {  # variant NAME SETTINGS...: a supernet trained with SETTINGS, and its front search
  local name=$1
  shift
  local sets=()
  for s in "$@"; do sets+=(--set "$s"); done
  step "train-$name" "$RUNS/cifar-$name/supernet/config.json" \
    $AF train $TASK --set data.root="$DATA" "${sets[@]}" --storage "$RUNS" --name "cifar-$name" &&
    search "$name" "cifar-front-$name" "${FRONT[@]}"
}

variant_fidelity() {  # variant_fidelity NAME: its inherited scores of the stand-alone trainings' architectures
  [ -e "$RUNS/cifar-$1/supernet/config.json" ] || return 0
  step "fidelity-$1" "$RUNS/cifar-fidelity-$1/fidelity.json" \
    $AF fidelity --supernet "$RUNS/cifar-$1/supernet" --standalone "$RUNS/cifar-fidelity" \
    --set data.root="$DATA" --set retrain.epochs=15 --set retrain.warmup_epochs=1 --set retrain.teacher=none \
    --storage "$RUNS" --name "cifar-fidelity-$1"
}

same_time() {  # same_time RUN UNIFORM_RUN: the epochs of RUN's rule that train as long as 30 of UNIFORM_RUN's
  # (from the training images/s each supernet's config.json records)
  $PY - "$RUNS/$1" "$RUNS/$2" <<'PY'
import json, sys
speed = lambda run: json.load(open(f"{run}/supernet/config.json"))["training"]["images_per_s"]
print(max(1, round(30 * speed(sys.argv[1]) / speed(sys.argv[2]))))
PY
}

# 1. The uniform baseline: the entangled supernet (30 epochs) and its front.
supernet entangled
search entangled cifar-front "${FRONT[@]}"

# 2. The goal's setting: the sandwich rule with in-place KL at the uniform supernet's wall-clock. Its epochs come
#    from both rules' speeds measured back to back (2-epoch runs, the same data pipeline; must run alone).
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
epochs=$(same_time cifar-speed-sandwich-kl cifar-speed-uniform)
[ -n "$epochs" ] && variant "sandwich-kl-${epochs}ep" train.sampling=sandwich train.inplace_distillation=kl \
  train.epochs="$epochs" train.warmup_epochs=1

# What makes the difference at that budget: the same epochs (so the same optimizer steps and schedule) with
# uniform sampling, and the sandwich rule without the in-place loss.
[ -n "$epochs" ] && variant "uniform-${epochs}ep" train.epochs="$epochs" train.warmup_epochs=1
[ -n "$epochs" ] && variant "sandwich-${epochs}ep" train.sampling=sandwich train.epochs="$epochs" train.warmup_epochs=1

# 3. Teacher distillation at the uniform supernet's epochs; the teacher is the space's largest architecture,
#    retrained from scratch with the task's recipe (30 epochs).
$AF arch sample --space compact-32 --largest > "$RUNS/largest-architecture.json"
step retrain-largest "$RUNS/cifar-retrain-largest/model/config.json" \
  $AF retrain $TASK --set data.root="$DATA" --arch "$RUNS/largest-architecture.json" --storage "$RUNS" \
  --name cifar-retrain-largest --cpus-per-worker 2
[ -e "$RUNS/cifar-retrain-largest/model/config.json" ] && variant teacher \
  train.teacher="$RUNS/cifar-retrain-largest/model" train.distill=hard
# ... and at the uniform supernet's wall-clock, the teacher given (its forward pass slows every step): the epochs
# from both 30-epoch runs' training speeds, each measured alone.
short=$(same_time cifar-teacher cifar-entangled)
[ -n "$short" ] && variant "teacher-${short}ep" train.teacher="$RUNS/cifar-retrain-largest/model" \
  train.distill=hard train.epochs="$short"

# 4. In-place alpha-divergence at the same wall-clock.
[ -n "$epochs" ] && variant "sandwich-alpha-${epochs}ep" train.sampling=sandwich \
  train.inplace_distillation=alpha_divergence train.epochs="$epochs" train.warmup_epochs=1

# 5. Kendall tau: the stand-alone trainings, then every supernet's inherited scores of their architectures.
standalone_fidelity
for run in "$RUNS"/cifar-sandwich*ep "$RUNS"/cifar-uniform-*ep "$RUNS"/cifar-teacher*; do
  variant_fidelity "${run##*/cifar-}"
done

# 5b. Why in-place distillation hurts here: the in-place students' gradients point against the largest subnet's
#     (the gradient conflict NASViT reports; measured on each supernet, and a fresh one), and gradient
#     projection at the same wall-clock (it costs next to nothing per step), keeping the largest subnet's step
#     whole; the other way round (NASViT's choice) comes after the 30-epoch runs.
projected() {  # projected SIDE: sandwich + in-place KL + gradient projection with SIDE's priority, short budget
  [ -n "$epochs" ] && variant "sandwich-kl-proj-$1-${epochs}ep" train.sampling=sandwich \
    train.inplace_distillation=kl train.gradient_projection="$1" train.epochs="$epochs" train.warmup_epochs=1 &&
    variant_fidelity "sandwich-kl-proj-$1-${epochs}ep"
}
projected largest
conflict() {  # conflict OUT RUN...: gradient_conflict.py on the RUNs' supernets that exist (init: a fresh one)
  local out=$1 args=()
  shift
  [ -e "$RUNS/$out" ] && return 0
  for run in "$@"; do
    if [ "$run" = init ]; then args+=(--supernet init)
    elif [ -e "$run/supernet/config.json" ]; then args+=(--supernet "$run/supernet"); fi
  done
  $PY benchmarks/gradient_conflict.py --task $TASK --set data.root="$DATA" "${args[@]}" --batches 8 \
    > "$RUNS/$out.tmp" && mv "$RUNS/$out.tmp" "$RUNS/$out"
}
conflict gradient-conflict.txt init "$RUNS"/cifar-entangled "$RUNS"/cifar-sandwich*ep "$RUNS"/cifar-teacher

# 6. The sandwich rules at the uniform supernet's 30 epochs (the same-epochs comparison; slow here): the plain
#    rule and in-place KL first, alpha-divergence after the cheaper steps of 7.
same_epochs() {  # same_epochs NAME: a sandwich rule at 30 epochs, its front and fidelity
  case $1 in
    sandwich-kl) sets=(train.sampling=sandwich train.inplace_distillation=kl) ;;
    sandwich) sets=(train.sampling=sandwich) ;;
    sandwich-alpha) sets=(train.sampling=sandwich train.inplace_distillation=alpha_divergence) ;;
  esac
  variant "$1" "${sets[@]}" && variant_fidelity "$1"
}
same_epochs sandwich-kl
same_epochs sandwich
conflict gradient-conflict-30ep.txt "$RUNS"/cifar-entangled "$RUNS"/cifar-sandwich "$RUNS"/cifar-sandwich-kl

# 7. Uniform sampling given the teacher route's whole time (the teacher's retraining plus the distilled
#    supernet's training): whether a teacher buys more than a longer uniform schedule would.
long=$($PY - "$RUNS/times.txt" <<'PY'
import sys
times = dict(line.split(" rc=0 ") for line in open(sys.argv[1]) if " rc=0 " in line)
s = lambda step: float(times[step].split()[0])
print(round(30 * (s("retrain-largest") + s("train-teacher")) / s("train-entangled")))
PY
)
[ -n "$long" ] && variant "uniform-${long}ep" train.epochs="$long" && variant_fidelity "uniform-${long}ep"

# 8. Gradient projection with the smaller subnets' priority (NASViT's choice; short budget), then in-place
#    alpha-divergence at 30 epochs.
projected others
same_epochs sandwich-alpha
echo "== all steps done"
