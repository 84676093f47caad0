/* A library's thread-local variable, in the initial-exec model. */
#include <stdio.h>

__thread long lib_ticks __attribute__((tls_model("initial-exec")));

__attribute__((noinline)) void lib_tick(void)
{
#ifndef PATCHED
    lib_ticks += 1;
#else
    lib_ticks += 1000000;
#endif
    printf("LIB %ld\n", lib_ticks);
}
