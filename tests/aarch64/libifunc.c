/* get_value is an IFUNC whose resolver checks the arguments glibc passes on aarch64: the
 * hardware capabilities with _IFUNC_ARG_HWCAP set, and a pointer to an __ifunc_arg_t holding
 * AT_HWCAP and AT_HWCAP2. A resolver called without them picks the wrong implementation. */
#include <stdint.h>
#include <sys/ifunc.h>

static int value_good(void)
{
    return 42;
}

static int value_bad(void)
{
    return -1;
}

static void *resolve_value(uint64_t hwcap, const __ifunc_arg_t *arg)
{
    if ((hwcap & _IFUNC_ARG_HWCAP) && arg && arg->_size >= sizeof(__ifunc_arg_t) &&
        arg->_hwcap == (hwcap & ~_IFUNC_ARG_HWCAP))
        return (void *)value_good;
    return (void *)value_bad;
}

int get_value(void) __attribute__((ifunc("resolve_value")));
