/*
 * Assertions for the C test programs: a failed check prints where, what, the status
 * name and shmlease_last_error(), and exits 1.
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

#endif
