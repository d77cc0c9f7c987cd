/*
 * Leases in storage the caller provides (shmlease_lease_storage, shmlease_try_acquire_in,
 * shmlease_acquire_with_in): no allocation per lease, under the rules of the header.
 *
 * - the ABI: the storage's size and alignment are the header's constants and the
 *   library's (the header checks them at compile time too), in a struct and an array;
 * - the life of a storage: zeroed, filled, used as any lease handle, released, refilled
 *   (the token grows); ended with shmlease_lease_free, which releases a lease still
 *   held and empties the storage;
 * - misuse gets a clear status and changes nothing: release twice (SHMLEASE_LOST),
 *   renew after release (SHMLEASE_LOST), any call on an emptied storage and filling a
 *   storage that still holds a lease or holds garbage (SHMLEASE_INVALID_ARGUMENT);
 * - every argument off shmlease_try_acquire_in's fast path (ASCII name, vacant storage,
 *   granted) takes the checked path and gets what a heap try gets: a UTF-8 name that is
 *   not ASCII is granted; invalid UTF-8, an empty name, 65 bytes, a TTL out of range
 *   are refused with their status and last error, and the storage stays empty;
 * - two threads releasing one handle at once: exactly one succeeds, every round;
 * - options (permits, waiting), detaching, and heap handles beside storage ones;
 * - fork after acquire: the child may read the parent's lease in its copy of the
 *   storage, but renew, release and detach are refused (SHMLEASE_BOUND_TO_PROCESS), its
 *   storage cannot be refilled while it holds the parent's lease, and
 *   shmlease_lease_free empties the child's copy without releasing; the parent still
 *   holds its lease afterwards and releases it.
 * Usage: storage DIR.
 */
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define INVALID(expr) EXPECT(expr, SHMLEASE_INVALID_ARGUMENT)

/* A storage inside a struct of the caller's, after a char: aligned by the compiler. */
struct job {
    char tag;
    shmlease_lease_storage slot;
    int id;
};

static void abi(void) {
    CHECK(sizeof(shmlease_lease_storage) == SHMLEASE_LEASE_STORAGE_SIZE);
    CHECK(shmlease_lease_storage_size() == SHMLEASE_LEASE_STORAGE_SIZE);
    CHECK(shmlease_lease_storage_align() == SHMLEASE_LEASE_STORAGE_ALIGN);
    CHECK(offsetof(struct job, slot) % SHMLEASE_LEASE_STORAGE_ALIGN == 0);
    struct probe {
        char c;
        shmlease_lease_storage s;
    };
    CHECK(offsetof(struct probe, s) == SHMLEASE_LEASE_STORAGE_ALIGN);
    shmlease_lease_storage many[3];
    CHECK(sizeof many == 3 * SHMLEASE_LEASE_STORAGE_SIZE);
}

/* Two threads release one handle at the same moment. */
struct race {
    shmlease_lease *lease;
    pthread_barrier_t *start;
    shmlease_status got;
};

static void *release_racer(void *arg) {
    struct race *r = arg;
    pthread_barrier_wait(r->start);
    r->got = shmlease_release(r->lease);
    return NULL;
}

static void racing_releases(shmlease_table *t) {
    shmlease_lease_storage st = {0};
    pthread_barrier_t start;
    CHECK(pthread_barrier_init(&start, NULL, 2) == 0);
    for (int round = 0; round < 200; round++) {
        shmlease_lease *l = NULL;
        OK(shmlease_try_acquire_in(t, "raced", 10 * SEC, &st, &l, NULL));
        struct race a = {l, &start, SHMLEASE_INTERNAL}, b = {l, &start, SHMLEASE_INTERNAL};
        pthread_t ta, tb;
        CHECK(pthread_create(&ta, NULL, release_racer, &a) == 0);
        CHECK(pthread_create(&tb, NULL, release_racer, &b) == 0);
        CHECK(pthread_join(ta, NULL) == 0 && pthread_join(tb, NULL) == 0);
        bool one_ok = (a.got == SHMLEASE_OK) != (b.got == SHMLEASE_OK);
        bool other_lost = a.got == SHMLEASE_LOST || b.got == SHMLEASE_LOST;
        if (!one_ok || !other_lost) {
            fprintf(stderr, "round %d: releases returned %s and %s\n", round,
                    shmlease_status_name((int)a.got), shmlease_status_name((int)b.got));
            exit(1);
        }
    }
    CHECK(pthread_barrier_destroy(&start) == 0);
}

