#!/usr/bin/env python3
"""Turn the measurements of scripts/bench.sh into the printed table and results.json.

    python3 bench/report.py RUN_DIR RESULTS_JSON LOG_DIR

RUN_DIR holds what bench.sh wrote: context.json, <tool>.<n>.json (bench/measure.py output,
one per run; tools zcat, cf2bq, python), and for the end-to-end part e2e.json or
e2e_skipped.txt. Throughput is uncompressed input bytes / wall seconds, MB = 10^6 bytes;
the byte count comes from cf2bq's own report (the Python reference's if cf2bq failed), never
from `gzip -l`, which wraps at 4 GiB. Nothing here fails on timing: exit status is 0 unless
the inputs are missing.
"""

import glob
import json
import os
import sys

TARGETS = {"vs_zcat": 1.0, "vs_python": 20.0, "rss_mib": 64.0}
TOOLS = [
    ("zcat", "zcat > /dev/null", "zcat.log"),
    ("cf2bq", "cf2bq transform", "cf2bq-transform.log"),
    ("python", "Python reference", "python.log"),
]


def load(path):
    with open(path) as f:
        return json.load(f)


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def tail(path, n=5):
    text = read(path) or ""
    return " | ".join(line for line in text.splitlines()[-n:] if line.strip())


def last_json_line(text):
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def tool_result(run_dir, tool, log_path, needs_output):
    """Fastest successful run of `tool`, or a failure record."""
    runs, errors = [], []
    for path in sorted(glob.glob(os.path.join(run_dir, f"{tool}.*.json"))):
        m = load(path)
        output = last_json_line(m.get("stdout")) if needs_output else None
        if m.get("exit_code") != 0:
            errors.append(f"exit {m.get('exit_code')}{': ' + m['error'] if m.get('error') else ''}")
        elif needs_output and output is None:
            errors.append("no JSON line on stdout")
        else:
            runs.append({**{k: v for k, v in m.items() if k != "stdout"}, "output": output})
    if not runs:
        return {
            "ok": False,
            "error": "; ".join(errors) or "not run",
            "log": log_path,
            "log_tail": tail(log_path),
        }
    best = min(runs, key=lambda r: r["wall_seconds"])
    return {
        "ok": True,
        "wall_seconds": best["wall_seconds"],
        "user_seconds": best.get("user_seconds"),
        "sys_seconds": best.get("sys_seconds"),
        # The highest peak over all runs: memory is judged on the worst run.
        "peak_rss_kib": max(r["max_rss_kib"] for r in runs),
        "rss_method": best.get("rss_method"),
        "rss_floor_kib": best.get("rss_floor_kib"),
        "output": best["output"],
        "runs": len(runs),
        "all_wall_seconds": [r["wall_seconds"] for r in runs],
    }


def fmt_int(n):
    return f"{n:,.0f}" if n is not None else "—"


def fmt(n, spec):
    if n is None:
        width = "".join(c for c in spec.split(",")[0].split(".")[0] if c.isdigit())
        return "n/a".rjust(int(width or 0))
    return format(n, spec)


def mark(target):
    if target["value"] is None:
        return "? (not measured)"
    return "✓" if target["met"] else "✗"


