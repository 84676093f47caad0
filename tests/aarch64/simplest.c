/* One function body change in an executable. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void print_state(void)
{
#ifndef PATCHED
    printf("UNPATCHED\n");
#else
    printf("PATCHED\n");
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
