"""`edgeadapt fleet`: a thin shell over `edgeadapt.fleet`.

    edgeadapt fleet [options]                          simulate N devices here (Flower's engine)
    edgeadapt fleet server --server-address H:P ...    serve real devices (same as fleet --server-address)
    edgeadapt fleet client --server-address H:P --device-id K

Every device is the embedded demo's (scikit-learn's digits, a small ResNet, EcoTTA); from
Python, `edgeadapt.fleet.simulate/serve/connect` take any `DeviceFactory`.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def _output_options(p: argparse.ArgumentParser) -> None:
    """Where a simulation or a server writes its results."""
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--markdown", default=None, help="write the table as Markdown here")
    p.add_argument("--plot", default=None, help="write a PNG of the results here")


def _fleet_options(p: argparse.ArgumentParser, *, device_side: bool = False) -> None:
    from edgeadapt.fleet.config import MERGES, STRATEGIES, STREAM_STATISTICS

    if not device_side:  # what the server decides
        p.add_argument("--devices", type=int, default=4, help="N: devices in the fleet")
        p.add_argument("--rounds", type=int, default=6, help="aggregation rounds")
        p.add_argument("--steps-per-round", type=int, default=2,
                       help="R: batches each device adapts on between aggregations")  # fmt: skip
        p.add_argument("--strategy", default="fedavg", help=f"one of {', '.join(STRATEGIES)}")
        p.add_argument("--trim", type=float, default=0.2,
                       help="trimmed_mean: share of devices dropped at each end")  # fmt: skip
        p.add_argument("--merge", default="replace", help=f"how devices take the aggregate: "
                       f"{' or '.join(MERGES)}")  # fmt: skip
        p.add_argument("--merge-factor", type=float, default=0.5,
                       help="interpolate: the share of the aggregate a device takes")  # fmt: skip
        p.add_argument("--no-share-statistics", action="store_true",
                       help="share meta-network weights only; BN statistics stay on the device")  # fmt: skip
        p.add_argument("--stream-statistics", choices=STREAM_STATISTICS, default="local",
                       help="matched: a device whose input changed gets the BN statistics "
                       "other devices had on input like its new one (a server-side bank)")  # fmt: skip
        p.add_argument("--match-threshold", type=float, default=0.12,
                       help="matched: input-signature distance that counts as the same input")  # fmt: skip
    # What each device's stream is (every device of a run must use the same values).
    p.add_argument("--batch", type=int, default=16, help="images per adaptation step")
    p.add_argument("--images-per-domain", type=int, default=64,
                   help="images of each corruption a device sees")  # fmt: skip
    p.add_argument("--severity", type=int, default=3)
    p.add_argument("--stream", choices=("correlated", "iid"), default="correlated",
                   help="label order within a domain (correlated: Dirichlet δ=0.1 per device)")  # fmt: skip
    p.add_argument("--train-epochs", type=int, default=15, help="the demo model's training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the `fleet` subcommand (with `server` and `client`) to an argparse subparsers
    object; returns its parser."""
    p = subparsers.add_parser(
        "fleet",
        help="adapt a fleet of devices together on Flower: simulate N here, or serve real ones",
        description="Each device adapts EcoTTA on its own stream (its own corruption order and "
        "label order); every R steps the fleet aggregates the adapter state only (meta-network "
        "weights and their BN statistics: never images, never the frozen backbone) and devices "
        "merge it back. Needs the 'fleet' extra (Flower); the embedded demo needs the 'bench' "
        "extra (scikit-learn's digits).",
    )
    _fleet_options(p)
    p.add_argument("--server-address", default=None,
                   help="serve real devices at HOST:PORT instead of simulating them")  # fmt: skip
    p.add_argument("--join-timeout", type=float, default=300.0,
                   help="with --server-address: seconds to wait for all devices each round")  # fmt: skip
    p.add_argument("--isolated", action="store_true",
                   help="simulation: also run each device alone, and the source model, to compare")  # fmt: skip
    p.add_argument("--verbose-flower", action="store_true", help="show Flower's and Ray's logs")
    _output_options(p)
    p.set_defaults(func=_run, fleet_role="simulate")
    roles = p.add_subparsers(dest="fleet_role_name", required=False, metavar="{server,client}")

    s = roles.add_parser("server", help="serve real devices (edgeadapt fleet client ...)")
    _fleet_options(s)
    s.add_argument("--server-address", default="0.0.0.0:8080", help="HOST:PORT to listen on")
    s.add_argument("--join-timeout", type=float, default=300.0,
                   help="seconds to wait for all devices each round")  # fmt: skip
    s.add_argument("--verbose-flower", action="store_true", help="show Flower's logs")
    _output_options(s)
    s.set_defaults(func=_run, fleet_role="server")

    c = roles.add_parser("client", help="one real device: join a fleet server")
    _fleet_options(c, device_side=True)
    c.add_argument("--server-address", required=True, help="the server's HOST:PORT")
    c.add_argument("--device-id", type=int, default=0, help="which demo stream this device walks")
    c.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for the server before giving up")  # fmt: skip
    c.add_argument("--verbose-flower", action="store_true", help="show Flower's logs")
    c.set_defaults(func=_run, fleet_role="client")
    return p


