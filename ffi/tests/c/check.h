/*
 * Assertions for the C test programs: a failed check prints where, what, the status
 * name and shmlease_last_error(), and exits 1. And two calls most programs make,
 * checked so.
 */
#ifndef SHMLEASE_TEST_CHECK_H
#define SHMLEASE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmlease.h"

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__,  \
                    __LINE__, #cond, shmlease_last_error());                         \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define EXPECT(expr, want)                                                           \
    do {                                                                             \
        shmlease_status got_ = (expr);                                               \
        if (got_ != (want)) {                                                        \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", \
                    __FILE__, __LINE__, #expr, shmlease_status_name((int)got_),      \
                    shmlease_status_name((int)(want)), shmlease_last_error());       \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define OK(expr) EXPECT(expr, SHMLEASE_OK)

#define SEC 1000000000ull
#define MSEC 1000000ull

/* A fresh table of `capacity` slots in the file `file` of the directory `dir`. */
static inline shmlease_table *create_table(const char *dir, const char *file, uint32_t capacity) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    shmlease_table_options options = {capacity, 0, 0};
    shmlease_table *t = NULL;
    OK(shmlease_table_create(path, &options, &t));
    return t;
}

/* The token of the lease handle `l`. */
static inline uint64_t token_of(shmlease_lease *l) {
    uint64_t token = 0;
    OK(shmlease_lease_token(l, &token));
    return token;
}

#endif
