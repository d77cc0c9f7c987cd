/*
 * Every status the C API can return is reached here (but SHMLEASE_UNSUPPORTED, which
 * needs a CPU without a 128-bit CAS or an etcd table, SHMLEASE_UNAVAILABLE, which needs
 * an unreachable etcd table, and SHMLEASE_INTERNAL, which needs a bug), and every
 * status has a distinct name and description. Usage: statuses DIR.
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <stdint.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "child.h"

/* The highest status number this program knows. */
#define LAST_STATUS SHMLEASE_INTERRUPTED

static char dir[3000];
static int seen[64];

static void saw(shmlease_status s) {
    seen[(int)s] = 1;
    if (s != SHMLEASE_OK) CHECK(strlen(shmlease_last_error()) > 0);
}

#define REACH(expr, want)                                   \
    do {                                                    \
        EXPECT(expr, want);                                 \
        saw(want);                                          \
    } while (0)

static const char *at(const char *name) {
    static char bufs[8][3100];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    return b;
}

static void write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    CHECK(fd >= 0);
    CHECK(write(fd, data, len) == (ssize_t)len);
    CHECK(close(fd) == 0);
}

static void patch(const char *path, off_t offset, const void *data, size_t len) {
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    CHECK(pwrite(fd, data, len, offset) == (ssize_t)len);
    CHECK(close(fd) == 0);
}

static shmlease_table *fresh(const char *name, uint32_t capacity) {
    shmlease_table_options o = {capacity, 0, 0};
    shmlease_table *t = NULL;
    OK(shmlease_table_create(at(name), &o, &t));
    return t;
}

/* An interrupt callback that always says stop. */
static bool always(void *ctx) {
    (void)ctx;
    return true;
}

