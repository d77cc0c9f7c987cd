/*
 * The C side of a C-versus-Rust contention test: takes the lease on NAME ITERATIONS
 * times, waiting for it, and while holding it checks and updates a state file shared
 * with the Rust side: nobody else may be inside (exclusivity), and its token must be
 * larger than every token recorded before it, by either language (fencing).
 * Usage: contend TABLE NAME STATE_FILE ITERATIONS
 * State file: u64 occupant (0 = nobody, 'C' or 'R'), u64 last token, u64 grants.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static void state(int fd, uint64_t s[3], int write) {
    ssize_t n = write ? pwrite(fd, s, 3 * sizeof(uint64_t), 0)
                      : pread(fd, s, 3 * sizeof(uint64_t), 0);
    CHECK(n == (ssize_t)(3 * sizeof(uint64_t)));
}

int main(int argc, char **argv) {
    CHECK(argc == 5);
    int fd = open(argv[3], O_RDWR);
    CHECK(fd >= 0);
    long iterations = atol(argv[4]);
    shmlease_table *t = NULL;
    OK(shmlease_table_open(argv[1], NULL, &t));
    for (long i = 0; i < iterations; i++) {
        shmlease_lease *l = NULL;
        OK(shmlease_acquire(t, argv[2], 10 * SEC, -1, "c-side", &l, NULL));
        uint64_t token = 0, s[3];
        OK(shmlease_lease_token(l, &token));
        state(fd, s, 0);
        CHECK(s[0] == 0);
        CHECK(token > s[1]);
        s[0] = 'C';
        s[1] = token;
        s[2] += 1;
        state(fd, s, 1);
        struct timespec work = {0, 100000};
        nanosleep(&work, NULL);
        state(fd, s, 0);
        CHECK(s[0] == 'C' && s[1] == token);
        s[0] = 0;
        state(fd, s, 1);
        OK(shmlease_release(l));
        shmlease_lease_free(l);
        if (i % 4 == 3) sched_yield();
    }
    shmlease_table_close(t);
    CHECK(close(fd) == 0);
    printf("contend ok: %ld grants\n", iterations);
    return 0;
}
