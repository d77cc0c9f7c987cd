/*
 * A forked child joined to its parent by two pipes: the child writes on `up`, the
 * parent on `down`, and the parent closing its end of `down` tells the child to go on.
 */
#ifndef SHMLEASE_TEST_CHILD_H
#define SHMLEASE_TEST_CHILD_H

#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

/* Forks, each side keeping only its own ends: the child up[1] and down[0], the parent
 * up[0] and down[1]. The child dies with its parent, so a failing parent leaves no
 * child. Returns what fork returned (0 in the child). */
static inline pid_t fork_piped(int up[2], int down[2]) {
    CHECK(pipe(up) == 0 && pipe(down) == 0);
    fflush(NULL);
    pid_t kid = fork();
    CHECK(kid >= 0);
    if (kid == 0) {
        close(up[0]);
        close(down[1]);
        CHECK(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0);
    } else {
        close(up[1]);
        close(down[0]);
    }
    return kid;
}

/* In the child: waits until the parent closes its end of `down`. */
static inline void wait_for_go(const int down[2]) {
    char x = 0;
    CHECK(read(down[0], &x, 1) == 0);
}

/* In the parent: waits for the child `kid` to exit with status 0, then closes its own
 * end of `up`. */
static inline void reap(pid_t kid, const int up[2]) {
    int ws = 0;
    CHECK(waitpid(kid, &ws, 0) == kid && WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    close(up[0]);
}

#endif
