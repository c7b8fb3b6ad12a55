#include <stdio.h>

#include "cli/cli.h"

int folo_cmd_tokenize(int argc, char **argv) {
    fprintf(stderr, "folo tokenize: placeholder\n");
    return 1;
}
