"""The figures, checks and table of bench/compare-engines.sh (docs/bench.md,
"Engines side by side").

The script leaves one run directory; this module turns it into one table:

    python3 bench/engines_report.py RUN_DIR OUT_PREFIX

RUN_DIR holds, per engine E of folo, llama.cpp, vllm:
    E-cC.json        `folo bench serve --json` of the run at max concurrency C
    E-cC.load        `uptime`'s load averages just before that run
    E.command        the server's command line (and its environment)
    E.version        its version line
    E.skip           why it did not run (then nothing else of E)
    greedy-E.json    {"ids": [...]}: its greedy continuation of the agreement prompt
                     (folo's from `folo generate`, not from its server)
and for Hugging Face transformers' offline baseline transformers.json
(bench/engines_transformers.py), transformers.load, .command, .version or
.skip; greedy-prompt.json ({"ids": [...]}), the agreement prompt;
greedy-logits.f32, folo's float32 logits [prompt + continuation - 1, vocab]
of that prompt followed by folo's continuation (`folo logits`), which say
how close a call an engine's first different token was; and run.json, the
script's settings ({"threads", "input_len", "output_len", "num_prompts",
"concurrencies", "request_rates", "dataset", "model", "gguf", "folo_commit"}).

OUT_PREFIX.md gets the table and OUT_PREFIX.json every figure. The pure
functions (percentiles, summaries, token checks, agreement, ratios) are
tested in tests/python/test_engines_report.py."""

import array
import json
import math
import os
import subprocess
import sys
import time

SERVERS = ("folo", "llama.cpp", "vllm")
ENGINES = SERVERS + ("transformers",)

# (summary key, column title, True where higher is better)
FIGURES = (
    ("mean_ttft_ms", "mean TTFT ms", False),
    ("p99_ttft_ms", "p99 TTFT ms", False),
    ("mean_tpot_ms", "mean TPOT ms", False),
    ("mean_itl_ms", "mean ITL ms", False),
    ("output_throughput", "out tok/s", True),
    ("request_throughput", "req/s", True),
)
# Figures folo's ratio to each engine is given for.
RATIO_FIGURES = ("mean_ttft_ms", "mean_tpot_ms", "output_throughput")


def percentile(values, q):
    """numpy.percentile(values, q) with its default linear interpolation."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def distribution(values, name):
    """mean/median/p99 of values under vLLM's keys (mean_NAME_ms, ...);
    None for each where there are no values."""
    mean = sum(values) / len(values) if values else None
    return {f"mean_{name}_ms": mean, f"median_{name}_ms": percentile(values, 50),
            f"p99_{name}_ms": percentile(values, 99)}


def summarize(requests, duration_s):
    """vLLM's serving summary of requests that all completed.

    requests: dicts with prompt_tokens, output_tokens, ttft_ms, e2el_ms and
    itl_ms (the gaps between consecutive tokens, ms); duration_s: the wall
    time they took. TPOT = (E2EL - TTFT) / (output_tokens - 1), for requests
    with more than one token; ITL is every gap of every request."""
    if duration_s <= 0:
        raise ValueError(f"duration must be positive, got {duration_s}")
    out = sum(r["output_tokens"] for r in requests)
    s = {"completed": len(requests), "duration": duration_s,
         "total_input_tokens": sum(r["prompt_tokens"] for r in requests),
         "total_output_tokens": out,
         "request_throughput": len(requests) / duration_s,
         "output_throughput": out / duration_s}
    s.update(distribution([r["ttft_ms"] for r in requests], "ttft"))
    s.update(distribution([(r["e2el_ms"] - r["ttft_ms"]) / (r["output_tokens"] - 1)
                           for r in requests if r["output_tokens"] > 1], "tpot"))
    s.update(distribution([g for r in requests for g in r["itl_ms"]], "itl"))
    s.update(distribution([r["e2el_ms"] for r in requests], "e2el"))
    return s


def token_check(requests, reference):
    """Whether an engine did the same work as the reference (folo) on the
    same requests, in the same order: the prompt tokens it reports
    (usage_prompt_tokens, None where a server sent no usage) and the output
    tokens, request by request. Also the requests whose reported prompt
    count differs from the client's local count (a tokenizer mismatch)."""
    if len(requests) != len(reference):
        return {"requests": len(requests), "reference_requests": len(reference),
                "same_work": False}
    failed = sum(1 for r in requests if not r.get("ok", True))
    usage = [r.get("usage_prompt_tokens") for r in requests]
    prompt_diff = sum(1 for r, ref in zip(requests, reference)
                      if r.get("usage_prompt_tokens") != ref.get("usage_prompt_tokens"))
    output_diff = sum(1 for r, ref in zip(requests, reference)
                      if r["output_tokens"] != ref["output_tokens"])
    local_diff = sum(1 for r in requests
                     if r.get("usage_prompt_tokens") is not None
                     and r["usage_prompt_tokens"] != r["prompt_tokens"])
    return {"requests": len(requests), "failed": failed,
            "usage_prompt_tokens": None if None in usage else sum(usage),
            "output_tokens": sum(r["output_tokens"] for r in requests),
            "prompt_count_differs": prompt_diff, "output_count_differs": output_diff,
            "usage_differs_from_local": local_diff,
            "same_work": failed == 0 and prompt_diff == 0 and output_diff == 0}


