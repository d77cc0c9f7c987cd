/*
 * A worker that does a job only while it holds the lease on it.
 *
 *   worker [TABLE [JOB [STEPS]]]
 *
 * TABLE is a file path (contains '/') or a POSIX shared-memory name (default
 * "shmlease-demo"); JOB is the lease name (default "nightly-report"); STEPS is how many
 * 100 ms units of work to do (default 20). Start several at once: they take turns.
 *
 * Build, from the repository root (the libraries are where cargo put them: ask it, as
 * ffi/README.md shows):
 *   cargo build --release -p shmlease-ffi
 *   lib="$(cargo metadata --format-version 1 --no-deps |
 *          sed -n 's|.*"target_directory":"\([^"]*\)".*|\1|p')/release"
 *   cc -std=c99 -Wall ffi/examples/worker.c -Iinclude -L"$lib" -lshmlease \
 *      -Wl,-rpath,"$lib" -o worker
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "shmlease.h"

#define MS 1000000ull

static int fail(const char *what, shmlease_status status) {
    fprintf(stderr, "worker: %s: %s (%s)\n", what, shmlease_strerror((int)status),
            shmlease_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *location = argc > 1 ? argv[1] : "shmlease-demo";
    const char *job = argc > 2 ? argv[2] : "nightly-report";
    int steps = argc > 3 ? atoi(argv[3]) : 20;
    const uint64_t ttl = 1000 * MS; /* renewed every step, so 1 s is plenty */

    shmlease_table *table = NULL;
    shmlease_status s = shmlease_table_open_or_create(location, NULL, &table);
    if (s != SHMLEASE_OK) return fail("opening the lease table", s);

    /* Wait up to 10 s for the lease; if it stays held, say by whom. */
    shmlease_lease *lease = NULL;
    shmlease_held_by held;
    s = shmlease_acquire(table, job, ttl, 10000 * (int64_t)MS, "worker", &lease, &held);
    if (s == SHMLEASE_TIMED_OUT) {
        fprintf(stderr, "worker: %s is still held by pid %u (token %llu, %llu ms left)\n", job,
                held.holder.pid, (unsigned long long)held.token,
                (unsigned long long)(held.remaining_ns / MS));
        shmlease_table_close(table);
        return 2;
    }
    if (s != SHMLEASE_OK) {
        shmlease_table_close(table);
        return fail("acquiring", s);
    }

    uint64_t token = 0;
    shmlease_lease_token(lease, &token);
    printf("pid %ld holds %s with token %llu\n", (long)getpid(), job, (unsigned long long)token);

    int status = 0;
    for (int i = 0; i < steps; i++) {
        /* Before each piece of work: still ours? Then extend it for the next piece. */
        s = shmlease_renew(lease, ttl);
        if (s != SHMLEASE_OK) {
            status = fail("lease lost mid-job, stopping", s);
            break;
        }
        /* ... the real work goes here, passing `token` to anything that can fence ... */
        struct timespec step = {0, 100 * (long)MS};
        nanosleep(&step, NULL);
    }

    if (status == 0) {
        s = shmlease_release(lease);
        if (s != SHMLEASE_OK) status = fail("releasing", s);
        else printf("pid %ld done with %s\n", (long)getpid(), job);
    }
    shmlease_lease_free(lease); /* would also release, had we not */
    shmlease_table_close(table);
    return status;
}
