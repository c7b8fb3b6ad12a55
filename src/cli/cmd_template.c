#include <stdio.h>

#include "cli/cli.h"

int folo_cmd_template(int argc, char **argv) {
    fprintf(stderr, "folo template: placeholder\n");
    return 1;
}
