#include <stdio.h>

#include "cli/cli.h"

int folo_cmd_run(int argc, char **argv) {
    fprintf(stderr, "folo run: placeholder\n");
    return 1;
}
