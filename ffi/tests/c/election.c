/*
 * Leader election from C: who leads (and nobody), an observer that learns of every
 * change and of the terms it slept through, requests to release seen by a lease and
 * by a leadership, campaign and resign, and the runner: its callbacks in order
 * (on_new_leader for the leader it waits behind, then for itself, on_started, then
 * on_stopped, only for a runner that led), handing over on request, stopped from
 * another thread while campaigning and while leading, and giving up after its campaign
 * timeout. Usage: election DIR.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

/* Waits until COND holds; fails after a minute (a watchdog, not a timing check). */
#define UNTIL(cond)                                                                  \
    do {                                                                             \
        int waited_ms_ = 0;                                                          \
        while (!(cond)) {                                                            \
            CHECK(waited_ms_++ < 60000);                                             \
            struct timespec ms_ = {0, 1000000};                                      \
            nanosleep(&ms_, NULL);                                                   \
        }                                                                            \
    } while (0)

/* What the runner's callbacks saw, in order. */
struct log {
    pthread_mutex_t lock;
    char events[64];      /* 'N' on_new_leader, 'S' on_started, 'X' on_stopped */
    uint64_t terms[64];   /* the term each event concerns */
    int n;
    shmlease_stop_reason told;     /* what on_started was told */
    shmlease_stopped stopped;      /* what on_stopped heard */
};

static void note(struct log *log, char event, uint64_t term) {
    pthread_mutex_lock(&log->lock);
    CHECK(log->n < 64);
    log->events[log->n] = event;
    log->terms[log->n] = term;
    log->n++;
    pthread_mutex_unlock(&log->lock);
}

static int count(struct log *log, char event) {
    pthread_mutex_lock(&log->lock);
    int c = 0;
    for (int i = 0; i < log->n; i++) c += log->events[i] == event;
    pthread_mutex_unlock(&log->lock);
    return c;
}

static void on_new_leader(const shmlease_leader *leader, void *user) {
    CHECK(leader->elected && leader->term > 0);
    note(user, 'N', leader->term);
}

static int on_started(const shmlease_leading *leading, void *user) {
    struct log *log = user;
    uint64_t term = 0, left = 0;
    bool leads = false;
    OK(shmlease_leading_term(leading, &term));
    OK(shmlease_leading_is_leader(leading, &leads));
    OK(shmlease_leading_remaining_ns(leading, &left));
    CHECK(leads && left > 0);
    shmlease_stop_reason why = SHMLEASE_STOP_LATE;
    OK(shmlease_leading_should_stop(leading, &why));
    CHECK(why == SHMLEASE_STOP_NONE);
    EXPECT(shmlease_leading_wait_stop(leading, 0, &why), SHMLEASE_TIMED_OUT);
    CHECK(why == SHMLEASE_STOP_NONE);
    note(log, 'S', term);
    /* Lead until told to stop. */
    OK(shmlease_leading_wait_stop(leading, -1, &why));
    log->told = why;
    return 42;
}

static void on_stopped(const shmlease_stopped *stopped, void *user) {
    struct log *log = user;
    log->stopped = *stopped;
    note(log, 'X', stopped->term);
}

struct run {
    shmlease_table *t;
    const char *name;
    shmlease_runner_options options;
    shmlease_stopper *stopper;
    shmlease_status status;
    shmlease_run_result result;
};

static void *runner_thread(void *arg) {
    struct run *r = arg;
    r->status = shmlease_runner_run(r->t, r->name, &r->options, r->stopper, &r->result);
    return NULL;
}

static struct run *start(struct run *r, pthread_t *thread) {
    CHECK(pthread_create(thread, NULL, runner_thread, r) == 0);
    return r;
}

static void init_log(struct log *log) {
    memset(log, 0, sizeof *log);
    CHECK(pthread_mutex_init(&log->lock, NULL) == 0);
}

