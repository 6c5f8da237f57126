#!/usr/bin/env bash
# The GPU session of eosbench (issue: GPU scale), run from a plain checkout on a machine that
# has torch, numpy, scipy, scikit-learn, pandas, matplotlib, seaborn and tqdm but cannot
# install packages.  Usage (from the repository root):
#
#   EOSBENCH_DATA=/path/to/cifar OUT=/tmp/out bash benchmarks/gpu_session.sh bench
#   EOSBENCH_DATA=/path/to/cifar OUT=/tmp/out SEEDS=0,1,2 bash benchmarks/gpu_session.sh suites
#
# `bench` times the sharpness solvers (benchmarks/bench_sharpness.py) on fc-tanh and cnn-relu
# with the largest CIFAR-10 subset available and the training step against a plain torch loop
# (benchmarks/bench_train_step.py); `suites` runs the paper suites with the given seeds, checks
# them and writes their reports.  The benchmark baselines (pyhessian, curvlinops) are
# installed from wheels in .whl/ when present.  Everything lands in $OUT (runs as a tarball).
set -uo pipefail
mode=${1:-suites}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/eosbench-site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/eosbench-site"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"
git rev-parse HEAD 2>/dev/null | tee -a "$OUT/device.txt"
N=${N:-3000}
if [[ $mode == bench ]]; then
  for m in fc-tanh cnn-relu; do
    python3 benchmarks/bench_sharpness.py --device cuda --data cifar10 --n "$N" --model "$m" \
      --lr 0.02 --train-steps 300 --repeats 5 --physical-batch-size "$N" 2>&1 | tee -a "$OUT/bench_sharpness.md"
  done
  for m in fc-tanh cnn-relu; do
    python3 benchmarks/bench_train_step.py --device cuda --data cifar10 --n "$N" --model "$m" \
      --steps 1000 --repeats 3 2>&1 | tee -a "$OUT/bench_train_step.txt"
  done
else
  SEEDS=${SEEDS:-0,1,2}
  JOBS=${JOBS:-3}
  for s in ${SUITES:-cohen2021 sam-eos adam-eos eoss momentum-eoss linear-net}; do
    timeout "${DEADLINE:-3000}" python3 -m eosbench reproduce --suite "$s" --seeds "$SEEDS" --out "runs/gpu/$s" \
      --device cuda --jobs "$JOBS" --no-progress > "runs-$s.log" 2>&1 &
  done
  wait
  mkdir -p runs/gpu && cp runs-*.log runs/gpu/ 2>/dev/null
  tail -n 3 runs-*.log
  # runs cut off by the deadline keep their flushed time series (status "running")
  for s in ${SUITES:-cohen2021 sam-eos adam-eos eoss momentum-eoss linear-net}; do
    [[ -d runs/gpu/$s/report ]] || python3 -m eosbench check "runs/gpu/$s" > "runs/gpu/check-$s.txt" 2>&1
  done
  tar czf "$OUT/runs.tgz" runs/gpu
fi