int main(int argc, char **argv) {
    CHECK(argc == 2);
    snprintf(dir, sizeof dir, "%s", argv[1]);
    shmlease_table *t = NULL, *u = NULL;
    shmlease_lease *l = NULL, *m = NULL;
    shmlease_table_options o = {0, 0, 0};

    t = fresh("main", 1);
    REACH(shmlease_try_acquire(t, "a", 10 * SEC, &l, NULL), SHMLEASE_OK);
    REACH(shmlease_try_acquire(t, "a", SEC, &m, NULL), SHMLEASE_HELD);
    REACH(shmlease_acquire(t, "a", SEC, 1000, NULL, &m, NULL), SHMLEASE_TIMED_OUT);
    REACH(shmlease_try_acquire(t, "b", SEC, &m, NULL), SHMLEASE_TABLE_FULL);
    OK(shmlease_revoke(t, "a", NULL));
    REACH(shmlease_renew(l, SEC), SHMLEASE_LOST);
    shmlease_lease_free(l);

    REACH(shmlease_try_acquire(t, "", SEC, &m, NULL), SHMLEASE_INVALID_NAME);
    REACH(shmlease_try_acquire(t, "\xff\xfe", SEC, &m, NULL), SHMLEASE_INVALID_NAME);
    char longname[100];
    memset(longname, 'n', 65);
    longname[65] = 0;
    REACH(shmlease_try_acquire(t, longname, SEC, &m, NULL), SHMLEASE_INVALID_NAME);
    REACH(shmlease_try_acquire(t, "a", 0, &m, NULL), SHMLEASE_INVALID_TTL);
    REACH(shmlease_try_acquire(t, "a", 366 * 86400 * SEC, &m, NULL), SHMLEASE_INVALID_TTL);
    REACH(shmlease_acquire(t, "a", SEC, 0, "123456789", &m, NULL), SHMLEASE_INVALID_LABEL);
    REACH(shmlease_acquire(t, "a", SEC, 0, "\xff", &m, NULL), SHMLEASE_INVALID_LABEL);
    shmlease_acquire_options ao = {0, NULL, 129, false, false, NULL, NULL}; /* permits: 1 to 128 */
    REACH(shmlease_acquire_with(t, "a", SEC, &ao, &m, NULL), SHMLEASE_INVALID_OPTIONS);

    o.capacity = (1u << 24) + 1;
    REACH(shmlease_table_create(at("big"), &o, &u), SHMLEASE_INVALID_OPTIONS);
    o.capacity = 0;
    o.mode = 0400;
    REACH(shmlease_table_create(at("ro"), &o, &u), SHMLEASE_INVALID_OPTIONS);
    o.mode = 0666;
    REACH(shmlease_table_create(at("ww"), &o, &u), SHMLEASE_INVALID_OPTIONS);
    o.mode = 0;
    o.flags = 0x80;
    REACH(shmlease_table_open_or_create(at("main"), &o, &u), SHMLEASE_INVALID_OPTIONS);
    o.flags = 0;
    REACH(shmlease_table_open("..", NULL, &u), SHMLEASE_INVALID_OPTIONS);
    REACH(shmlease_table_open("\xff\xfe/x", NULL, &u), SHMLEASE_INVALID_ARGUMENT);
    REACH(shmlease_table_open(NULL, NULL, &u), SHMLEASE_NULL_ARGUMENT);

    /* Things that are not tables. */
    write_file(at("empty"), "", 0);
    REACH(shmlease_table_open(at("empty"), NULL, &u), SHMLEASE_NOT_A_TABLE);
    char junk[4096];
    memset(junk, 0x5a, sizeof junk);
    write_file(at("junk"), junk, sizeof junk);
    REACH(shmlease_table_open(at("junk"), NULL, &u), SHMLEASE_NOT_A_TABLE);
    REACH(shmlease_table_open(dir, NULL, &u), SHMLEASE_NOT_A_TABLE);

    /* A table of another format version, and one with an impossible capacity. */
    shmlease_table_close(fresh("future", 4));
    uint32_t version = 99;
    patch(at("future"), 8, &version, sizeof version);
    REACH(shmlease_table_open(at("future"), NULL, &u), SHMLEASE_INCOMPATIBLE);
    shmlease_table_close(fresh("broken", 4));
    uint64_t zero = 0;
    patch(at("broken"), 24, &zero, sizeof zero);
    REACH(shmlease_table_open(at("broken"), NULL, &u), SHMLEASE_CORRUPT);

    /* World-writable: refused unless opted in. */
    shmlease_table_close(fresh("open-to-all", 4));
    CHECK(chmod(at("open-to-all"), 0666) == 0);
    REACH(shmlease_table_open(at("open-to-all"), NULL, &u), SHMLEASE_PERMISSION);
    o.flags = SHMLEASE_ALLOW_WORLD_WRITABLE;
    OK(shmlease_table_open(at("open-to-all"), &o, &u));
    shmlease_table_close(u);
    o.flags = 0;

    REACH(shmlease_table_create(at("main"), NULL, &u), SHMLEASE_ALREADY_EXISTS);
    REACH(shmlease_table_open(at("missing"), NULL, &u), SHMLEASE_NOT_FOUND);
    REACH(shmlease_table_remove(at("missing")), SHMLEASE_NOT_FOUND);
    REACH(shmlease_table_open("/etc/hostname/not-a-dir", NULL, &u), SHMLEASE_IO);

    /* BUSY: another holder of the table lock (an flock on the file) never lets go. */
    shmlease_table *b = fresh("locked", 4);
    int fd = open(at("locked"), O_RDWR);
    CHECK(fd >= 0);
    CHECK(flock(fd, LOCK_EX) == 0);
    REACH(shmlease_try_acquire(b, "new-name", SEC, &m, NULL), SHMLEASE_BUSY);
    CHECK(close(fd) == 0);
    OK(shmlease_try_acquire(b, "new-name", SEC, &m, NULL));
    shmlease_lease_free(m);
    shmlease_table_close(b);

    /* IN_USE: a table with a live lease is not removed, unless forced. */
    shmlease_table *live = fresh("live", 4);
    OK(shmlease_try_acquire(live, "held", 10 * SEC, &m, NULL));
    REACH(shmlease_table_remove(at("live")), SHMLEASE_IN_USE);
    CHECK(strstr(shmlease_last_error(), "held") != NULL);
    REACH(shmlease_table_remove_with(at("live"), 0x80), SHMLEASE_INVALID_OPTIONS);
    OK(shmlease_table_remove_with(at("live"), SHMLEASE_REMOVE_FORCE));
    shmlease_lease_free(m);
    shmlease_table_close(live);

    /* BOUND_TO_PROCESS: by token on a lease another live process holds, and a forked
     * child releasing the lease handle it inherited. */
    shmlease_table *bt = fresh("bound", 4);
    int up[2], down[2];
    pid_t kid = fork_piped(up, down);
    if (kid == 0) {
        shmlease_lease *mine = NULL;
        OK(shmlease_try_acquire(bt, "kids", 10 * SEC, &mine, NULL));
        CHECK(write(up[1], "x", 1) == 1);
        wait_for_go(down);
        OK(shmlease_release(mine));
        shmlease_lease_free(mine);
        shmlease_table_close(bt);
        exit(0);
    }
    char c = 0;
    CHECK(read(up[0], &c, 1) == 1);
    shmlease_info kinfo;
    OK(shmlease_get(bt, "kids", &kinfo));
    CHECK(kinfo.holder.pid == (uint32_t)kid);
    REACH(shmlease_release_token(bt, "kids", kinfo.token), SHMLEASE_BOUND_TO_PROCESS);
    char pid_text[32];
    snprintf(pid_text, sizeof pid_text, "pid %ld", (long)kid);
    CHECK(strstr(shmlease_last_error(), pid_text) != NULL);
    REACH(shmlease_renew_token(bt, "kids", kinfo.token, SEC, NULL), SHMLEASE_BOUND_TO_PROCESS);
    close(down[1]);
    reap(kid, up);
    shmlease_table_close(bt);

    size_t count = 0;
    OK(shmlease_try_acquire(t, "a", SEC, &l, NULL));
    REACH(shmlease_list(t, NULL, 0, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 1);
    REACH(shmlease_get_grants(t, "a", NULL, 0, &count), SHMLEASE_BUFFER_TOO_SMALL);
    CHECK(count == 1);
    /* WRONG_KIND: permits asked of a name held as an exclusive lease. */
    ao.permits = 2;
    REACH(shmlease_acquire_with(t, "a", SEC, &ao, &m, NULL), SHMLEASE_WRONG_KIND);
    /* INTERRUPTED: a wait for the held "a" whose callback says stop. */
    ao.permits = 0;
    ao.timeout_ns = -1;
    ao.interrupt = always;
    REACH(shmlease_acquire_with(t, "a", SEC, &ao, &m, NULL), SHMLEASE_INTERRUPTED);
    shmlease_lease_free(l);
    shmlease_table_close(t);

    /* Names and descriptions: one each, distinct, and "unknown" outside the range. */
    for (int s = 0; s <= LAST_STATUS; s++) {
        CHECK(strncmp(shmlease_status_name(s), "SHMLEASE_", 9) == 0);
        CHECK(strcmp(shmlease_status_name(s), "SHMLEASE_UNKNOWN") != 0);
        CHECK(strlen(shmlease_strerror(s)) > 0);
        CHECK(strcmp(shmlease_strerror(s), "unknown status") != 0);
        for (int r = 0; r < s; r++) {
            CHECK(strcmp(shmlease_strerror(s), shmlease_strerror(r)) != 0);
            CHECK(strcmp(shmlease_status_name(s), shmlease_status_name(r)) != 0);
        }
    }
    CHECK(strcmp(shmlease_status_name(SHMLEASE_HELD), "SHMLEASE_HELD") == 0);
    CHECK(strcmp(shmlease_strerror(-1), "unknown status") == 0);
    CHECK(strcmp(shmlease_strerror(LAST_STATUS + 1), "unknown status") == 0);
    CHECK(strcmp(shmlease_status_name(LAST_STATUS + 1), "SHMLEASE_UNKNOWN") == 0);
    CHECK(strcmp(shmlease_status_name(1000), "SHMLEASE_UNKNOWN") == 0);

    int missing = 0;
    for (int s = 0; s <= LAST_STATUS; s++) {
        if (!seen[s] && s != SHMLEASE_UNSUPPORTED && s != SHMLEASE_UNAVAILABLE
            && s != SHMLEASE_INTERNAL) {
            fprintf(stderr, "status %s was never reached\n", shmlease_status_name(s));
            missing = 1;
        }
    }
    CHECK(!missing);
    puts("statuses ok");
    return 0;
}