/* shmlease_try_acquire_in off its fast path: what is granted, what is refused. */
static void off_the_fast_path(shmlease_table *t) {
    shmlease_lease_storage st = {0};
    shmlease_lease *l = NULL;
    shmlease_info info;
    uint64_t token = 0;
    /* Not ASCII, but UTF-8: granted, under its own name. */
    OK(shmlease_try_acquire_in(t, "caf\xc3\xa9", 10 * SEC, &st, &l, NULL));
    CHECK(l == (shmlease_lease *)&st);
    OK(shmlease_get(t, "caf\xc3\xa9", &info));
    CHECK(info.state == SHMLEASE_STATE_HELD);
    OK(shmlease_release(l));
    /* 64 bytes is the longest name; one more is refused. */
    char name[66];
    memset(name, 'n', 64);
    name[64] = '\0';
    OK(shmlease_try_acquire_in(t, name, 10 * SEC, &st, &l, NULL));
    OK(shmlease_release(l));
    name[64] = 'n';
    name[65] = '\0';
    struct {
        const char *name;
        uint64_t ttl_ns;
        shmlease_status want;
        const char *says;
    } refused[] = {
        {"\xff\xfe", 10 * SEC, SHMLEASE_INVALID_NAME, "UTF-8"},
        {"", 10 * SEC, SHMLEASE_INVALID_NAME, "empty"},
        {name, 10 * SEC, SHMLEASE_INVALID_NAME, "65 bytes"},
        {"ttl", 0, SHMLEASE_INVALID_TTL, "TTL"},
        {"ttl", UINT64_MAX, SHMLEASE_INVALID_TTL, "TTL"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        shmlease_lease_storage empty = {0};
        l = NULL;
        EXPECT(shmlease_try_acquire_in(t, refused[i].name, refused[i].ttl_ns, &empty, &l, NULL),
               refused[i].want);
        if (strstr(shmlease_last_error(), refused[i].says) == NULL) {
            fprintf(stderr, "case %zu: last error \"%s\" does not say \"%s\"\n", i,
                    shmlease_last_error(), refused[i].says);
            exit(1);
        }
        CHECK(l == NULL);
        INVALID(shmlease_lease_token((shmlease_lease *)&empty, &token)); /* still empty */
        CHECK(strstr(shmlease_last_error(), "empty") != NULL);
    }
    /* A refusal fills held_by, leaves the storage empty and says who holds the name. */
    shmlease_lease_storage mine = {0};
    OK(shmlease_try_acquire_in(t, "taken", 10 * SEC, &mine, &l, NULL));
    shmlease_lease_storage empty = {0};
    shmlease_lease *l2 = NULL;
    shmlease_held_by held;
    memset(&held, 0, sizeof held);
    OK(shmlease_lease_token(l, &token));
    EXPECT(shmlease_try_acquire_in(t, "taken", SEC, &empty, &l2, &held), SHMLEASE_HELD);
    CHECK(l2 == NULL && held.token == token && held.remaining_ns > 0);
    CHECK(held.holder.pid == (uint32_t)getpid());
    CHECK(strstr(shmlease_last_error(), "held") != NULL);
    INVALID(shmlease_lease_token((shmlease_lease *)&empty, &token));
    OK(shmlease_release(l));
}

/* In a child forked while the parent holds `parents` (in `st`, its copy of the storage). */
static void child(shmlease_table *t, shmlease_lease_storage *st, shmlease_lease *parents,
                  uint64_t ptoken) {
    CHECK(parents == (shmlease_lease *)st);
    bool valid = false;
    uint64_t token = 0, left = 0;
    OK(shmlease_lease_is_valid(parents, &valid));
    CHECK(valid);
    OK(shmlease_lease_token(parents, &token));
    CHECK(token == ptoken);
    OK(shmlease_lease_remaining_ns(parents, &left));
    CHECK(left > 0);
    EXPECT(shmlease_release(parents), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_renew(parents, SEC), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_lease_detach(parents, NULL), SHMLEASE_BOUND_TO_PROCESS);
    /* Refused, not "already released": the refusals changed nothing. */
    EXPECT(shmlease_release(parents), SHMLEASE_BOUND_TO_PROCESS);
    OK(shmlease_lease_is_valid(parents, &valid));
    CHECK(valid);
    /* The storage holds the parent's lease: it cannot be refilled as it is... */
    shmlease_lease *l = NULL;
    INVALID(shmlease_try_acquire_in(t, "child", SEC, st, &l, NULL));
    CHECK(l == NULL);
    /* ...and the parent's name is held, by the parent, for this child too. */
    shmlease_lease_storage mine = {0};
    shmlease_held_by held;
    EXPECT(shmlease_try_acquire_in(t, "parent", SEC, &mine, &l, &held), SHMLEASE_HELD);
    CHECK(held.token == ptoken && held.holder.pid == (uint32_t)getppid());
    /* Ending the child's copy leaves the lease alone; the storage is the child's again. */
    shmlease_lease_free(parents);
    INVALID(shmlease_lease_token(parents, &token));
    OK(shmlease_try_acquire_in(t, "child", SEC, st, &l, NULL));
    OK(shmlease_release(l));
    shmlease_table_close(t);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    abi();
    char path[4096];
    snprintf(path, sizeof path, "%s/storage.table", argv[1]);
    shmlease_table *t = NULL;
    OK(shmlease_table_create(path, NULL, &t));

    /* Fill, use, release, release again, refill. */
    shmlease_lease_storage st = {0};
    shmlease_lease *l = NULL;
    OK(shmlease_try_acquire_in(t, "job", 10 * SEC, &st, &l, NULL));
    CHECK(l == (shmlease_lease *)&st);
    uint64_t token = 0, t2 = 0, left = 0;
    bool valid = false;
    OK(shmlease_lease_token(l, &token));
    OK(shmlease_lease_is_valid(l, &valid));
    CHECK(valid);
    OK(shmlease_renew(l, 20 * SEC));
    OK(shmlease_lease_remaining_ns(l, &left));
    CHECK(left > 10 * SEC);
    shmlease_lease_storage other = {0};
    shmlease_lease *l2 = NULL;
    shmlease_held_by held;
    EXPECT(shmlease_try_acquire_in(t, "job", SEC, &other, &l2, &held), SHMLEASE_HELD);
    CHECK(l2 == NULL && held.token == token);
    /* Refilling a storage that holds a live lease is refused; the lease is unharmed. */
    INVALID(shmlease_try_acquire_in(t, "other", SEC, &st, &l2, NULL));
    CHECK(l2 == NULL);
    OK(shmlease_lease_is_valid(l, &valid));
    CHECK(valid);
    OK(shmlease_release(l));
    EXPECT(shmlease_release(l), SHMLEASE_LOST);         /* double release */
    EXPECT(shmlease_renew(l, SEC), SHMLEASE_LOST);      /* use after release */
    EXPECT(shmlease_lease_detach(l, NULL), SHMLEASE_LOST);
    OK(shmlease_lease_is_valid(l, &valid));
    CHECK(!valid);
    OK(shmlease_lease_token(l, &t2));                   /* still readable */
    CHECK(t2 == token);
    OK(shmlease_try_acquire_in(t, "job", 10 * SEC, &st, &l, NULL)); /* refilled directly */
    OK(shmlease_lease_token(l, &t2));
    CHECK(t2 > token);

    /* shmlease_lease_free releases a lease still held and empties the storage. */
    shmlease_lease_free(l);
    shmlease_info info;
    OK(shmlease_get(t, "job", &info));
    CHECK(info.state != SHMLEASE_STATE_HELD);
    INVALID(shmlease_release(l));
    INVALID(shmlease_renew(l, SEC));
    INVALID(shmlease_lease_token(l, &token));
    INVALID(shmlease_lease_is_valid(l, &valid));
    CHECK(strstr(shmlease_last_error(), "empty") != NULL);
    shmlease_lease_free(l); /* an empty storage: nothing to do */
    OK(shmlease_try_acquire_in(t, "job", SEC, &st, &l, NULL));
    OK(shmlease_release(l));

    /* Garbage is refused until the storage is initialised. */
    shmlease_lease_storage junk;
    memset(&junk, 0xab, sizeof junk);
    INVALID(shmlease_try_acquire_in(t, "junk", SEC, &junk, &l2, NULL));
    INVALID(shmlease_release((shmlease_lease *)&junk));
    shmlease_lease_free((shmlease_lease *)&junk); /* not a handle: left alone */
    CHECK(strstr(shmlease_last_error(), "shmlease_lease_storage_init") != NULL);
    OK(shmlease_lease_storage_init(&junk));
    OK(shmlease_try_acquire_in(t, "junk", SEC, &junk, &l2, NULL));
    OK(shmlease_release(l2));

    /* Storages in an array, with permits, waiting, beside a heap handle. */
    struct job jobs[3];
    memset(jobs, 0, sizeof jobs);
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.permits = 2;
    shmlease_lease *p[3] = {NULL, NULL, NULL};
    OK(shmlease_acquire_with_in(t, "gpus", 10 * SEC, &o, &jobs[0].slot, &p[0], NULL));
    OK(shmlease_acquire_with_in(t, "gpus", 10 * SEC, &o, &jobs[1].slot, &p[1], NULL));
    o.timeout_ns = 1000000; /* 1 ms */
    EXPECT(shmlease_acquire_with_in(t, "gpus", SEC, &o, &jobs[2].slot, &p[2], &held),
           SHMLEASE_TIMED_OUT);
    CHECK(p[2] == NULL);
    shmlease_lease *heap = NULL;
    OK(shmlease_try_acquire(t, "heap", 10 * SEC, &heap, NULL));
    OK(shmlease_release(p[0]));
    OK(shmlease_acquire_with_in(t, "gpus", 10 * SEC, &o, &jobs[2].slot, &p[2], NULL));
    shmlease_lease_free(p[1]);
    shmlease_lease_free(p[2]);
    OK(shmlease_release(heap));
    shmlease_lease_free(heap);

    /* Detached: the storage may be refilled; the grant lives on by name and token. */
    OK(shmlease_try_acquire_in(t, "detached", 10 * SEC, &st, &l, NULL));
    OK(shmlease_lease_token(l, &token));
    OK(shmlease_lease_detach(l, NULL));
    OK(shmlease_try_acquire_in(t, "job", SEC, &st, &l, NULL));
    OK(shmlease_release(l));
    OK(shmlease_release_token(t, "detached", token));

    off_the_fast_path(t);
    racing_releases(t);

    /* Fork after acquire. */
    OK(shmlease_try_acquire_in(t, "parent", 30 * SEC, &st, &l, NULL));
    uint64_t ptoken = 0;
    OK(shmlease_lease_token(l, &ptoken));
    fflush(NULL);
    pid_t kid = fork();
    CHECK(kid >= 0);
    if (kid == 0) {
        CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
        if (getppid() == 1) _exit(1);
        child(t, &st, l, ptoken);
        exit(0);
    }
    int ws = 0;
    CHECK(waitpid(kid, &ws, 0) == kid);
    CHECK(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    OK(shmlease_lease_is_valid(l, &valid));
    CHECK(valid);
    OK(shmlease_get(t, "parent", &info));
    CHECK(info.state == SHMLEASE_STATE_HELD && info.token == ptoken);
    CHECK(info.holder.known && info.holder.pid == (uint32_t)getpid());
    OK(shmlease_renew(l, 30 * SEC));
    OK(shmlease_release(l));
    EXPECT(shmlease_release(l), SHMLEASE_LOST);

    shmlease_table_close(t);
    OK(shmlease_table_remove(path));
    puts("storage ok");
    return 0;
}
