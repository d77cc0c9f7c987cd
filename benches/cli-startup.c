/* Wall time of short commands, alternating them in one run (issue 15, the CLI target;
 * driven by benches/cli-startup.sh).
 *
 * usage: cli-startup ROUNDS WARMUP :: CMD1 ARGS... :: CMD2 ARGS... [:: CMD3 ...]
 *
 * Each round starts every command once, in an order that rotates from round to round
 * (so that none always runs right after another), each with posix_spawn and waitpid,
 * and times it from just before the spawn to just after the wait (CLOCK_MONOTONIC):
 * what a shell or hyperfine sees, without a shell. Their stdout goes to /dev/null. A
 * command that exits non-zero stops the run. Prints, per command, the median, p10 and
 * p90 in microseconds, the ratio of its median to the last command's, and the median
 * of its per-round ratios to the last command (robust against load that changes
 * during the run: both were measured within a few milliseconds of each other).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double quantile(double *v, int n, double q) {
    double *s = malloc(n * sizeof *s);
    memcpy(s, v, n * sizeof *s);
    qsort(s, n, sizeof *s, cmp);
    double r = s[(int)(q * (n - 1) + 0.5)];
    free(s);
    return r;
}

static posix_spawn_file_actions_t quiet; /* stdout to /dev/null */

static double run_once(char **argv) {
    pid_t pid;
    double start = now_us();
    if (posix_spawnp(&pid, argv[0], &quiet, NULL, argv, environ) != 0) {
        perror(argv[0]);
        exit(2);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid) {
        perror("waitpid");
        exit(2);
    }
    double took = now_us() - start;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "%s: exit status %d\n", argv[0], status);
        exit(2);
    }
    return took;
}

int main(int argc, char **argv) {
    if (argc < 5 || strcmp(argv[3], "::") != 0) {
        fprintf(stderr, "usage: %s ITERATIONS WARMUP :: CMD1... :: CMD2...\n", argv[0]);
        return 2;
    }
    int iterations = atoi(argv[1]), warmup = atoi(argv[2]);
    posix_spawn_file_actions_init(&quiet);
    posix_spawn_file_actions_addopen(&quiet, 1, "/dev/null", O_WRONLY, 0);
    char **cmds[16];
    int ncmd = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "::") == 0) {
            argv[i] = NULL; /* ends the previous command's argv */
            if (ncmd == 16) return 2;
            cmds[ncmd++] = &argv[i + 1];
        }
    }
    double *t = calloc((size_t)ncmd * iterations, sizeof *t);
    double *ratio = calloc((size_t)ncmd * iterations, sizeof *ratio);
    for (int r = -warmup; r < iterations; r++) {
        double round[16];
        for (int k = 0; k < ncmd; k++) {
            int c = (k + (r < 0 ? 0 : r)) % ncmd;
            round[c] = run_once(cmds[c]);
        }
        if (r < 0) continue;
        for (int c = 0; c < ncmd; c++) {
            t[c * iterations + r] = round[c];
            ratio[c * iterations + r] = round[c] / round[ncmd - 1];
        }
    }
    double base = quantile(&t[(ncmd - 1) * iterations], iterations, 0.5);
    printf("%-8s %9s %9s %9s %12s %14s  %s\n", "command", "median_us", "p10_us", "p90_us",
           "ratio_median", "median_ratio", "argv");
    for (int c = 0; c < ncmd; c++) {
        double *v = &t[c * iterations];
        double med = quantile(v, iterations, 0.5);
        printf("%-8d %9.0f %9.0f %9.0f %12.3f %14.3f ", c + 1, med, quantile(v, iterations, 0.1),
               quantile(v, iterations, 0.9), med / base,
               quantile(&ratio[c * iterations], iterations, 0.5));
        for (char **a = cmds[c]; *a; a++) printf(" %s", *a);
        printf("\n");
    }
    return 0;
}
