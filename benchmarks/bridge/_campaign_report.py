"""campaign.json, campaign.md and campaign.png from one fault campaign's result."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path


def write_report(r: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "campaign.json").write_text(json.dumps(r, indent=1) + "\n")
    (out / "campaign.md").write_text(markdown(r))
    plot(r, out / "campaign.png")


def markdown(r: dict) -> str:
    c, fails = r["counts"], r["failures"]
    over = [f for f in fails if f["seconds"] > f["bound"]]
    worst = max((f["seconds"] / f["bound"] for f in fails), default=0.0)
    untyped = sum(o["n"] for o in r["outcomes"] if o["outcome"] == "untyped")
    link = r["link"]
    lines = [
        "# Bridge fault campaign",
        "",
        f"`{r['command']}` -- {r['ops']} operations in {r['seconds']:.0f} s ({r['host']}).",
        "",
        "| check | result |",
        "|---|---|",
        f"| wrong results (a success that differs from the host reference) | {c.get('wrong_results', 0)} |",
        f"| double-applied adaptation steps | {c.get('steps_double-applied', 0)} |",
        f"| lost adaptation steps (device behind the reference) | {c.get('steps_lost', 0)} |",
        f"| failures that were not a typed `BridgeError` | {untyped} |",
        f"| typed failures later than their bound | {len(over)} of {len(fails)} (worst: {worst:.2f} of the bound) |",
        f"| state checks (programs, adapter, step vs reference) | {c.get('state_checks', 0)}, problems: {len(r['problems'])} |",
        "",
        f"Bound of a failing call: `timeout x attempts` ({link['timeout']} s x {link['retries'] + 1}) "
        f"plus the busy time the device announced (IN_PROGRESS), plus {link['slack']} s of "
        "scheduling slack; a stream wait: `timeout` plus announced busy time.",
        "",
        "| event | count |",
        "|---|---|",
    ]  # fmt: skip
    for key in ("device_kills", "host_kills", "restarts_seen", "adapts_reissued",
                "adapts_answered_from_record", "deploys_landed_despite_error"):  # fmt: skip
        lines.append(f"| {key.replace('_', ' ')} | {c.get(key, 0)} |")
    lines += ["", "## Outcomes by operation", "", "| operation | outcome | n |", "|---|---|---|"]
    lines += [f"| {o['kind']} | {o['outcome']} | {o['n']} |" for o in r["outcomes"]]
    by_error: dict[str, list[dict]] = defaultdict(list)
    for f in fails:
        by_error[f["error"]].append(f)
    lines += ["", "## Typed failures", "",
              "| error | n | median s | max s | max s / bound |", "|---|---|---|---|---|"]  # fmt: skip
    for name, rows in sorted(by_error.items()):
        secs = sorted(f["seconds"] for f in rows)
        ratio = max(f["seconds"] / f["bound"] for f in rows)
        lines.append(f"| {name} | {len(rows)} | {secs[len(secs) // 2]:.2f} | {secs[-1]:.2f} | "
                     f"{ratio:.2f} |")  # fmt: skip
    if r["problems"]:
        lines += ["", "## Problems", ""] + [f"- {p}" for p in r["problems"]]
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.2))
    ratios = [f["seconds"] / f["bound"] for f in r["failures"]]
    ax1.hist(ratios, bins=20, range=(0, 1.2), color="tab:orange")
    ax1.axvline(1.0, color="black", linestyle="--", label="bound")
    ax1.set_xlabel("time to the typed error / its bound")
    ax1.set_ylabel("failed operations")
    ax1.set_title(f"{len(ratios)} typed failures, all within the bound" if all(
        x <= 1 for x in ratios) else "typed failures vs bound")  # fmt: skip
    ax1.legend()
    kinds = sorted({o["kind"] for o in r["outcomes"]})
    ok = [sum(o["n"] for o in r["outcomes"] if o["kind"] == k and o["outcome"] == "correct")
          for k in kinds]  # fmt: skip
    bad = [sum(o["n"] for o in r["outcomes"] if o["kind"] == k and o["outcome"] != "correct")
           for k in kinds]  # fmt: skip
    ax2.bar(kinds, ok, color="tab:green", label="correct result")
    ax2.bar(kinds, bad, bottom=ok, color="tab:orange", label="typed error, then settled")
    ax2.set_ylabel("operations")
    ax2.set_title("operations under faults (0 wrong results)" if not r["counts"].get(
        "wrong_results") else "operations under faults")  # fmt: skip
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
