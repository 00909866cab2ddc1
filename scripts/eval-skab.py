#!/usr/bin/env python3
"""Evaluate Weir's detectors on SKAB (the Skoltech Anomaly Benchmark) with `weir backtest`.

    scripts/eval-skab.py [--weir target/release/weir] [--skab ../shared/data/skab/data] [--out DIR]

Converts every SKAB experiment into one Weir recording (sensor = experiment, e.g.
`valve1-3`; metric = channel; 1 Hz; experiments one after another), writes
  recording.csv  sensor,metric,value,ts,anomaly
  changepoints.json  {"valve1-3": [[cp, cp + 60 s], ...], ...}   (anomaly-free: [])
and, for each detector kind alone and for `auto`, a config, then runs
  weir backtest --no-scores --labels changepoints.json      (change-point problem, NAB)
  weir backtest --no-scores --label-column anomaly          (outlier problem, row F1)
The outlier problem is scored twice: on all 35 runs, and on the 34 experiments
alone (recording-34.csv), which is the test set of SKAB's published results
(they train on the anomaly-free run; here nothing is trained on it).
and prints what weir prints (the last lines: overall counts and NAB scores).

Everything is learnt online, per sensor, from the start of each experiment: no
training on the anomaly-free run or on the first part of a file. NAB's
probationary period leaves the first 15% of each experiment unscored.
Standard library only.
"""

import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import time

CHANNELS = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure",
            "Temperature", "Thermocouple", "Voltage", "Volume Flow RateRMS"]

DETECTORS = {
    "auto": 'kind = "auto"',
    "level_shift": 'kind = "level_shift"',
    "rate": 'kind = "rate"',
    "spread": 'kind = "spread"',
    "seasonal": 'kind = "seasonal"',
    "zscore": 'kind = "zscore"',
    "reference": 'kind = "reference"',
}


def epoch_ms(text):
    dt = datetime.datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S")
    return int(dt.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def convert(skab, out):
    files = []
    for group in sorted(os.listdir(skab)):
        d = os.path.join(skab, group)
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d), key=lambda n: (len(n), n)):
            if f.endswith(".csv"):
                files.append((group, f, os.path.join(d, f)))
    windows = {}
    rows = 0
    with open(os.path.join(out, "recording.csv"), "w", newline="") as fh, \
            open(os.path.join(out, "recording-34.csv"), "w", newline="") as fh34:
        w_all = csv.writer(fh)
        w34 = csv.writer(fh34)
        for w in (w_all, w34):
            w.writerow(["sensor", "metric", "value", "ts", "anomaly"])
        for group, f, path in files:
            # SKAB's published outlier results train on the anomaly-free run and
            # score the 34 experiments; recording-34.csv is that test set.
            writers = (w_all,) if group == "anomaly-free" else (w_all, w34)
            name = group if group == "anomaly-free" else "%s-%s" % (group, f[:-4])
            cps = []
            with open(path, newline="") as src:
                r = csv.DictReader(src, delimiter=";")
                for rec in r:
                    ts = epoch_ms(rec["datetime"])
                    label = "1" if float(rec.get("anomaly") or 0) == 1 else "0"
                    if float(rec.get("changepoint") or 0) == 1:
                        cps.append([ts, ts + 60_000])
                    for c in CHANNELS:
                        for w in writers:
                            w.writerow([name, c.replace(" ", "_"), rec[c], ts, label])
                        rows += 1
            windows[name] = cps
    with open(os.path.join(out, "changepoints.json"), "w") as fh:
        json.dump(windows, fh)
    return rows, len(files), sum(len(v) for v in windows.values())


def config(out, name, body):
    path = os.path.join(out, "%s.toml" % name)
    with open(path, "w") as fh:
        fh.write('[agent]\ndevice = "skab"\nstate_dir = "%s"\n\n' % os.path.join(out, "state"))
        fh.write('[engine]\nmax_future_skew = "1h"\nidle_timeout = "off"\nmax_keys = 1000\n')
        fh.write('[engine.window]\nsize = "10s"\n\n')
        fh.write('[uplink]\nhost = "127.0.0.1"\n\n')
        # A config needs a source; the backtest reads the recording instead.
        fh.write('[ingest]\nhost = "127.0.0.1"\n[[ingest.topic]]\nfilter = "s/+/+"\n'
                 'sensor = "{2}"\nmetric = "{3}"\n\n')
        fh.write('[[detector]]\nname = "%s"\n%s\n' % (name, body))
    return path


def run(weir, cfg, rec, extra):
    t = time.monotonic()
    p = subprocess.run([weir, "backtest", "--no-scores", "--config", cfg, *extra, rec],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit("weir backtest failed: %s" % p.stderr)
    return p.stderr, time.monotonic() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weir", default="target/release/weir")
    ap.add_argument("--skab", default="../shared/data/skab/data")
    ap.add_argument("--out", default="target/skab")
    ap.add_argument("--only", help="comma-separated detector names")
    ap.add_argument("--verbose", action="store_true", help="print per-experiment tables")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rows, files, cps = convert(a.skab, a.out)
    print("SKAB: %d experiments, %d readings, %d change points" % (files, rows, cps))
    rec = os.path.join(a.out, "recording.csv")
    rec34 = os.path.join(a.out, "recording-34.csv")
    labels = os.path.join(a.out, "changepoints.json")
    names = a.only.split(",") if a.only else list(DETECTORS)
    for name in names:
        cfg = config(a.out, name, DETECTORS[name])
        cp, t1 = run(a.weir, cfg, rec, ["--labels", labels])
        out, t2 = run(a.weir, cfg, rec, ["--label-column", "anomaly"])
        out34, _ = run(a.weir, cfg, rec34, ["--label-column", "anomaly"])
        print("== %s  (change points %.2f s, outliers %.2f s)" % (name, t1, t2))
        for title, text in (("change points, all 35 runs", cp),
                            ("outliers, all 35 runs", out),
                            ("outliers, the 34 experiments (SKAB's test set)", out34)):
            print("-- " + title)
            lines = text.strip().splitlines()
            keep = lines if a.verbose else [l for l in lines
                                            if l.startswith(("backtest:", "overall", "NAB", "series"))]
            print("\n".join(keep))


if __name__ == "__main__":
    main()
