/* The HTML report of a `folo bench` run (see html.h). */
#include "bench/html.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/report.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/file.h"

/* Chart geometry, px: the plot area sits inside the margins. */
#define W 640
#define H 300
#define LEFT 64
#define RIGHT 150
#define TOP 30
#define BOTTOM 44
#define PLOT_W (W - LEFT - RIGHT)
#define PLOT_H (H - TOP - BOTTOM)
#define N_BINS 30
#define MAX_SERIES 64

static const char *const k_colors[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                       "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
#define N_COLORS (sizeof k_colors / sizeof k_colors[0])

/* One line of a chart: n points, x[] ascending. */
typedef struct series {
    char name[64];
    double *x, *y;   /* [n], owned */
    int n;
} series;

static void series_free(series *s, int n) {
    for (int i = 0; i < n; i++) {
        free(s[i].x);
        free(s[i].y);
    }
}

/* Text with &, < and > escaped. */
static void put_text(folo_buf *b, const char *s) {
    for (; *s; s++) {
        if (*s == '&')
            folo_buf_puts(b, "&amp;");
        else if (*s == '<')
            folo_buf_puts(b, "&lt;");
        else if (*s == '>')
            folo_buf_puts(b, "&gt;");
        else
            folo_buf_append(b, s, 1);
    }
}

/* A table cell: an integer as is, another number to 4 significant
 * digits, anything else "-". */
static void put_cell(folo_buf *b, const json_t *v) {
    if (json_is_integer(v))
        folo_buf_printf(b, "<td>%lld</td>", (long long)json_integer_value(v));
    else if (json_is_number(v))
        folo_buf_printf(b, "<td>%.4g</td>", json_number_value(v));
    else
        folo_buf_puts(b, "<td>-</td>");
}

/* ---- charts ------------------------------------------------------------------- */

typedef struct axes {
    double x0, x1, y0, y1;   /* data range shown */
} axes;

static double px(const axes *a, double x) {
    return LEFT + (a->x1 > a->x0 ? (x - a->x0) / (a->x1 - a->x0) : 0.5) * PLOT_W;
}

static double py(const axes *a, double y) {
    return TOP + PLOT_H - (a->y1 > a->y0 ? (y - a->y0) / (a->y1 - a->y0) : 0.5) * PLOT_H;
}

/* Opens an SVG with its title, frame, five ticks on the y axis (and on
 * the x axis with x_ticks) and labels. */
static void chart_begin(folo_buf *b, const axes *a, const char *title, const char *x_label,
                        const char *y_label, bool x_ticks) {
    folo_buf_printf(b, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                       "font-family=\"sans-serif\" font-size=\"11\">\n", W, H);
    folo_buf_printf(b, "<text x=\"%d\" y=\"18\" font-size=\"13\" font-weight=\"bold\">", LEFT);
    put_text(b, title);
    folo_buf_puts(b, "</text>\n");
    folo_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                       "stroke=\"#999\"/>\n", LEFT, TOP, PLOT_W, PLOT_H);
    for (int k = 0; k <= 4; k++) {
        double x = a->x0 + (a->x1 - a->x0) * k / 4, y = a->y0 + (a->y1 - a->y0) * k / 4;
        if (x_ticks)
            folo_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.4g</text>\n",
                            px(a, x), TOP + PLOT_H + 14, x);
        folo_buf_printf(b, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.4g</text>\n",
                        LEFT - 4, py(a, y) + 4, y);
        folo_buf_printf(b, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>\n",
                        LEFT, LEFT + PLOT_W, py(a, y), py(a, y));
    }
    folo_buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">", LEFT + PLOT_W / 2,
                    H - 8);
    put_text(b, x_label);
    folo_buf_printf(b, "</text>\n<text transform=\"translate(14 %d) rotate(-90)\" "
                       "text-anchor=\"middle\">", TOP + PLOT_H / 2);
    put_text(b, y_label);
    folo_buf_puts(b, "</text>\n");
}

static void legend(folo_buf *b, int i, const char *name) {
    int y = TOP + 8 + 16 * i;
    folo_buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/>"
                       "<text x=\"%d\" y=\"%d\">", LEFT + PLOT_W + 10, y, k_colors[i % N_COLORS],
                    LEFT + PLOT_W + 26, y + 4);
    put_text(b, name);
    folo_buf_puts(b, "</text>\n");
}

