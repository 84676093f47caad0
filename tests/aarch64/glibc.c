/* The patched function calls glibc functions the original does not use and writes to
 * glibc's stderr (a data symbol reached through the GOT). */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) void print_state(const char *word)
{
#ifndef PATCHED
    (void)word;
    printf("UNPATCHED\n");
#else
    fprintf(stderr, "%s %zu\n", word, strlen(word));
    fflush(stderr);
#endif
}

int main(void)
{
    char word[16];
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(word, sizeof word, "%s", "PATCHED");
    for (;;) {
        print_state(word);
        usleep(20000);
    }
}
