#!/usr/bin/env python3
"""Run one command, wait for it, print its wall time and peak RSS as one JSON line.

    python3 bench/measure.py [--stdout PATH] -- COMMAND [ARG...]

Every number in `make bench` comes through this one wrapper, so the three tools are measured
the same way.

Peak RSS. On Linux a process's `ru_maxrss` starts at the RSS of whatever exec'd into it: a
child spawned straight from Python inherits a floor of about 13 MiB (this interpreter's own
RSS), which would hide a small tool's real peak. So when GNU time is present
(`/usr/bin/time`, a ~1 MiB C program) the command runs under `/usr/bin/time -f '%e %M ...'`
and its `%M` is used ("rss_method": "gnu-time", floor ≈ 1 MiB). Otherwise the command is
spawned directly and `ru_maxrss` of RUSAGE_CHILDREN is read after it was reaped
("rss_method": "rusage"); this process starts exactly one child, so the figure is that
child's, with "rss_floor_kib" telling the floor it cannot go below. Set
BENCH_RSS_METHOD=rusage to force the fallback.

Wall time is a monotonic clock around spawn → exit here, start-up included.

Without --stdout the child's stdout is captured and returned in "stdout" (the commands
measured here print one JSON line); with --stdout it goes to PATH (e.g. /dev/null). stderr is
passed through. Output:
    {"wall_seconds": F, "max_rss_kib": N, "user_seconds": F, "sys_seconds": F,
     "exit_code": N, "rss_method": "...", "rss_floor_kib": N, "stdout": "..."}
measure.py itself exits 0 whatever the child did: the caller reads exit_code.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

GNU_TIME = "/usr/bin/time"


def gnu_time_works():
    if os.environ.get("BENCH_RSS_METHOD", "auto") == "rusage" or not os.access(GNU_TIME, os.X_OK):
        return False
    # BusyBox and BSD time have no -f/-o: make sure this one is GNU's.
    probe = subprocess.run(
        [GNU_TIME, "-f", "%M", "-o", os.devnull, "true"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return probe.returncode == 0


def run(args, out):
    """Spawn, wait; return (wall seconds, CompletedProcess)."""
    started = time.perf_counter()
    proc = subprocess.run(args, stdout=out, stdin=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started, proc


def main():
    args = sys.argv[1:]
    out_path = None
    if args[:1] == ["--stdout"]:
        out_path, args = args[1], args[2:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: measure.py [--stdout PATH] -- COMMAND [ARG...]")

    result = {}
    out = open(out_path, "wb") if out_path else subprocess.PIPE
    try:
        if gnu_time_works():
            with tempfile.NamedTemporaryFile("r", prefix="bench-time-", suffix=".txt") as report:
                # %x: exit status; GNU time exits with the command's status, 127 if not found.
                fmt = "%e %M %U %S %x"
                wall, proc = run([GNU_TIME, "-f", fmt, "-o", report.name, "--", *args], out)
                # A failed command adds a "Command exited with ..." line: the numbers are last.
                lines = [ln for ln in report.read().splitlines() if ln.strip()]
            try:
                _, rss, user, sys_, code = lines[-1].split()
                result.update(
                    max_rss_kib=int(rss),
                    user_seconds=float(user),
                    sys_seconds=float(sys_),
                    exit_code=int(code),
                    rss_method="gnu-time",
                    rss_floor_kib=None,
                )
            except (IndexError, ValueError):
                result.update(exit_code=proc.returncode or 127, error=" / ".join(lines))
        else:
            floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            try:
                wall, proc = run(args, out)
            except OSError as e:
                print(json.dumps({"exit_code": 127, "error": str(e)}))
                return
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            result.update(
                max_rss_kib=usage.ru_maxrss,  # KiB on Linux
                user_seconds=round(usage.ru_utime, 3),
                sys_seconds=round(usage.ru_stime, 3),
                exit_code=proc.returncode,
                rss_method="rusage",
                rss_floor_kib=floor,
            )
    finally:
        if out_path:
            out.close()
    result["wall_seconds"] = round(wall, 3)
    result["stdout"] = "" if out_path else proc.stdout.decode("utf-8", "replace")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