/* Lines (with points) through each series. */
static void line_chart(folo_buf *b, const char *title, const char *x_label, const char *y_label,
                       const series *s, int n, bool points) {
    axes a = {INFINITY, -INFINITY, 0, -INFINITY};
    for (int i = 0; i < n; i++)
        for (int k = 0; k < s[i].n; k++) {
            a.x0 = fmin(a.x0, s[i].x[k]);
            a.x1 = fmax(a.x1, s[i].x[k]);
            a.y1 = fmax(a.y1, s[i].y[k]);
        }
    if (!(a.x1 >= a.x0)) return;  /* nothing to draw */
    if (a.y1 <= 0) a.y1 = 1;
    chart_begin(b, &a, title, x_label, y_label, true);
    for (int i = 0; i < n; i++) {
        const char *color = k_colors[i % N_COLORS];
        folo_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" "
                           "points=\"", color);
        for (int k = 0; k < s[i].n; k++)
            folo_buf_printf(b, "%.1f,%.1f ", px(&a, s[i].x[k]), py(&a, s[i].y[k]));
        folo_buf_puts(b, "\"/>\n");
        for (int k = 0; points && k < s[i].n; k++)
            folo_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                            px(&a, s[i].x[k]), py(&a, s[i].y[k]), color);
        legend(b, i, s[i].name);
    }
    folo_buf_puts(b, "</svg>\n");
}

static int compare_double(const void *p, const void *q) {
    double x = *(const double *)p, y = *(const double *)q;
    return (x > y) - (x < y);
}

/* The empirical CDF of values[0..n) (sorted here) as a step series. */
static void cdf_series(series *s, const char *name, double *values, int n) {
    qsort(values, (size_t)n, sizeof(double), compare_double);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->x = folo_calloc((size_t)(2 * n + 1), sizeof(double));
    s->y = folo_calloc((size_t)(2 * n + 1), sizeof(double));
    s->n = 0;
    for (int k = 0; k < n; k++) {
        s->x[s->n] = values[k];
        s->y[s->n++] = (double)k / n;
        s->x[s->n] = values[k];
        s->y[s->n++] = (double)(k + 1) / n;
    }
}

static void histogram(folo_buf *b, const char *title, const char *x_label, const char *y_label,
                      const double *values, int n) {
    if (n == 0) return;
    axes a = {INFINITY, -INFINITY, 0, 0};
    for (int k = 0; k < n; k++) {
        a.x0 = fmin(a.x0, values[k]);
        a.x1 = fmax(a.x1, values[k]);
    }
    if (a.x1 <= a.x0) a.x1 = a.x0 + 1;
    int counts[N_BINS] = {0};
    double width = (a.x1 - a.x0) / N_BINS;
    for (int k = 0; k < n; k++) {
        int bin = (int)((values[k] - a.x0) / width);
        counts[bin < N_BINS ? bin : N_BINS - 1]++;
    }
    for (int i = 0; i < N_BINS; i++) a.y1 = fmax(a.y1, counts[i]);
    chart_begin(b, &a, title, x_label, y_label, true);
    for (int i = 0; i < N_BINS; i++) {
        double x = px(&a, a.x0 + i * width), y = py(&a, counts[i]);
        folo_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                           "fill=\"%s\"/>\n",
                        x, y, PLOT_W / (double)N_BINS - 1, TOP + PLOT_H - y, k_colors[0]);
    }
    folo_buf_puts(b, "</svg>\n");
}

/* Grouped bars: for each of n_groups categories (labels[g]), one bar per
 * series, series k's values values[k * n_groups + g]. */
static void bar_chart(folo_buf *b, const char *title, const char *x_label, const char *y_label,
                      char (*labels)[64], int n_groups, const char *const *names,
                      const double *values, int n_series) {
    if (n_groups == 0) return;
    axes a = {0, 1, 0, 0};
    for (int i = 0; i < n_groups * n_series; i++) a.y1 = fmax(a.y1, values[i]);
    if (a.y1 <= 0) a.y1 = 1;
    /* No x ticks: the categories are labelled under their bars. */
    chart_begin(b, &a, title, x_label, y_label, false);
    double group_w = (double)PLOT_W / n_groups, bar_w = group_w * 0.8 / n_series;
    for (int g = 0; g < n_groups; g++) {
        double x0 = LEFT + g * group_w + group_w * 0.1;
        for (int k = 0; k < n_series; k++) {
            double y = py(&a, values[k * n_groups + g]);
            folo_buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                               "fill=\"%s\"/>\n",
                            x0 + k * bar_w, y, bar_w - 1, TOP + PLOT_H - y,
                            k_colors[k % N_COLORS]);
        }
        folo_buf_printf(b, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">",
                        x0 + group_w * 0.4, TOP + PLOT_H + 14);
        put_text(b, labels[g]);
        folo_buf_puts(b, "</text>\n");
    }
    for (int k = 0; k < n_series; k++) legend(b, k, names[k]);
    folo_buf_puts(b, "</svg>\n");
}

