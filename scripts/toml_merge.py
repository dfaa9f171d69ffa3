"""Prints TOML files merged into one: tables merge key by key, and a later file's value replaces
an earlier one's. The daemon reads one config file, and TOML refuses a table written twice, so
the scripts build theirs from config/av-digits.toml and their few overrides with this.
    python3 scripts/toml_merge.py BASE.toml OVERRIDES.toml... >merged.toml   (- reads stdin)"""
import json
import re
import sys
import tomllib


def merge(into, new):
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def key(name):
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list) and not any(isinstance(x, dict) for x in v):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise SystemExit(f"toml_merge: cannot write {v!r}")


def lines(table, path=()):
    """The TOML text of `table`, a line at a time, its tables after its own keys."""
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    # A table holding only tables needs no header of its own.
    if path and (scalars or not table):
        yield ""
        yield f"[{'.'.join(key(p) for p in path)}]"
    for k, v in scalars.items():
        yield f"{key(k)} = {value(v)}"
    for k, v in table.items():
        if isinstance(v, dict):
            yield from lines(v, path + (k,))


def load(path):
    with (sys.stdin.buffer if path == "-" else open(path, "rb")) as f:
        return tomllib.load(f)


if __name__ == "__main__":
    merged = {}
    for path in sys.argv[1:]:
        merge(merged, load(path))
    print("\n".join(lines(merged)).lstrip("\n"))
