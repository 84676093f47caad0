/* The patched function calls an IFUNC of libifunc.so. */
#include <stdio.h>
#include <unistd.h>

int get_value(void);

__attribute__((noinline)) void print_state(void)
{
#ifndef PATCHED
    printf("UNPATCHED\n");
#else
    printf("PATCHED %d\n", get_value());
#endif
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("loader chose %d\n", get_value());
    for (;;) {
        print_state();
        usleep(20000);
    }
}