/* ---- the run ------------------------------------------------------------------ */

/* The results of a run as entries with a summary and requests: a latency
 * or serve run's "results", or the run itself (throughput). */
static const json_t *entry_at(const json_t *run, size_t i) {
    const json_t *results = json_object_get(run, "results");
    return json_is_array(results) ? json_array_get(results, i) : i == 0 ? run : NULL;
}

/* Every ttft_ms (itl false) or every ITL gap (itl true) of e's completed
 * requests; *n their count. */
static double *entry_values(const json_t *e, bool itl, int *n) {
    const json_t *requests = json_object_get(e, "requests");
    size_t cap = 16, i;
    const json_t *r;
    json_array_foreach(requests, i, r) cap += itl ? json_array_size(json_object_get(r, "itl_ms"))
                                                  : 1;
    double *v = folo_calloc(cap, sizeof(double));
    *n = 0;
    json_array_foreach(requests, i, r) {
        if (!json_is_true(json_object_get(r, "ok"))) continue;
        if (!itl) {
            v[(*n)++] = json_number_value(json_object_get(r, "ttft_ms"));
            continue;
        }
        size_t k;
        const json_t *gap;
        json_array_foreach(json_object_get(r, "itl_ms"), k, gap) v[(*n)++] = json_number_value(gap);
    }
    return v;
}

static void parameters_table(folo_buf *b, const json_t *run) {
    folo_buf_puts(b, "<h2>Run</h2>\n<table>\n");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)run, key, v) {
        if (json_is_object(v) || json_is_array(v)) continue;
        char *text = json_dumps(v, JSON_ENCODE_ANY);
        folo_buf_puts(b, "<tr><th>");
        put_text(b, key);
        folo_buf_puts(b, "</th><td>");
        put_text(b, text ? text : "");
        folo_buf_puts(b, "</td></tr>\n");
        free(text);
    }
    folo_buf_puts(b, "</table>\n");
}

static const char *const k_table_keys[] = {
    "completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
    "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
    "max_output_tokens_per_s", "max_concurrent_requests",
};
static const char *const k_metrics[] = {"ttft", "tpot", "itl", "e2el"};
static const char *const k_stats[] = {"mean", "median", "std", "p50", "p90", "p95", "p99",
                                      "p99.9"};

static void summary_tables(folo_buf *b, const json_t *run) {
    folo_buf_puts(b, "<h2>Summary</h2>\n<table>\n<tr><th></th>");
    const json_t *e;
    char name[64], key[64];
    for (size_t i = 0; (e = entry_at(run, i)) != NULL; i++) {
        folo_bench_entry_label(e, name, sizeof name);
        folo_buf_puts(b, "<th>");
        put_text(b, name);
        folo_buf_puts(b, "</th>");
    }
    folo_buf_puts(b, "</tr>\n");
    size_t n_rows = sizeof k_table_keys / sizeof k_table_keys[0] +
                    (sizeof k_metrics / sizeof k_metrics[0]) * (sizeof k_stats / sizeof k_stats[0]);
    for (size_t row = 0; row < n_rows; row++) {
        size_t n_plain = sizeof k_table_keys / sizeof k_table_keys[0];
        size_t n_stats = sizeof k_stats / sizeof k_stats[0];
        if (row < n_plain)
            snprintf(key, sizeof key, "%s", k_table_keys[row]);
        else
            snprintf(key, sizeof key, "%s_%s_ms", k_stats[(row - n_plain) % n_stats],
                     k_metrics[(row - n_plain) / n_stats]);
        folo_buf_printf(b, "<tr><th>%s</th>", key);
        for (size_t i = 0; (e = entry_at(run, i)) != NULL; i++) {
            put_cell(b, json_object_get(json_object_get(e, "summary"), key));
        }
        folo_buf_puts(b, "</tr>\n");
    }
    folo_buf_puts(b, "</table>\n");
}

