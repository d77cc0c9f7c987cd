/*
 * Shared names (shmlease_acquire_options.shared): two shared holders at once, each with
 * a lease handle and a token of its own, reported as SHMLEASE_KIND_SHARED with each
 * grant marked shared; an exclusive try is refused with SHMLEASE_HELD; an exclusive
 * acquirer in a forked child waits until both shared holders have released, keeping
 * new shared holders out meanwhile, and is then the one holder (not shared); the kind
 * is defended (SHMLEASE_WRONG_KIND for shared on a name with permits and permits on a
 * shared name, SHMLEASE_INVALID_OPTIONS for both at once); revoke takes every holder.
 * Usage: shared DIR.
 */
#define _DEFAULT_SOURCE
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"
#include "child.h"

/* Takes a grant of "cat": shared or exclusive, with `label`, waiting up to `timeout_ns`. */
static shmlease_status take(shmlease_table *t, bool shared, const char *label,
                            int64_t timeout_ns, shmlease_lease **out, shmlease_held_by *held) {
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o); /* zeroed: the defaults for every field not named */
    o.timeout_ns = timeout_ns;
    o.label = label;
    o.shared = shared;
    return shmlease_acquire_with(t, "cat", 30 * SEC, &o, out, held);
}

/* The live grants of "cat" (at most 65: 64 shared and an exclusive one waiting). */
static size_t grants_of(shmlease_table *t, shmlease_grant *grants) {
    size_t count = 0;
    OK(shmlease_get_grants(t, "cat", grants, 65, &count));
    return count;
}

