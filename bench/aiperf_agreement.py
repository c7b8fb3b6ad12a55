"""folo bench serve and NVIDIA's aiperf side by side: the table of
bench/compare-aiperf.sh (docs/bench.md, "Agreement with aiperf").

    python3 bench/aiperf_agreement.py RUN_DIR OUT_PREFIX

RUN_DIR holds, for rounds r = 1, 2, ...: folo-r.json (`folo bench serve
--json`), aiperf-r/profile_export_aiperf.json (aiperf's summary) and
folo-r.load / aiperf-r.load (`uptime` before each run), and settings.json
(the script's settings); TOOL-r.metrics-before / -after (the server's
/metrics around each run) and TOOL-r.cpu (GNU time's "%U %S %e" of the
client, where measured). Each figure is paired with the one of the same
meaning in the other tool:

    TTFT mean / p50 / p99   time_to_first_token
    ITL (chunk gaps)        inter_chunk_latency: every gap between chunks
    TPOT                    inter_token_latency: aiperf's ITL is
                            (E2EL - TTFT) / (output tokens - 1) per request,
                            which is vLLM's and folo's TPOT
    E2EL mean               request_latency
    output tok/s, req/s     output_token_throughput, request_throughput

Per figure: each tool's mean over the rounds and its spread (max - min over
the rounds), aiperf / folo, and whether they agree within run-to-run noise:
the difference of the means is at most half the sum of the two spreads
(the rounds' ranges overlap around the means). OUT_PREFIX.md and .json get
the table and every round's figures, and beside them the server's own
mean TTFT, ITL and E2EL over each tool's runs (from its histograms, so
untouched by either client's clock) and each client's CPU time over its
wall time.

The pure functions are tested in tests/python/test_aiperf_agreement.py."""

import json
import os
import sys

# (figure, folo summary key, aiperf metric, aiperf statistic)
PAIRS = (
    ("TTFT mean ms", "mean_ttft_ms", "time_to_first_token", "avg"),
    ("TTFT p50 ms", "median_ttft_ms", "time_to_first_token", "p50"),
    ("TTFT p99 ms", "p99_ttft_ms", "time_to_first_token", "p99"),
    ("ITL (chunk gaps) mean ms", "mean_itl_ms", "inter_chunk_latency", "avg"),
    ("TPOT mean ms (aiperf: ITL)", "mean_tpot_ms", "inter_token_latency", "avg"),
    ("E2EL mean ms", "mean_e2el_ms", "request_latency", "avg"),
    ("output tok/s", "output_throughput", "output_token_throughput", "avg"),
    ("req/s", "request_throughput", "request_throughput", "avg"),
)


def folo_figures(doc):
    """The paired figures of one `folo bench serve --json` run."""
    s = doc["results"][0]["summary"]
    return {name: s[key] for name, key, _, _ in PAIRS}


def aiperf_figures(doc):
    """The paired figures of one aiperf profile_export_aiperf.json."""
    return {name: doc[metric][stat] for name, _, metric, stat in PAIRS}


# The server's histograms (folo serve's /metrics) whose mean over a run is
# set beside the clients' figures: (figure, metric name without prefix).
SERVER_FIGURES = (("TTFT mean ms", "time_to_first_token_seconds"),
                  ("ITL mean ms", "inter_token_latency_seconds"),
                  ("E2EL mean ms", "e2e_request_latency_seconds"))


def prometheus_values(text):
    """{metric name: value summed over its label sets} of Prometheus text."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(value)
    return out


def server_means(before, after, prefix="folo:"):
    """The mean, in ms, of each SERVER_FIGURES histogram over the requests
    the server finished between two /metrics scrapes; None where none."""
    b, a = prometheus_values(before), prometheus_values(after)
    out = {}
    for figure, metric in SERVER_FIGURES:
        name = prefix + metric
        count = a.get(name + "_count", 0.0) - b.get(name + "_count", 0.0)
        total = a.get(name + "_sum", 0.0) - b.get(name + "_sum", 0.0)
        out[figure] = 1e3 * total / count if count > 0 else None
    return out


def cpu_share(text):
    """GNU time's "%U %S %e" -> CPU seconds (user + system) over wall seconds."""
    user, system, wall = (float(x) for x in text.split()[-3:])
    return (user + system) / wall if wall > 0 else None


def spread(values):
    """(mean, max - min) of a tool's rounds."""
    return sum(values) / len(values), max(values) - min(values)


