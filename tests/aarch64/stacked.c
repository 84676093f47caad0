/* Two patches of the same function, stacked: built with -DVERSION=1 and -DVERSION=2. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void print_state(void)
{
#ifndef VERSION
    printf("V0\n");
#else
    printf("V%d\n", VERSION);
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
