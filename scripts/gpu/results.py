"""The arithmetic of scripts/gpu-run.sh: manifests of repeated clips, and the rows and lines of
its summary from `novelstream score` reports, /metrics scrapes and bench outputs. Standard
library only: the GPU machine's python3 runs it.

    results.py replicate CLIPS_DIR CLIPS          -> path of a manifest with at least CLIPS train clips
    results.py level SCORE_JSON STREAMS PRODUCE_S NOMINAL_S METRICS_BEFORE METRICS_AFTER CPU_S -> TSV row
    results.py capacity CAPACITY_TSV              -> Markdown table and the largest count served
    results.py backlog SCORE_JSON METRICS DECODERS BENCH_2S_TXT [TIMES...] -> Markdown lines
    results.py train BENCH_TRAIN_TXT [PYTORCH_TXT] -> Markdown line with the ratio
"""
import json
import math
import os
import re
import sys

# p99 latency a stream count must stay under to count as served (issue 22).
P99_LIMIT_MS = 2000
# A producer slower than this share over its nominal time did not offer the load asked for.
PRODUCER_SLACK = 1.1


def metric(path, name):
    """The value of an unlabelled sample `name` in a Prometheus text scrape, 0 when absent."""
    try:
        text = open(path).read()
    except OSError:
        return 0.0
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def replicate(clips_dir, clips):
    """A manifest listing the set's train clips as many times as needed for `clips` of them,
    each copy under its own prefix `rK/` (a link to the set's folder), so every segment id is
    distinct while `produce` resolves each to the one file; test clips are listed once."""
    manifest = json.load(open(os.path.join(clips_dir, "manifest.json")))
    train = [c for c in manifest["clips"] if c["split"] == "train"]
    copies = max(1, math.ceil(int(clips) / len(train)))
    listed = [c for c in manifest["clips"] if c["split"] != "train"]
    for k in range(copies):
        if k:
            link = os.path.join(clips_dir, f"r{k}")
            if not os.path.lexists(link):
                os.symlink(".", link)
        listed += [dict(c, path=f"r{k}/{c['path']}" if k else c["path"]) for c in train]
    path = os.path.join(clips_dir, f"manifest-x{copies}.json")
    json.dump(dict(manifest, clips=listed), open(path, "w"))
    print(path)


def level(score_json, streams, produce_s, nominal_s, before, after, cpu_s):
    r = json.load(open(score_json))
    lat = r.get("latency") or {}
    steps = metric(after, "novelstream_train_steps_total") - metric(before, "novelstream_train_steps_total")
    step_s = metric(after, "novelstream_train_step_seconds_sum") - metric(before, "novelstream_train_step_seconds_sum")
    produce_s, nominal_s = float(produce_s), float(nominal_s)
    served = (
        lat.get("p99_ms") is not None
        and lat["p99_ms"] < P99_LIMIT_MS
        and r["missing_segments"] == 0
        and produce_s <= nominal_s * PRODUCER_SLACK
    )
    row = [streams, r["windows"], lat.get("p50_ms"), lat.get("p95_ms"), lat.get("p99_ms"), lat.get("max_ms"),
           r["missing_segments"], f"{produce_s:.1f}", f"{nominal_s:.1f}", int(steps), f"{steps / produce_s:.2f}",
           f"{1e3 * step_s / steps:.0f}" if steps else "-", cpu_s, "yes" if served else "no"]
    print("\t".join(str(x) for x in row))


CAPACITY_HEADER = ["streams", "windows", "p50_ms", "p95_ms", "p99_ms", "max_ms", "missing_segments", "produce_s",
                   "nominal_s", "train_steps", "train_steps_per_s", "ms_per_step", "daemon_cpu_s", "served"]


