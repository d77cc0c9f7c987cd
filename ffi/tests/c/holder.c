/*
 * Takes a lease and holds it until killed: the victim of the kill -9 test. Prints
 * "holding TOKEN" once the lease is held, then sleeps forever.
 * Usage: holder TABLE NAME TTL_MS
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <unistd.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 4);
    shmlease_table *t = NULL;
    shmlease_lease *l = NULL;
    OK(shmlease_table_open(argv[1], NULL, &t));
    OK(shmlease_try_acquire(t, argv[2], (uint64_t)atol(argv[3]) * MSEC, &l, NULL));
    uint64_t token = 0;
    OK(shmlease_lease_token(l, &token));
    printf("holding %llu\n", (unsigned long long)token);
    fflush(stdout);
    for (;;) pause();
}