static void leader_and_observer(shmlease_table *t) {
    shmlease_leader who;
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(!who.elected && who.term == 0 && !who.holder.known);

    shmlease_observer *obs = NULL;
    shmlease_change change;
    OK(shmlease_observer_open(t, "sched", &obs));
    OK(shmlease_observer_next(obs, 0, &change)); /* the state at start, at once */
    CHECK(!change.leader.elected && change.leader.term == 0 && change.skipped == 0);
    EXPECT(shmlease_observer_next(obs, 0, &change), SHMLEASE_TIMED_OUT);
    EXPECT(shmlease_observer_next(obs, 10 * MSEC, &change), SHMLEASE_TIMED_OUT);

    /* A leader, as the query and the observer see it. */
    shmlease_leadership *lead = NULL;
    OK(shmlease_try_campaign(t, "sched", 10 * SEC, "c-a", &lead, NULL));
    uint64_t term = 0;
    bool leads = false;
    OK(shmlease_leadership_term(lead, &term));
    OK(shmlease_leadership_is_leader(lead, &leads));
    CHECK(leads && term > 0);
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(who.elected && who.term == term && who.holder.known);
    CHECK(who.holder.pid == (uint32_t)getpid() && strcmp(who.holder.label, "c-a") == 0);
    CHECK(who.remaining_ns > 0 && who.since_unix_ns > 0 && who.expires_at_unix_ns > who.since_unix_ns);
    OK(shmlease_observer_next(obs, -1, &change));
    CHECK(change.leader.elected && change.leader.term == term && change.skipped == 0);
    CHECK(change.leader.holder.pid == (uint32_t)getpid());

    /* Another candidate is refused, or gives up waiting, and learns who is in the way. */
    shmlease_leadership *other = NULL;
    shmlease_held_by held;
    EXPECT(shmlease_try_campaign(t, "sched", 10 * SEC, NULL, &other, &held), SHMLEASE_HELD);
    CHECK(held.token == term && held.holder.pid == (uint32_t)getpid());
    EXPECT(shmlease_campaign(t, "sched", 10 * SEC, NULL, 20 * MSEC, &other, &held),
           SHMLEASE_TIMED_OUT);
    CHECK(held.token == term);

    /* Asked to hand over: the flag, and the notice that wakes a waiting leader. */
    bool asked = true;
    shmlease_notice notice = SHMLEASE_NOTICE_LOST_EXPIRED;
    OK(shmlease_leadership_release_requested(lead, &asked));
    CHECK(!asked);
    OK(shmlease_leadership_wait_notice(lead, 0, &notice));
    CHECK(notice == SHMLEASE_NOTICE_NONE);
    EXPECT(shmlease_request_release_token(t, "sched", term + 1), SHMLEASE_LOST);
    uint64_t asked_token = 0;
    OK(shmlease_request_release(t, "sched", &asked_token));
    CHECK(asked_token == term);
    OK(shmlease_leadership_release_requested(lead, &asked));
    CHECK(asked);
    OK(shmlease_leadership_wait_notice(lead, -1, &notice));
    CHECK(notice == SHMLEASE_NOTICE_RELEASE_REQUESTED);
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(who.elected && who.term == term); /* a request changes nothing by itself */

    /* Resign: nobody leads, and the observer hears of it. */
    OK(shmlease_resign(lead));
    OK(shmlease_leadership_is_leader(lead, &leads));
    CHECK(!leads);
    /* Its renewing thread notices, and says so (until then the request is news). */
    UNTIL(shmlease_leadership_wait_notice(lead, 0, &notice) == SHMLEASE_OK &&
          notice == SHMLEASE_NOTICE_LOST_RELEASED);
    EXPECT(shmlease_resign(lead), SHMLEASE_LOST);
    shmlease_leadership_free(lead);
    OK(shmlease_observer_next(obs, -1, &change));
    CHECK(!change.leader.elected && change.leader.term == term && change.skipped == 0);
    OK(shmlease_leader_get(t, "sched", &who));
    CHECK(!who.elected && who.term == term);

    /* Two terms begin and end unobserved; the third is reported with them counted. */
    shmlease_lease *l = NULL;
    for (int i = 0; i < 2; i++) {
        OK(shmlease_try_acquire(t, "sched", 10 * SEC, &l, NULL));
        OK(shmlease_release(l));
        shmlease_lease_free(l);
    }
    OK(shmlease_try_acquire(t, "sched", 10 * SEC, &l, NULL));
    uint64_t third = 0;
    OK(shmlease_lease_token(l, &third));
    OK(shmlease_observer_next(obs, -1, &change));
    CHECK(change.leader.elected && change.leader.term == third && change.skipped == 2);
    /* A plain lease sees a request too. */
    OK(shmlease_lease_release_requested(l, &asked));
    CHECK(!asked);
    OK(shmlease_request_release(t, "sched", NULL));
    OK(shmlease_lease_release_requested(l, &asked));
    CHECK(asked);
    OK(shmlease_release(l));
    OK(shmlease_lease_release_requested(l, &asked));
    CHECK(!asked); /* released: nothing to ask any more */
    shmlease_lease_free(l);
    OK(shmlease_request_release(t, "sched", &asked_token));
    CHECK(asked_token == 0);
    shmlease_observer_close(obs);
}

