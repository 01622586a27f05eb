/* header_c11.c - the public header compiles alone under strict C11 with
 * -pedantic (no GNU extensions leak into users' builds). */
#include <snapfault.h>

int main(void)
{
    sf_options o = {SF_BACKEND_AUTO, SF_OPT_SNAPSHOTS, 0, 0, SF_ENGINE_AUTO};
    sf_caps caps;
    return sf_probe(&caps) == 0 && o.flags == SF_OPT_SNAPSHOTS ? 0 : 1;
}
