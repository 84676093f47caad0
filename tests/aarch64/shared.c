/* An executable whose output comes from libshared.so. */
#include <stdio.h>
#include <unistd.h>

void print_state(void);

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        print_state();
        usleep(20000);
    }
}
