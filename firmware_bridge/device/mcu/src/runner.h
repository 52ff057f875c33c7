/* runner.h -- one ExecuTorch program on a microcontroller, memory owned by the firmware.
 *
 * The program stays in flash (a BufferDataLoader over it: weights are read in place). Its
 * planned arenas are static buffers the linker script places in the banks the exporter
 * planned them for; the method allocator takes its tables from a pool (the free RAM of the
 * main bank); nothing is allocated on a heap. A training program (docs/bridge-protocol.md §5)
 * runs through the plain Method API, and `step` applies p <- p + (-lr) * g to the parameter
 * outputs, which alias the program's planned memory.
 *
 * This is the layer a protocol server (../src/server.cpp's role) calls; it needs nothing
 * from the board but the pools it is given.
 */
#ifndef EA_MCU_RUNNER_H
#define EA_MCU_RUNNER_H

#include <stddef.h>
#include <stdint.h>

namespace ea_mcu {

constexpr int kMaxArenas = 8;

struct Arena {
  uint8_t *data;
  uint32_t bytes;
};

/* What the runtime took, measured after load (method allocator) and after runs (temp). */
struct Figures {
  int arenas = 0;
  int64_t planned[kMaxArenas] = {};  // MethodMeta::memory_planned_buffer_size
  size_t method_used = 0;            // method allocator, after load_method
  size_t method_pool = 0;
  size_t temp_used = 0;              // the largest a kernel asked of the temp allocator
  int inputs = 0, outputs = 0;
  int error = 0;                     // the runtime's Error code behind a failed status
};

enum Status : int {
  kOk = 0,
  kLoadFailed = 1,       // Program::load (not an ExecuTorch program, bad version)
  kNoForward = 2,
  kArenaTooSmall = 3,    // the firmware's arenas do not match the program's plan
  kMethodFailed = 4,     // load_method: usually the pool is too small (method_used says)
  kInputFailed = 5,
  kRunFailed = 6,
  kNotTraining = 7,
  kLossNotFinite = 8,
};

class Runner {
 public:
  // `arenas`: the firmware's buffers, one per planned buffer, in plan order.
  Status load(const uint8_t *pte, size_t size, const Arena *arenas, int n_arenas,
              uint8_t *pool, size_t pool_bytes, uint8_t *temp, size_t temp_bytes);
  // Copy `x` (float32, numel of input `index`) into the method's input.
  Status set_input(int index, const float *x, size_t numel);
  // The element count of input `index` (0 when there is no such float input).
  size_t input_numel(int index) const;
  Status run();
  // One adaptation step: run, then SGD on the P parameters if kept > 0 and loss is finite.
  Status step(double lr, float *loss, int *kept);

  const float *output(int index, size_t *numel) const;
  bool training() const { return params_ > 0; }
  int parameters() const { return params_; }
  const float *parameter(int k, size_t *numel) const { return output(3 + params_ + k, numel); }
  const Figures &figures() const { return figures_; }

 private:
  int params_ = 0;
  Figures figures_;
};

}  // namespace ea_mcu

#endif
