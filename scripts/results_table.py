"""Markdown table rows of `novelstream eval` results, each cell the mean ± std over seeds.
    python3 scripts/results_table.py seeds NAME DIR SEED...  one row of DIR/seed-SEED.json
        (eval-seeds.sh: novel ACC, NMI, ARI, known accuracy, the two baselines, train seconds)
    python3 scripts/results_table.py names ROOT NAME...      a row per ROOT/NAME/seed-*.json
        (results-table.sh: seeds, novel ACC, NMI, ARI, known accuracy, k-means on the
        method's features, the two baselines); a NAME without results is left out"""
import glob
import json
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
    else:
        sys.exit(f"results_table: unknown command {command} (seeds or names)")