def capacity(tsv):
    rows = [line.rstrip("\n").split("\t") for line in open(tsv)][1:]
    print("| " + " | ".join(CAPACITY_HEADER) + " |")
    print("|" + "---|" * len(CAPACITY_HEADER))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    served = [int(row[0]) for row in rows if row[-1] == "yes"]
    tried = [int(row[0]) for row in rows]
    if not rows:
        print("\nNo stream count was run.")
    elif served:
        above = [n for n in tried if n > max(served)]
        limit = f"; {min(above)} was not" if above else "; no larger count was tried (raise COUNTS)"
        print(f"\nLargest stream count served (p99 < {P99_LIMIT_MS} ms, nothing missing, producer on time): "
              f"**{max(served)}**{limit}.")
    else:
        print(f"\nNo stream count tried ({', '.join(map(str, tried))}) was served with p99 < {P99_LIMIT_MS} ms.")


def backlog(score_json, metrics, decoders, bench_2s, *times):
    """`times`: when the first window, 10%, 90% and all of them were published (epoch seconds,
    as many as were reached); the rate is taken between 10% and 90%, past the start-up and the
    stragglers."""
    r = json.load(open(score_json))
    decoders = int(decoders)
    times = [float(t) for t in times]
    if len(times) < 4:
        print(f"- decode + assign: only {r['windows']} windows were published in time (see details)")
        return
    first, p10, p90, done = times
    middle = r["windows"] * 0.8
    e2e = middle / (p90 - p10) if p90 > p10 else float("nan")
    segments = metric(metrics, "novelstream_decode_seconds_count")
    decode_s = metric(metrics, "novelstream_decode_seconds_sum")
    assigns = metric(metrics, "novelstream_assign_seconds_count")
    assign_s = metric(metrics, "novelstream_assign_seconds_sum")
    windows_per_segment = r["windows"] / max(r["segments"], 1)
    print(f"- decode + assign, end to end (a backlog of {r['segments']} segments, {decoders} decoders, training "
          f"off): {r['windows']} windows published {done - first:.1f} s after the first; between 10% and 90% of them "
          f"**{e2e:.0f} windows/s**; {r['missing_segments']} segments missing")
    if segments and decode_s:
        per_segment = decode_s / segments
        alone = decoders * windows_per_segment / per_segment
        print(f"- decode alone in the same run (the daemon's decode timer): {1e3 * per_segment:.1f} ms per segment "
              f"per decoder, so {decoders} decoders decode at most **{alone:.0f} windows/s**; "
              f"end to end / decode alone: **{e2e / alone:.2f}** (target >= 0.8)")
    if assigns and assign_s:
        # One pass assigns the decoded segments waiting together, up to model.max_batch windows.
        per_pass = f" of {segments / assigns:.1f} segments on average" if segments else ""
        print(f"- assignment in the same run: {assigns:.0f} passes{per_pass}, {1e3 * assign_s / assigns:.1f} ms each; "
              f"the assigner busy {assign_s / (done - first):.0%} of the time from the first window to the last")
    text = open(bench_2s).read() if os.path.exists(bench_2s) else ""
    match = re.search(r"\| novelstream decoder \| [0-9.]+ \| ([0-9.]+) \|", text)
    if match:
        alone = decoders * float(match.group(1))
        print(f"- decode alone, `bench decode` of one such 2 s clip (best pass, opening included): "
              f"{float(match.group(1)):.0f} windows/s on one thread, so {decoders} decoders: {alone:.0f} windows/s; "
              f"end to end / that: {e2e / alone:.2f}")


def train(bench_train, pytorch=None):
    ours = re.search(r"novelstream: ([0-9.]+) windows/s", open(bench_train).read())
    theirs = re.search(r"pytorch eager: ([0-9.]+) windows/s", open(pytorch).read()) if pytorch else None
    if not ours:
        print("- `bench train` printed no result (see details)")
    elif not theirs:
        print(f"- `bench train`: {ours.group(1)} windows/s; PyTorch eager not measured")
    else:
        ratio = float(ours.group(1)) / float(theirs.group(1))
        print(f"- train step: novelstream {ours.group(1)} windows/s, PyTorch eager {theirs.group(1)} windows/s: "
              f"ratio **{ratio:.2f}** (target >= 1.5)")


if __name__ == "__main__":
    commands = {"replicate": replicate, "level": level, "capacity": capacity, "backlog": backlog, "train": train}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