def _config(args: argparse.Namespace):
    from edgeadapt.fleet.config import FleetConfig

    return FleetConfig(
        devices=args.devices, rounds=args.rounds, steps_per_round=args.steps_per_round,
        strategy=args.strategy, trim=args.trim, merge=args.merge, merge_factor=args.merge_factor,
        share_statistics=not args.no_share_statistics,
        stream_statistics=args.stream_statistics, match_threshold=args.match_threshold,
        seed=args.seed,
    )  # fmt: skip


def _check_stream_args(args: argparse.Namespace) -> None:
    from edgeadapt.errors import ConfigError

    for flag, value in (("--batch", args.batch), ("--images-per-domain", args.images_per_domain),
                        ("--train-epochs", args.train_epochs)):  # fmt: skip
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not 1 <= args.severity <= 5:
        raise ConfigError(f"--severity must be 1..5, got {args.severity}")
    if args.images_per_domain < args.batch:
        raise ConfigError(
            f"--images-per-domain ({args.images_per_domain}) must hold one --batch "
            f"({args.batch}) at least"
        )
    if getattr(args, "device_id", 0) < 0:
        raise ConfigError(f"--device-id must be >= 0, got {args.device_id}")


def _run(args: argparse.Namespace) -> int:
    from edgeadapt.fleet._extra import require_fleet

    role = "server" if args.fleet_role == "simulate" and args.server_address else args.fleet_role
    config = _config(args) if role != "client" else None  # bad N, R, strategy: fail now
    _check_stream_args(args)
    if role == "simulate":
        require_fleet("flwr", "edgeadapt fleet")
        require_fleet("ray", "edgeadapt fleet (Flower's simulation engine)")
    else:
        require_fleet("flwr", f"edgeadapt fleet {role}")
    if role == "client":
        from edgeadapt.fleet.flower import wait_for_server

        wait_for_server(args.server_address, args.timeout)  # before minutes of training
    if getattr(args, "plot", None):
        from edgeadapt._extras import require

        require("matplotlib", "--plot")
    progress = not args.quiet
    if role == "server":  # the server aggregates: it needs no model and no data
        from edgeadapt.fleet.flower import serve

        result = serve(config, args.server_address, join_timeout=args.join_timeout,
                       progress=progress, verbose=args.verbose_flower)  # fmt: skip
        return _report(args, config, _stream_settings(args), [result])
    from edgeadapt.fleet.demo import demo_fleet

    factory = demo_fleet(
        images_per_domain=args.images_per_domain, batch_size=args.batch, severity=args.severity,
        delta=0.1 if args.stream == "correlated" else None, train_epochs=args.train_epochs,
        seed=args.seed, progress=progress,
    )  # fmt: skip
    if role == "client":
        from edgeadapt.fleet.flower import connect

        history = connect(factory, args.device_id, args.server_address, timeout=args.timeout,
                          verbose=args.verbose_flower)  # fmt: skip
        for k, s in enumerate(history, 1):
            err = (
                ""
                if s.errors is None or not s.samples
                else f", error {100 * s.errors / s.samples:.1f}%"
            )
            print(f"round {k}: adapted on {s.samples} images{err}")
        return 0
    from edgeadapt.fleet.flower import simulate
    from edgeadapt.fleet.runner import run_isolated

    results = []
    if args.isolated:
        n, k, r = config.devices, config.rounds, config.steps_per_round
        source = factory.source_only()
        results.append(run_isolated(source, n, k, r, mode="source", progress=progress))
        results.append(run_isolated(factory, n, k, r, progress=progress))
    results.append(simulate(factory, config, progress=progress, verbose=args.verbose_flower))
    return _report(args, config, factory.describe(), results)


def _stream_settings(args: argparse.Namespace) -> dict:
    """What the devices were told to run (the server does not build them)."""
    keys = ("batch", "images_per_domain", "severity", "stream", "train_epochs", "seed")
    return {k: getattr(args, k) for k in keys}


def _report(args, config, streams: dict, results) -> int:
    import dataclasses

    from edgeadapt.fleet.report import write_outputs
    from edgeadapt.fleet.runner import rounds_table

    title = (
        f"edgeadapt fleet: {config.devices} devices × {config.rounds} rounds of "
        f"{config.steps_per_round} steps, {config.strategy}, merge {config.merge} "
        "(digits demo, EcoTTA)"
    )
    print(f"{title}\n\n{rounds_table(results)}")
    print("\nerror: online error (%) over all devices in the round; bytes: the adapter state "
          "Flower carries to / from each device per round")  # fmt: skip
    settings = {"fleet": dataclasses.asdict(config), "streams": streams}
    for path in write_outputs(results, title, json_path=args.json, markdown_path=args.markdown,
                              plot_path=args.plot, extra=settings):  # fmt: skip
        print(f"wrote {path}")
    return 0
