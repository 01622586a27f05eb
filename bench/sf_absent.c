/* sf_absent.c - snapfault side of sfbench-raw, the baseline-only binary that
 * builds without libsnapfault: every "sf-..." row reports status=not-built. */
#include "sfbench.h"

#include <string.h>

const char *sf_side_status(void)
{
    return "not-built";
}

void sf_side_probe(void)
{
    result("scenario=sfprobe status=not-built");
}

static int absent_setup(struct mech *m)
{
    snprintf(m->why, sizeof m->why, "sfbench-raw was built without libsnapfault");
    return -ENOSYS;
}

static const struct mech_ops absent_ops = {
    .setup = absent_setup,
};

int sf_mech_lookup(const char *name, struct mech *m)
{
    memset(m, 0, sizeof *m);
    m->name = name;
    m->ops = &absent_ops;
    m->flags = MECH_SNAPFAULT | MECH_ABSENT |
               (strncmp(name, "sf-snap-", 8) == 0 ? MECH_SNAPSHOT : 0);
    return 0;
}

const char *const sf_engine_names[] = {
    "mirror", "cow-uffd", "cow-uffd-handler", "cow-uffd-inthread", "cow-mprotect", "auto", NULL,
};

int sf_engine_lookup(const char *name, struct mech *m)
{
    for (int i = 0; sf_engine_names[i]; i++)
        if (strcmp(sf_engine_names[i], name) == 0) {
            memset(m, 0, sizeof *m);
            m->name = name;
            m->ops = &absent_ops;
            m->flags = MECH_SNAPFAULT | MECH_ABSENT | MECH_SNAPSHOT | MECH_ENGINE;
            return 0;
        }
    return -ENOENT;
}
