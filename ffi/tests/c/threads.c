/*
 * The documented thread safety: one table handle used by many threads at once, and one
 * lease handle renewed, inspected and finally released by several threads at once.
 * Exclusivity among threads of one process holds too. Usage: threads DIR.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

#define THREADS 4
#define ROUNDS 200

static shmlease_table *table;
static shmlease_lease *shared_lease;
static int inside;      /* guarded by the lease itself */
static uint64_t last;   /* likewise: the last token granted */
static pthread_mutex_t check_mutex = PTHREAD_MUTEX_INITIALIZER;
static int released;    /* how many threads' release succeeded, under check_mutex */
static pthread_barrier_t done_sharing;

static void *contend(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        shmlease_lease *l = NULL;
        OK(shmlease_acquire(table, "mutex", 10 * SEC, -1, NULL, &l, NULL));
        uint64_t token = 0;
        OK(shmlease_lease_token(l, &token));
        CHECK(__atomic_fetch_add(&inside, 1, __ATOMIC_SEQ_CST) == 0);
        CHECK(token > __atomic_load_n(&last, __ATOMIC_SEQ_CST));
        __atomic_store_n(&last, token, __ATOMIC_SEQ_CST);
        CHECK(__atomic_fetch_sub(&inside, 1, __ATOMIC_SEQ_CST) == 1);
        OK(shmlease_release(l));
        shmlease_lease_free(l);
    }
    return NULL;
}

static void *share(void *arg) {
    (void)arg;
    for (int i = 0; i < ROUNDS; i++) {
        bool valid = false;
        uint64_t v = 0;
        OK(shmlease_renew(shared_lease, 10 * SEC));
        OK(shmlease_lease_is_valid(shared_lease, &valid));
        CHECK(valid);
        OK(shmlease_lease_remaining_ns(shared_lease, &v));
        CHECK(v > 0);
        OK(shmlease_lease_deadline_ns(shared_lease, &v));
        OK(shmlease_lease_token(shared_lease, &v));
    }
    pthread_barrier_wait(&done_sharing); /* then all release at once: one wins */
    shmlease_status s = shmlease_release(shared_lease);
    CHECK(s == SHMLEASE_OK || s == SHMLEASE_LOST);
    pthread_mutex_lock(&check_mutex);
    released += s == SHMLEASE_OK;
    pthread_mutex_unlock(&check_mutex);
    return NULL;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/threads.table", argv[1]);
    OK(shmlease_table_create(path, NULL, &table));
    pthread_t th[THREADS];

    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&th[i], NULL, contend, NULL) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(th[i], NULL) == 0);
    shmlease_info info;
    OK(shmlease_get(table, "mutex", &info));
    CHECK(info.token == last && info.state == SHMLEASE_STATE_FREE);

    OK(shmlease_try_acquire(table, "shared", 10 * SEC, &shared_lease, NULL));
    CHECK(pthread_barrier_init(&done_sharing, NULL, THREADS) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_create(&th[i], NULL, share, NULL) == 0);
    for (int i = 0; i < THREADS; i++) CHECK(pthread_join(th[i], NULL) == 0);
    CHECK(released == 1);
    CHECK(pthread_barrier_destroy(&done_sharing) == 0);
    shmlease_lease_free(shared_lease);
    OK(shmlease_get(table, "shared", &info));
    CHECK(info.state == SHMLEASE_STATE_FREE);

    shmlease_table_close(table);
    puts("threads ok");
    return 0;
}
