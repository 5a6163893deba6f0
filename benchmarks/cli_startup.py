"""Start-up cost of the command line and the config, against the interpreter's own start.

`codemill --help` imports neither the stages nor Spark; loading and validating the run
config imports the stage registry but no kernel. The floor is `python -c pass`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

RUNS = 15
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "codemill --help": [sys.executable, "-m", "codemill.cli", "--help"],
    "load + validate the demo config": [
        sys.executable, "-c", "from codemill.config import load_run_config; load_run_config()"],
    "codemill config (load, print)": [sys.executable, "-m", "codemill.cli", "config"],
}


def median_seconds(command: list[str]) -> float:
    times = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> str:
    seconds = {name: median_seconds(cmd) for name, cmd in COMMANDS.items()}
    floor = seconds["python -c pass (floor)"]
    rows = [f"| {name} | {s:.3f} | {s / floor:.1f}x |" for name, s in seconds.items()]
    return "\n".join([
        f"## Command-line start-up (median of {RUNS} runs)",
        "",
        "| command | seconds | vs interpreter start |",
        "|---|---:|---:|",
        *rows,
        "",
        f"`codemill --help` answers in {seconds['codemill --help']:.2f} s (goal: under 0.5 s).",
    ])


if __name__ == "__main__":
    print(main())
