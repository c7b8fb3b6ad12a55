/* Prometheus metrics of `folo serve` (see metrics.h). */
#include "server/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Latencies from 0.5 ms, where a 0.6B model's steps live (vLLM's buckets
 * start at 1 ms for TTFT and 10 ms for ITL), up to vLLM's largest. */
static const double k_latency_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075,
                                     0.1,    0.25,  0.5,    0.75,  1.0,  2.5,   5.0,  7.5,
                                     10.0,   20.0,  40.0,   80.0,  160.0, 640.0, 2560.0};
/* Per-token gaps: finer between 5 ms and 0.5 s, where decode steps fall. */
static const double k_token_s[] = {0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02,
                                   0.025,  0.05,  0.075,  0.1,   0.15,   0.2,  0.3,   0.4,
                                   0.5,    0.75,  1.0,    2.5,   5.0,    7.5,  10.0,  20.0};
/* Token counts: 1-2-5 steps, as vLLM builds them. */
static const double k_tokens[] = {1,     2,     5,      10,     20,     50,     100,
                                  200,   500,   1000,   2000,   5000,   10000,  20000,
                                  50000, 1e5,   2e5,    5e5,    1e6};

#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

typedef struct histogram_info {
    const char *name;
    const char *help;
    const double *bounds;
    int n_bounds;
} histogram_info;

