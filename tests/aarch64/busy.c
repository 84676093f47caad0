/* A thread that never leaves spin(), beside a main thread that calls report(): a patch of
 * spin() (built with -DPATCH_SPIN) must fail cleanly, one of report() (-DPATCH_REPORT) must
 * succeed. */
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

volatile int spin_rounds;
/* Never set: spin() could return, but in practice its thread stays inside. */
volatile int stop_spinning;

__attribute__((noinline)) void spin(void)
{
    while (!stop_spinning) {
#ifdef PATCH_SPIN
        spin_rounds += 2;
#else
        spin_rounds++;
#endif
        usleep(5000);
    }
}

static void *spinner(void *arg)
{
    (void)arg;
    spin();
    return NULL;
}

__attribute__((noinline)) void report(void)
{
#ifdef PATCH_REPORT
    printf("PATCHED\n");
#else
    printf("UNPATCHED\n");
#endif
}

int main(void)
{
    pthread_t t;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (pthread_create(&t, NULL, spinner, NULL) != 0)
        return 1;
    for (;;) {
        report();
        usleep(20000);
    }
}
