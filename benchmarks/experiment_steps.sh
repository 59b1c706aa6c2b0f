# Shared by benchmarks/fidelity_experiments.sh and benchmarks/distillation_experiments.sh (sourced, not run):
# the settings of the CIFAR-10 subset experiments, and `step`, which makes every step skippable and timed.
RUNS=${RUNS:-/work/bench-runs}
DATA=${DATA:-$(cd ../shared/data/cifar10-10k && pwd)}
TASK=benchmarks/tasks/cifar10-subset.yaml
AF=${AF:-autoformer}
PY=${PY:-python3}  # a Python with pyarrow (the project's virtualenv)
LIMIT=400000  # the parameter limit of the Table 2 analogue (the space spans 150k to 1.22M)
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
