/* The patch adds a function and an initialised variable, which keeps its value across
 * calls. */
#include <stdio.h>
#include <unistd.h>

#ifdef PATCHED
int patch_counter = 40;

__attribute__((noinline)) int next_count(void)
{
    return ++patch_counter;
}
#endif

__attribute__((noinline)) void print_state(void)
{
#ifndef PATCHED
    printf("UNPATCHED\n");
#else
    printf("PATCHED %d\n", next_count());
#endif
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        print_state();
        usleep(20000);
    }
}