/* Whether `fd` has something to read within `ms` milliseconds. */
static bool readable(int fd, int ms) {
    struct pollfd p = {fd, POLLIN, 0};
    int n = poll(&p, 1, ms);
    CHECK(n >= 0);
    return n == 1;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = create_table(argv[1], "shared.table", 256);
    const uint32_t me = (uint32_t)getpid();

    /* Two shared holders at once. */
    shmlease_lease *r1 = NULL, *r2 = NULL, *x = NULL;
    OK(take(t, true, "r1", 0, &r1, NULL));
    OK(take(t, true, "r2", 0, &r2, NULL));
    uint64_t t1 = token_of(r1), t2 = token_of(r2);
    CHECK(t2 > t1);

    shmlease_info info;
    OK(shmlease_get(t, "cat", &info));
    CHECK(info.kind == SHMLEASE_KIND_SHARED && info.permits == 64 && info.grants == 2);
    CHECK(info.state == SHMLEASE_STATE_HELD && info.token == t2 && !info.holder.known);
    CHECK(info.remaining_ns > 0 && info.expires_at_unix_ns > 0);
    shmlease_grant grants[65];
    memset(grants, 0, sizeof grants);
    CHECK(grants_of(t, grants) == 2);
    CHECK(grants[0].token == t1 && grants[1].token == t2);
    CHECK(grants[0].shared && grants[1].shared);
    CHECK(grants[0].holder.known && grants[0].holder.pid == me);
    CHECK(strcmp(grants[0].holder.label, "r1") == 0 && strcmp(grants[1].holder.label, "r2") == 0);

    /* An exclusive acquisition is refused while they hold it, naming one of them. */
    shmlease_held_by held;
    memset(&held, 0, sizeof held);
    EXPECT(shmlease_try_acquire(t, "cat", SEC, &x, &held), SHMLEASE_HELD);
    CHECK(x == NULL);
    CHECK(held.token == t1 || held.token == t2);
    CHECK(held.holder.known && held.holder.pid == me && held.remaining_ns > 0);
    memset(&held, 0, sizeof held);
    EXPECT(take(t, false, "x", 10 * (int64_t)MSEC, &x, &held), SHMLEASE_TIMED_OUT);
    CHECK(held.token == t1 || held.token == t2);
    CHECK(held.remaining_ns > 0); /* the shared holder's time left, from the table */
    CHECK(grants_of(t, grants) == 2); /* the exclusive acquirer that gave up left nothing */

    /* An exclusive acquirer in a child waits for both shared holders. */
    int up[2], down[2];
    pid_t kid = fork_piped(up, down);
    if (kid == 0) {
        shmlease_lease *mine = NULL;
        OK(shmlease_acquire(t, "cat", 30 * SEC, -1, "writer", &mine, NULL));
        uint64_t mine_token = token_of(mine);
        CHECK(write(up[1], &mine_token, sizeof mine_token) == (ssize_t)sizeof mine_token);
        wait_for_go(down);
        OK(shmlease_release(mine));
        shmlease_lease_free(mine);
        shmlease_table_close(t);
        exit(0);
    }

    /* Once it waits, its grant is listed beside theirs, and no new shared holder gets in. */
    for (int i = 0;; i++) {
        CHECK(i < 60 * 1000); /* a minute at most: the child would be stuck */
        if (grants_of(t, grants) == 3) break;
        usleep(1000);
    }
    CHECK(grants[0].shared && grants[1].shared && !grants[2].shared);
    CHECK(grants[2].holder.pid == (uint32_t)kid && strcmp(grants[2].holder.label, "writer") == 0);
    memset(&held, 0, sizeof held);
    EXPECT(take(t, true, "late", 0, &x, &held), SHMLEASE_HELD);
    CHECK(x == NULL && held.token == grants[2].token && held.holder.pid == (uint32_t)kid);
    CHECK(!readable(up[0], 0));

    /* One shared holder leaving is not enough; the second is. */
    OK(shmlease_release(r1));
    CHECK(!readable(up[0], 200));
    OK(shmlease_release(r2));
    uint64_t tw = 0;
    CHECK(read(up[0], &tw, sizeof tw) == (ssize_t)sizeof tw);
    CHECK(tw > t2); /* tokens grow across both kinds */

    /* The exclusive holder is the one holder, not shared; the name stays shared. */
    OK(shmlease_get(t, "cat", &info));
    CHECK(info.kind == SHMLEASE_KIND_SHARED && info.grants == 1 && info.token == tw);
    CHECK(info.holder.known && info.holder.pid == (uint32_t)kid && info.acquired_at_unix_ns > 0);
    CHECK(grants_of(t, grants) == 1);
    CHECK(grants[0].token == tw && !grants[0].shared && grants[0].holder.pid == (uint32_t)kid);
    memset(&held, 0, sizeof held);
    EXPECT(take(t, true, "late", 0, &x, &held), SHMLEASE_HELD);
    CHECK(held.token == tw && held.holder.pid == (uint32_t)kid);
    EXPECT(shmlease_try_acquire(t, "cat", SEC, &x, NULL), SHMLEASE_HELD);

    /* It releases; shared holders get in again. */
    close(down[1]);
    reap(kid, up);
    shmlease_lease *r3 = NULL, *r4 = NULL;
    OK(take(t, true, "r3", 0, &r3, NULL));
    OK(take(t, true, "r4", 0, &r4, NULL));
    CHECK(token_of(r3) > tw && token_of(r4) > token_of(r3));
    OK(shmlease_get(t, "cat", &info)); /* no exclusive holder: see the grants */
    CHECK(info.grants == 2 && info.token == token_of(r4) && !info.holder.known);

    /* The kind is defended. */
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.permits = 2;
    shmlease_lease *p = NULL;
    OK(shmlease_acquire_with(t, "pool", SEC, &o, &p, NULL));
    EXPECT(shmlease_acquire_with(t, "cat", SEC, &o, &x, NULL), SHMLEASE_WRONG_KIND);
    CHECK(strstr(shmlease_last_error(), "shared") != NULL);
    o.permits = 0;
    o.shared = true;
    EXPECT(shmlease_acquire_with(t, "pool", SEC, &o, &x, NULL), SHMLEASE_WRONG_KIND);
    CHECK(strstr(shmlease_last_error(), "permits = 2") != NULL);
    o.permits = 2;
    EXPECT(shmlease_acquire_with(t, "other", SEC, &o, &x, NULL), SHMLEASE_INVALID_OPTIONS);
    CHECK(x == NULL);
    OK(shmlease_get(t, "pool", &info));
    CHECK(info.kind == SHMLEASE_KIND_PERMITS && info.permits == 2);

    /* Revoke takes every holder; by token, one. */
    OK(shmlease_revoke_token(t, "cat", token_of(r3)));
    CHECK(grants_of(t, grants) == 1 && grants[0].token == token_of(r4));
    uint64_t revoked = 0;
    OK(shmlease_revoke(t, "cat", &revoked));
    CHECK(revoked == token_of(r4));
    CHECK(grants_of(t, grants) == 0);
    EXPECT(shmlease_renew(r3, SEC), SHMLEASE_LOST);
    EXPECT(shmlease_renew(r4, SEC), SHMLEASE_LOST);

    shmlease_lease_free(r1);
    shmlease_lease_free(r2);
    shmlease_lease_free(r3);
    shmlease_lease_free(r4);
    shmlease_lease_free(p);
    shmlease_table_close(t);
    puts("shared ok");
    return 0;
}
