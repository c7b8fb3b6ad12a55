#include <stdio.h>

#include "cli/cli.h"

int folo_cmd_make_model(int argc, char **argv) {
    fprintf(stderr, "folo make-model: placeholder\n");
    return 1;
}
