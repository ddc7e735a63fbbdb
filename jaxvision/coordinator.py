"""The JAX coordination service in a process of its own (started by `jaxvision.distributed`).

JAX runs the service inside process 0, so losing process 0 takes the service with it and every
other process aborts (a C++ stack trace). Run here instead, the service outlives any one process:
a lost process 0 is a lost process like the others, which the survivors notice through the
service's heartbeats and stop with one line.

  python -m jaxvision.coordinator --address=127.0.0.1:1234 --num_processes=2 \
      --heartbeat_timeout_s=10 --parent_fd=5 --ready_fd=6

It starts in its own session (a terminal's Ctrl-C is for the training processes, which save a
checkpoint together through this service), writes "ok" (or the error) to `ready_fd`, and serves
until `parent_fd` (the write end held by process 0) closes, then for long enough that the other
processes can notice a lost process 0 and stop, and exits.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def serve(address: str, num_processes: int, heartbeat_timeout_s: int, parent_fd: int, ready_fd):
  from jax._src.lib import _jax

  try:
    service = _jax.get_distributed_runtime_service(
      address,
      num_processes,
      heartbeat_timeout=heartbeat_timeout_s,
      shutdown_timeout=300,
      recoverable=True,
    )
  except Exception as e:  # e.g. the port is taken
    os.write(ready_fd, f"{type(e).__name__}: {e}".encode()[:500])
    os._exit(1)
  os.write(ready_fd, b"ok")
  os.close(ready_fd)
  said = b""
  while chunk := os.read(parent_fd, 16):  # EOF: process 0 has exited (or was killed)
    said += chunk
  # After a finished run ("done": every process has left) the service stops soon; after a lost
  # process 0 it serves a few heartbeat timeouts more, so that the others notice and stop.
  time.sleep(2 if said.startswith(b"done") else 3 * heartbeat_timeout_s + 5)
  del service
  os._exit(0)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--address", required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--heartbeat_timeout_s", type=int, required=True)
  parser.add_argument("--parent_fd", type=int, required=True)
  parser.add_argument("--ready_fd", type=int, required=True)
  args = parser.parse_args(argv)
  for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
  serve(args.address, args.num_processes, args.heartbeat_timeout_s, args.parent_fd, args.ready_fd)


if __name__ == "__main__":
  main(sys.argv[1:])
