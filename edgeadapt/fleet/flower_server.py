"""The server side on Flower: a `Strategy` that aggregates the devices' shared adapter state
and records every device's round, and `serve`, which runs it for real devices (Flower's
`start_server`, gRPC)."""

from __future__ import annotations

from typing import Any

import torch

from edgeadapt.fleet._extra import quiet_flower
from edgeadapt.fleet._extra import require_fleet as require
from edgeadapt.fleet.config import FleetConfig, FleetConnectionError, FleetError
from edgeadapt.fleet.flower_client import INPUT_CHANGED, INPUT_STABLE, split_address
from edgeadapt.fleet.payload import state_from_arrays
from edgeadapt.fleet.runner import DeviceRound, FleetResult
from edgeadapt.fleet.statistics_bank import StatisticsBank
from edgeadapt.fleet.strategies import aggregate

__all__ = ["make_strategy", "serve", "wire_bytes"]


def wire_bytes(parameters: Any) -> int:
    """Bytes of the tensors in a Flower `Parameters`, as they travel."""
    return sum(len(t) for t in parameters.tensors)


def _fit_config(config: FleetConfig, server_round: int) -> dict[str, Any]:
    return {
        "round": server_round,
        "steps": config.steps_per_round,
        "merge": config.merge,
        "merge_factor": config.merge_factor,
        "share_statistics": config.share_statistics,
        "stream_statistics": config.stream_statistics,
        "match_threshold": config.match_threshold,
    }


