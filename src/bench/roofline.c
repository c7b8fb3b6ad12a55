/* The roofline of a benchmark report (see roofline.h). */
#include "bench/roofline.h"

#include <stdio.h>
#include <string.h>

#include "backend/device.h"
#include "bench/cpu_peak.h"
#include "core/alloc.h"
#include "core/dtype.h"
#include "core/threadpool.h"

/* The measurement's buffer, much larger than any cache, and its loops'
 * length: a fraction of a second in all. */
#define CPU_READ_BYTES ((size_t)256 << 20)
#define CPU_PEAK_ITERS 2000000L
#define CPU_REPEAT 3

typedef struct builtin {
    const char *name;
    double bandwidth_gbs;
    double peak_gflops;
} builtin;

/* NVIDIA's data sheets, SXM parts: HBM bandwidth and dense bf16 tensor
 * throughput (the sparse figure is twice that). */
static const builtin k_builtins[] = {
    {"a100", 2039, 312e3},  /* A100 80GB SXM */
    {"h100", 3350, 989e3},  /* H100 SXM */
    {"h200", 4800, 989e3},  /* H200 SXM */
};

const char folo_bench_hardware_names[] = "a100, h100, h200, cpu (measured)";

/* The best peak of the instructions this run's matmuls use: with bf16
 * inputs any (vdpbf16ps, AMX tiles, FMAs); in float32 the FMAs, or AMX
 * tiles at half their rate (kernels_amx.c multiplies an f32 activation as
 * two bf16 halves); vdpbf16ps never serves float32. */
static void measure_cpu(int n_threads, bool bf16_inputs, folo_bench_hardware *out) {
    folo_pool *pool = folo_pool_create(n_threads);
    unsigned char *buf = folo_alloc_large(CPU_READ_BYTES);
    memset(buf, 1, CPU_READ_BYTES); /* fault every page in before timing */
    out->bandwidth_gbs = folo_bench_read_gbs(pool, buf, CPU_READ_BYTES, CPU_REPEAT);
    folo_free_large(buf);
    for (int kind = 0; kind < FOLO_BENCH_PEAK_COUNT; kind++) {
        if (!folo_bench_peak_supported(kind)) continue;
        if (!bf16_inputs && kind == FOLO_BENCH_PEAK_BF16DOT) continue;
        bool halved = !bf16_inputs && kind == FOLO_BENCH_PEAK_TILE;
        double gflops = folo_bench_peak_gflops(pool, kind, CPU_PEAK_ITERS, CPU_REPEAT);
        if (halved) gflops /= 2;
        if (gflops > out->peak_gflops) {
            out->peak_gflops = gflops;
            snprintf(out->peak_kind, sizeof out->peak_kind, "%s%s", folo_bench_peak_names[kind],
                     halved ? " / 2" : "");
        }
    }
    folo_pool_destroy(pool);
}

int folo_bench_hardware_get(const char *name, int n_threads, bool bf16_inputs,
                            folo_bench_hardware *out, folo_error *err) {
    memset(out, 0, sizeof *out);
    if (strcmp(name, "cpu") == 0) {
        snprintf(out->name, sizeof out->name, "cpu");
        out->measured = true;
        measure_cpu(n_threads, bf16_inputs, out);
        if (out->peak_gflops <= 0)
            return folo_fail(err, "--hardware cpu: no peak loop runs on this CPU (x86-64 with "
                                  "AVX2 needed); give --peak-tflops");
        return 0;
    }
    for (size_t i = 0; i < sizeof k_builtins / sizeof k_builtins[0]; i++) {
        if (strcmp(name, k_builtins[i].name) != 0) continue;
        snprintf(out->name, sizeof out->name, "%s", name);
        snprintf(out->peak_kind, sizeof out->peak_kind, "bf16 dense tensor");
        out->bandwidth_gbs = k_builtins[i].bandwidth_gbs;
        out->peak_gflops = k_builtins[i].peak_gflops;
        return 0;
    }
    return folo_fail(err, "unknown hardware '%s' (expected %s)", name,
                     folo_bench_hardware_names);
}

double folo_bench_decode_floor_s(const folo_bench_hardware *hw, double decode_bytes) {
    return decode_bytes / (hw->bandwidth_gbs * 1e9);
}

double folo_bench_prefill_floor_s(const folo_bench_hardware *hw, double flops_per_token) {
    return flops_per_token / (hw->peak_gflops * 1e9);
}

double folo_bench_mbu(const folo_bench_hardware *hw, double decode_bytes, double step_s) {
    return step_s > 0 ? folo_bench_decode_floor_s(hw, decode_bytes) / step_s : 0;
}

double folo_bench_mfu(const folo_bench_hardware *hw, double flops_per_token,
                      double tokens_per_s) {
    return tokens_per_s * flops_per_token / (hw->peak_gflops * 1e9);
}

double folo_bench_seed_estimate(const folo_bench_hardware *hw, int devices, double utilization,
                                double flops_per_token) {
    return devices * hw->peak_gflops * 1e9 * utilization / flops_per_token;
}

json_t *folo_bench_hardware_json(const folo_bench_hardware *hw) {
    return json_pack("{s:s, s:s, s:f, s:f, s:b}", "name", hw->name, "peak_kind", hw->peak_kind,
                     "bandwidth_gbs", hw->bandwidth_gbs, "peak_gflops", hw->peak_gflops,
                     "measured", hw->measured);
}

