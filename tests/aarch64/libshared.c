/* A shared library whose function the patch changes. */
#include <stdio.h>

__attribute__((noinline)) void print_state(void)
{
    printf("UNPATCHED\n");
}
