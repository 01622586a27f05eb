/* os_stray.c - an object that breaks the OS contract on purpose: a raw
 * mprotect and an ioctl outside uffd.c.  check_os_contract.sh expects the
 * build's check to reject it (never linked). */
#include "embed/os.h"

#include <stddef.h>
#include <sys/mman.h>

void os_stray(void *p, size_t n);
void os_stray(void *p, size_t n)
{
    mprotect(p, n, PROT_READ);
    sf__os_ioctl(-1, 0, NULL);
}
