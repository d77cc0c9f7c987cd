/*
 * Names with permits (shmlease_acquire_options.permits = N): N holders at once, each
 * with a lease handle and a token of its own, and SHMLEASE_HELD for the next one,
 * naming the grant that ends first; shmlease_get and shmlease_get_grants show every
 * holder; the recorded N is defended (SHMLEASE_WRONG_KIND for another N, for an
 * exclusive acquisition, and for permits on a held exclusive lease); a forked child
 * takes a permit through the inherited table handle and the parent sees it as the
 * child's; a waiter gets a permit when one is released; revoke takes every permit.
 * Usage: permits DIR.
 */
#define _DEFAULT_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "child.h"

/* Takes a permit of "pool" (N = 2) with `label`, waiting up to `timeout_ns`. */
static shmlease_status take(shmlease_table *t, const char *label, uint64_t ttl_ns,
                            int64_t timeout_ns, shmlease_lease **out, shmlease_held_by *held) {
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.timeout_ns = timeout_ns;
    o.label = label;
    o.permits = 2;
    return shmlease_acquire_with(t, "pool", ttl_ns, &o, out, held);
}

static bool valid(shmlease_lease *l) {
    bool v = true;
    OK(shmlease_lease_is_valid(l, &v));
    return v;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = create_table(argv[1], "permits.table", 16);
    const uint32_t me = (uint32_t)getpid();

    /* Two permits, two holders: a's grant ends first. */
    shmlease_lease *a = NULL, *b = NULL, *c = NULL;
    OK(take(t, "p-a", 5 * SEC, 0, &a, NULL));
    OK(take(t, "p-b", 20 * SEC, 0, &b, NULL));
    uint64_t ta = token_of(a), tb = token_of(b);
    CHECK(tb > ta);

    /* A third is refused, told of the grant that frees first. */
    shmlease_held_by held;
    memset(&held, 0, sizeof held);
    EXPECT(take(t, "p-c", SEC, 0, &c, &held), SHMLEASE_HELD);
    CHECK(c == NULL);
    CHECK(held.token == ta);
    CHECK(held.remaining_ns > 0 && held.remaining_ns <= 5 * SEC);
    CHECK(held.holder.known && held.holder.pid == me && strcmp(held.holder.label, "p-a") == 0);
    EXPECT(take(t, "p-c", SEC, 1000, &c, &held), SHMLEASE_TIMED_OUT);

    /* The name as a whole. */
    shmlease_info info;
    OK(shmlease_get(t, "pool", &info));
    CHECK(info.kind == SHMLEASE_KIND_PERMITS && info.permits == 2 && info.grants == 2);
    CHECK(info.state == SHMLEASE_STATE_HELD);
    CHECK(info.token == tb);          /* the latest token taken */
    CHECK(!info.holder.known);        /* several holders: see the grants */
    CHECK(info.remaining_ns > 5 * SEC); /* the longest: b's */

    /* Each grant. */
    shmlease_grant grants[4];
    size_t count = 99;
    EXPECT(shmlease_get_grants(t, "pool", NULL, 0, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 2);
    memset(grants, 0, sizeof grants);
    EXPECT(shmlease_get_grants(t, "pool", grants, 1, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 2 && grants[0].token == ta && grants[1].token == 0);
    OK(shmlease_get_grants(t, "pool", grants, 4, &count));
    CHECK(count == 2);
    CHECK(grants[0].token == ta && grants[1].token == tb);
    CHECK(grants[0].slot != grants[1].slot);
    for (int i = 0; i < 2; i++) {
        CHECK(grants[i].holder.known && grants[i].holder.pid == me && !grants[i].holder.detached);
        CHECK(grants[i].remaining_ns > 0 && grants[i].expires_at_unix_ns > 0);
        CHECK(grants[i].acquired_at_unix_ns > 0);
    }
    CHECK(strcmp(grants[0].holder.label, "p-a") == 0 && strcmp(grants[1].holder.label, "p-b") == 0);
    CHECK(grants[0].remaining_ns < grants[1].remaining_ns);
    /* A name not known: no grants; an exclusive lease: its one holder. */
    OK(shmlease_get_grants(t, "never-was", grants, 4, &count));
    CHECK(count == 0);
    shmlease_lease *solo = NULL;
    OK(shmlease_try_acquire(t, "solo", 10 * SEC, &solo, NULL));
    OK(shmlease_get_grants(t, "solo", grants, 4, &count));
    CHECK(count == 1 && grants[0].token == token_of(solo) && grants[0].holder.pid == me);
    OK(shmlease_get(t, "solo", &info));
    CHECK(info.kind == SHMLEASE_KIND_EXCLUSIVE && info.permits == 1 && info.grants == 1);

    /* Every user must agree on N. */
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.permits = 3;
    EXPECT(shmlease_acquire_with(t, "pool", SEC, &o, &c, NULL), SHMLEASE_WRONG_KIND);
    CHECK(strstr(shmlease_last_error(), "permits = 2") != NULL);
    o.permits = 1;
    EXPECT(shmlease_acquire_with(t, "pool", SEC, &o, &c, NULL), SHMLEASE_WRONG_KIND);
    EXPECT(shmlease_acquire_with(t, "pool", SEC, NULL, &c, NULL), SHMLEASE_WRONG_KIND);
    EXPECT(shmlease_try_acquire(t, "pool", SEC, &c, NULL), SHMLEASE_WRONG_KIND);
    EXPECT(shmlease_acquire(t, "pool", SEC, 1000, NULL, &c, NULL), SHMLEASE_WRONG_KIND);
    o.permits = 2;
    EXPECT(shmlease_acquire_with(t, "solo", SEC, &o, &c, NULL), SHMLEASE_WRONG_KIND);
    CHECK(strstr(shmlease_last_error(), "exclusive") != NULL);
    o.permits = 256;
    EXPECT(shmlease_acquire_with(t, "other", SEC, &o, &c, NULL), SHMLEASE_INVALID_OPTIONS);
    CHECK(c == NULL);
    OK(shmlease_release(solo));
    shmlease_lease_free(solo);

    /* A permit released is free for the next holder: a forked child, through the table
     * handle it inherited. */
    OK(shmlease_release(b));
    shmlease_lease_free(b);
    int up[2], down[2];
    pid_t kid = fork_piped(up, down);
    if (kid == 0) {
        shmlease_lease *mine = NULL;
        OK(take(t, "kid", 30 * SEC, 0, &mine, NULL));
        uint64_t mine_token = token_of(mine);
        CHECK(write(up[1], &mine_token, sizeof mine_token) == (ssize_t)sizeof mine_token);
        wait_for_go(down);
        usleep(100 * 1000);               /* the parent is waiting by now, most likely */
        OK(shmlease_release(mine));
        shmlease_lease_free(mine);
        shmlease_table_close(t);
        exit(0);
    }
    uint64_t tk = 0;
    CHECK(read(up[0], &tk, sizeof tk) == (ssize_t)sizeof tk);
    CHECK(tk > tb);
    OK(shmlease_get_grants(t, "pool", grants, 4, &count));
    CHECK(count == 2 && grants[0].token == ta && grants[1].token == tk);
    CHECK(grants[1].holder.pid == (uint32_t)kid && strcmp(grants[1].holder.label, "kid") == 0);
    EXPECT(take(t, "p-c", SEC, 0, &c, NULL), SHMLEASE_HELD);

    /* A waiter gets the child's permit once the child releases it. */
    close(down[1]);
    OK(take(t, "p-d", 30 * SEC, 60 * (int64_t)SEC, &c, NULL));
    uint64_t tc = token_of(c);
    CHECK(tc > tk);
    reap(kid, up);
    OK(shmlease_get_grants(t, "pool", grants, 4, &count));
    CHECK(count == 2 && grants[0].token == ta && grants[1].token == tc);
    CHECK(grants[1].holder.pid == me);

    /* Renewing one permit leaves the other alone. */
    OK(shmlease_renew(a, 60 * SEC));
    OK(shmlease_get_grants(t, "pool", grants, 4, &count));
    CHECK(count == 2 && grants[0].remaining_ns > 30 * SEC && grants[1].remaining_ns <= 30 * SEC);

    /* Revoking one permit by token, then every permit. */
    OK(shmlease_revoke_token(t, "pool", ta));
    CHECK(!valid(a) && valid(c));
    EXPECT(shmlease_revoke_token(t, "pool", ta), SHMLEASE_LOST);
    EXPECT(shmlease_renew(a, SEC), SHMLEASE_LOST);
    shmlease_lease *e = NULL;
    OK(take(t, "p-e", 30 * SEC, 0, &e, NULL));
    uint64_t te = token_of(e);
    CHECK(te > tc);
    uint64_t revoked = 0;
    OK(shmlease_revoke(t, "pool", &revoked));
    CHECK(revoked == te); /* the latest revoked */
    CHECK(!valid(c) && !valid(e));
    EXPECT(shmlease_renew(c, SEC), SHMLEASE_LOST);
    OK(shmlease_get(t, "pool", &info));
    CHECK(info.kind == SHMLEASE_KIND_PERMITS && info.grants == 0);
    CHECK(info.state != SHMLEASE_STATE_HELD);
    OK(shmlease_get_grants(t, "pool", grants, 4, &count));
    CHECK(count == 0);
    OK(shmlease_revoke(t, "pool", &revoked));
    CHECK(revoked == 0);

    shmlease_lease_free(a);
    shmlease_lease_free(c);
    shmlease_lease_free(e);
    shmlease_table_close(t);
    puts("permits ok");
    return 0;
}