def main():
    run_dir, results_path, log_dir = sys.argv[1:4]
    ctx = load(os.path.join(run_dir, "context.json"))
    tools = {
        tool: tool_result(run_dir, tool, os.path.join(log_dir, log), tool != "zcat")
        for tool, _, log in TOOLS
    }
    cf, py = tools["cf2bq"], tools["python"]

    # Input size and row count: cf2bq's figures, else the Python reference's.
    ref = cf if cf["ok"] else py if py["ok"] else None
    ubytes = ref["output"]["uncompressed_bytes"] if ref else None
    rows = ref["output"]["rows"] if ref else None
    notes = []
    if cf["ok"] and py["ok"]:
        for key in ("uncompressed_bytes", "rows", "rejected"):
            a, b = cf["output"].get(key), py["output"].get(key)
            if a != b:
                notes.append(f"cf2bq and the Python reference disagree on {key}: {a} vs {b}")

    for tool, r in tools.items():
        if not r["ok"]:
            continue
        own_rows = r["output"]["rows"] if r["output"] else rows
        wall = r["wall_seconds"]
        r["mb_per_s"] = ubytes / wall / 1e6 if ubytes and wall else None
        r["rows_per_s"] = own_rows / wall if own_rows is not None and wall else None
        r["peak_rss_mib"] = r["peak_rss_kib"] / 1024

    def ratio(a, b):
        ta, tb = tools[a], tools[b]
        if ta["ok"] and tb["ok"] and ta["wall_seconds"] and tb["wall_seconds"]:
            return tb["wall_seconds"] / ta["wall_seconds"]  # same input: throughput ratio
        return None

    ratios = {"cf2bq_vs_zcat": ratio("cf2bq", "zcat"), "cf2bq_vs_python": ratio("cf2bq", "python")}
    rss = cf.get("peak_rss_mib")
    targets = {
        "cf2bq_vs_zcat": {"target": f">= {TARGETS['vs_zcat']}x", "value": ratios["cf2bq_vs_zcat"],
                          "met": ratios["cf2bq_vs_zcat"] is not None and ratios["cf2bq_vs_zcat"] >= TARGETS["vs_zcat"]},
        "cf2bq_vs_python": {"target": f">= {TARGETS['vs_python']}x", "value": ratios["cf2bq_vs_python"],
                            "met": ratios["cf2bq_vs_python"] is not None and ratios["cf2bq_vs_python"] >= TARGETS["vs_python"]},
        "cf2bq_peak_rss_mib": {"target": f"<= {TARGETS['rss_mib']:g}", "value": rss,
                               "met": rss is not None and rss <= TARGETS["rss_mib"]},
    }

    # ---- end-to-end ----
    e2e = {"ran": False}
    skipped = read(os.path.join(run_dir, "e2e_skipped.txt"))
    e2e_path = os.path.join(run_dir, "e2e.json")
    if skipped:
        e2e["skipped"] = skipped
    elif os.path.exists(e2e_path):
        m = load(e2e_path)
        report = last_json_line(m.get("stdout"))
        if m.get("exit_code") == 0 and report:
            wall = m["wall_seconds"]
            e2e.update(
                ran=True,
                file=read(os.path.join(run_dir, "e2e_file.txt")),
                dataset=read(os.path.join(run_dir, "e2e_dataset.txt")),
                rows=report.get("rows"),
                rejected=report.get("rejected"),
                uncompressed_bytes=report.get("bytes"),
                tables=report.get("tables"),
                wall_seconds=wall,
                rows_per_s=report["rows"] / wall if report.get("rows") is not None and wall else None,
                mb_per_s=report["bytes"] / wall / 1e6 if report.get("bytes") and wall else None,
                peak_rss_mib=m["max_rss_kib"] / 1024,
            )
        else:
            e2e["skipped"] = (
                f"cf2bq ingest failed (exit {m.get('exit_code')}): "
                + tail(os.path.join(log_dir, "e2e-ingest.log"))
            )

    results = {
        "context": ctx,
        "input": {"file": ctx["file"], "gzip_bytes": ctx["gzip_bytes"],
                  "uncompressed_bytes": ubytes, "rows": rows},
        "tools": tools,
        "ratios": ratios,
        "targets": targets,
        "end_to_end": e2e,
        "notes": notes,
    }
    with open(results_path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    # ---- the table ----
    m = ctx["machine"]
    print()
    print(f"input   {os.path.basename(ctx['file'])} (seed {ctx['seed']}, {ctx['size_mib']} MiB asked)")
    print(f"        {fmt(ubytes / 1e6 if ubytes else None, ',.1f')} MB uncompressed, "
          f"{ctx['gzip_bytes'] / 1e6:,.1f} MB gzip, {fmt_int(rows)} rows")
    print(f"machine {m['cpus']} CPUs, {m['cpu_model']}; load average at start {' '.join(m['loadavg_at_start'])}")
    method = next((t.get("rss_method") for t in tools.values() if t["ok"]), None)
    print(f"        {ctx['cf2bq_version']}, Python {ctx['python_version']}, git {ctx['git_commit']}, "
          f"peak RSS via {method}; best of {ctx['repeat']} run(s) for zcat and cf2bq")
    print()
    print(f"{'tool':<20} {'wall s':>9} {'MB/s':>9} {'rows/s':>12} {'peak RSS MiB':>13}")
    print("-" * 67)
    for tool, label, _ in TOOLS:
        r = tools[tool]
        if r["ok"]:
            print(f"{label:<20} {r['wall_seconds']:>9.2f} {fmt(r['mb_per_s'], '>9,.1f')} "
                  f"{fmt(r['rows_per_s'], '>12,.0f')} {r['peak_rss_mib']:>13.1f}")
        else:
            print(f"{label:<20} FAILED: {r['error']}")
            if r["log_tail"]:
                print(f"{'':<20} {r['log']}: {r['log_tail'][:300]}")
    print()
    rows_t = [
        ("cf2bq / zcat", "cf2bq_vs_zcat", ".2f", "×", f"≥ {TARGETS['vs_zcat']:g}×"),
        ("cf2bq / python", "cf2bq_vs_python", ".1f", "×", f"≥ {TARGETS['vs_python']:g}×"),
        ("cf2bq peak RSS", "cf2bq_peak_rss_mib", ".1f", " MiB", f"≤ {TARGETS['rss_mib']:g} MiB"),
    ]
    for label, key, spec, unit, goal in rows_t:
        v = targets[key]["value"]
        shown = "n/a" if v is None else format(v, spec) + unit
        print(f"{label:<16} {shown:>10}   target {goal:<10} {mark(targets[key])}")
    for note in notes:
        print(f"note: {note}")
    print()
    if e2e["ran"]:
        print(f"end-to-end (information): cf2bq ingest of a {e2e['uncompressed_bytes'] / 1e6:,.1f} MB object "
              f"into the local BigQuery emulator")
        print(f"        {fmt_int(e2e['rows'])} rows in {e2e['wall_seconds']:.1f} s = "
              f"{fmt(e2e['rows_per_s'], ',.0f')} rows/s, {fmt(e2e['mb_per_s'], ',.2f')} MB/s, "
              f"peak RSS {e2e['peak_rss_mib']:.1f} MiB — bounded by the Python emulator, not by cf2bq")
    else:
        print(f"end-to-end: skipped — {e2e.get('skipped', 'not run')}")
    print(f"\nresults: {results_path}")


if __name__ == "__main__":
    main()
