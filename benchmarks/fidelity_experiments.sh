#!/usr/bin/env bash
# The experiments of docs/fidelity.md on the CIFAR-10 subset (../shared/data/cifar10-10k), in order of value.
#
#   nohup bash benchmarks/fidelity_experiments.sh > RUNS/experiments.log 2>&1 &
#
# Every step is one `autoformer` command writing under $RUNS (default /work/bench-runs). A step whose result is
# already there is skipped; an interrupted one resumes when the script is run again (each command resumes by
# re-running, or with --resume for searches), so the whole chain continues across sessions. Then
#   python benchmarks/fidelity_tables.py --runs $RUNS
# prints the tables of docs/fidelity.md from the files the steps wrote. Wall times of every step go to
# $RUNS/times.txt. On 2 CPU cores: an entangled 30-epoch supernet takes 15 minutes alone on the machine; a 15-epoch
# stand-alone training took 20-35 minutes at 1 CPU (two side by side, the machine shared); a search of 100
# candidates about 5 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
source benchmarks/experiment_steps.sh  # RUNS, DATA, TASK, AF, PY, LIMIT, FRONT and the shared steps

retrain_key() {  # retrain_key KEY CANDIDATES_RUN NAME
  step "retrain-$3" "$RUNS/$3/model/config.json" \
    $AF retrain $TASK --set data.root="$DATA" --candidates "$RUNS/$2" --key "$1" --storage "$RUNS" --name "$3" \
    --cpus-per-worker 2
}

finetune_key() {  # finetune_key KEY NAME: from the model the front export wrote for KEY
  local model
  model=$(ls -d "$RUNS"/cifar-front/models/rank*-"$1" 2>/dev/null | head -1)
  [ -n "$model" ] || { echo "no exported model for $1"; return 1; }
  step "finetune-$2" "$RUNS/$2/model/config.json" \
    $AF finetune --model "$model" --set data.root="$DATA" --set finetune.epochs=5 --storage "$RUNS" --name "$2" \
    --cpus-per-worker 2
}

picks() {  # the Table 4 picks: smallest, middle and largest of the front within the space (keys, one per line)
  $PY - "$RUNS/cifar-front/pareto.parquet" <<'EOF'
import sys
import pyarrow.parquet as pq
rows = sorted((r for r in pq.read_table(sys.argv[1]).to_pylist() if r["on_params_front"]), key=lambda r: r["params"])
for r in (rows[0], rows[len(rows) // 2], rows[-1]):
    print(r["key"])
EOF
}

# 1. The entangled supernet; fidelity over 16 architectures spread over the size range, each retrained 15 epochs
#    (half the supernet's schedule, to fit the machine: the report is about ranks).
supernet entangled
standalone_fidelity

# 2. The search of the entangled supernet's front (the Table 4 picks).
search entangled cifar-front "${FRONT[@]}"

# 3. Evolution against random search at the same budget (100 evaluations), 3 seeds, under the limit.
for seed in 0 1 2; do
  for algorithm in evolution random; do
    search entangled "cifar-$algorithm-$seed" --algorithm $algorithm --objective constrained \
      --population 20 --generations 5 --max-params $LIMIT --seed $seed --evaluators 2 --cpus-per-evaluator 0.99
  done
done

# 4. Table 2: the classical supernets (both modes) at the same epochs, ranked against step 1's stand-alone scores.
for sharing in classical classical_strict; do
  supernet $sharing
  # --standalone: only the inherited scores are new (minutes)
  step "fidelity-$sharing" "$RUNS/cifar-fidelity-$sharing/fidelity.json" \
    $AF fidelity --supernet "$RUNS/cifar-$sharing/supernet" --standalone "$RUNS/cifar-fidelity" \
    --set data.root="$DATA" --set retrain.epochs=15 --set retrain.warmup_epochs=1 --storage "$RUNS" \
    --name "cifar-fidelity-$sharing"
done

# 5. Table 4: three architectures of the front, inherited vs finetuned (5 epochs: the paper's 40 of 300, scaled)
#    vs retrained (30 epochs, the supernet's schedule).
for key in $(picks); do
  finetune_key "$key" "cifar-finetune-$key"
  retrain_key "$key" cifar-front "cifar-retrain-$key"
done

# 6. Table 2, last row: the best architecture under the limit of each supernet, inherited vs retrained (a pick
#    that step 5 retrained already is not retrained again: stand-alone training does not depend on the supernet).
for sharing in classical classical_strict; do
  search $sharing "cifar-best-$sharing" --objective constrained --population 20 --generations 5 --max-params $LIMIT \
    --evaluators 2 --cpus-per-evaluator 0.99
done
search entangled cifar-best-entangled --objective constrained --population 20 --generations 5 --max-params $LIMIT \
  --evaluators 2 --cpus-per-evaluator 0.99
for sharing in entangled classical classical_strict; do
  key=$($PY -c "import sys, pyarrow.parquet as pq; print(min(pq.read_table(sys.argv[1]).to_pylist(),
    key=lambda r: r['rank'])['key'])" "$RUNS/cifar-best-$sharing/pareto.parquet" 2>/dev/null)
  [ -n "$key" ] && retrain_key "$key" "cifar-best-$sharing" "cifar-retrain-$key"
done
echo "== all steps done"