static void runner_hands_over_on_request(shmlease_table *t) {
    struct log log;
    init_log(&log);
    /* Another candidate leads first: the runner waits behind it. */
    shmlease_leadership *first = NULL;
    OK(shmlease_try_campaign(t, "job", 10 * SEC, "first", &first, NULL));
    uint64_t first_term = 0;
    OK(shmlease_leadership_term(first, &first_term));

    struct run r = {t, "job", {0}, NULL, SHMLEASE_INTERNAL, {0}};
    r.options.label = "runner";
    r.options.on_started = on_started;
    r.options.on_stopped = on_stopped;
    r.options.on_new_leader = on_new_leader;
    r.options.user_data = &log;
    pthread_t thread;
    start(&r, &thread);
    UNTIL(count(&log, 'N') == 1);
    CHECK(log.terms[0] == first_term);
    CHECK(count(&log, 'S') == 0);
    OK(shmlease_resign(first));
    shmlease_leadership_free(first);

    UNTIL(count(&log, 'S') == 1);
    shmlease_leader who;
    OK(shmlease_leader_get(t, "job", &who));
    CHECK(who.elected && strcmp(who.holder.label, "runner") == 0);
    uint64_t asked = 0;
    OK(shmlease_request_release(t, "job", &asked));
    CHECK(asked == who.term);
    CHECK(pthread_join(thread, NULL) == 0);
    OK(r.status);

    /* new leader (the other), new leader (itself), started, stopped: in that order. */
    CHECK(log.n == 4 && memcmp(log.events, "NNSX", 4) == 0);
    CHECK(log.terms[1] == who.term && log.terms[2] == who.term && log.terms[3] == who.term);
    CHECK(who.term > first_term);
    CHECK(log.told == SHMLEASE_STOP_REQUESTED);
    CHECK(log.stopped.reason == SHMLEASE_STOP_REQUESTED && log.stopped.resigned);
    CHECK(r.result.led && r.result.lead_result == 42);
    CHECK(r.result.stopped.term == who.term && r.result.stopped.resigned);
    OK(shmlease_leader_get(t, "job", &who));
    CHECK(!who.elected); /* resigned */
    pthread_mutex_destroy(&log.lock);
}

