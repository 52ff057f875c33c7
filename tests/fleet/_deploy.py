"""Run by test_fleet_flower.py in a fresh process: Flower's server must own the main thread
(it installs signal handlers), so the test runs the fleet server here and its devices on
threads, over real gRPC on localhost, and prints the result as JSON."""

from __future__ import annotations

import json
import sys
import threading

from _tiny import tiny_fleet

from edgeadapt.fleet import FleetConfig, FleetConnectionError, connect, serve

address, devices = sys.argv[1], int(sys.argv[2])
if devices == 0:  # nobody joins: the server must give up
    try:
        serve(FleetConfig(devices=1, rounds=1), address, join_timeout=1, progress=False)
    except FleetConnectionError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        sys.exit(0)
    sys.exit(1)
fleet = tiny_fleet()
histories: dict[int, list] = {}


def device(i: int) -> None:
    histories[i] = connect(fleet, i, address, timeout=60)


threads = [threading.Thread(target=device, args=(i,), daemon=True) for i in range(devices)]
for t in threads:
    t.start()
config = FleetConfig(devices=devices, rounds=2, steps_per_round=1, strategy="median")
result = serve(config, address, join_timeout=60, progress=False)
for t in threads:
    t.join(60)
print(
    json.dumps(
        {
            "result": result.to_dict(),
            "steps": {i: [s.steps for s in h] for i, h in histories.items()},
        }
    ),
    flush=True,
)
