#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/timer.h"

static _Atomic int g_level = FOLO_LOG_INFO;

void folo_log_set_level(folo_log_level level) { g_level = (int)level; }
folo_log_level folo_log_get_level(void) { return (folo_log_level)g_level; }

int folo_log_parse_level(const char *name, folo_log_level *out) {
    static const char *names[] = {"debug", "info", "warn", "error", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (folo_log_level)i;
            return 0;
        }
    }
    return -1;
}

void folo_log(folo_log_level level, const char *fmt, ...) {
    if ((int)level < g_level) return;
    static const char *tags[] = {"debug", "info", "warn", "error"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "folo %s: %s\n", tags[level], line);
}

void folo_progress_begin(folo_progress *p, const char *label, double total) {
    p->label = label;
    p->total = total > 0 ? total : 1;
    p->start_s = folo_now_s();
    p->last_decile = -1;
    p->is_tty = isatty(STDERR_FILENO);
    if (g_level <= FOLO_LOG_INFO) folo_progress_update(p, 0);
}

void folo_progress_update(folo_progress *p, double done) {
    if (g_level > FOLO_LOG_INFO) return;
    double frac = done / p->total;
    if (frac > 1) frac = 1;
    double elapsed = folo_now_s() - p->start_s;
    if (p->is_tty) {
        char bar[31];
        int fill = (int)(frac * 30);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r%s [%s] %5.1f%% %6.1fs", p->label, bar, frac * 100, elapsed);
        fflush(stderr);
    } else {
        int decile = (int)(frac * 10);
        if (decile != p->last_decile) {
            p->last_decile = decile;
            fprintf(stderr, "%s: %3d%% (%.1fs)\n", p->label, decile * 10, elapsed);
        }
    }
}

void folo_progress_end(folo_progress *p) {
    if (g_level > FOLO_LOG_INFO) return;
    folo_progress_update(p, p->total);
    if (p->is_tty) fprintf(stderr, "\n");
}
