/*
 * The C fast path's loop, for c_programs.rs's no_system_call test, which runs it under
 * strace -f -c with $SHMLEASE_IT_LOOPS rounds (default 1000) and compares the counts:
 * once the name is bound, a try into caller storage with its release, a try into a
 * heap handle with its release and free, and a renew make no system call. Prints
 * "no_syscall ok". Usage: no_syscall DIR.
 */
#define _DEFAULT_SOURCE
#include <stdint.h>

#include "check.h"

int main(int argc, char **argv) {
    CHECK(argc == 2);
    const char *env = getenv("SHMLEASE_IT_LOOPS");
    long loops = env ? atol(env) : 1000;
    shmlease_table *t = create_table(argv[1], "no_syscall.table", 64);
    shmlease_lease_storage storage;
    OK(shmlease_lease_storage_init(&storage));
    shmlease_lease *l = NULL;
    /* Warm-up: the name bound, the identity cached, the clock's tick known. */
    OK(shmlease_try_acquire_in(t, "fast", 600 * SEC, &storage, &l, NULL));
    OK(shmlease_release(l));
    for (long i = 0; i < loops; i++) {
        OK(shmlease_try_acquire_in(t, "fast", 600 * SEC, &storage, &l, NULL));
        OK(shmlease_renew(l, 600 * SEC));
        OK(shmlease_release(l));
        shmlease_lease *h = NULL;
        OK(shmlease_try_acquire(t, "fast", 600 * SEC, &h, NULL));
        OK(shmlease_release(h));
        shmlease_lease_free(h);
    }
    shmlease_lease_free(l);
    shmlease_table_close(t);
    printf("no_syscall ok\n");
    return 0;
}
