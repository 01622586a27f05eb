/* record.h - the two text formats the preload writes and the `snapfault`
 * command reads: the track record (track.c, attrib.c; doc/PRELOAD.md "Track
 * records") and the snapshot index (snapmode.c; "Snapshot directories").
 * One line per record, fields separated by tabs, a one-letter tag first. */
#ifndef SFP_RECORD_H
#define SFP_RECORD_H

/* ---- Track record: the first line is the magic, a tab-free version after
 * a space ("#snapfault-track 1"); lines whose tag is unknown are skipped by
 * readers, so new tags need no new version. */
#define SFP_TRACK_MAGIC "#snapfault-track"
#define SFP_TRACK_VERSION "1"
#define SFP_TRACK_HEAD SFP_TRACK_MAGIC " " SFP_TRACK_VERSION

#define SFP_REC_PROCESS "P"  /* pid=  ppid=  page=  interval_ms=  backend=  faults=  start_ns=  exe= */
#define SFP_REC_LABEL   "L"  /* ID  KIND  START  END  PROT  NAME (START, END in hex) */
#define SFP_REC_IVAL    "I"  /* SEQ  T_MS  PAGES  TRACKED_BYTES  COLLECT_US */
#define SFP_REC_DIRTY   "D"  /* SEQ  ID  PAGES  BYTES  CUM_PAGES (after its I line) */
#define SFP_REC_GONE    "X"  /* T_MS  ID */
#define SFP_REC_NOTE    "W"  /* T_MS  MESSAGE */
#define SFP_REC_ATTR    "A"  /* PAGES  FRAME;FRAME;... */
#define SFP_REC_END     "E"  /* T_MS  INTERVALS  TOTAL_PAGES  PEAK_PAGES  HOW */

/* ---- Snapshot index (snap-TAG.index): the magic line with pid= and
 * backend=, then one line per event; '#' lines are comments to readers
 * that do not know them, except the last one, #end. */
#define SFP_INDEX_MAGIC "#snapfault-snapshots"
#define SFP_INDEX_VERSION "1"
#define SFP_INDEX_HEAD SFP_INDEX_MAGIC " " SFP_INDEX_VERSION

#define SFP_IDX_IMAGE   "S"  /* SEQ  FILE  ID  PARENT_ID  BYTES  TAKE_PAUSE_US  WRITE_US  WHY  PATCHED_PAGES */
#define SFP_IDX_FAILED  "F"  /* SEQ  FILE  REASON */
#define SFP_IDX_DELETED "D"  /* SEQ  FILE  WHY */
#define SFP_IDX_BUDGET  "#budget"  /* max_bytes=  keep=  full_every=  compress= */
#define SFP_IDX_BACKOFF "#backoff" /* WHY  period_ms=  new_period_ms= */
#define SFP_IDX_END     "#end"     /* STATUS  images=  failed=  how=  final=  deleted=  skipped=  backoffs=  bytes= */

#endif
