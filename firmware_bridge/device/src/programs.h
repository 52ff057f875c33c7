/*
 * programs.h -- the programs a device holds, run by the ExecuTorch C++ runtime.
 *
 * Three slots, each with its own static pools: the active inference program, the active
 * training program, and a candidate being checked at commit. A commit loads the candidate
 * from its staged flash extent (a BufferDataLoader over flash: weights are read in place),
 * checks its role and its memory plan against the device profile together with the other
 * resident program, and dry-runs it; activation then swaps slots, so the old program runs
 * until the last step. Planned buffers are carved from the slot's pool with the sizes
 * MethodMeta gives; nothing is allocated on the heap.
 *
 * The training program (docs/bridge-protocol.md §5) runs through the plain Method API:
 * `forward` returns loss, logits, kept, P gradients, then the P parameters, which alias the
 * program's planned memory; a step applies p <- p + (-lr) * g there (plain SGD, as the
 * emulator's ExecuTorch SGD with momentum and weight decay 0 does). The adaptation state --
 * parameters and mutable buffers -- is reset by loading `forward` again, which copies the
 * program's initial values into planned memory, then writing a committed adapter's values
 * over the parameters.
 */
#ifndef EA_PROGRAMS_H
#define EA_PROGRAMS_H

#include <stddef.h>
#include <stdint.h>

#include "flash_store.h"  // Target
#include "profile.h"
#include "refusal.h"

namespace ea {

constexpr int kMaxDims = 8;

// What one resident program takes, measured by its allocators (GET_MEMORY).
struct ProgramMemory {
  uint32_t planned;      // its planned arenas: the sum of MethodMeta's buffer sizes
  uint32_t method_used;  // the method allocator after load_method: the runtime's tables
  uint32_t method_pool;
  uint32_t temp_peak;    // the most any kernel asked of the temp allocator since load
  uint32_t temp_pool;
};

struct Shape {
  int ndim;
  int32_t dims[kMaxDims];
  size_t numel() const {
    size_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= static_cast<size_t>(dims[i]);
    return n;
  }
  int batch() const { return ndim ? dims[0] : 1; }
  int channels() const { return ndim > 1 ? dims[1] : 1; }
};

class Programs {
 public:
  void init(const Profile *profile, double lr);
  void unload_all();

  // Check and load `data` (in flash) as the candidate for `target` (0 PROGRAM, 2 TRAINING):
  // role (WRONG_ROLE), memory plan (DOES_NOT_FIT), loading and, with `dry_run`, one run on
  // zeros (INVALID_PROGRAM). False with `r` filled when refused.
  bool load_candidate(int target, const uint8_t *data, uint32_t size, bool dry_run, Refusal *r);
  // The candidate becomes `target`'s program; for TRAINING the adaptation state starts from
  // the program and `adapter` (a committed blob in flash, or nullptr).
  bool activate(int target, const uint8_t *adapter, uint32_t adapter_len, Refusal *r);

  bool loaded(int target) const;
  const Shape &input_shape(int target) const;
  uint32_t run_ms(int target) const;  // one run, measured (0: not yet)
  uint32_t size(int target) const;
  // `target`'s program as its allocators measured it; false when none is resident.
  bool memory(int target, ProgramMemory *out) const;

  // Adapter blobs (docs §4 "Adapter blob"). `candidate`: check against the candidate's
  // parameters instead of the active training program's.
  bool check_adapter(const uint8_t *blob, uint32_t len, bool candidate, Refusal *r) const;
  bool has_training_params() const;
  // Reset the adaptation state with `adapter` (nullptr: the program's own parameters).
  bool reset_state(const uint8_t *adapter, uint32_t adapter_len, Refusal *r);
  // The current parameters as a blob in a static buffer; 0 when there is no training program.
  uint32_t adapter_blob(const uint8_t **out);

  // Where to write `target`'s input (float32, input_shape(target)).
  float *input(int target);
  bool run_inference(Refusal *r, const float **out, size_t *numel);
  bool run_step(Refusal *r, float *loss, const float **logits, size_t *numel);

 private:
  const Profile *profile_ = nullptr;
  double lr_ = 0;
};

}  // namespace ea

#endif  // EA_PROGRAMS_H
