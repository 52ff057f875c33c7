"""A host process the fault campaign kills with SIGKILL mid-request.

    python benchmarks/bridge/_campaign_worker.py SPEC.json

It runs the operations in SPEC (adapt, infer, deploy) with a `BridgeClient` and journals each
one -- "sent" with its request id before the first byte goes out, "done" with the result or
"error" -- as an application that must survive its own crash would. The campaign then
settles what the journal leaves open with the same request ids. Imports no torch.
"""

from __future__ import annotations

import json
import os
import sys


def main(spec_path: str) -> int:
    from pathlib import Path

    from edgeadapt.firmware_bridge import BridgeClient, BridgeError, Target

    spec = json.loads(Path(spec_path).read_text())
    journal = os.open(spec["journal"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def note(entry: dict) -> None:
        os.write(journal, (json.dumps(entry) + "\n").encode())  # survives kill -9

    with BridgeClient.open(spec["port"], timeout=spec["timeout"], retries=spec["retries"],
                           max_payload=spec["max_payload"]) as dev:  # fmt: skip
        note({"i": -1, "event": "ready"})  # the campaign's kill timer starts here
        for i, op in enumerate(spec["ops"]):
            note({"i": i, "event": "sent"})
            try:
                if op["kind"] == "adapt":
                    r = dev.adapt(bytes.fromhex(op["data"]), frame_id=op["frame_id"],
                                  request_id=op["request_id"])  # fmt: skip
                    result = {"step": r.step, "loss": r.loss, "output": r.output.hex()}
                elif op["kind"] == "infer":
                    result = {"output": dev.infer(bytes.fromhex(op["data"]),
                                                  frame_id=op["frame_id"]).output.hex()}  # fmt: skip
                else:
                    blob = Path(op["file"]).read_bytes()
                    dev.upload(blob, target=Target(op["target"]), request_id=op["request_id"])
                    result = {}
            except BridgeError as exc:
                note({"i": i, "event": "error", "type": type(exc).__name__, "text": str(exc)})
                return 0  # the campaign settles the rest
            note({"i": i, "event": "done", "result": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
