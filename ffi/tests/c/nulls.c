/*
 * NULL in every pointer argument of every function: a status (or, for the _free and
 * _close functions, nothing at all), never a crash. Optional pointers (documented as
 * "NULL: not wanted" or "NULL: defaults") are accepted. Usage: nulls DIR.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdint.h>

#include "check.h"

#define NUL_ARG(expr) EXPECT(expr, SHMLEASE_NULL_ARGUMENT)

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/nulls.table", argv[1]);
    shmlease_table_options opts = {8, 0, 0};
    shmlease_table *t = NULL;
    shmlease_lease *l = NULL;
    shmlease_held_by held;
    shmlease_info info, infos[4];
    uint64_t u64 = 0;
    uint32_t u32 = 0;
    size_t count = 0;
    bool flag = false;

    /* Tables. */
    NUL_ARG(shmlease_table_create(NULL, &opts, &t));
    NUL_ARG(shmlease_table_create(path, &opts, NULL));
    NUL_ARG(shmlease_table_open(NULL, NULL, &t));
    NUL_ARG(shmlease_table_open_or_create(NULL, NULL, &t));
    NUL_ARG(shmlease_table_open_or_create(path, &opts, NULL));
    NUL_ARG(shmlease_table_remove(NULL));
    NUL_ARG(shmlease_table_remove_with(NULL, SHMLEASE_REMOVE_FORCE));
    OK(shmlease_table_create(path, NULL, &t)); /* options NULL: defaults */
    NUL_ARG(shmlease_table_open(path, NULL, NULL));
    NUL_ARG(shmlease_table_capacity(NULL, &u32));
    NUL_ARG(shmlease_table_capacity(t, NULL));
    shmlease_table_close(NULL);

    /* Acquiring. */
    NUL_ARG(shmlease_try_acquire(NULL, "x", SEC, &l, &held));
    NUL_ARG(shmlease_try_acquire(t, NULL, SEC, &l, &held));
    NUL_ARG(shmlease_try_acquire(t, "x", SEC, NULL, &held));
    NUL_ARG(shmlease_acquire(NULL, "x", SEC, 0, NULL, &l, &held));
    NUL_ARG(shmlease_acquire(t, NULL, SEC, 0, NULL, &l, &held));
    NUL_ARG(shmlease_acquire(t, "x", SEC, 0, NULL, NULL, &held));
    shmlease_acquire_options aopts = {0, NULL, 2, false, false, NULL, NULL};
    NUL_ARG(shmlease_acquire_with(NULL, "p", SEC, &aopts, &l, &held));
    NUL_ARG(shmlease_acquire_with(t, NULL, SEC, &aopts, &l, &held));
    NUL_ARG(shmlease_acquire_with(t, "p", SEC, &aopts, NULL, &held));
    CHECK(l == NULL);
    /* Into a caller's storage: a NULL anywhere required writes nothing into it. */
    shmlease_lease_storage st = {0};
    NUL_ARG(shmlease_try_acquire_in(NULL, "x", SEC, &st, &l, &held));
    NUL_ARG(shmlease_try_acquire_in(t, NULL, SEC, &st, &l, &held));
    NUL_ARG(shmlease_try_acquire_in(t, "x", SEC, NULL, &l, &held));
    NUL_ARG(shmlease_try_acquire_in(t, "x", SEC, &st, NULL, &held));
    NUL_ARG(shmlease_acquire_with_in(NULL, "p", SEC, &aopts, &st, &l, &held));
    NUL_ARG(shmlease_acquire_with_in(t, NULL, SEC, &aopts, &st, &l, &held));
    NUL_ARG(shmlease_acquire_with_in(t, "p", SEC, &aopts, NULL, &l, &held));
    NUL_ARG(shmlease_acquire_with_in(t, "p", SEC, &aopts, &st, NULL, &held));
    NUL_ARG(shmlease_lease_storage_init(NULL));
    CHECK(l == NULL);
    /* The storage is still empty: nothing was granted (the names are free). */
    EXPECT(shmlease_release((shmlease_lease *)&st), SHMLEASE_INVALID_ARGUMENT);
    OK(shmlease_try_acquire_in(t, "x", SEC, &st, &l, NULL)); /* held_by optional */
    OK(shmlease_release(l));
    OK(shmlease_acquire_with_in(t, "x", SEC, NULL, &st, &l, NULL)); /* options too */
    OK(shmlease_release(l));
    l = NULL;
    OK(shmlease_acquire(t, "x", 10 * SEC, 0, NULL, &l, NULL)); /* label, held_by optional */
    shmlease_lease *l2 = NULL;
    EXPECT(shmlease_try_acquire(t, "x", SEC, &l2, NULL), SHMLEASE_HELD);
    EXPECT(shmlease_acquire(t, "x", SEC, 1000, NULL, &l2, NULL), SHMLEASE_TIMED_OUT);

    /* Lease handles. */
    NUL_ARG(shmlease_renew(NULL, SEC));
    NUL_ARG(shmlease_release(NULL));
    NUL_ARG(shmlease_lease_detach(NULL, &u64));
    NUL_ARG(shmlease_lease_token(NULL, &u64));
    NUL_ARG(shmlease_lease_token(l, NULL));
    NUL_ARG(shmlease_lease_deadline_ns(NULL, &u64));
    NUL_ARG(shmlease_lease_deadline_ns(l, NULL));
    NUL_ARG(shmlease_lease_remaining_ns(NULL, &u64));
    NUL_ARG(shmlease_lease_remaining_ns(l, NULL));
    NUL_ARG(shmlease_lease_is_valid(NULL, &flag));
    NUL_ARG(shmlease_lease_is_valid(l, NULL));
    NUL_ARG(shmlease_lease_release_requested(l, NULL));
    shmlease_lease_free(NULL);

    /* By name. */
    OK(shmlease_lease_token(l, &u64));
    NUL_ARG(shmlease_renew_token(NULL, "x", u64, SEC, NULL));
    NUL_ARG(shmlease_renew_token(t, NULL, u64, SEC, NULL));
    OK(shmlease_renew_token(t, "x", u64, 10 * SEC, NULL));
    NUL_ARG(shmlease_release_token(NULL, "x", u64));
    NUL_ARG(shmlease_release_token(t, NULL, u64));
    NUL_ARG(shmlease_revoke(NULL, "x", NULL));
    NUL_ARG(shmlease_revoke(t, NULL, NULL));
    NUL_ARG(shmlease_revoke_token(NULL, "x", u64));
    NUL_ARG(shmlease_revoke_token(t, NULL, u64));
    NUL_ARG(shmlease_get(NULL, "x", &info));
    NUL_ARG(shmlease_get(t, NULL, &info));
    NUL_ARG(shmlease_get(t, "x", NULL));
    NUL_ARG(shmlease_list(NULL, infos, 4, &count));
    NUL_ARG(shmlease_list(t, NULL, 4, &count));
    NUL_ARG(shmlease_list(t, infos, 4, NULL));
    shmlease_grant grants[2];
    NUL_ARG(shmlease_get_grants(NULL, "x", grants, 2, &count));
    NUL_ARG(shmlease_get_grants(t, NULL, grants, 2, &count));
    NUL_ARG(shmlease_get_grants(t, "x", NULL, 2, &count));
    NUL_ARG(shmlease_get_grants(t, "x", grants, 2, NULL));
    OK(shmlease_get_grants(t, "x", grants, 2, &count));
    CHECK(count == 1);
    shmlease_queued queue[2];
    NUL_ARG(shmlease_get_queue(NULL, "x", queue, 2, &count));
    NUL_ARG(shmlease_get_queue(t, NULL, queue, 2, &count));
    NUL_ARG(shmlease_get_queue(t, "x", NULL, 2, &count));
    NUL_ARG(shmlease_get_queue(t, "x", queue, 2, NULL));
    OK(shmlease_get_queue(t, "x", queue, 2, &count));
    CHECK(count == 0);
    OK(shmlease_list(t, infos, 4, &count));
    CHECK(count == 1);

    /* Still held and fine after all that. */
    OK(shmlease_lease_is_valid(l, &flag));
    CHECK(flag);
    OK(shmlease_lease_detach(l, NULL)); /* deadline optional */
    OK(shmlease_release_token(t, "x", u64));
    shmlease_lease_free(l);

    /* Options and held_by optional; NULL options: the defaults. */
    OK(shmlease_acquire_with(t, "p", SEC, &aopts, &l, NULL));
    shmlease_lease_free(l);
    OK(shmlease_acquire_with(t, "q", SEC, NULL, &l, NULL));
    shmlease_lease_free(l);

    /* Election. */
    shmlease_leader who;
    shmlease_change change;
    shmlease_observer *obs = NULL;
    shmlease_leadership *lead = NULL;
    shmlease_stopper *stopper = NULL;
    shmlease_notice notice;
    shmlease_stop_reason why;
    shmlease_runner_options ropts;
    memset(&ropts, 0, sizeof ropts);
    NUL_ARG(shmlease_leader_get(NULL, "e", &who));
    NUL_ARG(shmlease_leader_get(t, NULL, &who));
    NUL_ARG(shmlease_leader_get(t, "e", NULL));
    NUL_ARG(shmlease_observer_open(NULL, "e", &obs));
    NUL_ARG(shmlease_observer_open(t, NULL, &obs));
    NUL_ARG(shmlease_observer_open(t, "e", NULL));
    OK(shmlease_observer_open(t, "e", &obs));
    NUL_ARG(shmlease_observer_next(NULL, 0, &change));
    NUL_ARG(shmlease_observer_next(obs, 0, NULL));
    shmlease_observer_close(obs);
    shmlease_observer_close(NULL);
    NUL_ARG(shmlease_request_release(NULL, "e", NULL));
    NUL_ARG(shmlease_request_release(t, NULL, NULL));
    OK(shmlease_request_release(t, "e", NULL)); /* asked token optional */
    NUL_ARG(shmlease_request_release_token(NULL, "e", 1));
    NUL_ARG(shmlease_request_release_token(t, NULL, 1));
    NUL_ARG(shmlease_lease_release_requested(NULL, &flag));
    NUL_ARG(shmlease_try_campaign(NULL, "e", SEC, NULL, &lead, NULL));
    NUL_ARG(shmlease_try_campaign(t, NULL, SEC, NULL, &lead, NULL));
    NUL_ARG(shmlease_try_campaign(t, "e", SEC, NULL, NULL, NULL));
    NUL_ARG(shmlease_campaign(NULL, "e", SEC, NULL, 0, &lead, NULL));
    NUL_ARG(shmlease_campaign(t, NULL, SEC, NULL, 0, &lead, NULL));
    NUL_ARG(shmlease_campaign(t, "e", SEC, NULL, 0, NULL, NULL));
    OK(shmlease_campaign(t, "e", 0, NULL, 0, &lead, NULL)); /* TTL 0: the default; label, held_by optional */
    NUL_ARG(shmlease_leadership_term(NULL, &u64));
    NUL_ARG(shmlease_leadership_term(lead, NULL));
    NUL_ARG(shmlease_leadership_is_leader(NULL, &flag));
    NUL_ARG(shmlease_leadership_is_leader(lead, NULL));
    NUL_ARG(shmlease_leadership_remaining_ns(NULL, &u64));
    NUL_ARG(shmlease_leadership_remaining_ns(lead, NULL));
    NUL_ARG(shmlease_leadership_release_requested(NULL, &flag));
    NUL_ARG(shmlease_leadership_release_requested(lead, NULL));
    NUL_ARG(shmlease_leadership_wait_notice(NULL, 0, &notice));
    NUL_ARG(shmlease_leadership_wait_notice(lead, 0, NULL));
    NUL_ARG(shmlease_resign(NULL));
    OK(shmlease_leadership_is_leader(lead, &flag));
    CHECK(flag);
    shmlease_leadership_free(lead); /* resigns */
    shmlease_leadership_free(NULL);
    OK(shmlease_leader_get(t, "e", &who));
    CHECK(!who.elected);
    NUL_ARG(shmlease_stopper_new(NULL));
    NUL_ARG(shmlease_stopper_stop(NULL));
    shmlease_stopper_free(NULL);
    OK(shmlease_stopper_new(&stopper));
    NUL_ARG(shmlease_runner_run(NULL, "e", &ropts, stopper, NULL));
    NUL_ARG(shmlease_runner_run(t, NULL, &ropts, stopper, NULL));
    NUL_ARG(shmlease_runner_run(t, "e", NULL, stopper, NULL));
    NUL_ARG(shmlease_runner_run(t, "e", &ropts, stopper, NULL)); /* on_started NULL */
    shmlease_stopper_free(stopper);
    NUL_ARG(shmlease_leading_term(NULL, &u64));
    NUL_ARG(shmlease_leading_is_leader(NULL, &flag));
    NUL_ARG(shmlease_leading_remaining_ns(NULL, &u64));
    NUL_ARG(shmlease_leading_should_stop(NULL, &why));
    NUL_ARG(shmlease_leading_wait_stop(NULL, 0, &why));

    /* Functions that return strings never return NULL. */
    CHECK(shmlease_version() != NULL);
    CHECK(shmlease_last_error() != NULL);
    CHECK(shmlease_strerror(12345) != NULL && shmlease_status_name(-5) != NULL);

    shmlease_table_close(t);
    OK(shmlease_table_remove(path));
    puts("nulls ok");
    return 0;
}
