/* Thread-local variables: the executable's own (local-exec model) and a library's
 * (initial-exec model). Each patched function keeps counting in the same variable. */
#include <stdio.h>
#include <unistd.h>

__thread long exe_ticks;
void lib_tick(void);

__attribute__((noinline)) void exe_tick(void)
{
#ifndef PATCHED
    exe_ticks += 1;
#else
    exe_ticks += 1000000;
#endif
    printf("EXE %ld\n", exe_ticks);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        exe_tick();
        lib_tick();
        usleep(20000);
    }
}
