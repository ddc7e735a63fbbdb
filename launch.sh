#!/usr/bin/env bash
# Runs one experiment: ./launch.sh [-n N] experiments/NAME.py[:ARG] [--config.key=value ...]
# The workdir defaults to runs/NAME (runs/NAME_ARG with an argument); set WORKDIR to change it.
# Rerunning the same command resumes from the workdir's latest checkpoint.
# -n N starts N processes on this machine that jax.distributed joins over 127.0.0.1 (multi-host
# code on one machine); all stop when one fails.
# Python: $PYTHON, else .venv/bin/python beside this script, else python.
set -euo pipefail
usage() { sed -n '2,7s/^# \{0,1\}//p' "$0"; }

num_processes=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -n)
      if [[ $# -lt 2 || ! "$2" =~ ^[1-9][0-9]*$ ]]; then
        echo "launch.sh: -n needs a positive process count" >&2
        exit 2
      fi
      num_processes="$2"
      shift 2
      ;;
    *) break ;;
  esac
done
if [[ $# -lt 1 || "$1" == -* ]]; then
  usage >&2
  exit 2
fi
config="$1"
shift
name="$(basename "${config%%:*}" .py)"
[[ "$config" == *:* ]] && name="${name}_${config#*:}"
workdir="${WORKDIR:-runs/$name}"
# The README installs into .venv without activating it: prefer that interpreter.
venv_python="$(cd "$(dirname "$0")" && pwd)/.venv/bin/python"
if [[ -n "${PYTHON:-}" ]]; then
  python="$PYTHON"
elif [[ -x "$venv_python" ]]; then
  python="$venv_python"
else
  python=python
fi
command=("$python" -m jaxvision.main --config="$config" --workdir="$workdir" "$@")
if ((num_processes == 0)); then
  exec "${command[@]}"
fi

# A port free on 127.0.0.1 now, for process 0's coordinator.
free_port='import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
port="$("$python" -c "$free_port")"
pids=()
# TERM first; KILL what is left after `polls` x 0.2 s (JAX's preemption notifier may catch a
# TERM). stderr is muted meanwhile: bash reports each killed job ("123 Killed ...").
stop_all() { stop_processes 25 2>/dev/null; }
stop_processes() {
  local polls="$1" signal pid alive
  for signal in TERM KILL; do
    for pid in ${pids[@]+"${pids[@]}"}; do
      if [[ "$pid" != done ]]; then kill -s "$signal" "$pid" 2>/dev/null || true; fi
    done
    for ((poll = 0; poll < polls; poll++)); do
      alive=0
      for pid in ${pids[@]+"${pids[@]}"}; do
        if [[ "$pid" != done ]] && kill -0 "$pid" 2>/dev/null; then alive=1; fi
      done
      if ((alive == 0)); then return 0; fi
      sleep 0.2
    done
  done
}
# SIGTERM or Ctrl-C to this script: every process gets a TERM, saves its checkpoint and exits 75
# (given up to 10 minutes for that); the script then exits 75 too, like one process would, or
# with the first other status a process ended with.
interrupted() {
  local rc=75 pid status
  trap - EXIT
  stop_processes 3000 2>/dev/null
  for pid in ${pids[@]+"${pids[@]}"}; do
    [[ "$pid" == done ]] && continue
    status=0
    wait "$pid" 2>/dev/null || status=$?
    if ((status != 75 && status != 0 && rc == 75)); then rc=$status; fi
  done
  exit "$rc"
}
# Background jobs of a script ignore SIGINT, so Ctrl-C (and a TERM to this script) reaches the
# processes only through here; on any exit, no process outlives the launcher.
trap stop_all EXIT
trap interrupted INT TERM
for ((i = 0; i < num_processes; i++)); do
  "${command[@]}" --jax_distributed --coordinator_address="127.0.0.1:$port" \
    --num_processes="$num_processes" --process_id="$i" &
  pids+=("$!")
done

# Poll rather than `wait -n` (bash >= 4.3; macOS ships 3.2): a failed process stops the others
# at once instead of leaving them blocked in a collective that waits for it.
running="$num_processes"
while ((running > 0)); do
  for i in "${!pids[@]}"; do
    pid="${pids[$i]}"
    if [[ "$pid" == done ]] || kill -0 "$pid" 2>/dev/null; then continue; fi
    rc=0
    wait "$pid" || rc=$?
    pids[i]=done
    running=$((running - 1))
    if ((rc != 0)); then
      echo "launch.sh: process $i exited with status $rc; stopping the others" >&2
      exit "$rc"
    fi
  done
  sleep 0.2
done