static const histogram_info k_histograms[FOLO_H_COUNT] = {
    [FOLO_H_TTFT] = {"time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                     k_latency_s, COUNT_OF(k_latency_s)},
    [FOLO_H_ITL] = {"inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                    k_token_s, COUNT_OF(k_token_s)},
    [FOLO_H_TPOT] = {"request_time_per_output_token_seconds",
                     "Histogram of time_per_output_token_seconds per request.", k_token_s,
                     COUNT_OF(k_token_s)},
    [FOLO_H_E2E] = {"e2e_request_latency_seconds",
                    "Histogram of e2e request latency in seconds.", k_latency_s,
                    COUNT_OF(k_latency_s)},
    [FOLO_H_QUEUE] = {"request_queue_time_seconds",
                      "Histogram of time spent in WAITING phase for request.", k_latency_s,
                      COUNT_OF(k_latency_s)},
    [FOLO_H_PREFILL] = {"request_prefill_time_seconds",
                        "Histogram of time spent in PREFILL phase for request.", k_latency_s,
                        COUNT_OF(k_latency_s)},
    [FOLO_H_DECODE] = {"request_decode_time_seconds",
                       "Histogram of time spent in DECODE phase for request.", k_latency_s,
                       COUNT_OF(k_latency_s)},
    [FOLO_H_PROMPT_TOKENS] = {"request_prompt_tokens",
                              "Number of prefill tokens processed.", k_tokens,
                              COUNT_OF(k_tokens)},
    [FOLO_H_GENERATION_TOKENS] = {"request_generation_tokens",
                                  "Number of generation tokens processed.", k_tokens,
                                  COUNT_OF(k_tokens)},
    [FOLO_H_ITERATION_TOKENS] = {"iteration_tokens_total",
                                 "Histogram of number of tokens per engine_step.", k_tokens,
                                 COUNT_OF(k_tokens)},
};

void folo_metrics_init(folo_metrics *m) {
    memset(m, 0, sizeof *m);
    for (int i = 0; i < FOLO_H_COUNT; i++) {
        m->h[i].bounds = k_histograms[i].bounds;
        m->h[i].n_bounds = k_histograms[i].n_bounds;
    }
}

static void observe(folo_histogram *h, double x) {
    int b = 0;
    while (b < h->n_bounds && x > h->bounds[b]) b++;
    h->counts[b]++;
    h->count++;
    h->sum += x;
}

void folo_metrics_observe_finished(folo_metrics *m, const folo_request_metrics *rm,
                                   folo_finish_reason reason) {
    if (reason > FOLO_FINISH_NONE && reason <= FOLO_FINISH_ERROR) m->success[reason]++;
    m->prompt_tokens += rm->n_prompt_tokens;
    m->generation_tokens += rm->n_output_tokens;
    observe(&m->h[FOLO_H_PROMPT_TOKENS], rm->n_prompt_tokens);
    observe(&m->h[FOLO_H_GENERATION_TOKENS], rm->n_output_tokens);
    observe(&m->h[FOLO_H_E2E], rm->finish_s - rm->arrival_s);
    /* A request aborted before it was scheduled or before its first token
     * has no queue, prefill or decode phase to report, as in vLLM. */
    if (rm->first_scheduled_s > 0)
        observe(&m->h[FOLO_H_QUEUE], rm->first_scheduled_s - rm->arrival_s);
    if (rm->first_token_s <= 0 || rm->n_output_tokens == 0) return;
    double last_s = rm->token_times_s ? rm->token_times_s[rm->n_output_tokens - 1] : rm->finish_s;
    observe(&m->h[FOLO_H_TTFT], rm->first_token_s - rm->arrival_s);
    observe(&m->h[FOLO_H_PREFILL], rm->first_token_s - rm->first_scheduled_s);
    observe(&m->h[FOLO_H_DECODE], last_s - rm->first_token_s);
    if (rm->n_output_tokens > 1)
        observe(&m->h[FOLO_H_TPOT], (last_s - rm->first_token_s) / (rm->n_output_tokens - 1));
    for (int i = 1; rm->token_times_s && i < rm->n_output_tokens; i++)
        observe(&m->h[FOLO_H_ITL], rm->token_times_s[i] - rm->token_times_s[i - 1]);
}

void folo_metrics_observe_step(folo_metrics *m, int n_tokens) {
    observe(&m->h[FOLO_H_ITERATION_TOKENS], n_tokens);
}

/* ---- the exposition ------------------------------------------------------ */

/* A label value with \, " and newline escaped, as the format requires. */
static void put_label(folo_buf *o, const char *value) {
    for (const char *p = value; *p; p++) {
        if (*p == '\\') folo_buf_puts(o, "\\\\");
        else if (*p == '"') folo_buf_puts(o, "\\\"");
        else if (*p == '\n') folo_buf_puts(o, "\\n");
        else folo_buf_append(o, p, 1);
    }
}

static void family(folo_buf *o, const char *name, const char *type, const char *help) {
    folo_buf_printf(o, "# HELP folo:%s %s\n# TYPE folo:%s %s\n", name, help, name, type);
}

/* `folo:NAME{model_name="..."[,EXTRA]} ` (the value follows). */
static void sample(folo_buf *o, const char *name, const char *model, const char *extra) {
    folo_buf_printf(o, "folo:%s{model_name=\"", name);
    put_label(o, model);
    folo_buf_printf(o, "\"%s%s} ", extra ? "," : "", extra ? extra : "");
}

static void gauge(folo_buf *o, const char *name, const char *help, const char *model, double v) {
    family(o, name, "gauge", help);
    sample(o, name, model, NULL);
    folo_buf_printf(o, "%.9g\n", v);
}

static void counter(folo_buf *o, const char *name, const char *help, const char *model,
                    int64_t v) {
    char total[96];
    family(o, name, "counter", help);
    snprintf(total, sizeof total, "%s_total", name);
    sample(o, total, model, NULL);
    folo_buf_printf(o, "%" PRId64 "\n", v);
}

static void histogram(folo_buf *o, const histogram_info *info, const folo_histogram *h,
                      const char *model) {
    char name[96], le[48];
    family(o, info->name, "histogram", info->help);
    snprintf(name, sizeof name, "%s_bucket", info->name);
    uint64_t cumulative = 0;
    for (int b = 0; b <= h->n_bounds; b++) {
        cumulative += h->counts[b];
        if (b < h->n_bounds) snprintf(le, sizeof le, "le=\"%g\"", h->bounds[b]);
        else snprintf(le, sizeof le, "le=\"+Inf\"");
        sample(o, name, model, le);
        folo_buf_printf(o, "%" PRIu64 "\n", cumulative);
    }
    snprintf(name, sizeof name, "%s_count", info->name);
    sample(o, name, model, NULL);
    folo_buf_printf(o, "%" PRIu64 "\n", h->count);
    snprintf(name, sizeof name, "%s_sum", info->name);
    sample(o, name, model, NULL);
    folo_buf_printf(o, "%.9g\n", h->sum);
}

static void process_metrics(folo_buf *o, const folo_process_stats *ps) {
    folo_buf_printf(o,
                    "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                    "# TYPE process_virtual_memory_bytes gauge\n"
                    "process_virtual_memory_bytes %.17g\n"
                    "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                    "# TYPE process_resident_memory_bytes gauge\n"
                    "process_resident_memory_bytes %.17g\n"
                    "# HELP process_start_time_seconds Start time of the process since unix "
                    "epoch in seconds.\n"
                    "# TYPE process_start_time_seconds gauge\n"
                    "process_start_time_seconds %.17g\n"
                    "# HELP process_cpu_seconds_total Total user and system CPU time spent in "
                    "seconds.\n"
                    "# TYPE process_cpu_seconds_total counter\n"
                    "process_cpu_seconds_total %.9g\n"
                    "# HELP process_open_fds Number of open file descriptors.\n"
                    "# TYPE process_open_fds gauge\n"
                    "process_open_fds %d\n"
                    "# HELP process_max_fds Maximum number of open file descriptors.\n"
                    "# TYPE process_max_fds gauge\n"
                    "process_max_fds %d\n",
                    ps->virtual_bytes, ps->resident_bytes, ps->start_time_s, ps->cpu_s,
                    ps->open_fds, ps->max_fds);
}

typedef enum gpu_figure { GPU_MEMORY_USED, GPU_MEMORY_TOTAL, GPU_UTILIZATION } gpu_figure;

/* One GPU gauge, a sample per device that reports the figure (a device
 * without utilization has none rather than a 0); no family when none does. */
static void gpu_gauge(folo_buf *o, const char *name, const char *help, const char *model,
                      const folo_gpu_sample *gpus, int n_gpus, gpu_figure figure) {
    bool header = false;
    for (int i = 0; i < n_gpus; i++) {
        const folo_gpu_sample *x = &gpus[i];
        if (figure == GPU_UTILIZATION && !x->has_utilization) continue;
        if (!header) family(o, name, "gauge", help);
        header = true;
        char label[32];
        snprintf(label, sizeof label, "gpu=\"%d\"", x->index);
        sample(o, name, model, label);
        if (figure == GPU_MEMORY_USED)
            folo_buf_printf(o, "%" PRIu64 "\n", x->memory_used_bytes);
        else if (figure == GPU_MEMORY_TOTAL)
            folo_buf_printf(o, "%" PRIu64 "\n", x->memory_total_bytes);
        else
            folo_buf_printf(o, "%.9g\n", x->gpu_util_pct / 100.0);
    }
}

void folo_metrics_render(const folo_metrics *m, const char *model_name,
                         const folo_engine_stats *st, const folo_process_stats *ps,
                         const folo_gpu_sample *gpus, int n_gpus, folo_buf *out) {
    if (ps) process_metrics(out, ps);
    gpu_gauge(out, "gpu_memory_used_bytes",
              "GPU memory allocated by every process, in bytes.", model_name, gpus,
              n_gpus, GPU_MEMORY_USED);
    gpu_gauge(out, "gpu_memory_total_bytes", "GPU memory in total, in bytes.", model_name, gpus,
              n_gpus, GPU_MEMORY_TOTAL);
    gpu_gauge(out, "gpu_utilization_perc",
              "GPU utilization: the share of the driver's last sample period in which a kernel "
              "ran. 1 means 100 percent.",
              model_name, gpus, n_gpus, GPU_UTILIZATION);
    gauge(out, "num_requests_running", "Number of requests in model execution batches.",
          model_name, st->n_running);
    gauge(out, "num_requests_waiting", "Number of requests waiting to be processed.",
          model_name, st->n_waiting);
    gauge(out, "kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", model_name,
          st->kv_usage);
    counter(out, "prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.", model_name,
            st->prefix_queried_tokens);
    counter(out, "prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.",
            model_name, st->prefix_hit_tokens);
    counter(out, "num_preemptions", "Cumulative number of preemption from the engine.",
            model_name, st->n_preemptions);
    counter(out, "prompt_tokens", "Number of prefill tokens processed.", model_name,
            m->prompt_tokens);
    counter(out, "generation_tokens", "Number of generation tokens processed.", model_name,
            m->generation_tokens);
    family(out, "request_success", "counter", "Count of successfully processed requests.");
    for (int r = FOLO_FINISH_STOP; r <= FOLO_FINISH_ERROR; r++) {
        char label[64];
        snprintf(label, sizeof label, "finished_reason=\"%s\"",
                 folo_finish_reason_name((folo_finish_reason)r));
        sample(out, "request_success_total", model_name, label);
        folo_buf_printf(out, "%" PRId64 "\n", m->success[r]);
    }
    for (int i = 0; i < FOLO_H_COUNT; i++) histogram(out, &k_histograms[i], &m->h[i], model_name);
}

/* ---- the process --------------------------------------------------------- */

static int count_open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return 0;
    int n = 0;
    for (struct dirent *ent; (ent = readdir(d));)
        if (ent->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* The kernel's boot time (btime of /proc/stat), in seconds since the epoch. */
static double boot_time_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    char line[256];
    double btime = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %lf", &btime) == 1) break;
    fclose(f);
    return btime;
}

int folo_process_stats_read(folo_process_stats *out) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f) return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* Fields after the command name, which may hold spaces and ')'. */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime, start, vsize;
    long long rss;
    if (!p || sscanf(p + 2,
                     "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                     "%*d %*d %llu %llu %lld",
                     &utime, &stime, &start, &vsize, &rss) != 5)
        return -1;
    double ticks = (double)sysconf(_SC_CLK_TCK);
    out->cpu_s = (double)(utime + stime) / ticks;
    out->start_time_s = boot_time_s() + (double)start / ticks;
    out->virtual_bytes = (double)vsize;
    out->resident_bytes = (double)rss * (double)sysconf(_SC_PAGESIZE);
    out->open_fds = count_open_fds();
    struct rlimit lim;
    out->max_fds = getrlimit(RLIMIT_NOFILE, &lim) == 0 ? (int)lim.rlim_cur : 0;
    return 0;
}
