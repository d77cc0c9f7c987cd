/*
 * An interrupt callback that calls back into shmlease for other names (allowed; only
 * the waiting call's own name is off limits): each time it is asked it takes and
 * releases a lease on another name, reads a queue, and runs a nested wait of its own
 * (fair, with its own callback) for a third name that is held, which times out. None
 * of it deadlocks or disturbs the outer wait: a fair wait keeps its place and an
 * exclusive acquirer of a shared name keeps shared acquirers out, until the callback
 * says stop, and then the outer call returns SHMLEASE_INTERRUPTED with nothing left
 * behind. Usage: interrupt_reenter DIR.
 */
#define _DEFAULT_SOURCE
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "check.h"

struct reenter {
    shmlease_table *t;
    int calls;
    int stop_at;
    int nested_asked;
};

static bool nested_check(void *ctx) {
    int *asked = ctx;
    ++*asked;
    return false;
}

static bool reenter(void *ctx) {
    struct reenter *r = ctx;
    shmlease_lease *l = NULL;
    /* Another name: take it and give it back. */
    OK(shmlease_try_acquire(r->t, "other", 10 * SEC, &l, NULL));
    OK(shmlease_release(l));
    shmlease_lease_free(l);
    /* Read a queue. */
    shmlease_queued q[4];
    size_t count = 0;
    OK(shmlease_get_queue(r->t, "job", q, 4, &count));
    /* A nested wait of its own, fair and interruptible, for a name that stays held. */
    if (r->calls % 2 == 0) {
        shmlease_acquire_options o;
        memset(&o, 0, sizeof o);
        o.timeout_ns = 60 * (int64_t)MSEC;
        o.fair = true;
        o.interrupt = nested_check;
        o.interrupt_ctx = &r->nested_asked;
        shmlease_lease *n = NULL;
        EXPECT(shmlease_acquire_with(r->t, "third", 10 * SEC, &o, &n, NULL),
               SHMLEASE_TIMED_OUT);
        CHECK(n == NULL);
    }
    return ++r->calls >= r->stop_at;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = create_table(argv[1], "reenter.table", 64);
    shmlease_lease *held = NULL, *third = NULL, *reader = NULL, *l = NULL;
    OK(shmlease_try_acquire(t, "job", 30 * SEC, &held, NULL));
    OK(shmlease_try_acquire(t, "third", 30 * SEC, &third, NULL));

    /* A fair wait whose callback re-enters. */
    struct reenter r = {t, 0, 6, 0};
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.timeout_ns = -1;
    o.fair = true;
    o.interrupt = reenter;
    o.interrupt_ctx = &r;
    EXPECT(shmlease_acquire_with(t, "job", 30 * SEC, &o, &l, NULL), SHMLEASE_INTERRUPTED);
    CHECK(l == NULL && r.calls == 6 && r.nested_asked > 0);
    shmlease_queued q[4];
    size_t count = 9;
    OK(shmlease_get_queue(t, "job", q, 4, &count));
    CHECK(count == 0);
    OK(shmlease_get_queue(t, "third", q, 4, &count));
    CHECK(count == 0);

    /* The exclusive acquirer of a shared name, draining a reader, whose callback
     * re-enters: no shared grant while it waits, none left of it afterwards. */
    shmlease_acquire_options so;
    memset(&so, 0, sizeof so);
    so.shared = true;
    OK(shmlease_acquire_with(t, "db", 30 * SEC, &so, &reader, NULL));
    struct reenter w = {t, 0, 5, 0};
    o.fair = false;
    o.interrupt_ctx = &w;
    EXPECT(shmlease_acquire_with(t, "db", 30 * SEC, &o, &l, NULL), SHMLEASE_INTERRUPTED);
    CHECK(l == NULL && w.calls == 5);
    shmlease_lease *second = NULL;
    OK(shmlease_acquire_with(t, "db", 30 * SEC, &so, &second, NULL));
    OK(shmlease_release(second));
    shmlease_lease_free(second);

    bool valid = false;
    OK(shmlease_lease_is_valid(held, &valid));
    CHECK(valid);
    OK(shmlease_lease_is_valid(reader, &valid));
    CHECK(valid);
    shmlease_lease *all[3] = {held, third, reader};
    for (int i = 0; i < 3; i++) {
        OK(shmlease_release(all[i]));
        shmlease_lease_free(all[i]);
    }
    shmlease_table_close(t);
    printf("interrupt_reenter ok\n");
    return 0;
}
