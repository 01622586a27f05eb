/* os_clean.c - an object that keeps the OS contract (a pure libc function
 * and a contract call): check_os_contract.sh expects the build's check to
 * accept it (never linked). */
#include "embed/os.h"

#include <string.h>
#include <sys/mman.h>

void os_clean(void *p, const void *q, size_t n);
void os_clean(void *p, const void *q, size_t n)
{
    memcpy(p, q, n);
    sf__os_mprotect(p, n, PROT_READ);
}
