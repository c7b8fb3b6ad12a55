#include <stdio.h>

#include "cli/cli.h"

int folo_cmd_logits(int argc, char **argv) {
    fprintf(stderr, "folo logits: placeholder\n");
    return 1;
}
