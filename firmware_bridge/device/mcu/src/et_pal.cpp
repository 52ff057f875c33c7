// et_pal.cpp -- ExecuTorch's platform layer (the `minimal` PAL's weak stubs) for this board.
// No heap: et_pal_allocate fails, so anything that would allocate outside the pools
// this firmware hands the runtime fails visibly instead of growing a heap.
#include <executorch/runtime/platform/platform.h>

#include "platform.h"

extern "C" {
void et_pal_init(void) {}

ET_NORETURN void et_pal_abort(void) {
  ea_platform_write("EA abort\n");
  ea_platform_exit(4);
}

et_timestamp_t et_pal_current_ticks(void) { return ea_platform_cycles(); }

et_tick_ratio_t et_pal_ticks_to_ns_multiplier(void) { return {1, 1}; }

void et_pal_emit_log_message(et_timestamp_t, et_pal_log_level_t, const char *filename,
                             const char *, size_t line, const char *message, size_t) {
  // Only with EXECUTORCH_ENABLE_LOGGING (off in the measured builds).
  ea_platform_write(message);
  ea_platform_write("\n");
  (void)filename;
  (void)line;
}

void *et_pal_allocate(size_t) { return nullptr; }
void et_pal_free(void *) {}
}
