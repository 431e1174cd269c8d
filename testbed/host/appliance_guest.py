"""The impairment appliance's side of its control channel (runs inside the full-kernel VM).

Standard library only, run by path (``python3 appliance_guest.py``): the guest's stdin and
stdout are virtio-serial ports to the host (virtme-ng's script I/O). One JSON request per
line, ``{"id": N, "cmds": [[argv...], ...]}``; the commands run in order and stop at the
first failure (unless ``"keep_going": true``); one JSON answer per line,
``{"id": N, "results": [{"rc", "out", "err"}]}``.
``{"nics": true}`` asks for the guest's interfaces by MAC. End of input ends the guest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

READY = "@@appliance-ready@@"


def nics() -> dict[str, str]:
    """MAC address -> interface name of every Ethernet NIC."""
    out = {}
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/address") as f:
                out[f.read().strip()] = name
        except OSError:
            continue
    return out


def execute(cmds: list[list[str]], keep_going: bool = False) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for argv in cmds:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            results.append({"rc": p.returncode, "out": p.stdout, "err": p.stderr})
        except (OSError, subprocess.TimeoutExpired) as exc:
            results.append({"rc": 127, "out": "", "err": str(exc)})
        if results[-1]["rc"] != 0 and not keep_going:
            break
    return results


def main() -> None:
    print(READY, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        answer: dict[str, object] = {"id": req.get("id")}
        if req.get("nics"):
            answer["nics"] = nics()
        else:
            answer["results"] = execute(req.get("cmds", []), bool(req.get("keep_going")))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