/* Histogram of the first entry and CDFs of all, for TTFT or ITL. */
static void distribution_charts(folo_buf *b, const json_t *run, bool itl) {
    const char *what = itl ? "ITL" : "TTFT";
    series s[MAX_SERIES];
    int n = 0;
    const json_t *e;
    char name[64], title[128];
    for (size_t i = 0; n < MAX_SERIES && (e = entry_at(run, i)) != NULL; i++) {
        int n_values;
        double *v = entry_values(e, itl, &n_values);
        folo_bench_entry_label(e, name, sizeof name);
        if (i == 0) {
            snprintf(title, sizeof title, "%s distribution, %s", what, name);
            histogram(b, title, itl ? "ITL (ms)" : "TTFT (ms)", itl ? "gaps" : "requests", v,
                      n_values);
        }
        if (n_values > 0) cdf_series(&s[n++], name, v, n_values);
        free(v);
    }
    snprintf(title, sizeof title, "%s CDF", what);
    line_chart(b, title, itl ? "ITL (ms)" : "TTFT (ms)", "fraction", s, n, false);
    series_free(s, n);
}

/* For sweeps: figures of each entry's summary against its batch size,
 * offered rate (an infinite rate drawn at twice the largest) or prefix
 * hit ratio. */
static void sweep_charts(folo_buf *b, const json_t *run) {
    const json_t *results = json_object_get(run, "results");
    int n = (int)json_array_size(results);
    if (n < 2) return;
    const json_t *first = json_array_get(results, 0);
    const char *x_key = json_object_get(first, "batch_size")         ? "batch_size"
                        : json_object_get(first, "target_hit_ratio") ? "target_hit_ratio"
                                                                     : "request_rate";
    double *x = folo_calloc((size_t)n, sizeof(double));
    double finite_max = 0;
    for (int i = 0; i < n; i++) {
        const json_t *e = json_array_get(results, (size_t)i);
        const json_t *v = json_object_get(e, x_key);
        x[i] = json_is_number(v) ? json_number_value(v) : INFINITY;
        if (isfinite(x[i])) finite_max = fmax(finite_max, x[i]);
    }
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i])) x[i] = finite_max > 0 ? 2 * finite_max : 1;
    static const char *const latency_keys[] = {"mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
                                               "p99_tpot_ms", "mean_e2el_ms", "p99_e2el_ms"};
    static const char *const throughput_keys[] = {"output_throughput", "total_token_throughput"};
    for (int chart = 0; chart < 2; chart++) {
        const char *const *keys = chart == 0 ? throughput_keys : latency_keys;
        int n_keys = chart == 0 ? 2 : 6;
        series s[6];
        for (int k = 0; k < n_keys; k++) {
            snprintf(s[k].name, sizeof s[k].name, "%s", keys[k]);
            s[k].n = n;
            s[k].x = folo_calloc((size_t)n, sizeof(double));
            s[k].y = folo_calloc((size_t)n, sizeof(double));
            for (int i = 0; i < n; i++) {
                const json_t *sum = json_object_get(json_array_get(results, (size_t)i), "summary");
                s[k].x[i] = x[i];
                s[k].y[i] = json_number_value(json_object_get(sum, keys[k]));
            }
        }
        const char *x_label =
            x_key[0] == 'b'   ? "batch size (requests)"
            : x_key[0] == 't' ? "share of the prompt in the cached prefix"
                              : "offered request rate (requests/s; inf drawn at 2x max)";
        line_chart(b, chart == 0 ? "Throughput" : "Latency", x_label,
                   chart == 0 ? "tokens/s" : "ms", s, n_keys, true);
        series_free(s, n_keys);
    }
    free(x);
}

/* Every scalar of every entry of results, one row per entry, under a
 * heading (the memory mode's figures, which have no latency summary; the
 * side tables of a stages run). */
static void results_table(folo_buf *b, const char *heading, const json_t *results) {
    const json_t *first = json_array_get(results, 0);
    const char *key;
    const json_t *v;
    folo_buf_puts(b, "<h2>");
    put_text(b, heading);
    folo_buf_puts(b, "</h2>\n<table>\n<tr>");
    json_object_foreach((json_t *)first, key, v) {
        if (json_is_object(v) || json_is_array(v)) continue;
        folo_buf_puts(b, "<th>");
        put_text(b, key);
        folo_buf_puts(b, "</th>");
    }
    folo_buf_puts(b, "</tr>\n");
    size_t i;
    const json_t *e;
    json_array_foreach(results, i, e) {
        folo_buf_puts(b, "<tr>");
        json_object_foreach((json_t *)first, key, v) {
            if (json_is_object(v) || json_is_array(v)) continue;
            const json_t *cell = json_object_get(e, key);
            if (json_is_string(cell)) {
                folo_buf_puts(b, "<td>");
                put_text(b, json_string_value(cell));
                folo_buf_puts(b, "</td>");
            } else {
                put_cell(b, cell);
            }
        }
        folo_buf_puts(b, "</tr>\n");
    }
    folo_buf_puts(b, "</table>\n");
}

