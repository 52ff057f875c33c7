"""Randomized fault campaign: deploy, infer, adapt, stream and pull against the emulator while
the line drops, corrupts and delays bytes, the device loses power at random requests and in
mid-upload, and either side is killed with SIGKILL; every result is checked against a host
reference. Writes campaign.json, campaign.md and campaign.png next to this file.

    OMP_NUM_THREADS=1 python benchmarks/bridge/campaign.py --ops 1000 --seed 0

Checked: 0 wrong results (every successful result bit-identical to the reference), 0
double-applied steps (the device's step count never ahead of the reference), every failure a
typed `BridgeError` within its bound (the failing call's `timeout x attempts` plus the busy
time the device announced, plus scheduling slack), and after every failure and every 10
operations the device's program, training program, committed adapter and step count equal
the reference's (an interrupted deploy may leave the old or the new version, never another).
Programs are tiny (see _campaign_ref.py); the protocol paths do not depend on model size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _campaign_ref import LR, SHAPE, Reference, build_programs, crc  # noqa: E402
from _campaign_report import write_report  # noqa: E402

from edgeadapt.firmware_bridge import (  # noqa: E402
    BridgeClient,
    BridgeError,
    DeviceError,
    DeviceRestartedError,
    ErrorCode,
    ResetKind,
    Target,
    TransportError,
)
from edgeadapt.firmware_bridge.emulator import EmulatorProcess, Faults  # noqa: E402
from edgeadapt.firmware_bridge.emulator.payloads import (  # noqa: E402
    decode_input,
    decode_output,
    encode_u8_affine,
)
from edgeadapt.firmware_bridge.messages import Ack  # noqa: E402

TIMEOUT, RETRIES, MAX_PAYLOAD = 0.3, 4, 1024
SLACK = 0.75  # seconds of scheduling noise allowed on a loaded 2-core machine
UNKNOWN = ("BridgeTimeoutError", "CrcError", "FramingError", "TransportError")


class Timed:
    """Times the link call that fails: its bound is timeout x attempts + announced busy."""

    def __init__(self, link) -> None:
        self.link, self.start, self.base = link, time.monotonic(), 0.0
        exchange, wait_other = link.exchange, link.wait_other

        def timed_exchange(msg, **kw):
            self.start = time.monotonic()
            attempts = 1 + (link.retries if kw.get("retries") is None else kw["retries"])
            self.base = attempts * (kw.get("timeout") or link.timeout)
            return exchange(msg, **kw)

        def timed_wait(handler, **kw):
            self.start, self.base = time.monotonic(), link.timeout
            return wait_other(handler, **kw)

        link.exchange, link.wait_other = timed_exchange, timed_wait

    def measure(self) -> tuple[float, float]:
        return time.monotonic() - self.start, self.base + self.link.busy_seconds + SLACK


class Campaign:
    def __init__(self, args, programs) -> None:
        self.args, self.p = args, programs
        self.rng = random.Random(args.seed)
        self.data_rng = torch.Generator().manual_seed(args.seed)
        self.work = Path(tempfile.mkdtemp(prefix="bridge-campaign-run-"))
        self.flash = self.work / "flash"
        self.ref = Reference(LR)
        self.faults = Faults()
        self.counts: Counter = Counter()
        self.outcomes: Counter = Counter()  # (kind, outcome)
        self.failures: list[dict] = []
        self.problems: list[str] = []  # wrong results, inconsistencies, untyped errors
        self.emu: EmulatorProcess | None = None
        self.client: BridgeClient | None = None
        self.boot_id = 0
        self.worker_span = 0.2  # seconds a host worker's operations take, learnt as it runs

    # -- the two processes ------------------------------------------------------------------

    def start_device(self) -> None:
        if self.emu is not None:
            self.emu.close()
        self.emu = EmulatorProcess("stm32h743", f"--lr={LR}", "--flash-dir", str(self.flash),
                                   "--boot-ms=100", "--keepalive-ms=100",
                                   log_path=self.work / "emulator.log")  # fmt: skip
        self.open_client()

    def open_client(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = BridgeClient.open(self.emu.port, timeout=TIMEOUT, retries=RETRIES,
                                        max_payload=MAX_PAYLOAD)  # fmt: skip
        self.timed = Timed(self.client.link)

    def kill_device(self) -> None:
        self.counts["device_kills"] += 1
        self.emu.proc.kill()

    def alive(self) -> bool:
        return self.emu.proc.poll() is None

    def settle_line(self) -> None:
        """A clean line and a live device (restarted from its flash if it was killed)."""
        for _ in range(5):
            if not self.alive():
                self.start_device()
            try:
                self.set_faults(Faults())
                return
            except TransportError:
                # The port went away: a device killed a moment ago and not yet reaped, or a
                # line a host must open again, as a real host reopens a re-enumerated port.
                try:
                    self.emu.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.open_client()
            except BridgeError:
                continue
        raise RuntimeError("the emulator does not come back; see its log in " + str(self.work))

    def set_faults(self, faults: Faults) -> None:
        link = self.client.link
        saved = link.retries
        link.retries = 60  # the SET_FAULTS frame must get through the faults it replaces
        try:
            for _ in range(3):
                try:
                    self.client.request(faults.to_message(), Ack, timeout=0.15)
                    return
                except DeviceRestartedError:
                    self.sync_boot()
        finally:
            link.retries = saved

    def handshake(self) -> bool:
        """HELLO; True when the device restarted since the driver last looked."""
        self.info = self.client.connect()
        return self.sync_boot()

    def sync_boot(self) -> bool:
        """Whenever the client has seen a new boot id, the device lost its RAM state: so
        does the reference, once."""
        info = self.client.info
        if info is None or info.boot_id == self.boot_id:
            return False
        restarted = self.boot_id != 0
        if restarted:
            self.ref.reset()
            self.counts["restarts_seen"] += 1
        self.boot_id = info.boot_id
        return restarted

    def check_state(self, where: str) -> None:
        info = self.info
        have = (info.program_crc, info.training_crc, info.adapter_crc)
        if have != self.ref.crcs():
            self.problems.append(f"{where}: device holds {have}, reference {self.ref.crcs()}")
        if info.adapter_step != self.ref.step:
            kind = "double-applied" if info.adapter_step > self.ref.step else "lost"
            self.counts[f"steps_{kind}"] += 1
            self.problems.append(f"{where}: device step {info.adapter_step}, ref {self.ref.step}")
        self.counts["state_checks"] += 1

    # -- operations -------------------------------------------------------------------------

    def batch(self) -> tuple[bytes, torch.Tensor]:
        x = 1.5 * torch.randn(SHAPE, generator=self.data_rng) + 0.3
        data = encode_u8_affine(x)
        return data, decode_input(data, SHAPE)

    def pick_op(self, i: int) -> dict:
        kind = self.rng.choices(["infer", "adapt", "pull", "stream", "deploy", "reset"],
                                [30, 30, 10, 12, 14, 4])[0]  # fmt: skip
        op: dict = {"kind": kind, "i": i}
        if kind in ("infer", "adapt"):
            op["data"], op["x"] = self.batch()
        elif kind == "stream":
            n = self.rng.choice([4, 6, 8])
            frames = [self.batch() for _ in range(-(-n // 4))]
            xs = torch.cat([x for _, x in frames])[:n]
            op["frames"] = [encode_u8_affine(xs[j : j + 1]) for j in range(n)]
            op["xs"] = torch.cat([decode_input(f, (1, *SHAPE[1:])) for f in op["frames"]])
            op["adapt"] = self.rng.random() < 0.6
        elif kind == "deploy":
            target = self.rng.choice([Target.PROGRAM, Target.TRAINING, Target.ADAPTER, "role"])
            if target == "role":  # a training program sent as the inference program
                op.update(target=Target.PROGRAM, blob=self.p.train[0], expect_role=True)
            else:
                pool = {Target.PROGRAM: self.p.infer, Target.TRAINING: self.p.train,
                        Target.ADAPTER: self.p.adapters}[target]  # fmt: skip
                current = {Target.PROGRAM: self.ref.program, Target.TRAINING: self.ref.training,
                           Target.ADAPTER: self.ref.adapter}[target]  # fmt: skip
                op.update(target=target, blob=pool[1] if current == pool[0] else pool[0])
        if kind in ("adapt", "deploy", "reset"):
            op["rid"] = self.client.new_request_id()
        return op

    def run(self, op: dict, kill_after: float | None = None) -> None:
        """One operation in this process; a failure is timed, typed, then settled. With
        `kill_after`, the device process gets SIGKILL that many seconds into the call."""
        kind = op["kind"]
        timer = threading.Timer(kill_after, self.kill_device) if kill_after is not None else None
        try:
            if timer is not None:
                timer.start()
            try:
                result = self.call(op)
            finally:
                if timer is not None:
                    timer.cancel()
                    timer.join()
        except BridgeError as exc:
            self.record_failure(op, exc)
            self.settle(op, exc)
            return
        except Exception as exc:  # an untyped error out of the client: a finding
            self.problems.append(f"op {op['i']} {kind}: untyped {type(exc).__name__}: {exc}")
            self.outcomes[(kind, "untyped")] += 1
            self.settle(op, exc)
            return
        self.sync_boot()  # upload() rides through a restart by itself
        self.check_result(op, result)
        self.outcomes[(kind, "correct")] += 1

    def call(self, op: dict):
        c, kind = self.client, op["kind"]
        if kind == "infer":
            return c.infer(op["data"], frame_id=op["i"]).output
        if kind == "adapt":
            return c.adapt(op["data"], frame_id=op["i"], request_id=op["rid"])
        if kind == "pull":
            return c.get_adapter()
        if kind == "stream":
            return list(c.stream(op["frames"], adapt=op["adapt"], window=4))
        if kind == "reset":
            return c.reset(ResetKind.ADAPTER)
        try:
            return c.upload(op["blob"], target=op["target"], request_id=op["rid"])
        except DeviceError as exc:
            if op.get("expect_role") and exc.code == ErrorCode.WRONG_ROLE:
                return "refused"
            raise

    def check_result(self, op: dict, result) -> None:
        kind, ref = op["kind"], self.ref
        if kind == "infer":
            self.expect(op, torch.equal(decode_output(result, (SHAPE[0], -1)), ref.infer(op["x"])))
        elif kind == "adapt":
            self.check_adapt(op, result)
        elif kind == "pull":
            self.expect(op, result == ref.adapter_blob())
        elif kind == "stream":
            self.expect(op, *self.stream_matches(op, result))
        elif kind == "reset":
            ref.reset()
        elif op.get("expect_role"):
            self.expect(op, result == "refused")
        else:
            ref.commit(op["target"], op["blob"])
            self.handshake()
            self.check_state(f"op {op['i']} deploy")

    def check_adapt(self, op: dict, r) -> None:
        logits, loss = self.ref.adapt(op["x"])
        ok = (r.step == self.ref.step and r.loss == loss
              and torch.equal(decode_output(r.output, logits.shape), logits))  # fmt: skip
        self.expect(op, ok, f"step {r.step} vs {self.ref.step}, loss {r.loss} vs {loss}")

    def stream_matches(self, op: dict, results) -> tuple[bool, str]:
        want, adapted = self.stream_reference(op["xs"], op["adapt"], len(op["xs"]) // 4)
        got = torch.cat([decode_output(r.output, (1, -1)) for r in results])
        flags = [r.adapted for r in results]
        ok = got.shape == want.shape and torch.equal(got, want) and flags == adapted
        frames = [] if got.shape != want.shape else [
            j for j in range(len(want)) if not torch.equal(got[j], want[j])]  # fmt: skip
        return ok, (f"{len(results)} results for {len(op['xs'])} frames, adapt={op['adapt']}, "
                    f"frame ids {[r.frame_id for r in results]}, "
                    f"flags {flags} vs {adapted}, frames differing {frames}, device step "
                    f"{[getattr(r, 'step', None) for r in results]}, reference step "
                    f"{self.ref.step}")  # fmt: skip

    def stream_reference(self, xs, adapt: bool, steps: int):
        rows, flags, n, b = [], [], len(xs), SHAPE[0]
        for start in range(0, n, b):
            part = xs[start : start + b]
            if adapt and len(part) == b and start // b < steps:
                rows.append(self.ref.adapt(part)[0])
                flags += [1] * b
            else:
                pad = torch.cat([part[j % len(part) : j % len(part) + 1] for j in range(b)])
                rows.append(self.ref.infer(pad)[: len(part)])
                flags += [0] * len(part)
        return torch.cat(rows), flags

    def expect(self, op: dict, ok: bool, detail: str = "") -> None:
        if not ok:
            self.counts["wrong_results"] += 1
            self.problems.append(f"op {op['i']} {op['kind']}: WRONG RESULT {detail}")

    # -- failures ---------------------------------------------------------------------------

    def record_failure(self, op: dict, exc: BaseException) -> None:
        elapsed, bound = self.timed.measure()
        name = type(exc).__name__
        self.outcomes[(op["kind"], name)] += 1
        self.failures.append({"op": op["i"], "kind": op["kind"], "error": name,
                              "text": str(exc)[:160], "seconds": elapsed, "bound": bound,
                              "faults": self.mode})  # fmt: skip
        if elapsed > bound:
            self.problems.append(f"op {op['i']} {op['kind']}: {name} after {elapsed:.2f} s, "
                                 f"bound {bound:.2f} s")  # fmt: skip

    def settle(self, op: dict, exc: BaseException | None) -> None:
        """On a clean line: learn what the failed operation did, and bring the reference
        to the same place (or report that no consistent place exists)."""
        self.settle_line()
        restarted = self.handshake() or isinstance(exc, DeviceRestartedError)
        kind, info = op["kind"], self.info
        if kind == "deploy" and not op.get("expect_role"):
            field = {Target.PROGRAM: "program_crc", Target.TRAINING: "training_crc",
                     Target.ADAPTER: "adapter_crc"}[op["target"]]  # fmt: skip
            index = {"program_crc": 0, "training_crc": 1, "adapter_crc": 2}[field]
            have, old = getattr(info, field), self.ref.crcs()[index]
            if have == crc(op["blob"]) and have != old:
                self.ref.commit(op["target"], op["blob"])  # the commit landed
                self.counts["deploys_landed_despite_error"] += 1
            elif have != old:
                self.problems.append(f"op {op['i']} deploy: {field} {have:#x} is neither old "
                                     f"{old:#x} nor new {crc(op['blob']):#x}")  # fmt: skip
        elif (
            kind == "adapt"
            and not restarted
            and exc is not None
            and (type(exc).__name__ in UNKNOWN)
        ):
            self.counts["adapts_reissued"] += 1  # same request id: recorded answer or one run
            before = self.client.stats().duplicates
            try:
                r = self.client.adapt(op["data"], frame_id=op["i"], request_id=op["rid"])
            except DeviceRestartedError:
                self.handshake()
            else:
                self.counts["adapts_answered_from_record"] += (
                    self.client.stats().duplicates > before
                )
                self.check_adapt(op, r)
                self.handshake()
        elif kind == "stream" and not restarted:
            done = info.adapter_step - self.ref.step  # batches that stepped before it broke
            if op["adapt"] and 0 <= done <= len(op["xs"]) // 4:
                for k in range(done):
                    self.ref.adapt(op["xs"][4 * k : 4 * k + 4])
        elif kind == "reset" and not restarted:
            self.client.reset(ResetKind.ADAPTER)  # whether or not it ran, reset now
            self.ref.reset()
            self.handshake()
        self.check_state(f"op {op['i']} {kind} after {type(exc).__name__}")
        self.set_faults(self.faults)

    # -- the host killed mid-request ------------------------------------------------------------

    def host_kill_round(self, first: int) -> None:
        """A worker process runs a few operations and is killed with SIGKILL at a random
        moment; its journal tells what was sent, what came back, and what is open."""
        self.counts["host_kills"] += 1
        ops = []
        for j in range(self.rng.randrange(3, 7)):
            op = self.pick_op(first + j)
            while op["kind"] not in ("infer", "adapt", "deploy") or op.get("expect_role"):
                op = self.pick_op(first + j)
            ops.append(op)
        spec_ops = []
        for op in ops:
            entry = {"kind": op["kind"], "frame_id": op["i"], "request_id": op.get("rid", 0)}
            if op["kind"] == "deploy":
                path = self.work / f"blob-{op['i']}.bin"
                path.write_bytes(op["blob"])
                entry.update(file=str(path), target=int(op["target"]))
            else:
                entry["data"] = op["data"].hex()
            spec_ops.append(entry)
        journal = self.work / f"journal-{first}.jsonl"
        spec = self.work / f"spec-{first}.json"
        spec.write_text(json.dumps({"port": self.emu.port, "timeout": TIMEOUT,
                                    "retries": RETRIES, "max_payload": MAX_PAYLOAD,
                                    "journal": str(journal), "ops": spec_ops}))  # fmt: skip
        self.client.close()
        self.client = None
        worker = subprocess.Popen([sys.executable, str(HERE / "_campaign_worker.py"), str(spec)],
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
        # The kill lands while the worker's requests run, not while it starts up: the timer
        # starts when it has opened the port, and is drawn over how long workers that were
        # not killed took (their requests take milliseconds on the tiny programs).
        _wait_for_line(journal, '"ready"', worker, limit=30.0)
        ready = time.monotonic()
        try:
            worker.wait(timeout=self.rng.uniform(0.0, 1.2 * self.worker_span))
            self.worker_span = 0.5 * self.worker_span + 0.5 * (time.monotonic() - ready)
        except subprocess.TimeoutExpired:
            worker.kill()  # kill -9, wherever it is
            worker.wait()
        self.open_client()
        events = [json.loads(line) for line in journal.read_text().splitlines()] \
            if journal.exists() else []  # fmt: skip
        state = {}
        for e in events:
            if e["i"] >= 0:
                state[e["i"]] = e
        for k, op in enumerate(ops):
            e = state.get(k)
            if e is None:
                break  # never sent
            if e["event"] == "done":
                self.worker_done(op, e["result"])
                self.outcomes[(op["kind"], "correct")] += 1
                continue
            killed = e["event"] == "sent"
            self.outcomes[(op["kind"], "host killed mid-request" if killed else e["type"])] += 1
            self.settle_worker(op, restarted=not killed and e["type"] == "DeviceRestartedError")
            break

    def worker_done(self, op: dict, result: dict) -> None:
        if op["kind"] == "adapt":
            from types import SimpleNamespace

            r = SimpleNamespace(step=result["step"], loss=result["loss"],
                                output=bytes.fromhex(result["output"]))  # fmt: skip
            self.check_adapt(op, r)
        elif op["kind"] == "infer":
            got = decode_output(bytes.fromhex(result["output"]), (SHAPE[0], -1))
            self.expect(op, torch.equal(got, self.ref.infer(op["x"])))
        else:
            self.ref.commit(op["target"], op["blob"])

    def settle_worker(self, op: dict, *, restarted: bool) -> None:
        """The killed (or failed) worker's open request: a new process, the same id."""
        self.settle_line()
        restarted = self.handshake() or restarted
        if op["kind"] == "adapt" and not restarted:
            self.counts["adapts_reissued"] += 1
            before = self.client.stats().duplicates
            r = self.client.adapt(op["data"], frame_id=op["i"], request_id=op["rid"])
            self.counts["adapts_answered_from_record"] += self.client.stats().duplicates > before
            self.check_adapt(op, r)
            self.handshake()
        elif op["kind"] == "deploy":
            out = self.client.upload_outcome()
            if out.request_id == op["rid"] and out.state == 2:  # COMMITTED before the kill
                self.ref.commit(op["target"], op["blob"])
                self.counts["deploys_landed_despite_error"] += 1
            else:  # the new process repeats the deploy under the same id
                self.client.upload(op["blob"], target=op["target"], request_id=op["rid"])
                self.ref.commit(op["target"], op["blob"])
            self.handshake()
        self.check_state(f"op {op['i']} {op['kind']} after a host kill")
        self.set_faults(self.faults)

    # -- the schedule -----------------------------------------------------------------------

    def next_faults(self) -> None:
        r = self.rng
        self.mode = r.choices(["clean", "line", "reboot", "power", "mixed"], [3, 3, 2, 1, 2])[0]
        line = {"drop": r.uniform(5e-5, 4e-4), "corrupt": r.uniform(5e-5, 4e-4),
                "delay": r.uniform(0, 5e-4), "delay_ms": 20}  # fmt: skip
        seed = r.randrange(1 << 31)
        self.faults = {
            "clean": Faults(seed=seed),
            "line": Faults(**line, seed=seed),
            "reboot": Faults(reboot=r.uniform(0.005, 0.03), boot_ms=100, seed=seed),
            "power": Faults(reset_at=r.uniform(0.2, 0.8), boot_ms=100, seed=seed),
            "mixed": Faults(**line, reboot=r.uniform(0.002, 0.01), boot_ms=100, seed=seed),
        }[self.mode]
        self.settle_line()
        self.set_faults(self.faults)

    def deploy_initial(self) -> None:
        for target, blob in ((Target.PROGRAM, self.p.infer[0]), (Target.TRAINING, self.p.train[0]),
                             (Target.ADAPTER, self.p.adapters[0])):  # fmt: skip
            self.client.upload(blob, target=target)
            self.ref.commit(target, blob)
        self.handshake()
        self.check_state("initial deploy")

    def go(self) -> None:
        self.start_device()
        self.deploy_initial()
        self.mode = "clean"
        i = 0
        while i < self.args.ops:
            if i % 20 == 0:
                self.next_faults()
            if self.rng.random() < self.args.host_kills:
                before = sum(self.outcomes.values())
                self.host_kill_round(i)
                i += max(sum(self.outcomes.values()) - before, 1)
                continue
            op = self.pick_op(i)
            if self.args.trace:
                print(i, op["kind"], op.get("target", ""), op.get("adapt", ""), self.mode,
                      "ref step", self.ref.step, flush=True)  # fmt: skip
            kill = (
                self.rng.uniform(0.0, 0.3) if self.rng.random() < self.args.device_kills else None
            )
            self.run(op, kill)
            if not self.alive():  # killed just after the operation finished: settle anyway
                self.settle(op, None)
            i += 1
            if i % self.args.check_every == 0:
                self.settle_line()
                self.handshake()
                self.check_state(f"after op {i}")
                self.set_faults(self.faults)
        self.settle_line()
        self.handshake()
        self.check_state("end")
        self.expect({"i": i, "kind": "final pull"},
                    self.client.get_adapter() == self.ref.adapter_blob())  # fmt: skip


