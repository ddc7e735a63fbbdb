#!/usr/bin/env bash
# Installs SLURM and munge (Debian/Ubuntu packages slurm-wlm, munge) for tests/test_distributed.py,
# which starts a one-node cluster from them. Never fails CI: without apt, root or the packages,
# it says why and exits 0, and the SLURM tests skip with that reason.
set -uo pipefail

installed() {  # the daemons live in /usr/sbin, which a plain user's PATH may lack
  local name
  for name in slurmctld slurmd munged srun sinfo; do
    command -v "$name" >/dev/null || [[ -x "/usr/sbin/$name" ]] || return 1
  done
}
if installed; then
  echo "install_slurm: already installed ($(/usr/sbin/slurmctld -V 2>/dev/null))"
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "install_slurm: apt-get not available; SLURM tests will skip"
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then  # the tests need root too (slurmd runs tasks as any user)
  echo "install_slurm: not root; SLURM tests will skip"
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
  echo "install_slurm: apt-get update failed; SLURM tests will skip"
  exit 0
fi
# Waits for a dpkg lock held by another apt instead of failing at once.
if ! apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=120 slurm-wlm munge
then
  echo "install_slurm: apt-get install slurm-wlm munge failed; SLURM tests will skip"
  exit 0
fi
echo "install_slurm: installed ($(/usr/sbin/slurmctld -V 2>/dev/null))"
