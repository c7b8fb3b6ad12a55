#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"

int folo_file_map(folo_mapped_file *f, const char *path, folo_error *err) {
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return folo_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return folo_fail(err, "%s: not a regular file", path);
    }
    f->path = folo_strdup(path);
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        /* Populate now: page faults on first touch would otherwise land in the
         * first forward pass (and in its TTFT) instead of in loading. */
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f->path);
            f->path = NULL;
            return folo_fail(err, "%s: cannot map: %s", path, strerror(e));
        }
        f->data = p;
    }
    close(fd);
    return 0;
}

void folo_file_unmap(folo_mapped_file *f) {
    if (f->data) munmap((void *)f->data, f->size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

char *folo_file_read(const char *path, size_t *size_out, folo_error *err) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        folo_fail(err, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = folo_calloc(cap, 1);
    for (;;) {
        if (n + 1 >= cap) buf = folo_realloc(buf, cap *= 2);
        size_t got = fread(buf + n, 1, cap - n - 1, fp);
        n += got;
        if (got == 0) break;
    }
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        folo_fail(err, "%s: read error", path);
        return NULL;
    }
    buf[n] = '\0';
    if (size_out) *size_out = n;
    return buf;
}

int folo_file_write(const char *path, const void *data, size_t bytes, folo_error *err) {
    FILE *fp = fopen(path, "wb");
    if (!fp) return folo_fail(err, "%s: cannot create: %s", path, strerror(errno));
    size_t put = bytes ? fwrite(data, 1, bytes, fp) : 0;
    int bad = fclose(fp) != 0 || put != bytes;
    return bad ? folo_fail(err, "%s: write error: %s", path, strerror(errno)) : 0;
}

int folo_file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

char *folo_path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    int slash = a > 0 && dir[a - 1] != '/';
    char *p = folo_calloc(a + b + 2, 1);
    memcpy(p, dir, a);
    if (slash) p[a] = '/';
    memcpy(p + a + slash, name, b);
    return p;
}

int folo_mkdir_p(const char *path, folo_error *err) {
    char *p = folo_strdup(path);
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                folo_fail(err, "%s: cannot create directory: %s", p, strerror(errno));
                free(p);
                return -1;
            }
            *s = c;
            if (c == '\0') break;
        }
    }
    free(p);
    return 0;
}
