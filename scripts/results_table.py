"""Markdown table rows of `novelstream eval` results, each cell the mean ± std over seeds.
    python3 scripts/results_table.py seeds NAME DIR SEED...  one row of DIR/seed-SEED.json
        (eval-seeds.sh: novel ACC, NMI, ARI, known accuracy, the two baselines, train seconds)
    python3 scripts/results_table.py names ROOT NAME...      a row per ROOT/NAME/seed-*.json
        (results-table.sh: seeds, novel ACC, NMI, ARI, known accuracy, k-means on the
        method's features, the two baselines); a NAME without results is left out
    python3 scripts/results_table.py gcd ROOT NAME...        the open world: a row per NAME with
        All / Old / New recomputed from each seed's predictions-S.csv (one Hungarian matching
        over all rows), the estimated number of novel classes per seed, and the task-aware
        novel and known accuracy from results.json; then each seed's All / Old / New.
        NAME:VIEW reads a view of the same runs instead (eval's views: audio-withheld,
        picture-withheld, an --also-test data set): predictions-S.VIEW.csv
    python3 scripts/results_table.py auto ROOT NAME...       `model.assign_with = "auto"` on a
        model of both modalities, from its views: per seed, a labelled share (AUTO_SHARE, drawn
        with the seed) of the known-class rows is decided by both (predictions-S.csv) and by the
        picture alone (the audio-withheld view); the picture decides unless both named more of
        them, as the assigner chooses; All / Old / New over the other rows. A row for the
        held-out test split, and one for the av-digits-seen split where the runs have it. A run
        of one modality is scored on the same rows, to compare with
    python3 scripts/results_table.py online DIR...           a stream (scripts/online-av.sh):
        All / Old / New over the unlabelled windows of DIR/predictions.csv (`score
        --predictions`), the whole run and its last third in publish order, as `score` computes
        them; then, for the last third, what each novel id published there holds"""
import csv
import glob
import json
import os
import random
import statistics
import sys


def cell(values, pct=True):
    scale = 100 if pct else 1
    m = statistics.mean(values) * scale
    sd = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{m:.1f} ± {sd:.1f}" if pct else f"{m:.3f} ± {sd:.3f}"


def column(runs, get, pct=True):
    return cell([get(r) for r in runs], pct)


def method(runs):
    """Novel ACC, NMI and ARI of the method, then its known-class accuracy."""
    novel = lambda key: column(runs, lambda r: r["method"]["novel"][key], pct=key == "accuracy")
    return [novel("accuracy"), novel("nmi"), novel("ari"), column(runs, lambda r: r["method"]["known_accuracy"])]


def baselines(runs):
    """k-means on raw pixels, then on the features of an encoder trained on the known classes."""
    names = ["kmeans_raw_pixels", "kmeans_supervised_features"]
    return [column(runs, lambda r: r["baselines"][name]["accuracy"]) for name in names]


def row(cells):
    print("| " + " | ".join(cells) + " |")


def load(paths):
    return [json.load(open(path)) for path in paths]


