"""What Ray's dashboard costs each command that starts a Ray of its own: ``ray.init`` on this machine with and
without it, alternated, each start in a fresh process (as every ``autoformer`` command is), the machine's CPU
seconds (all of Ray's processes, from /proc/stat) and the wall time until ``ray.shutdown`` has returned.

    python benchmarks/ray_start_cost.py --repeats 5

Run it on an otherwise idle machine: /proc/stat counts every process on it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

START = (
    "import time, ray; ray.init(address='local', include_dashboard={dashboard}, log_to_driver=False); "
    "time.sleep({settle}); ray.shutdown()"
)


def machine_cpu_s() -> float:
    """CPU seconds spent by the whole machine so far (user, nice, system)."""
    with open("/proc/stat", encoding="ascii") as f:
        user, nice, system = (int(v) for v in f.readline().split()[1:4])
    return (user + nice + system) / 100.0


def one_start(dashboard: bool, settle: float) -> tuple[float, float]:
    """Wall and CPU seconds of one fresh process that starts Ray, waits ``settle`` s and shuts it down."""
    cpu, wall = machine_cpu_s(), time.perf_counter()
    code = START.format(dashboard=dashboard, settle=settle)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - wall, machine_cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds Ray runs before shutdown")
    args = parser.parse_args()
    runs: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for i in range(args.repeats):
        for dashboard in (True, False):
            runs[dashboard].append(one_start(dashboard, args.settle))
            wall, cpu = runs[dashboard][-1]
            print(
                f"[{i + 1}/{args.repeats}] dashboard {dashboard!s:5}  wall {wall:5.2f} s  cpu {cpu:5.2f} s", flush=True
            )
    for dashboard, rows in runs.items():
        walls, cpus = zip(*rows)
        print(
            f"dashboard {dashboard!s:5}: median wall {statistics.median(walls):.2f} s, "
            f"median CPU {statistics.median(cpus):.2f} s over {len(rows)} starts"
        )
    saved = statistics.median(c for _, c in runs[True]) - statistics.median(c for _, c in runs[False])
    print(f"without the dashboard: {saved:.2f} CPU-seconds less per start")


if __name__ == "__main__":
    main()
