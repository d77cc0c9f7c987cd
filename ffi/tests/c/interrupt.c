/*
 * Interruptible waits (shmlease_acquire_options.interrupt): the callback gets its
 * context, is asked while the call waits and never by a call that does not wait; its
 * true ends the wait with SHMLEASE_INTERRUPTED and nothing granted. The pattern C
 * programs have: a forked child waits (fair, so that its place in line shows) with a
 * callback that reads a flag its SIGUSR1 handler sets; the signal ends its wait, and
 * its place is gone from the queue while the holder keeps the lease.
 * Usage: interrupt DIR.
 */
#define _DEFAULT_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* Counts its calls in *ctx; says stop from the third on. */
static bool third_time(void *ctx) {
    int *calls = ctx;
    return ++*calls >= 3;
}

static volatile sig_atomic_t stop_requested = 0;

static void on_usr1(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Says stop once SIGUSR1 has come; ctx must be the flag's address. */
static bool signalled(void *ctx) {
    CHECK(ctx == (void *)&stop_requested);
    return stop_requested != 0;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* How many wait in line for "job", and whether `pid` is one of them. */
static size_t queued(shmlease_table *t, uint32_t pid, bool *found) {
    shmlease_queued q[8];
    size_t count = 0;
    OK(shmlease_get_queue(t, "job", q, 8, &count));
    *found = false;
    for (size_t i = 0; i < count && i < 8; i++) {
        if (q[i].holder.known && q[i].holder.pid == pid) *found = true;
    }
    return count;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    shmlease_table *t = create_table(argv[1], "interrupt.table", 64);

    shmlease_lease *held = NULL, *l = NULL;
    OK(shmlease_try_acquire(t, "job", 30 * SEC, &held, NULL));

    /* In this process: asked with its context while waiting, until it says stop. */
    int calls = 0;
    shmlease_acquire_options o;
    memset(&o, 0, sizeof o);
    o.timeout_ns = -1; /* forever, unless interrupted */
    o.interrupt = third_time;
    o.interrupt_ctx = &calls;
    EXPECT(shmlease_acquire_with(t, "job", 30 * SEC, &o, &l, NULL), SHMLEASE_INTERRUPTED);
    CHECK(calls == 3 && l == NULL);
    CHECK(strstr(shmlease_last_error(), "interrupted") != NULL);
    CHECK(strcmp(shmlease_status_name(SHMLEASE_INTERRUPTED), "SHMLEASE_INTERRUPTED") == 0);

    /* A call that does not wait never asks. */
    calls = 0;
    o.timeout_ns = 0;
    EXPECT(shmlease_acquire_with(t, "job", 30 * SEC, &o, &l, NULL), SHMLEASE_HELD);
    CHECK(calls == 0);

    /* A forked child waits in line; SIGUSR1 ends its wait through the callback. */
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_usr1;
        sigemptyset(&sa.sa_mask);
        CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
        shmlease_acquire_options co;
        memset(&co, 0, sizeof co);
        co.timeout_ns = -1;
        co.fair = true;
        co.interrupt = signalled;
        co.interrupt_ctx = (void *)&stop_requested;
        shmlease_lease *mine = NULL;
        shmlease_status s = shmlease_acquire_with(t, "job", 30 * SEC, &co, &mine, NULL);
        /* Given up before the call returned: no place of ours is left in line. */
        bool found = true;
        queued(t, (uint32_t)getpid(), &found);
        _exit(s == SHMLEASE_INTERRUPTED && mine == NULL && !found ? 0 : 10 + (int)s);
    }
    /* Wait until the child has its place (a watchdog in the harness bounds this). */
    bool found = false;
    while (queued(t, (uint32_t)child, &found), !found) sleep_ms(2);
    sleep_ms(150); /* a few of its wake-ups: it keeps its place meanwhile */
    CHECK(queued(t, (uint32_t)child, &found) == 1 && found);
    CHECK(kill(child, SIGUSR1) == 0);
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0) {
        fprintf(stderr, "child: exit %d\n", WEXITSTATUS(status));
        return 1;
    }
    CHECK(queued(t, (uint32_t)child, &found) == 0);

    /* The holder was never disturbed. */
    bool valid = false;
    OK(shmlease_lease_is_valid(held, &valid));
    CHECK(valid);
    OK(shmlease_release(held));
    shmlease_lease_free(held);
    shmlease_table_close(t);
    printf("interrupt ok\n");
    return 0;
}
