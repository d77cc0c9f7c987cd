/*
 * The whole life of tables and leases through the C API: create, open, acquire,
 * inspect, renew, release, revoke, detach, expiry, by-token operations, remove.
 * Usage: lifecycle DIR (an empty, writable directory for the tables).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdbool.h>
#include <stdint.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static uint64_t now_ns(void) {
    struct timespec ts;
    CHECK(clock_gettime(CLOCK_MONOTONIC, &ts) == 0);
    return (uint64_t)ts.tv_sec * SEC + (uint64_t)ts.tv_nsec;
}

static void nap_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool valid(const shmlease_lease *lease) {
    bool v = true;
    OK(shmlease_lease_is_valid(lease, &v));
    return v;
}

static void version(void) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", SHMLEASE_VERSION_MAJOR, SHMLEASE_VERSION_MINOR,
             SHMLEASE_VERSION_PATCH);
    CHECK(strcmp(shmlease_version(), want) == 0);
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    char path[4096];
    snprintf(path, sizeof path, "%s/lifecycle.table", argv[1]);
    version();

    /* Create; a second create is refused; open and open_or_create find it. */
    shmlease_table_options opts = {16, 0, 0};
    shmlease_table *t = NULL, *t2 = NULL, *t3 = NULL;
    OK(shmlease_table_create(path, &opts, &t));
    CHECK(t != NULL);
    EXPECT(shmlease_table_create(path, &opts, &t2), SHMLEASE_ALREADY_EXISTS);
    CHECK(t2 == NULL);
    OK(shmlease_table_open(path, NULL, &t2));
    OK(shmlease_table_open_or_create(path, NULL, &t3));
    uint32_t cap = 0;
    OK(shmlease_table_capacity(t3, &cap));
    CHECK(cap == 16);

    /* Acquire, and a second handle is refused and told who holds it. */
    uint64_t before = now_ns();
    shmlease_lease *job = NULL;
    OK(shmlease_try_acquire(t, "job", 10 * SEC, &job, NULL));
    CHECK(job != NULL);
    uint64_t token = 0, remaining = 0, deadline = 0;
    OK(shmlease_lease_token(job, &token));
    CHECK(token > 0);
    CHECK(valid(job));
    OK(shmlease_lease_remaining_ns(job, &remaining));
    CHECK(remaining > 0 && remaining <= 10 * SEC);
    OK(shmlease_lease_deadline_ns(job, &deadline));
    CHECK(deadline > before && deadline <= now_ns() + 10 * SEC);

    shmlease_lease *other = NULL;
    shmlease_held_by held;
    memset(&held, 0xAB, sizeof held);
    EXPECT(shmlease_try_acquire(t2, "job", SEC, &other, &held), SHMLEASE_HELD);
    CHECK(other == NULL);
    CHECK(held.token == token);
    CHECK(held.remaining_ns > 0 && held.remaining_ns <= 10 * SEC);
    CHECK(held.holder.known && !held.holder.detached);
    CHECK(held.holder.pid == (uint32_t)getpid());
    CHECK(strcmp(held.holder.label, "") == 0);
    CHECK(strlen(shmlease_last_error()) > 0);

    /* Waiting with a timeout ends in TIMED_OUT with the holder filled in. */
    memset(&held, 0, sizeof held);
    EXPECT(shmlease_acquire(t2, "job", SEC, 20 * (int64_t)MSEC, NULL, &other, &held),
           SHMLEASE_TIMED_OUT);
    CHECK(other == NULL && held.token == token && held.holder.pid == (uint32_t)getpid());

    /* A labelled lease, and get() shows it. */
    shmlease_lease *labelled = NULL;
    OK(shmlease_acquire(t3, "labelled", 10 * SEC, 0, "c-test", &labelled, NULL));
    shmlease_info info;
    OK(shmlease_get(t, "labelled", &info));
    CHECK(strcmp(info.name, "labelled") == 0);
    CHECK(info.state == SHMLEASE_STATE_HELD);
    CHECK(info.holder.known && info.holder.pid == (uint32_t)getpid());
    CHECK(strcmp(info.holder.label, "c-test") == 0);
    CHECK(info.transitions >= 1 && info.slot < 16);

    /* Renewal moves the deadline forward. */
    OK(shmlease_renew(job, 20 * SEC));
    uint64_t deadline2 = 0;
    OK(shmlease_lease_deadline_ns(job, &deadline2));
    CHECK(deadline2 > deadline);
    OK(shmlease_get(t, "job", &info));
    CHECK(info.token == token && info.state == SHMLEASE_STATE_HELD);
    CHECK(info.remaining_ns > 0);
    CHECK(info.acquired_at_unix_ns > 0 && info.renewed_at_unix_ns >= info.acquired_at_unix_ns);
    CHECK(info.expires_at_unix_ns > info.renewed_at_unix_ns);

    /* Listing: first ask for the count, then fill. */
    size_t count = 99;
    EXPECT(shmlease_list(t, NULL, 0, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 2);
    shmlease_info infos[8];
    OK(shmlease_list(t, infos, 8, &count));
    CHECK(count == 2);
    CHECK((strcmp(infos[0].name, "job") == 0 && strcmp(infos[1].name, "labelled") == 0) ||
          (strcmp(infos[1].name, "job") == 0 && strcmp(infos[0].name, "labelled") == 0));
    count = 0;
    EXPECT(shmlease_list(t, infos, 1, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 2);

    /* Release: the handle stays until freed, and reports LOST from then on. */
    OK(shmlease_release(job));
    CHECK(!valid(job));
    EXPECT(shmlease_release(job), SHMLEASE_LOST);
    EXPECT(shmlease_renew(job, SEC), SHMLEASE_LOST);
    EXPECT(shmlease_lease_deadline_ns(job, &deadline), SHMLEASE_LOST);
    OK(shmlease_lease_remaining_ns(job, &remaining));
    CHECK(remaining == 0);
    uint64_t same = 0;
    OK(shmlease_lease_token(job, &same));
    CHECK(same == token);
    shmlease_lease_free(job);
    OK(shmlease_get(t, "job", &info));
    CHECK(info.state == SHMLEASE_STATE_FREE && info.token == token);

    /* The next grant has a larger token; revoking it makes the holder lose it. */
    OK(shmlease_try_acquire(t2, "job", 10 * SEC, &job, NULL));
    uint64_t token2 = 0;
    OK(shmlease_lease_token(job, &token2));
    CHECK(token2 > token);
    uint64_t revoked = 0;
    OK(shmlease_revoke(t, "job", &revoked));
    CHECK(revoked == token2);
    CHECK(!valid(job));
    EXPECT(shmlease_renew(job, SEC), SHMLEASE_LOST);
    OK(shmlease_get(t, "job", &info));
    CHECK(info.state == SHMLEASE_STATE_REVOKED);
    OK(shmlease_revoke(t, "job", &revoked));
    CHECK(revoked == 0);
    OK(shmlease_revoke(t, "job", NULL));
    shmlease_lease_free(job); /* releasing a revoked lease fails quietly */

    /* revoke_token only revokes the grant it names. */
    OK(shmlease_try_acquire(t, "job", 10 * SEC, &job, NULL));
    uint64_t token3 = 0;
    OK(shmlease_lease_token(job, &token3));
    CHECK(token3 > token2);
    EXPECT(shmlease_revoke_token(t, "job", token2), SHMLEASE_LOST);
    CHECK(valid(job));
    OK(shmlease_revoke_token(t, "job", token3));
    CHECK(!valid(job));
    shmlease_lease_free(job);

    /* Detached: outlives its handle, renewed and released by name and token. */
    shmlease_lease *det = NULL;
    OK(shmlease_try_acquire(t, "detached", 10 * SEC, &det, NULL));
    uint64_t dtoken = 0, ddeadline = 0;
    OK(shmlease_lease_token(det, &dtoken));
    OK(shmlease_lease_detach(det, &ddeadline));
    CHECK(ddeadline > before);
    EXPECT(shmlease_lease_detach(det, NULL), SHMLEASE_LOST);
    EXPECT(shmlease_renew(det, SEC), SHMLEASE_LOST);
    CHECK(valid(det));
    shmlease_lease_free(det);
    OK(shmlease_get(t, "detached", &info));
    CHECK(info.state == SHMLEASE_STATE_HELD && info.token == dtoken && info.holder.detached);
    uint64_t rdeadline = 0;
    OK(shmlease_renew_token(t2, "detached", dtoken, 30 * SEC, &rdeadline));
    CHECK(rdeadline > ddeadline);
    OK(shmlease_renew_token(t2, "detached", dtoken, 30 * SEC, NULL));
    EXPECT(shmlease_renew_token(t2, "detached", dtoken + 1000, SEC, NULL), SHMLEASE_LOST);
    OK(shmlease_release_token(t3, "detached", dtoken));
    EXPECT(shmlease_release_token(t3, "detached", dtoken), SHMLEASE_LOST);
    OK(shmlease_get(t, "detached", &info));
    CHECK(info.state == SHMLEASE_STATE_FREE);

    /* Expiry: a 1 ms lease runs out and someone else takes it over. */
    shmlease_lease *brief = NULL, *next = NULL;
    OK(shmlease_try_acquire(t, "brief", MSEC, &brief, NULL));
    while (valid(brief)) nap_ms(1);
    OK(shmlease_get(t, "brief", &info));
    CHECK(info.state == SHMLEASE_STATE_EXPIRED && info.remaining_ns == 0);
    OK(shmlease_try_acquire(t2, "brief", 10 * SEC, &next, NULL));
    uint64_t b1 = 0, b2 = 0;
    OK(shmlease_lease_token(brief, &b1));
    OK(shmlease_lease_token(next, &b2));
    CHECK(b2 > b1);
    EXPECT(shmlease_renew(brief, SEC), SHMLEASE_LOST);
    EXPECT(shmlease_release(brief), SHMLEASE_LOST);
    shmlease_lease_free(brief);
    CHECK(valid(next));
    shmlease_lease_free(next); /* releases */
    OK(shmlease_get(t, "brief", &info));
    CHECK(info.state == SHMLEASE_STATE_FREE);

    /* A forked child freeing its copy of the handle leaves the parent's lease alone. */
    OK(shmlease_try_acquire(t, "forked", 10 * SEC, &job, NULL));
    fflush(NULL);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        shmlease_lease_free(job);
        _exit(0);
    }
    int wstatus = 0;
    CHECK(waitpid(child, &wstatus, 0) == child && WIFEXITED(wstatus) &&
          WEXITSTATUS(wstatus) == 0);
    CHECK(valid(job));
    OK(shmlease_release(job));
    shmlease_lease_free(job);

    /* An unknown name is free and never granted. */
    OK(shmlease_get(t, "nobody", &info));
    CHECK(info.state == SHMLEASE_STATE_FREE && info.token == 0 && info.slot == UINT32_MAX);
    CHECK(strcmp(info.name, "nobody") == 0);

    /* Leases outlive the handle of the table they came from. */
    OK(shmlease_try_acquire(t3, "late", 10 * SEC, &job, NULL));
    shmlease_table_close(t3);
    OK(shmlease_renew(job, 10 * SEC));
    CHECK(valid(job));
    OK(shmlease_release(job));
    shmlease_lease_free(job);
    shmlease_lease_free(labelled);

    /* Remove: refused while a lease is live, naming it; then handles still work and
     * new opens find nothing. */
    OK(shmlease_try_acquire(t, "still-held", 10 * SEC, &job, NULL));
    EXPECT(shmlease_table_remove(path), SHMLEASE_IN_USE);
    CHECK(strstr(shmlease_last_error(), "still-held") != NULL);
    OK(shmlease_table_open(path, NULL, &t3));
    shmlease_table_close(t3);
    OK(shmlease_release(job));
    shmlease_lease_free(job);
    OK(shmlease_table_remove(path));
    EXPECT(shmlease_table_open(path, NULL, &t3), SHMLEASE_NOT_FOUND);
    OK(shmlease_try_acquire(t, "after-remove", SEC, &job, NULL));
    shmlease_lease_free(job);
    shmlease_table_close(t2);
    shmlease_table_close(t);

    /* A POSIX shared-memory table, by bare name. */
    char shm[64];
    snprintf(shm, sizeof shm, "shmlease-c-lifecycle-%ld", (long)getpid());
    OK(shmlease_table_open_or_create(shm, NULL, &t));
    OK(shmlease_try_acquire(t, "x", SEC, &job, NULL));
    shmlease_lease_free(job);
    shmlease_table_close(t);
    OK(shmlease_table_remove(shm));

    puts("lifecycle ok");
    return 0;
}
