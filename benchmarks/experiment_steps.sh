# Shared by benchmarks/fidelity_experiments.sh and benchmarks/distillation_experiments.sh (sourced, not run):
# the settings of the CIFAR-10 subset experiments, `step`, which makes every step skippable and timed, and the
# steps both chains need (the uniform supernet, searches, the fidelity report's stand-alone trainings).
RUNS=${RUNS:-/work/bench-runs}
DATA=${DATA:-$(cd ../shared/data/cifar10-10k && pwd)}
TASK=benchmarks/tasks/cifar10-subset.yaml
AF=${AF:-autoformer}
PY=${PY:-python3}  # a Python with pyarrow (the project's virtualenv)
LIMIT=400000  # the parameter limit of the Table 2 analogue (the space spans 150k to 1.22M)
# The front search of every supernet: Pareto, 180 evaluations under the limit.
FRONT=(--objective pareto --population 30 --generations 6 --max-params $LIMIT --evaluators 2 --cpus-per-evaluator 0.99)
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
mkdir -p "$RUNS"

done_already() {  # done_already FILE: it exists and, for a fidelity report, covers every planned architecture
  [ -e "$1" ] || return 1
  case "$1" in
    */fidelity.json) $PY -c "import json, sys; d = json.load(open(sys.argv[1]))
sys.exit(d['architectures'] < d['planned'])" "$1" ;;
  esac
}

step() {  # step NAME DONE_FILE COMMAND...: run COMMAND unless done_already DONE_FILE; log its wall time
  local name=$1 done=$2
  shift 2
  if done_already "$done"; then echo "== $name: done already ($done)"; return 0; fi
  echo "== $name: $*"
  local start=$SECONDS
  "$@"
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start)) s" >> "$RUNS/times.txt"
  return $rc
}

supernet() {  # supernet SHARING: the task's recipe (30 epochs, uniform sampling)
  step "train-$1" "$RUNS/cifar-$1/supernet/config.json" \
    $AF train $TASK --set data.root="$DATA" --set model.sharing="$1" --storage "$RUNS" --name "cifar-$1"
}

search() {  # search SUPERNET NAME FLAGS...: a search on $RUNS/cifar-SUPERNET (resumed if interrupted)
  local supernet=$1 name=$2
  shift 2
  local resume=()
  [ -d "$RUNS/$name" ] && resume=(--resume)
  step "search-$name" "$RUNS/$name/pareto.parquet" \
    $AF search $TASK --set data.root="$DATA" --supernet "$RUNS/cifar-$supernet/supernet" --storage "$RUNS" \
    --name "$name" "${resume[@]}" "$@"
}

standalone_fidelity() {  # the fidelity report of the entangled supernet: 16 architectures spread over the size
  # range, each trained alone for 15 epochs (half the supernet's schedule, to fit the machine: the report is about
  # ranks); every other supernet is judged against these trainings with `fidelity --standalone`
  step fidelity "$RUNS/cifar-fidelity/fidelity.json" \
    $AF fidelity --supernet "$RUNS/cifar-entangled/supernet" --archs 16 --set data.root="$DATA" \
    --set retrain.epochs=15 --set retrain.warmup_epochs=1 --storage "$RUNS" --name cifar-fidelity --cpus-per-trial 1
}