def compare(folo_rounds, aiperf_rounds):
    """Rows of the table from each tool's per-round figures (lists of
    dicts keyed by figure name)."""
    rows = []
    for name, _, _, _ in PAIRS:
        f_mean, f_spread = spread([r[name] for r in folo_rounds])
        a_mean, a_spread = spread([r[name] for r in aiperf_rounds])
        rows.append({"figure": name, "folo_mean": f_mean, "folo_spread": f_spread,
                     "aiperf_mean": a_mean, "aiperf_spread": a_spread,
                     "aiperf_over_folo": a_mean / f_mean if f_mean else None,
                     "agree": abs(a_mean - f_mean) <= (f_spread + a_spread) / 2})
    return rows


def markdown(rows):
    lines = ["| figure | folo bench serve | spread | aiperf | spread | aiperf ÷ folo | within noise |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = "-" if r["aiperf_over_folo"] is None else f"{r['aiperf_over_folo']:.3f}"
        lines.append(f"| {r['figure']} | {r['folo_mean']:.2f} | {r['folo_spread']:.2f} "
                     f"| {r['aiperf_mean']:.2f} | {r['aiperf_spread']:.2f} | {ratio} "
                     f"| {'yes' if r['agree'] else 'no'} |")
    return "\n".join(lines)


def read(path):
    with open(path) as f:
        return f.read().strip()


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: aiperf_agreement.py RUN_DIR OUT_PREFIX")
    run_dir, out = argv[1], argv[2]
    settings = json.loads(read(os.path.join(run_dir, "settings.json")))
    folo, aiperf, loads = [], [], []
    server = {"folo": [], "aiperf": []}
    cpu = {"folo": [], "aiperf": []}
    for r in range(1, settings["rounds"] + 1):
        folo.append(folo_figures(json.loads(read(os.path.join(run_dir, f"folo-{r}.json")))))
        aiperf.append(aiperf_figures(json.loads(read(
            os.path.join(run_dir, f"aiperf-{r}", "profile_export_aiperf.json")))))
        for tool in ("folo", "aiperf"):
            base = os.path.join(run_dir, f"{tool}-{r}")
            loads.append(read(base + ".load").split(",")[0])
            server[tool].append(server_means(read(base + ".metrics-before"),
                                             read(base + ".metrics-after")))
            if os.path.exists(base + ".cpu"):
                cpu[tool].append(cpu_share(read(base + ".cpu")))
    rows = compare(folo, aiperf)
    side = ["| the server's own view (folo:/metrics, warm-ups included) | during folo bench "
            "serve | during aiperf |", "|---|---:|---:|"]
    for figure, _ in SERVER_FIGURES:
        cells = []
        for tool in ("folo", "aiperf"):
            values = [s[figure] for s in server[tool] if s[figure] is not None]
            cells.append(" / ".join(f"{v:.2f}" for v in values) or "-")
        side.append(f"| server {figure} (per round) | {cells[0]} | {cells[1]} |")
    if cpu["folo"] and cpu["aiperf"]:
        side.append("| client CPU time / wall time (per round) | "
                    + " | ".join(" / ".join(f"{v:.0%}" for v in cpu[t]) for t in ("folo", "aiperf"))
                    + " |")
    text = "\n".join([
        f"# folo bench serve and aiperf on the same folo serve, {settings['date']}", "",
        f"Server: `{settings['server']}` on CPU {settings['server_cpus']}; clients on CPU "
        f"{settings['client_cpus']}, alternating, {settings['rounds']} rounds each. "
        f"Workload: {settings['num_prompts']} requests of {settings['input_len']} prompt + "
        f"{settings['output_len']} output tokens (ignore_eos), {settings['load']}, "
        f"{settings['num_warmups']} warm-ups. aiperf "
        f"{settings['aiperf_version']}"
        f"{', polling /metrics' if settings.get('aiperf_server_metrics') else ' (--no-server-metrics)'}"
        f". 1-minute load before each run: {', '.join(loads)}.",
        "", markdown(rows), "",
        "Spread: max - min over the rounds. Within noise: |aiperf - folo| <= half the "
        "sum of the spreads.", "", "\n".join(side), ""])
    with open(out + ".md", "w") as f:
        f.write(text)
    with open(out + ".json", "w") as f:
        json.dump({"settings": settings, "loads": loads, "rows": rows,
                   "folo_rounds": folo, "aiperf_rounds": aiperf, "server_view": server,
                   "client_cpu_share": cpu}, f, indent=1)
    print(text, end="")
    print(f"written: {out}.md, {out}.json", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv)
