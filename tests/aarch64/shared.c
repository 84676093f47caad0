/* An executable whose output comes from libshared.so; it checks that every call counts
 * once in the library's variable. */
#include <stdio.h>
#include <unistd.h>

extern int lib_calls;
void print_state(void);

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        int before = lib_calls;
        print_state();
        if (lib_calls != before + 1)
            printf("COUNT BROKEN\n");
        usleep(20000);
    }
}
