/* probe.c - `snapfault probe`: what the kernel and this process support,
 * which backend each mode of the preload would use, and why not the others. */
#include "tools.h"

#include "snapfault.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *yesno(int v) { return v ? "yes" : "no"; }

int cmd_probe(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (is_help(argv[i])) {
            printf("usage: snapfault probe\n\n"
                   "Tries each tracking mechanism on a scratch page and prints what works here,\n"
                   "which backend each preload mode and which snapshot engine AUTO would pick,\n"
                   "and why the others cannot be used.\n"
                   "Run it as the user (and with the privileges) the program will have.\n");
            return 0;
        }
        usage_error("probe", "unexpected argument '%s'", argv[i]);
    }
    sf_caps c;
    int rc = sf_probe(&c);
    if (rc < 0) {
        fprintf(stderr, "snapfault probe: %s\n", sf_strerror(rc));
        return 1;
    }
    printf("kernel and process (uid %d):\n", (int)geteuid());
    printf("  userfaultfd:                 %s (features %#llx)\n", yesno(c.uffd), (unsigned long long)c.uffd_features);
    printf("  uffd kernel-mode faults:     %s%s\n", yesno(c.uffd_kernel_faults),
           c.uffd_kernel_faults ? "" : " (needs root, CAP_SYS_PTRACE, /dev/userfaultfd access or "
                                       "vm.unprivileged_userfaultfd=1)");
    printf("  uffd write-protect:          %s\n", yesno(c.uffd_wp));
    printf("  WP of unpopulated pages:     %s\n", yesno(c.uffd_wp_unpopulated));
    printf("  WP async (6.7+):             %s\n", yesno(c.uffd_wp_async));
    printf("  uffd SIGBUS mode:            %s\n", yesno(c.uffd_sigbus));
    printf("  PAGEMAP_SCAN:                %s\n", yesno(c.pagemap_scan));
    printf("  soft-dirty bits:             %s\n", yesno(c.soft_dirty));
    /* Arming part of a huge page splits it at the next write, with every
     * backend: tracking stays 4 KiB-grained and the huge pages are gone. */
    printf("  transparent huge pages:      %s\n",
           c.thp_enabled ? "enabled; tracking a range splits its huge pages at the next write "
                           "(run --thp keep leaves such ranges untracked)"
                         : "never");
    printf("  VMAs: %ld of vm.max_map_count %ld\n", c.map_count, c.max_map_count);
    printf("\nbackends:\n");
    for (int b = 1; b < SF_BACKEND_COUNT; b++)
        printf("  %-11s %s%s%s\n", sf_backend_name((sf_backend)b), c.backend_ok[b] ? "unusable" : "usable",
               c.backend_ok[b] ? ": " : "", c.backend_ok[b] ? c.why[b] : "");
    printf("  uffd-sync faults: %s\n", c.sync_mode_why[0] ? c.sync_mode_why : sf_fault_mode_name(c.sync_mode));
    printf("\nsnapshot engine (library, SF_BACKEND_AUTO + SF_OPT_SNAPSHOTS):\n");
    printf("  AUTO picks:         %s on %s\n", sf_engine_name(c.auto_engine), sf_backend_name(c.auto_snapshots));
    printf("  why:                %s\n", c.auto_engine_why);
    printf("  SF_OPT_LOW_MEMORY:  cow on %s (memory for written pages only)\n",
           sf_backend_name(!c.backend_ok[SF_BACKEND_UFFD_SYNC] ? SF_BACKEND_UFFD_SYNC : SF_BACKEND_MPROTECT));
    printf("\nre-arming costs (measured on scratch memory; a gap of unwritten pages joins\n"
           "one protect call while gap x per-page cost < one call):\n");
    if (c.uffd_wp_call_ns > 0)
        printf("  UFFDIO_WRITEPROTECT: %.0f ns a call, %.1f ns a page in a span\n", c.uffd_wp_call_ns,
               c.uffd_wp_pte_ns);
    else
        printf("  UFFDIO_WRITEPROTECT: not measured (uffd write-protect unusable)\n");
    if (c.mprotect_call_ns > 0)
        printf("  mprotect:            %.0f ns a call, %.1f ns a page in a span\n", c.mprotect_call_ns,
               c.mprotect_pte_ns);
    else
        printf("  mprotect:            not measured\n");
    printf("  span gap:            uffd %ld pages, mprotect %ld pages%s\n", c.uffd_span_gap,
           c.mprotect_span_gap, c.span_gap_forced ? " (forced by SNAPFAULT_SPAN_GAP)" : "");
    printf("\npreload modes (SNAPFAULT_BACKEND=auto):\n");
    printf("  track:              %s\n", sf_backend_name(c.auto_tracking));
    printf("  snapshot:           %s (SNAPFAULT_ENGINE=auto: cow; mirror: uffd-async)\n",
           sf_backend_name(c.auto_snapshots == SF_BACKEND_UFFD_ASYNC
                               ? (!c.backend_ok[SF_BACKEND_UFFD_SYNC] ? SF_BACKEND_UFFD_SYNC : SF_BACKEND_MPROTECT)
                               : c.auto_snapshots));
    bool inthread = !c.backend_ok[SF_BACKEND_UFFD_SYNC] && c.uffd_sigbus;
    printf("  track --attribute:  %s (faults must arrive in the writing thread)\n",
           inthread ? "uffd-sync, in-thread faults" : "mprotect");
    bool kw = c.auto_tracking == SF_BACKEND_UFFD_ASYNC || c.auto_tracking == SF_BACKEND_SOFTDIRTY;
    bool kws = c.auto_snapshots != SF_BACKEND_MPROTECT && !c.backend_ok[SF_BACKEND_UFFD_SYNC] &&
               c.sync_mode == SF_FAULTS_HANDLER_THREAD;
    printf("\nkernel writes (read(2) into tracked memory): track mode %s, snapshot mode %s\n",
           kw ? "resolved by the kernel" : "pre-faulted by the preload's interposers",
           kws ? "resolved by handler threads" : "pre-faulted by the preload's interposers");
    return 0;
}
