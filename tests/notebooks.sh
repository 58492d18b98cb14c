#!/bin/sh
# Executes every notebook in notebooks/ headless (jupyter nbconvert --execute, Debian's
# python3-nbconvert and python3-ipykernel) against runs this script creates: one run with
# queue snapshots and the oracle trace, evaluated by `fifolab eval` (FIFOLAB_RUN), and a
# small sweep of partitions x planner x seeds (FIFOLAB_SWEEP). Executed copies go to a
# temporary directory, never into the repository; the stored notebooks must carry no
# outputs.
# Usage: tests/notebooks.sh [PATH/TO/fifolab]   (default: $FL_CLI_BIN, else ./fifolab)
set -u
. "$(dirname "$0")/lib.sh"
nbdir=$(cd "$here/../notebooks" && pwd)
# Jupyter, IPython and matplotlib keep their state here, not in $HOME
unset MPLBACKEND  # the kernel's inline backend embeds the figures
export JUPYTER_RUNTIME_DIR="$t/jupyter-runtime" JUPYTER_DATA_DIR="$t/jupyter-data" IPYTHONDIR="$t/ipython" \
    MPLCONFIGDIR="$t/mpl" PYDEVD_DISABLE_FILE_VALIDATION=1

cat >one.lua <<'LUA'
local fl = require "fifolab"
return fl.experiment {
  name = "one", seed = 1, frames = 192, oracle = true, snapshots = 8,
  model = fl.model.gauss { window = 16, channels = 3, size = {8, 8}, rho = 0.9, mismatch = "own" },
  sampler = fl.sampler.ddim { eta = 1 },
  scheduler = fl.scheduler.fifo { planner = fl.planner.lookahead { partitions = 2 }, init = "clip" },
  metrics = { "flicker", "oracle" },
}
LUA
cat >sweep.lua <<'LUA'
local fl = require "fifolab"
local base = fl.include "one.lua"
base.frames = 64
base.snapshots = 0
return fl.sweep {
  name = "grid", base = base,
  grid = { { "scheduler.planner.partitions", {1, 2} }, { "scheduler.planner", {"partition", "lookahead"} } },
  seeds = {1, 2},
}
LUA
"$bin" run one.lua --out one -q >run.log 2>&1 && ok || { bad "run one.lua"; cat run.log; }
"$bin" eval one >eval.log 2>&1 && ok || { bad "eval one"; tail -3 eval.log; }
"$bin" run sweep.lua --out sweep -q >run.log 2>&1 && ok || { bad "run sweep.lua"; cat run.log; }
"$bin" eval sweep --metrics oracle,spectral >eval.log 2>&1 && ok || { bad "eval sweep"; tail -3 eval.log; }

if ! $py -c "import nbconvert, ipykernel, matplotlib" 2>/dev/null; then
    bad "python3-nbconvert, python3-ipykernel or python3-matplotlib missing (make setup installs them)"
else
    # name, environment, text its output must show
    for spec in "quality_over_time|FIFOLAB_RUN=$t/one|slope/frame" \
                "ablation_sweep|FIFOLAB_SWEEP=$t/sweep|position error" \
                "queue|FIFOLAB_RUN=$t/one|snapshots of a queue"; do
        name=${spec%%|*}; rest=${spec#*|}; envset=${rest%%|*}; want=${rest#*|}
        if env "$envset" $py -m nbconvert --to notebook --execute --ExecutePreprocessor.timeout=120 \
                --output-dir "$t/out" "$nbdir/$name.ipynb" >"nb-$name.log" 2>&1; then
            ok
            grep -q "$want" "$t/out/$name.ipynb" && ok || bad "$name: the executed notebook lacks '$want'"
            grep -q '"image/png"' "$t/out/$name.ipynb" && ok || bad "$name: no figure in the executed notebook"
        else
            bad "$name: execution failed"
            grep -E "Error|error" "nb-$name.log" | tail -5
        fi
    done
fi
# stored without outputs, and every notebook is run above
for f in "$nbdir"/*.ipynb; do
    $py - "$f" <<'PY' && ok || bad "$(basename "$f"): stored with outputs (clear them before committing)"
import json, sys
nb = json.load(open(sys.argv[1]))
sys.exit(any(c.get("outputs") or c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code"))
PY
    case "$(basename "$f")" in
    quality_over_time.ipynb | ablation_sweep.ipynb | queue.ipynb) ok ;;
    *) bad "$(basename "$f"): not executed by tests/notebooks.sh (add it)" ;;
    esac
done

finish notebooks
