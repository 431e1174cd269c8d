/* The QEMU guest's workload: allocate SIZE MiB, touch all of it, then dirty RATE MB/s of
 * pages in a HOT MiB hot set, printing a heartbeat line on the console every PERIOD ms.
 * Parameters come from the kernel command line: tb.size= tb.rate= tb.hot= tb.period=
 * tb.markers= (plaintext markers in agents/markers.py's format, one per page, planted in the
 * cold pages so the writes never touch them: a capture of a plaintext migration shows them).
 * Built statically at image build time by agents/qemu/image.py.
 * It never sleeps (a busy guest, like a CPU-bound workload): an idle vCPU's kernel pages were
 * the ones QEMU 7.2's TCG lost writes to (see the TLB note below and README, "Real
 * hypervisors"). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double param(const char *cmdline, const char *key, double dflt) {
    const char *p = strstr(cmdline, key);
    return p ? atof(p + strlen(key)) : dflt;
}

int main(void) {
    static char cmdline[4096];
    FILE *f = fopen("/proc/cmdline", "r");
    if (f) { size_t n = fread(cmdline, 1, sizeof cmdline - 1, f); cmdline[n] = 0; fclose(f); }
    size_t size_mib = (size_t)param(cmdline, "tb.size=", 64);
    double rate_mbs = param(cmdline, "tb.rate=", 8);
    size_t hot_mib = (size_t)param(cmdline, "tb.hot=", 16);
    double period = param(cmdline, "tb.period=", 100) / 1000.0;
    if (hot_mib == 0 || hot_mib > size_mib) hot_mib = size_mib;
    size_t npages = size_mib * 1024 * 1024 / PAGE, hot = hot_mib * 1024 * 1024 / PAGE;
    uint64_t *mem = malloc(npages * PAGE);
    if (!mem) { printf("tb-error: cannot allocate %zu MiB\n", size_mib); return 1; }
    uint64_t x = 0x9E3779B97F4A7C15ULL;  /* xorshift64: incompressible page contents */
    for (size_t i = 0; i < npages * PAGE / 8; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17; mem[i] = x;
    }
    size_t markers = (size_t)param(cmdline, "tb.markers=", 0), cold = npages - hot;
    if (markers > cold) markers = cold;
    for (size_t i = 0; i < markers; i++) {  /* PREFIX + %08d, padded with '#' to 48 bytes */
        char *at = (char *)mem + (hot + i * cold / markers) * PAGE + 256;
        char m[49];
        snprintf(m, sizeof m, "TBT-PLAINTEXT-MARKER-%08zu", i);
        memset(m + strlen(m), '#', 48 - strlen(m));
        memcpy(at, m, 48);
    }
    printf("tb-ready size_mib=%zu rate_mbs=%.1f hot_mib=%zu markers=%zu\n", size_mib, rate_mbs,
           hot_mib, markers);
    fflush(stdout);
    double per_s = rate_mbs * 1e6 / PAGE, t0 = now(), next_beat = t0, owed = 0;
    uint64_t beat = 0, dirtied = 0;
    size_t cursor = 0;
    double last = t0, next_switch = t0;
    /* QEMU < 9.0 under TCG loses writes through stale softmmu TLB entries after a dirty-bitmap
     * sync (fixed by QEMU commit 03bfc2188f, "physmem: Fix migration dirty bitmap coherency
     * with TCG memory access"). A CR3 write flushes that TLB: a second process to switch to
     * every millisecond bounds the window in which a write can go untracked. */
    if (fork() == 0)
        for (;;) sched_yield();
    for (;;) {
        double t = now();
        if (t >= next_switch) { sched_yield(); next_switch = t + 0.001; }
        owed += (t - last) * per_s;
        last = t;
        /* never catch up more than 10 ms of writes: a guest that loses CPU time (QEMU's
         * auto-converge throttle, a pause) dirties less, like a CPU-bound workload */
        if (owed > per_s * 0.01 + 1) owed = per_s * 0.01 + 1;
        for (; owed >= 1; owed -= 1, dirtied++) {
            mem[cursor * (PAGE / 8) + (dirtied % (PAGE / 8))] = ++x;
            cursor = (cursor + 1) % hot;
        }
        if (t >= next_beat) {
            printf("tb-heartbeat %llu dirtied=%llu\n", (unsigned long long)++beat,
                   (unsigned long long)dirtied);
            fflush(stdout);
            next_beat += period;
            if (next_beat < t) next_beat = t + period;
        }
    }
}
