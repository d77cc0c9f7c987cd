/*
 * What a child created by fork() may do with the handles it inherited (see the header):
 * with the table handle, everything; with a lease handle, only read it.
 *
 * The parent opens one table (fewer slots than names, so that names keep being bound
 * and unbound) and takes a lease, then forks children that take and release shared
 * and distinct names through the inherited table handle. Who is inside each name is
 * counted in a MAP_SHARED anonymous page: two at once is a violation, and so is a token
 * that does not grow. Each child also tries to renew, release and detach the parent's
 * lease through the inherited lease handle and by token, and must be refused with
 * SHMLEASE_BOUND_TO_PROCESS, changing nothing; the parent's lease stays valid and the
 * parent releases it at the end. Usage: fork DIR.
 */
#define _DEFAULT_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define CHILDREN 4
#define ROUNDS 300
#define SHARED_NAMES 4
#define OWN_NAMES 2
#define NAMES (SHARED_NAMES + CHILDREN * OWN_NAMES)

struct shared {
    int inside[NAMES];       /* holders of each name right now, by our own count */
    uint64_t last[NAMES];    /* last token seen granted for each name */
    int violations;          /* two inside at once, or a token that did not grow */
    int grants;
    int busy;                /* SHMLEASE_BUSY, retried */
};

static struct shared *sh;

static void name_of(int i, char *buf, size_t len) {
    if (i < SHARED_NAMES)
        snprintf(buf, len, "shared-%d", i);
    else
        snprintf(buf, len, "own-%d", i - SHARED_NAMES);
}

/* One child: rounds of take-and-release through the inherited table handle. */
static void worker(int me, shmlease_table *t, shmlease_lease *parents, const char *pname,
                   uint64_t ptoken) {
    /* The parent's lease: readable here, but not ours to change. */
    bool valid = false;
    uint64_t token = 0;
    OK(shmlease_lease_is_valid(parents, &valid));
    CHECK(valid);
    OK(shmlease_lease_token(parents, &token));
    CHECK(token == ptoken);
    EXPECT(shmlease_release(parents), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_renew(parents, SEC), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_lease_detach(parents, NULL), SHMLEASE_BOUND_TO_PROCESS);
    /* Refused, not "already released": the handle is unchanged by the refusals. */
    EXPECT(shmlease_release(parents), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_release_token(t, pname, ptoken), SHMLEASE_BOUND_TO_PROCESS);
    EXPECT(shmlease_renew_token(t, pname, ptoken, SEC, NULL), SHMLEASE_BOUND_TO_PROCESS);
    OK(shmlease_lease_is_valid(parents, &valid));
    CHECK(valid);
    shmlease_lease_free(parents); /* frees the child's copy; the lease stays */

    unsigned seed = (unsigned)me * 2654435761u + 1;
    for (int round = 0; round < ROUNDS; round++) {
        seed = seed * 1103515245u + 12345u;
        int pick = (int)((seed >> 16) % (SHARED_NAMES + OWN_NAMES));
        int i = pick < SHARED_NAMES ? pick : SHARED_NAMES + me * OWN_NAMES + (pick - SHARED_NAMES);
        char name[32];
        name_of(i, name, sizeof name);
        shmlease_lease *l = NULL;
        shmlease_status s = shmlease_try_acquire(t, name, 10 * SEC, &l, NULL);
        if (s == SHMLEASE_HELD) continue;
        if (s == SHMLEASE_BUSY) { /* retryable by its documentation */
            __atomic_fetch_add(&sh->busy, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        OK(s);
        OK(shmlease_lease_token(l, &token));
        if (__atomic_fetch_add(&sh->inside[i], 1, __ATOMIC_SEQ_CST) != 0)
            __atomic_fetch_add(&sh->violations, 1, __ATOMIC_SEQ_CST);
        if (token <= __atomic_load_n(&sh->last[i], __ATOMIC_SEQ_CST))
            __atomic_fetch_add(&sh->violations, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&sh->last[i], token, __ATOMIC_SEQ_CST);
        __atomic_fetch_add(&sh->grants, 1, __ATOMIC_SEQ_CST);
        sched_yield();
        __atomic_fetch_sub(&sh->inside[i], 1, __ATOMIC_SEQ_CST);
        OK(shmlease_release(l));
        shmlease_lease_free(l);
    }
    shmlease_table_close(t);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/fork.table", argv[1]);
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sh != MAP_FAILED);
    memset(sh, 0, sizeof *sh);

    shmlease_table_options opts = {8, 0, 0};
    shmlease_table *t = NULL;
    OK(shmlease_table_create(path, &opts, &t));
    shmlease_lease *mine = NULL;
    OK(shmlease_try_acquire(t, "parent", 30 * SEC, &mine, NULL));
    uint64_t ptoken = 0;
    OK(shmlease_lease_token(mine, &ptoken));

    pid_t kids[CHILDREN];
    fflush(NULL);
    for (int k = 0; k < CHILDREN; k++) {
        kids[k] = fork();
        CHECK(kids[k] >= 0);
        if (kids[k] == 0) {
            /* A failing parent leaves no child behind. */
            CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
            if (getppid() == 1) _exit(1);
            worker(k, t, mine, "parent", ptoken);
            exit(0);
        }
    }
    int failed = 0;
    for (int k = 0; k < CHILDREN; k++) {
        int ws = 0;
        CHECK(waitpid(kids[k], &ws, 0) == kids[k]);
        if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
            fprintf(stderr, "child %d failed (wait status %#x)\n", k, ws);
            failed = 1;
        }
    }
    CHECK(!failed);
    printf("grants %d, busy %d, violations %d\n", sh->grants, sh->busy, sh->violations);
    CHECK(sh->violations == 0);
    CHECK(sh->grants > 0);

    /* The parent's lease went through all that untouched: still its own, still live. */
    bool valid = false;
    OK(shmlease_lease_is_valid(mine, &valid));
    CHECK(valid);
    shmlease_info info;
    OK(shmlease_get(t, "parent", &info));
    CHECK(info.state == SHMLEASE_STATE_HELD && info.token == ptoken);
    CHECK(info.holder.known && info.holder.pid == (uint32_t)getpid());
    OK(shmlease_renew(mine, 30 * SEC));
    OK(shmlease_release(mine));
    shmlease_lease_free(mine);

    /* And the table is whole: every name can be taken again. */
    for (int i = 0; i < NAMES; i++) {
        char name[32];
        name_of(i, name, sizeof name);
        shmlease_lease *l = NULL;
        OK(shmlease_try_acquire(t, name, SEC, &l, NULL));
        shmlease_lease_free(l);
    }
    shmlease_table_close(t);
    OK(shmlease_table_remove(path));
    CHECK(munmap(sh, sizeof *sh) == 0);
    puts("fork ok");
    return 0;
}
