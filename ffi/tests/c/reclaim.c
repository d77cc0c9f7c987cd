/*
 * Waits for a lease whose holder was killed, takes it, and checks that its token is
 * larger than the dead holder's: the C side of "kill -9 of a Rust holder".
 * Usage: reclaim TABLE NAME DEAD_HOLDERS_TOKEN
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 4);
    uint64_t dead = strtoull(argv[3], NULL, 10);
    shmlease_table *t = NULL;
    shmlease_lease *l = NULL;
    OK(shmlease_table_open(argv[1], NULL, &t));
    OK(shmlease_acquire(t, argv[2], 10 * SEC, -1, "reclaim", &l, NULL));
    uint64_t token = 0;
    OK(shmlease_lease_token(l, &token));
    CHECK(token > dead);
    OK(shmlease_release(l));
    shmlease_lease_free(l);
    shmlease_table_close(t);
    puts("reclaim ok");
    return 0;
}
