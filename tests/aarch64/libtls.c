/* A library's thread-local variable, in the initial-exec model. */
#include <stdio.h>

__thread long lib_ticks __attribute__((tls_model("initial-exec")));

__attribute__((noinline)) void lib_tick(void)
{
    lib_ticks += 1;
    printf("LIB %ld\n", lib_ticks);
}