def agreement(reference, other):
    """How far another engine's greedy tokens follow the reference's:
    the leading tokens equal (after the first difference the two continue
    from different texts) and the positions equal anywhere."""
    leading = 0
    for a, b in zip(reference, other):
        if a != b:
            break
        leading += 1
    return {"tokens": len(reference), "leading": leading,
            "same_positions": sum(1 for a, b in zip(reference, other) if a == b),
            "first_difference": None if leading == min(len(reference), len(other))
            else leading}


def logit_gap(row, chosen, other):
    """At one position of folo's f32 logits (row: a sequence of floats), how
    close the call between folo's token and another engine's was: the
    difference of their logits, and that as a fraction of the row's
    standard deviation (a scale that bf16 rounding errors are relative to)."""
    n = len(row)
    mean = sum(row) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in row) / n)
    gap = row[chosen] - row[other]
    return {"gap": gap, "gap_over_std": gap / std if std > 0 else None}


def ratio(folo, other, higher_better):
    """folo's advantage over another engine in one figure: folo / other for
    a rate, other / folo for a time, so > 1 means folo is better either way.
    None where either is missing or zero."""
    if not folo or not other:
        return None
    return folo / other if higher_better else other / folo


def fmt(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def rate_order(rate):
    """Sort key of a request rate: numbers, then "inf", then "offline"."""
    if rate == "offline":
        return (2, 0.0)
    return (1, 0.0) if rate == "inf" else (0, float(rate))


def table_rows(results):
    """results: {engine: {(concurrency, rate): summary}}, rate a number,
    "inf", or "offline" (transformers) -> the table's rows (dicts: the
    requests completed and failed, the FIGURES, folo's ratios), grouped
    by concurrency and rate, folo first in each group, with folo's ratios in
    the other engines' rows. An offline row is compared with folo's first
    rate at the same concurrency, whose requests it ran."""
    keys = sorted({k for runs in results.values() for k in runs},
                  key=lambda k: (k[0], rate_order(k[1])))
    folo_runs = results.get("folo", {})
    rows = []
    for key in keys:
        folo = folo_runs.get(key)
        if key[1] == "offline":
            same = sorted((k for k in folo_runs if k[0] == key[0]),
                          key=lambda k: rate_order(k[1]))
            folo = folo_runs[same[0]] if same else None
        for engine in ENGINES:
            s = results.get(engine, {}).get(key)
            if s is None:
                continue
            row = {"engine": engine, "concurrency": key[0], "request_rate": key[1],
                   "completed": s.get("completed", 0), "failed": s.get("failed", 0),
                   "figures": {name: s.get(name) for name, _, _ in FIGURES}}
            if engine != "folo" and folo is not None:
                row["folo_ratio"] = {name: ratio(folo.get(name), s.get(name), better)
                                     for name, _, better in FIGURES if name in RATIO_FIGURES}
            rows.append(row)
    return rows


def markdown_table(rows):
    head = (["concurrency", "rate", "engine", "ok"] + [title for _, title, _ in FIGURES]
            + ["folo × TTFT", "folo × TPOT", "folo × out tok/s"])
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    for row in rows:
        cells = [str(row["concurrency"]), str(row["request_rate"]), row["engine"],
                 f"{row['completed']}/{row['completed'] + row['failed']}"]
        cells += [fmt(row["figures"][name], 2 if name == "request_throughput" else 1)
                  for name, _, _ in FIGURES]
        ratios = row.get("folo_ratio", {})
        cells += ["" if row["engine"] == "folo" else
                  ("-" if ratios.get(name) is None else f"{ratios[name]:.2f}x")
                  for name in RATIO_FIGURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- reading a run directory ---------------------------------------------------

def read_text(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def file_name(engine):
    return engine.replace(".", "")


def machine():
    """lscpu's model name, the cores and the memory of this machine."""
    desc = {"cpu": "unknown", "cores": os.cpu_count(), "memory_gib": None}
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                desc["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    meminfo = read_text("/proc/meminfo") or ""
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            desc["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    return desc


def read_logits_row(path, vocab, position):
    """Row `position` of a float32 [n, vocab] file."""
    row = array.array("f")
    with open(path, "rb") as f:
        f.seek(4 * vocab * position)
        row.fromfile(f, vocab)
    if sys.byteorder != "little":
        row.byteswap()
    return row


def greedy_agreement(run_dir, vocab):
    """Each engine's greedy tokens against folo's, with the logit gap in
    folo's logits where the first one differs."""
    prompt = read_json(os.path.join(run_dir, "greedy-prompt.json"))
    folo = read_json(os.path.join(run_dir, "greedy-folo.json"))
    if not prompt or not folo:
        return {}
    out = {"prompt_ids": prompt["ids"], "folo_ids": folo["ids"]}
    logits = os.path.join(run_dir, "greedy-logits.f32")
    for engine in ENGINES[1:]:
        if engine == "transformers":
            t = read_json(os.path.join(run_dir, "transformers.json")) or {}
            other = {"ids": t["greedy_ids"]} if "greedy_ids" in t else None
        else:
            other = read_json(os.path.join(run_dir, f"greedy-{file_name(engine)}.json"))
        if not other:
            continue
        a = agreement(folo["ids"], other["ids"])
        a["ids"] = other["ids"]
        k = a["first_difference"]
        if k is not None and k < len(other["ids"]) and os.path.exists(logits):
            # The logits row that predicts continuation token k.
            row = read_logits_row(logits, vocab, len(prompt["ids"]) - 1 + k)
            a["at_first_difference"] = logit_gap(row, folo["ids"][k], other["ids"][k])
        out[engine] = a
    return out


def collect(run_dir):
    """Everything compare-engines.sh left in run_dir, as one dict."""
    run = read_json(os.path.join(run_dir, "run.json"))
    engines, results, checks = {}, {}, {}
    reference = {}
    for engine in ENGINES:
        base = os.path.join(run_dir, file_name(engine))
        version = read_text(base + ".version")
        info = {"command": read_text(base + ".command"),
                "version": version.replace("\n", ", ") if version else None,
                "skipped": read_text(base + ".skip"), "loads": {}}
        engines[engine] = info
        if engine == "transformers":
            t = read_json(base + ".json")
            info["loads"]["all"] = read_text(base + ".load")
            if t:
                info["settings"] = {k: t[k] for k in ("torch", "transformers", "threads",
                                                      "attention") if k in t}
                for c in t.get("concurrency", []):
                    results.setdefault(engine, {})[(c["max_concurrency"], "offline")] = c["summary"]
            continue
        for c in run["concurrencies"]:
            j = read_json(f"{base}-c{c}.json")
            info["loads"][c] = read_text(f"{base}-c{c}.load")
            if not j:
                continue
            for res in j["results"]:
                rate = res["request_rate"]
                key = (c, "inf" if rate == "inf" else rate)
                results.setdefault(engine, {})[key] = res["summary"]
                if engine == "folo":
                    reference[key] = res["requests"]
                if key in reference:
                    checks.setdefault(engine, {})[f"c{c} rate {key[1]}"] = token_check(
                        res["requests"], reference[key])
    cfg = read_json(os.path.join(run["model"], "config.json")) or {}
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "run": run, "engines": engines, "rows": table_rows(results), "token_checks": checks,
            "greedy_agreement": greedy_agreement(run_dir, cfg.get("vocab_size", 0))}


def loads_line(info):
    loads = [v.split(",")[0] for v in info["loads"].values() if v]
    return ", ".join(loads) if loads else "-"


def highest_load(engines):
    """The highest 1-minute load recorded before any run, or None."""
    loads = [float(v.split(",")[0]) for info in engines.values()
             for v in info["loads"].values() if v]
    return max(loads) if loads else None


def markdown(doc):
    run, m = doc["run"], doc["machine"]
    lines = [f"# Engines side by side, {doc['date']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB. "
             f"Model: `{run['model']}` (bf16; llama.cpp: `{run['gguf']}`). "
             f"{run['threads']} threads per engine. Workload: {run['dataset']}, "
             f"{run['num_prompts']} requests per run, max concurrency "
             f"{', '.join(str(c) for c in run['concurrencies'])}, request rate "
             f"{', '.join(str(r) for r in run['request_rates'])}; every server driven by "
             f"`folo bench serve --url` (folo {run['folo_commit']}).", "",
             markdown_table(doc["rows"]), ""]
    peak, warn = highest_load(doc["engines"]), run.get("load_warn", 1.5)
    if peak is not None and peak > warn:
        lines += [f"**Loaded machine:** the 1-minute load reached {peak:.2f} before a run "
                  f"(above {warn}): on a machine this small these figures measure the "
                  "contention more than the engines.", ""]
    lines += ["folo × TTFT and × TPOT: the engine's time over folo's; folo × out tok/s: "
              "folo's rate over the engine's (> 1: folo is better). transformers runs "
              "offline (`generate`, the requests in static batches of the concurrency, "
              "its clock starting when a batch starts), so it has no HTTP and no queueing "
              "behind a busy server: its TTFT is not a server's. ok: requests completed / "
              "sent; the figures are those of the completed ones.", "",
              "## Engines", ""]
    for engine, info in doc["engines"].items():
        if not (info["skipped"] or info["command"] or info["version"]):
            continue  # not asked for (ENGINES)
        if info["skipped"]:
            lines.append(f"- **{engine}**: not run: {info['skipped']}")
            continue
        lines.append(f"- **{engine}** ({info['version'] or 'version unknown'}); "
                     f"1-min load before its runs: {loads_line(info)}")
        if info["command"]:
            lines.append(f"  `{info['command']}`")
    lines += ["", "## Same work", ""]
    if not doc["token_checks"]:
        lines.append("- no folo run to compare the others with (ENGINES)")
    for engine, checks in doc["token_checks"].items():
        for run_name, c in checks.items():
            if "prompt_count_differs" not in c:
                lines.append(f"- {engine} {run_name}: {c['requests']} requests against "
                             f"folo's {c['reference_requests']}")
                continue
            lines.append(f"- {engine} {run_name}: {c['requests']} requests, {c['failed']} "
                         f"failed, prompt tokens (server usage) {c['usage_prompt_tokens']}, "
                         f"output tokens {c['output_tokens']}; differ from folo's: prompt "
                         f"{c['prompt_count_differs']}, output {c['output_count_differs']}; "
                         f"usage differs from the client's count: "
                         f"{c['usage_differs_from_local']}")
    g = doc["greedy_agreement"]
    if g:
        lines += ["", "## Greedy agreement", "",
                  f"Prompt ids {g['prompt_ids']}; folo's greedy continuation {g['folo_ids']}.",
                  ""]
        for engine in ENGINES[1:]:
            a = g.get(engine)
            if not a:
                continue
            text = (f"- {engine}: {a['leading']} of {a['tokens']} leading tokens equal "
                    f"folo's ({a['same_positions']} positions equal)")
            gap = a.get("at_first_difference")
            if gap:
                text += (f"; at the first difference folo's logit for its token is "
                         f"{gap['gap']:.4f} above the other's ({fmt(gap['gap_over_std'], 4)} "
                         f"of the logits' std)")
            lines.append(text)
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: engines_report.py RUN_DIR OUT_PREFIX")
    doc = collect(argv[1])
    text = markdown(doc)
    with open(argv[2] + ".md", "w") as f:
        f.write(text)
    with open(argv[2] + ".json", "w") as f:
        json.dump(doc, f, indent=1)
    print(text, end="")
    print(f"written: {argv[2]}.md, {argv[2]}.json", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