static void runner_stopped_while_campaigning_never_hears_on_stopped(shmlease_table *t) {
    struct log log;
    init_log(&log);
    shmlease_leadership *holder = NULL;
    OK(shmlease_try_campaign(t, "job", 10 * SEC, "holder", &holder, NULL));
    struct run r = {t, "job", {0}, NULL, SHMLEASE_INTERNAL, {0}};
    r.options.on_started = on_started;
    r.options.on_stopped = on_stopped;
    r.options.on_new_leader = on_new_leader;
    r.options.user_data = &log;
    OK(shmlease_stopper_new(&r.stopper));
    pthread_t thread;
    start(&r, &thread);
    UNTIL(count(&log, 'N') == 1);
    OK(shmlease_stopper_stop(r.stopper));
    CHECK(pthread_join(thread, NULL) == 0);
    OK(r.status);
    CHECK(!r.result.led && r.result.lead_result == 0);
    CHECK(log.n == 1 && log.events[0] == 'N'); /* no on_started, no on_stopped */
    /* A stopped stopper stays stopped: a run with it returns at once. */
    log.n = 0;
    OK(shmlease_resign(holder));
    r.status = SHMLEASE_INTERNAL;
    start(&r, &thread);
    CHECK(pthread_join(thread, NULL) == 0);
    OK(r.status);
    CHECK(!r.result.led && log.n == 0);
    shmlease_stopper_free(r.stopper);
    shmlease_leadership_free(holder);

    /* A campaign that times out: SHMLEASE_TIMED_OUT, nothing called but on_new_leader. */
    OK(shmlease_try_campaign(t, "job", 10 * SEC, "holder", &holder, NULL));
    r.stopper = NULL;
    r.options.campaign_timeout_ns = 20 * MSEC;
    EXPECT(shmlease_runner_run(t, "job", &r.options, NULL, &r.result), SHMLEASE_TIMED_OUT);
    CHECK(count(&log, 'S') == 0 && count(&log, 'X') == 0);
    shmlease_leadership_free(holder);
    pthread_mutex_destroy(&log.lock);
}

static void runner_stopped_while_leading(shmlease_table *t) {
    struct log log;
    init_log(&log);
    struct run r = {t, "solo", {0}, NULL, SHMLEASE_INTERNAL, {0}};
    r.options.ttl_ns = 5 * SEC;
    r.options.stop_margin_ns = SEC;
    r.options.on_started = on_started;
    r.options.on_stopped = on_stopped;
    r.options.user_data = &log; /* no on_new_leader: optional */
    OK(shmlease_stopper_new(&r.stopper));
    pthread_t thread;
    start(&r, &thread);
    UNTIL(count(&log, 'S') == 1);
    OK(shmlease_stopper_stop(r.stopper));
    CHECK(pthread_join(thread, NULL) == 0);
    OK(r.status);
    CHECK(log.n == 2 && memcmp(log.events, "SX", 2) == 0);
    CHECK(log.told == SHMLEASE_STOP_STOPPED && log.stopped.reason == SHMLEASE_STOP_STOPPED);
    CHECK(r.result.led && r.result.stopped.resigned);
    shmlease_stopper_free(r.stopper);

    /* Bad options: refused before anything happens. */
    shmlease_runner_options bad = r.options;
    bad.on_started = NULL;
    EXPECT(shmlease_runner_run(t, "solo", &bad, NULL, NULL), SHMLEASE_NULL_ARGUMENT);
    EXPECT(shmlease_runner_run(t, "solo", NULL, NULL, NULL), SHMLEASE_NULL_ARGUMENT);
    bad = r.options;
    bad.stop_margin_ns = 3 * SEC; /* more than half the TTL */
    EXPECT(shmlease_runner_run(t, "solo", &bad, NULL, NULL), SHMLEASE_INVALID_OPTIONS);
    CHECK(log.n == 2);
    pthread_mutex_destroy(&log.lock);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/election.table", argv[1]);
    shmlease_table_options opts = {16, 0, 0};
    shmlease_table *t = NULL;
    OK(shmlease_table_create(path, &opts, &t));
    leader_and_observer(t);
    runner_hands_over_on_request(t);
    runner_stopped_while_campaigning_never_hears_on_stopped(t);
    runner_stopped_while_leading(t);
    shmlease_table_close(t);
    OK(shmlease_table_remove(path));
    printf("election ok\n");
    return 0;
}
