/* Two patches of the same function, stacked. */
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void print_state(void)
{
    printf("V1\n");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        print_state();
        usleep(20000);
    }
}
