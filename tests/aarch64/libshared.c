/* A shared library whose function the patch changes. The patched copy reaches the library's
 * own global variable through the GOT (a slot the runtime provides) and calls a global
 * function of the library. */
#include <stdio.h>

int lib_calls;

__attribute__((noinline)) int lib_helper(int x)
{
    return 2 * x;
}

__attribute__((noinline)) void print_state(void)
{
    lib_calls++;
#ifndef PATCHED
    printf("UNPATCHED\n");
#else
    printf("PATCHED %d\n", lib_helper(21));
#endif
}
