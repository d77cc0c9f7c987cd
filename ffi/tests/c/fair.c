/*
 * Fair acquisition (shmlease_acquire_options.fair): three forked children wait in line
 * for a held name, one after another (each once shmlease_get_queue shows it at the back
 * of the line), and are granted it in that order when the holder releases; the queue
 * reads in ticket order with each waiter's pid, and shmlease_get counts it; a fair
 * acquisition that does not wait is refused with SHMLEASE_HELD naming the first in
 * line, while an unfair one is not told about the line; the queue is empty once all
 * are served; fair combines with shared and permits. Usage: fair DIR.
 */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

#define WAITERS 3

/* A fair acquisition of `name` waiting up to `timeout_ns` (negative: forever). */
static shmlease_status take_fair(shmlease_table *t, const char *name, int64_t timeout_ns,
                                 shmlease_lease **out, shmlease_held_by *held) {
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o); /* zeroed: the defaults for every field not named */
    o.timeout_ns = timeout_ns;
    o.fair = true;
    return shmlease_acquire_with(t, name, 30 * SEC, &o, out, held);
}

/* The places in line for "q" (at most 127). */
static size_t queue_of(shmlease_table *t, shmlease_queued *queue) {
    size_t count = 0;
    OK(shmlease_get_queue(t, "q", queue, 127, &count));
    return count;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = create_table(argv[1], "fair.table", 256);

    /* Nobody waits: a fair try is an ordinary one. */
    shmlease_lease *holder = NULL, *x = NULL;
    OK(take_fair(t, "q", 0, &holder, NULL));
    shmlease_queued queue[127];
    memset(queue, 0, sizeof queue);
    CHECK(queue_of(t, queue) == 0);

    /* Three children queue for it, one after another. Each, once granted, writes its
     * index to `order`, then releases. */
    int order[2];
    CHECK(pipe(order) == 0);
    pid_t kids[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        fflush(NULL);
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            shmlease_lease *mine = NULL;
            char c = (char)('0' + i);
            close(order[0]);
            CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0); /* a failing parent leaves no child */
            OK(take_fair(t, "q", -1, &mine, NULL));
            CHECK(write(order[1], &c, 1) == 1);
            OK(shmlease_release(mine));
            shmlease_lease_free(mine);
            shmlease_lease_free(holder); /* the parent's handle, copied by fork: no release */
            shmlease_table_close(t);
            exit(0);
        }
        for (int n = 0;; n++) {
            CHECK(n < 60 * 1000); /* a minute at most: the child would be stuck */
            size_t count = queue_of(t, queue);
            if (count == (size_t)i + 1 && queue[i].holder.pid == (uint32_t)kids[i]) break;
            CHECK(count <= (size_t)i + 1);
            usleep(1000);
        }
    }
    close(order[1]);

    /* The line, first first: tickets growing, each place its waiter's. */
    CHECK(queue_of(t, queue) == WAITERS);
    for (int i = 0; i < WAITERS; i++) {
        CHECK(queue[i].holder.known && !queue[i].holder.detached);
        CHECK(queue[i].holder.pid == (uint32_t)kids[i]);
        CHECK(strcmp(queue[i].holder.label, "") == 0);
        CHECK(queue[i].remaining_ns > 0 && queue[i].expires_at_unix_ns > 0);
        CHECK(i == 0 || queue[i].ticket > queue[i - 1].ticket);
    }
    shmlease_info info;
    OK(shmlease_get(t, "q", &info));
    CHECK(info.queued == WAITERS && info.grants == 1 && info.state == SHMLEASE_STATE_HELD);
    size_t count = 0;
    EXPECT(shmlease_get_queue(t, "q", NULL, 0, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == WAITERS);
    shmlease_queued one[1];
    EXPECT(shmlease_get_queue(t, "q", one, 1, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == WAITERS && one[0].ticket == queue[0].ticket);
    OK(shmlease_get_queue(t, "nobody", one, 1, &count));
    CHECK(count == 0);

    /* A fair try does not pass them: refused, naming the first in line. */
    shmlease_held_by held;
    memset(&held, 0, sizeof held);
    EXPECT(take_fair(t, "q", 0, &x, &held), SHMLEASE_HELD);
    CHECK(x == NULL && held.token == queue[0].ticket);
    CHECK(held.holder.known && held.holder.pid == (uint32_t)kids[0] && held.remaining_ns > 0);
    /* Waiting a little and giving up leaves the line as it was. */
    EXPECT(take_fair(t, "q", 20 * (int64_t)MSEC, &x, &held), SHMLEASE_TIMED_OUT);
    CHECK(x == NULL && queue_of(t, queue) == WAITERS);
    CHECK(queue[0].holder.pid == (uint32_t)kids[0] && queue[2].holder.pid == (uint32_t)kids[2]);
    /* An unfair try ignores the line: refused because the name is held, by its holder. */
    uint64_t holder_token = 0;
    OK(shmlease_lease_token(holder, &holder_token));
    memset(&held, 0, sizeof held);
    EXPECT(shmlease_try_acquire(t, "q", SEC, &x, &held), SHMLEASE_HELD);
    CHECK(held.token == holder_token && held.holder.pid == (uint32_t)getpid());

    /* The holder lets go: they are granted it in line order. */
    OK(shmlease_release(holder));
    char got[WAITERS + 1] = {0};
    for (int i = 0; i < WAITERS; i++) CHECK(read(order[0], &got[i], 1) == 1);
    CHECK(strcmp(got, "012") == 0);
    for (int i = 0; i < WAITERS; i++) {
        int ws = 0;
        CHECK(waitpid(kids[i], &ws, 0) == kids[i] && WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    }
    close(order[0]);
    CHECK(queue_of(t, queue) == 0);
    OK(shmlease_get(t, "q", &info));
    CHECK(info.queued == 0);

    /* Fair combines with the other options. */
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.fair = true;
    o.shared = true;
    shmlease_lease *r = NULL, *p = NULL;
    OK(shmlease_acquire_with(t, "cat", SEC, &o, &r, NULL));
    o.shared = false;
    o.permits = 2;
    OK(shmlease_acquire_with(t, "pool", SEC, &o, &p, NULL));
    OK(shmlease_get(t, "cat", &info));
    CHECK(info.kind == SHMLEASE_KIND_SHARED && info.grants == 1);
    OK(shmlease_get(t, "pool", &info));
    CHECK(info.kind == SHMLEASE_KIND_PERMITS && info.permits == 2);

    shmlease_lease_free(r);
    shmlease_lease_free(p);
    shmlease_lease_free(holder);
    shmlease_table_close(t);
    puts("fair ok");
    return 0;
}
