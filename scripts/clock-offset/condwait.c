/*
 * For `VNCGUARD_CLOCK_OFFSET=+365d ./dev test`, preloaded before libfaketime into every test
 * process. libfaketime moves CLOCK_REALTIME, so a program that waits until an absolute
 * CLOCK_REALTIME time it computed from the moved clock (librdkafka's C11 cnd_timedwait, any
 * pthread_cond_timedwait on a default condition variable) asks the kernel, whose clock is not
 * moved, to wait a year: every Kafka client hung. These two wrappers take the offset back out of
 * such deadlines. Deadlines before 2001 are CLOCK_MONOTONIC ones (seconds since boot, which
 * libfaketime leaves alone under FAKETIME_DONT_FAKE_MONOTONIC=1) and pass unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <threads.h>
#include <time.h>
#include <unistd.h>

static const struct timespec *to_real(const struct timespec *abstime, struct timespec *real) {
    if (!abstime || abstime->tv_sec < 1000000000L) return abstime;
    struct timespec faked, now;
    clock_gettime(CLOCK_REALTIME, &faked);
    syscall(SYS_clock_gettime, CLOCK_REALTIME, &now);
    long long delta = (long long)(faked.tv_sec - now.tv_sec) * 1000000000LL + (faked.tv_nsec - now.tv_nsec);
    long long t = (long long)abstime->tv_sec * 1000000000LL + abstime->tv_nsec - delta;
    real->tv_sec = t / 1000000000LL;
    real->tv_nsec = t % 1000000000LL;
    return real;
}

int cnd_timedwait(cnd_t *cond, mtx_t *mutex, const struct timespec *abstime) {
    static int (*next)(cnd_t *, mtx_t *, const struct timespec *);
    if (!next) next = dlvsym(RTLD_NEXT, "cnd_timedwait", "GLIBC_2.34");
    struct timespec real;
    return next(cond, mutex, to_real(abstime, &real));
}

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex, const struct timespec *abstime) {
    static int (*next)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);
    if (!next) next = dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    struct timespec real;
    return next(cond, mutex, to_real(abstime, &real));
}