int folo_bench_hardware_pick(const char *name, const char *device, int n_threads,
                             bool bf16_inputs, double bandwidth_gbs, double peak_tflops,
                             folo_bench_hardware *out, folo_error *err) {
    if (!name) {
        if (!device || strcmp(device, "auto") == 0) device = folo_device_resolve_auto();
        name = strcmp(device, "cuda") == 0 ? "h100" : "cpu";
    }
    if (folo_bench_hardware_get(name, n_threads, bf16_inputs, out, err))
        return folo_fail_prefix(err, "--hardware");
    if (bandwidth_gbs > 0) out->bandwidth_gbs = bandwidth_gbs;
    if (peak_tflops > 0) out->peak_gflops = peak_tflops * 1e3;
    if (bandwidth_gbs > 0 || peak_tflops > 0) out->measured = false;
    return 0;
}

/* ---- the model ---------------------------------------------------------------- */

void folo_bench_model_figures_of(const folo_model *m, folo_bench_model_figures *out) {
    const folo_config *c = &m->config;
    out->weight_bytes = out->decode_bytes = m->weight_bytes;
    if (!c->tie_word_embeddings) out->decode_bytes -= folo_tensor_bytes(&m->embed);
    out->kv_values_per_token = (size_t)2 * c->n_layers * c->n_kv_heads * c->head_dim;
    /* q, k, v and o projections, and the MLP's gate, up and down. */
    double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double layer = (double)c->hidden_size * (2 * q + 2 * kv) +
                   3.0 * c->hidden_size * c->intermediate_size;
    out->lm_head_flops = 2.0 * c->vocab_size * c->hidden_size;
    out->flops_per_token = 2.0 * c->n_layers * layer + out->lm_head_flops;
}

/* ---- a run's roofline ------------------------------------------------------------ */

double folo_bench_roofline_decode_floor_s(const folo_bench_roofline *r) {
    return folo_bench_decode_floor_s(&r->hw, (double)r->model.decode_bytes);
}

double folo_bench_roofline_prefill_floor_s(const folo_bench_roofline *r) {
    return folo_bench_prefill_floor_s(&r->hw, r->model.flops_per_token - r->model.lm_head_flops);
}

void folo_bench_roofline_print(const folo_bench_roofline *r) {
    double floor_s = folo_bench_roofline_decode_floor_s(r);
    printf("roofline (%s%s: %.1f GB/s, %.1f GFLOP/s %s): a decode step reads %.3f GB of "
           "weights, >= %.3f ms (batch-1 decode <= %.1f tokens/s); a prompt token costs %.4g "
           "GFLOP, >= %.4g ms\n",
           r->hw.name, r->hw.measured ? ", measured now" : "", r->hw.bandwidth_gbs,
           r->hw.peak_gflops, r->hw.peak_kind, r->model.decode_bytes / 1e9, floor_s * 1e3,
           1.0 / floor_s, (r->model.flops_per_token - r->model.lm_head_flops) / 1e9,
           folo_bench_roofline_prefill_floor_s(r) * 1e3);
}

void folo_bench_roofline_header_json(const folo_bench_roofline *r, json_t *j) {
    json_object_set_new(j, "hardware", folo_bench_hardware_json(&r->hw));
    json_object_set_new(j, "devices", json_integer(r->devices));
    json_object_set_new(j, "bandwidth_gbs", json_real(r->hw.bandwidth_gbs));
    json_object_set_new(j, "peak_gflops", json_real(r->hw.peak_gflops));
    json_object_set_new(j, "decode_weight_bytes", json_integer((json_int_t)r->model.decode_bytes));
    json_object_set_new(j, "flops_per_token", json_real(r->model.flops_per_token));
    json_object_set_new(j, "decode_floor_ms",
                        json_real(folo_bench_roofline_decode_floor_s(r) * 1e3));
    json_object_set_new(j, "prefill_floor_ms_per_token",
                        json_real(folo_bench_roofline_prefill_floor_s(r) * 1e3));
}

double folo_bench_roofline_mfu(const folo_bench_roofline *r, const folo_bench_summary *s) {
    return folo_bench_mfu(&r->hw, r->model.flops_per_token, s->total_token_throughput);
}

/* tokens/s on built-in profile i at the run's MFU. */
static double estimate(const folo_bench_roofline *r, size_t i, double mfu) {
    folo_bench_hardware gpu = {.peak_gflops = k_builtins[i].peak_gflops};
    return folo_bench_seed_estimate(&gpu, r->devices, mfu, r->model.flops_per_token);
}

void folo_bench_roofline_print_mfu(const folo_bench_roofline *r, const char *indent,
                                   const folo_bench_summary *s) {
    double mfu = folo_bench_roofline_mfu(r, s);
    printf("%sMFU %.2f%% (%.1f tokens/s x %.4g GFLOP/token); at this MFU, %d x", indent,
           100 * mfu, s->total_token_throughput, r->model.flops_per_token / 1e9, r->devices);
    for (size_t i = 0; i < sizeof k_builtins / sizeof k_builtins[0]; i++)
        printf(" %s %.0f", k_builtins[i].name, estimate(r, i, mfu));
    printf(" tokens/s\n");
}

void folo_bench_roofline_json(const folo_bench_roofline *r, const folo_bench_summary *s,
                              json_t *o) {
    double mfu = folo_bench_roofline_mfu(r, s);
    json_object_set_new(o, "mfu", json_real(mfu));
    json_t *est = json_object();
    for (size_t i = 0; i < sizeof k_builtins / sizeof k_builtins[0]; i++)
        json_object_set_new(est, k_builtins[i].name, json_real(estimate(r, i, mfu)));
    json_object_set_new(o, "seed_estimate_tokens_per_s", est);
}
