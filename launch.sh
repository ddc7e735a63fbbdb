#!/usr/bin/env bash
# Runs one experiment: ./launch.sh experiments/NAME.py[:ARG] [--config.key=value ...]
# The workdir defaults to runs/NAME (runs/NAME_ARG with an argument); set WORKDIR to change it.
# Rerunning the same command resumes from the workdir's latest checkpoint.
set -euo pipefail
if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,4s/^# \{0,1\}//p' "$0"
  exit 2
fi
config="$1"
shift
name="$(basename "${config%%:*}" .py)"
[[ "$config" == *:* ]] && name="${name}_${config#*:}"
workdir="${WORKDIR:-runs/$name}"
python="${PYTHON:-python}"
exec "$python" -m jaxvision.main --config="$config" --workdir="$workdir" "$@"