/* A stages run: per stage, bars of its throughputs, its mean latencies and
 * its KV cache's utilization, next to each other. */
static void stage_charts(folo_buf *b, const json_t *run) {
    const json_t *results = json_object_get(run, "results");
    int n = (int)json_array_size(results);
    if (n == 0) return;
    char(*labels)[64] = folo_calloc((size_t)n, sizeof *labels);
    double *v = folo_calloc((size_t)n * 3, sizeof(double));
    static const char *const tps[] = {"output tokens/s", "total tokens/s"};
    static const char *const lat[] = {"mean TTFT", "mean TPOT", "mean E2EL"};
    static const char *const kv[] = {"KV utilization, fullest step", "KV utilization, mean"};
    for (int chart = 0; chart < 3; chart++) {
        for (int g = 0; g < n; g++) {
            const json_t *e = json_array_get(results, (size_t)g);
            const json_t *sum = json_object_get(e, "summary");
            snprintf(labels[g], sizeof labels[g], "%s",
                     json_string_value(json_object_get(e, "stage")));
            if (chart == 0) {
                v[g] = json_number_value(json_object_get(sum, "output_throughput"));
                v[n + g] = json_number_value(json_object_get(sum, "total_token_throughput"));
            } else if (chart == 1) {
                v[g] = json_number_value(json_object_get(sum, "mean_ttft_ms"));
                v[n + g] = json_number_value(json_object_get(sum, "mean_tpot_ms"));
                v[2 * n + g] = json_number_value(json_object_get(sum, "mean_e2el_ms"));
            } else {
                v[g] = 100 * json_number_value(json_object_get(e, "kv_utilization_peak"));
                v[n + g] = 100 * json_number_value(json_object_get(e, "kv_utilization_mean"));
            }
        }
        if (chart == 0)
            bar_chart(b, "Throughput per stage", "stage", "tokens/s", labels, n, tps, v, 2);
        else if (chart == 1)
            bar_chart(b, "Latency per stage", "stage", "ms", labels, n, lat, v, 3);
        else
            bar_chart(b, "KV cache utilization per stage", "stage", "%", labels, n, kv, v, 2);
    }
    free(v);
    free(labels);
}

int folo_bench_html_write(const char *path, const json_t *run, folo_error *err) {
    folo_buf b = {0};
    const char *mode = json_string_value(json_object_get(run, "mode"));
    folo_buf_printf(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                        "<title>folo bench %s</title>\n<style>body{font-family:sans-serif;"
                        "margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
                        "th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}"
                        "th{background:#f4f4f4}svg{margin:0.5em 1em 0.5em 0}</style>"
                        "</head><body>\n<h1>folo bench %s</h1>\n",
                    mode ? mode : "", mode ? mode : "");
    parameters_table(&b, run);
    bool stages = mode && strcmp(mode, "stages") == 0;
    if (mode && strcmp(mode, "memory") == 0) {
        results_table(&b, "Results", json_object_get(run, "results"));
    } else {
        summary_tables(&b, run);
        folo_buf_puts(&b, "<h2>Charts</h2>\n");
        if (stages)
            stage_charts(&b, run);
        else
            sweep_charts(&b, run);
        distribution_charts(&b, run, false);
        distribution_charts(&b, run, true);
    }
    const json_t *chunk = json_object_get(run, "chunk_table");
    if (stages && json_is_object(chunk))
        results_table(&b, "Chunk size vs decode latency and prefill throughput",
                      json_object_get(chunk, "results"));
    const json_t *prefix = json_object_get(run, "prefix_table");
    if (stages && json_is_object(prefix))
        results_table(&b, "Prefix hit rate vs TTFT", json_object_get(prefix, "results"));
    folo_buf_puts(&b, "</body></html>\n");
    int rc = folo_file_write(path, b.data, b.len, err);
    folo_buf_free(&b);
    return rc ? folo_fail_prefix(err, "--html") : 0;
}
