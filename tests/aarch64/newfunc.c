/* The patch adds a function and an initialised variable, which keeps its value across
 * calls. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void print_state(void)
{
    printf("UNPATCHED\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        print_state();
        usleep(20000);
    }
}