def make_strategy(config: FleetConfig, *, progress: bool = True, expect: int | None = None):
    """The server side: a Flower Strategy that waits for `expect` (default all) devices each
    round, aggregates with `config.strategy`, and records every device's round in `.rounds`."""
    require("flwr", "the fleet server")
    from flwr.common import FitIns, Parameters, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server.strategy import Strategy
    from tqdm.auto import tqdm

    wanted = expect or config.devices

    class FleetStrategy(Strategy):
        def __init__(self) -> None:
            self.rounds: list[list[DeviceRound]] = []
            self.final: list | None = None  # the last aggregate, as numpy arrays
            self._sent: dict[str, int] = {}
            # Statistics matching: the bank, and what each device gets next round (by cid).
            self.bank = StatisticsBank(config.match_threshold)
            self._pending: dict[str, list] = {}
            self.swaps = 0  # devices handed a bank entry, over the run
            self.bar = tqdm(total=config.rounds, desc="fleet rounds", disable=not progress)

        def __repr__(self) -> str:
            return f"FleetStrategy({config.strategy})"

        def initialize_parameters(self, client_manager):
            return Parameters(tensors=[], tensor_type="numpy.ndarray")

        def configure_fit(self, server_round, parameters, client_manager):
            clients = client_manager.sample(num_clients=wanted, min_num_clients=wanted)
            if len(clients) < wanted:
                raise FleetConnectionError(
                    f"round {server_round} needs {wanted} devices; {len(clients)} are connected"
                )
            if server_round == 1:  # every device starts from the same adapter
                parameters = Parameters(tensors=[], tensor_type="numpy.ndarray")
            fit_config = _fit_config(config, server_round)
            out = []
            for c in clients:
                extra = self._pending.pop(c.cid, None)
                mine = parameters
                if extra is not None and self.final is not None:
                    mine = ndarrays_to_parameters(list(self.final) + extra)
                out.append((c, FitIns(mine, fit_config)))
            self._pending.clear()
            self._sent = {c.cid: wire_bytes(ins.parameters) for c, ins in out}
            return out

        def aggregate_fit(self, server_round, results, failures):
            if failures:
                first = failures[0]
                why = first if isinstance(first, BaseException) else getattr(first, "status", first)
                raise FleetError(
                    f"{len(failures)} of {wanted} devices failed in round {server_round}: {why!r}"
                )
            layouts = {str(res.metrics["layout"]) for _, res in results}
            if len(layouts) > 1:
                raise FleetError(
                    "devices sent adapter states of different layouts; every device must wrap "
                    "the same model with the same config"
                )
            updates, rows = [], []
            for proxy, res in results:
                arrays = parameters_to_ndarrays(res.parameters)
                shared = int(res.metrics.get("shared", len(arrays)))
                self._match(proxy.cid, int(res.metrics.get("input", 0)), arrays[shared:])
                arrays = arrays[:shared]
                state = {str(i): torch.from_numpy(a.copy()) for i, a in enumerate(arrays)}
                updates.append((state, int(res.num_examples)))
                errors = int(res.metrics["errors"])
                rows.append(DeviceRound(
                    device=int(res.metrics["device"]), round=server_round,
                    steps=int(res.metrics["steps"]), samples=int(res.num_examples),
                    errors=None if errors < 0 else errors,
                    bytes_sent=self._sent.get(proxy.cid, 0),
                    bytes_received=wire_bytes(res.parameters),
                ))  # fmt: skip
            merged = aggregate(config.strategy, updates, trim=config.trim)
            self.rounds.append(sorted(rows, key=lambda r: r.device))
            self.final = [t.numpy() for t in merged.values()]
            self.bar.update(1)
            if server_round == config.rounds:
                self.bar.close()
            return ndarrays_to_parameters(self.final), {}

        def _match(self, cid: str, input_state: int, extra: list) -> None:
            """Statistics matching: a stable device's statistics go into the bank; a device
            whose input changed is handed the nearest entry next round, if one is close."""
            if not extra:
                return
            signature = torch.from_numpy(extra[0].copy())
            if input_state == INPUT_STABLE and len(extra) > 1:
                keys = [str(i) for i in range(len(extra) - 1)]
                self.bank.add(signature, state_from_arrays(keys, extra[1:]))
            elif input_state == INPUT_CHANGED:
                found = self.bank.lookup(signature)
                if found is not None:
                    self._pending[cid] = [t.numpy() for t in found.values()]
                    self.swaps += 1

        def result(self) -> FleetResult:
            """Every device's every round; with statistics matching, its name says so and
            its settings say how many entries the bank grew and how often one was handed out."""
            if config.stream_statistics != "matched":
                return FleetResult(f"fleet-{config.strategy}", self.rounds)
            settings = {"bank_entries": len(self.bank.entries), "bank_handouts": self.swaps}
            return FleetResult(f"fleet-{config.strategy}-matched", self.rounds, settings)

        def configure_evaluate(self, server_round, parameters, client_manager):
            return []  # devices have no labels to evaluate on: errors come from fit

        def aggregate_evaluate(self, server_round, results, failures):
            return None, {}

        def evaluate(self, server_round, parameters):
            return None

    return FleetStrategy()


def serve(
    config: FleetConfig,
    server_address: str = "0.0.0.0:8080",
    *,
    join_timeout: float = 300.0,
    progress: bool = True,
    verbose: bool = False,
) -> FleetResult:
    """Serve `config.rounds` rounds to `config.devices` real devices at `server_address`.
    Each round waits up to `join_timeout` seconds for every device to be connected, then
    raises FleetConnectionError."""
    require("flwr", "fleet server")
    from flwr.server import ServerConfig, SimpleClientManager, start_server

    split_address(server_address)  # a malformed address fails before the server starts

    class TimedClientManager(SimpleClientManager):
        def wait_for(self, num_clients: int, timeout: int = 86400) -> bool:
            if super().wait_for(num_clients, timeout=int(max(join_timeout, 1))):
                return True
            raise FleetConnectionError(
                f"{len(self)} of {num_clients} devices joined {server_address} within "
                f"{join_timeout:g} s; start them with `edgeadapt fleet client --server-address "
                "...`, or lower --devices"
            )

    strategy = make_strategy(config, progress=progress)
    with quiet_flower(not verbose):
        start_server(
            server_address=server_address, config=ServerConfig(num_rounds=config.rounds),
            strategy=strategy, client_manager=TimedClientManager(),
        )  # fmt: skip
    return strategy.result()