def _wait_for_line(path: Path, marker: str, proc: subprocess.Popen, limit: float) -> None:
    """Until `path` holds `marker`, `proc` has exited, or `limit` seconds have passed."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        if path.exists() and marker in path.read_text():
            return
        time.sleep(0.005)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--ops", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device-kills", type=float, default=0.02, help="per-op chance of kill -9")
    p.add_argument("--host-kills", type=float, default=0.02, help="per-op chance of a host kill")
    p.add_argument("--check-every", type=int, default=10, help="state check period (ops)")
    p.add_argument("--trace", action="store_true", help="print every operation")
    p.add_argument("--out", default=str(HERE))
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    programs = build_programs()
    camp = Campaign(args, programs)
    try:
        camp.go()
    finally:
        if camp.client is not None:
            camp.client.close()
        if camp.emu is not None:
            camp.emu.close()
    seconds = time.perf_counter() - t0
    result = {
        "command": f"OMP_NUM_THREADS=1 python benchmarks/bridge/campaign.py --ops {args.ops} "
                   f"--seed {args.seed}",
        "host": platform.processor() or platform.machine(), "seconds": seconds,
        "ops": sum(camp.outcomes.values()), "link": {"timeout": TIMEOUT, "retries": RETRIES,
                                                     "max_payload": MAX_PAYLOAD, "slack": SLACK},
        "counts": dict(camp.counts), "problems": camp.problems,
        "outcomes": [{"kind": k, "outcome": o, "n": n} for (k, o), n in sorted(camp.outcomes.items())],
        "failures": camp.failures,
    }  # fmt: skip
    out = Path(args.out)
    write_report(result, out)
    print(f"{result['ops']} operations in {seconds:.0f} s; problems: {len(camp.problems)}")
    for line in camp.problems[:20]:
        print("  ", line)


if __name__ == "__main__":
    main()
