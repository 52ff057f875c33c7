"""The fleet on Flower (`flwr`, the `fleet` extra): one strategy and one client, run by
Flower's simulation engine (`simulate`) or over the network (`serve` and `connect`).

A round (Flower's configure fit → fit → aggregate fit): the server sends every device the
last aggregate and the merge policy; each device merges it (`edgeadapt.fleet.payload`),
adapts on its next `steps_per_round` batches, and answers with its shared adapter state and
the samples it adapted on; the server aggregates (`edgeadapt.fleet.strategies`). Round 1
sends nothing: every device starts from the same adapter. Bytes are counted as Flower
carries the tensors (`Parameters.tensors`, numpy's .npy encoding of each array), per device
per round, both ways.

This uses Flower's `NumPyClient` / `Strategy` API because the same two classes then run
under the simulation engine and against a real `start_server` / `start_client` connection,
without a SuperLink deployment.
"""

from __future__ import annotations

import logging
import os
import uuid

from edgeadapt.errors import ConfigError
from edgeadapt.fleet._extra import quiet_flower
from edgeadapt.fleet._extra import require_fleet as require
from edgeadapt.fleet.config import FleetConfig, FleetError
from edgeadapt.fleet.device import DeviceFactory
from edgeadapt.fleet.flower_client import connect, make_client, wait_for_server
from edgeadapt.fleet.flower_server import make_strategy, serve, wire_bytes
from edgeadapt.fleet.runner import FleetResult

__all__ = [
    "connect",
    "make_client",
    "make_strategy",
    "serve",
    "simulate",
    "wait_for_server",
    "wire_bytes",
]


def simulate(
    factory: DeviceFactory,
    config: FleetConfig,
    *,
    progress: bool = True,
    verbose: bool = False,
    cpus_per_device: int | None = None,
) -> FleetResult:
    """Run the fleet in Flower's simulation engine, `config.devices` virtual devices on this
    machine, and return every device's every round.

    Flower's engine runs on Ray: each worker (an actor) adapts one device at a time, with
    `cpus_per_device` cores (Ray sets its thread count to that). The default, every core,
    makes one worker: devices take turns at full speed. 1 makes one worker per core, each
    on one thread, which is faster on a machine other jobs keep busy (threads that wait for
    each other's descheduled peers cost more than they bring). A device may move between
    workers from round to round: its state travels in Flower's node context."""
    cores = os.cpu_count() or 1
    per_device = cores if cpus_per_device is None else cpus_per_device
    if not 1 <= per_device <= cores:
        raise ConfigError(
            f"cpus_per_device must be 1..{cores} (this machine's cores), got {per_device}"
        )
    require("flwr", "fleet simulation")
    require("ray", "fleet simulation (Flower's simulation engine)")
    from flwr.client import ClientApp
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    run_key = uuid.uuid4().hex
    strategy = make_strategy(config, progress=progress)

    def client_fn(context):
        device_id = int(context.node_config["partition-id"])
        return make_client(factory, device_id, context=context, run_key=run_key).to_client()

    def server_fn(context):
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=config.rounds))

    backend = {
        "client_resources": {"num_cpus": per_device, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": cores,
            "include_dashboard": False,
            "logging_level": logging.WARNING if verbose else logging.ERROR,
            "log_to_driver": verbose,
        },
    }
    with quiet_flower(not verbose):
        run_simulation(
            server_app=ServerApp(server_fn=server_fn),
            client_app=ClientApp(client_fn=client_fn),
            num_supernodes=config.devices,
            backend_config=backend,
            verbose_logging=verbose,
        )
    if len(strategy.rounds) != config.rounds:
        raise FleetError(
            f"the simulation ended after {len(strategy.rounds)} of {config.rounds} rounds; "
            "rerun with verbose=True (edgeadapt fleet --verbose-flower) to see Flower's log"
        )
    return strategy.result()
