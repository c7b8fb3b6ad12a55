/* Writing a Hugging Face model directory's small files; see hf_dir.h. */
#include "model/hf_dir.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/file.h"

int folo_hf_write_json(const char *dir, const char *name, json_t *root, folo_error *err) {
    FOLO_ASSERT(root); /* the callers' json_pack formats are fixed */
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(15));
    json_decref(root);
    size_t n = strlen(text);
    text = folo_realloc(text, n + 2);
    memcpy(text + n, "\n", 2);
    char *path = folo_path_join(dir, name);
    char *tmp = folo_calloc(strlen(path) + 5, 1);
    snprintf(tmp, strlen(path) + 5, "%s.tmp", path);
    int rc = folo_file_write(tmp, text, n + 1, err);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = folo_fail(err, "%s: cannot rename to %s: %s", tmp, name, strerror(errno));
    free(tmp);
    free(path);
    free(text);
    return rc;
}

int folo_hf_copy_file(const char *from_dir, const char *to_dir, const char *name, bool required,
                      folo_error *err) {
    char *src = folo_path_join(from_dir, name);
    int rc = 0;
    if (folo_file_exists(src)) {
        size_t bytes;
        char *data = folo_file_read(src, &bytes, err);
        char *dst = folo_path_join(to_dir, name);
        rc = data ? folo_file_write(dst, data, bytes, err) : -1;
        free(dst);
        free(data);
    } else if (required) {
        rc = folo_fail(err, "%s: missing (directory %s)", src, from_dir);
    }
    free(src);
    return rc;
}

int folo_hf_copy_tokenizer(const char *from_dir, const char *to_dir, folo_error *err) {
    static const char *const names[] = {"tokenizer.json",  "tokenizer_config.json",
                                        "vocab.json",      "merges.txt",
                                        "special_tokens_map.json", "added_tokens.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (folo_hf_copy_file(from_dir, to_dir, names[i], i < 2, err) != 0) return -1;
    return 0;
}

int folo_hf_remove_stale(const char *dir, const char *name, folo_error *err) {
    char *path = folo_path_join(dir, name);
    int rc = unlink(path) != 0 && errno != ENOENT
                 ? folo_fail(err, "%s: cannot remove: %s", path, strerror(errno))
                 : 0;
    free(path);
    return rc;
}
