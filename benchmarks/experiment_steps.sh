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

step() {  # step NAME DONE_FILE COMMAND...: run COMMAND unless DONE_FILE exists; log its wall time
  local name=$1 done=$2
  shift 2
  if [ -e "$done" ]; then echo "== $name: done already ($done)"; return 0; fi
  echo "== $name: $*"
  local start=$SECONDS
  "$@"
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start)) s" >> "$RUNS/times.txt"
  return $rc
}