def hungarian_max(weights):
    """Column of each row in a one-to-one matching maximising the total weight (rows <= cols)."""
    n, m = len(weights), len(weights[0])
    cost = [[-w for w in row] for row in weights]
    inf = float("inf")
    u, v, p, way = [0.0] * (n + 1), [0.0] * (m + 1), [0] * (m + 1), [0] * (m + 1)
    for i in range(1, n + 1):
        p[0], j0 = i, 0
        minv, used = [inf] * (m + 1), [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = p[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = cost[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[p[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if p[j0] == 0:
                break
        while True:
            j1 = way[j0]
            p[j0] = p[j1]
            j0 = j1
            if j0 == 0:
                break
    match = [0] * n
    for j in range(1, m + 1):
        if p[j]:
            match[p[j] - 1] = j - 1
    return match


def all_old_new(path, known):
    """All / Old / New of predictions.csv rows (index,true_label,prediction)."""
    return gcd_of(list(csv.DictReader(open(path))), known)


def gcd_of(rows, known):
    """All / Old / New of rows with true_label and prediction (one matching over all of them)."""
    said = sorted({r["prediction"] for r in rows})
    classes = sorted({r["true_label"] for r in rows})
    size = max(len(said), len(classes))
    counts = [[0] * size for _ in range(size)]
    for r in rows:
        counts[said.index(r["prediction"])][classes.index(r["true_label"])] += 1
    match = hungarian_max(counts)
    right = lambda r: match[said.index(r["prediction"])] == classes.index(r["true_label"])
    share = lambda part: sum(map(right, part)) / len(part) if part else 0.0
    old = [r for r in rows if r["true_label"] in known]
    new = [r for r in rows if r["true_label"] not in known]
    return share(rows), share(old), share(new)


def view_of(run, view):
    """The task-aware numbers of one view of a run (the test split itself for None)."""
    if view is None:
        return run["method"]
    return next(v for v in run["method"]["views"] if v["name"] == view)


def gcd_rows(root, names):
    for label in names:
        name, _, view = label.partition(":")
        view = view or None
        paths = sorted(glob.glob(f"{root}/{name}/seed-*.json"))
        if not paths:
            continue
        runs, scores = [], []
        suffix = f".{view}" if view else ""
        for path in paths:
            run = json.load(open(path))
            seed = path.rsplit("seed-", 1)[1][:-len(".json")]
            scores.append(all_old_new(f"{root}/{name}/predictions-{seed}{suffix}.csv", set(run["known_classes"])))
            runs.append(run)
        estimated = "/".join(str(r["method"]["open_world"]["novel_clusters_estimated"]) for r in runs)
        row([label, str(len(runs)), *(cell([s[i] for s in scores]) for i in range(3)), estimated,
             column(runs, lambda r: view_of(r, view)["novel"]["accuracy"]),
             column(runs, lambda r: view_of(r, view)["known_accuracy"])])
        seeds = ", ".join(f"{100 * a:.1f} / {100 * o:.1f} / {100 * n:.1f}" for a, o, n in scores)
        print(f"<!-- {label} per seed, All / Old / New: {seeds} -->")


# The share of known-class rows `auto` treats as labelled windows: 150 of av-digits' 500 known
# test clips, about the assigner's 128 measured windows (assign::MODALITY_CHOICE_WINDOWS).
AUTO_SHARE = 0.3


def auto_rows(root, names):
    for name in names:
        paths = sorted(glob.glob(f"{root}/{name}/seed-*.json"))
        for split, both_view, picture_view in [("held out", "", ".audio-withheld"),
                                                ("seen", ".av-digits-seen", ".av-digits-seen-audio-withheld")]:
            scores, chosen = [], []
            for path in paths:
                seed = path.rsplit("seed-", 1)[1][:-len(".json")]
                files = [f"{root}/{name}/predictions-{seed}{v}.csv" for v in (both_view, picture_view)]
                if not os.path.exists(files[0]):
                    continue
                # A model of one modality has no view to choose: its own rows, scored alike.
                alone = not os.path.exists(files[1])
                files[1] = files[0] if alone else files[1]
                both, picture = (list(csv.DictReader(open(f))) for f in files)
                known = set(json.load(open(path))["known_classes"])
                rows = [i for i, r in enumerate(both) if r["true_label"] in known]
                labelled = set(random.Random(int(seed)).sample(rows, int(AUTO_SHARE * len(rows))))
                named = lambda view: sum(view[i]["prediction"] == view[i]["true_label"] for i in labelled)
                pick = both if named(both) > named(picture) else picture
                chosen.append("its own" if alone else "both" if pick is both else "picture")
                scores.append(gcd_of([r for i, r in enumerate(pick) if i not in labelled], known))
            if scores:
                row([name, split, "/".join(chosen), *(cell([s[i] for s in scores]) for i in range(3))])
                seeds = ", ".join(f"{100 * a:.1f} / {100 * o:.1f} / {100 * n:.1f}" for a, o, n in scores)
                print(f"<!-- {name} {split} auto per seed, All / Old / New: {seeds} -->")


def online_rows(dirs):
    for out in dirs:
        rows = list(csv.DictReader(open(f"{out}/predictions.csv")))
        known = {r["sent_label"] for r in rows if r["sent_label"]}
        unlabelled = [r for r in rows if not r["sent_label"] and r["true_label"]]
        last = unlabelled[len(unlabelled) - len(unlabelled) // 3:]
        whole, third = gcd_of(unlabelled, known), gcd_of(last, known)
        row([out, str(len(unlabelled)), *(f"{100 * x:.1f}" for x in whole), *(f"{100 * x:.1f}" for x in third)])
        ids = sorted({r["prediction"] for r in last if r["prediction"].startswith("novel-")},
                     key=lambda i: int(i.split("-")[1]))
        for i in ids:
            held = [r["true_label"] for r in last if r["prediction"] == i]
            counts = sorted(((held.count(c), c) for c in set(held)), reverse=True)
            print(f"<!-- {i}: {len(held)} windows: " + ", ".join(f"{c} {n}" for n, c in counts) + " -->")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "seeds":
        name, out, seeds = args[0], args[1], args[2:]
        runs = load(f"{out}/seed-{s}.json" for s in seeds)
        seconds = statistics.mean(r["method"]["train_seconds"] for r in runs)
        row([name, *method(runs), *baselines(runs), f"{seconds:.0f}"])
    elif command == "names":
        root, names = args[0], args[1:]
        for name in names:
            runs = load(sorted(glob.glob(f"{root}/{name}/seed-*.json")))
            if runs:
                row([name, str(len(runs)), *method(runs), column(runs, lambda r: r["method"]["kmeans_on_features"]["accuracy"]), *baselines(runs)])
    elif command == "gcd":
        gcd_rows(args[0], args[1:])
    elif command == "online":
        online_rows(args)
    elif command == "auto":
        auto_rows(args[0], args[1:])
    else:
        sys.exit(f"results_table: unknown command {command} (seeds, names, gcd, auto or online)")
