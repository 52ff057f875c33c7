// main_selftest.cpp -- the QEMU self-test: load the program linked into flash, run it on the
// inputs linked beside it (inference: each input once; training: `ea_steps` SGD steps over
// them in turn), and print outputs (as float bits) and the memory the runtime took.
// benchmarks/firmware/run.py and tests/firmware read these lines; a protocol server replaces
// this file and keeps runner.cpp.
#include <stdint.h>

#include "console.h"
#include "platform.h"
#include "runner.h"

// From the per-(program, profile) blob.S that build.py writes.
extern "C" {
extern const uint8_t ea_pte[], ea_pte_end[];
extern const float ea_inputs[], ea_inputs_end[];
extern const float ea_extra[], ea_extra_end[];  // inputs after the batch, per step
extern const ea_mcu::Arena ea_arena_table[];
extern const uint32_t ea_arena_count;
extern const uint32_t ea_steps;
extern const uint32_t ea_input_numel;
extern const double ea_lr;
extern const char ea_name[];
}

namespace {

ea_mcu::Runner runner;
constexpr size_t kTempBytes = 4096;  // kernels' scratch, carved from the end of the pool

void line(const char *key, uint32_t value) {
  ea_put("EA ");
  ea_put(key);
  ea_put(" ");
  ea_put_u(value);
  ea_put("\n");
}

int fail(const char *what, int status) {
  ea_put("EA error ");
  ea_put(what);
  ea_put(" ");
  ea_put_i(status);
  ea_put(" runtime_error ");
  ea_put_i(runner.figures().error);
  ea_put("\n");
  return 1;
}

void floats(const char *key, int index, const float *x, size_t n) {
  ea_put("EA ");
  ea_put(key);
  ea_put(" ");
  ea_put_i(index);
  ea_put(" ");
  ea_put_u(static_cast<uint32_t>(n));
  ea_put_floats(x, n);
  ea_put("\n");
}

}  // namespace

int main() {
  ea_put("EA program ");
  ea_put(ea_name);
  ea_put("\n");
  line("pte_bytes", static_cast<uint32_t>(ea_pte_end - ea_pte));
  uint8_t *pool = ea_pool_start();
  size_t pool_bytes = ea_pool_size();
  if (pool_bytes < 2 * kTempBytes) return fail("pool", static_cast<int>(pool_bytes));
  ea_mcu::Status s = runner.load(ea_pte, static_cast<size_t>(ea_pte_end - ea_pte), ea_arena_table,
                                 static_cast<int>(ea_arena_count), pool, pool_bytes - kTempBytes,
                                 pool + pool_bytes - kTempBytes, kTempBytes);
  const ea_mcu::Figures &f = runner.figures();
  for (int i = 0; i < f.arenas; ++i) {
    ea_put("EA planned ");
    ea_put_i(i);
    ea_put(" ");
    ea_put_u(static_cast<uint32_t>(f.planned[i]));
    ea_put("\n");
  }
  line("method_used", static_cast<uint32_t>(f.method_used));
  line("method_pool", static_cast<uint32_t>(f.method_pool));
  line("temp_pool", static_cast<uint32_t>(kTempBytes));  // reserved: the fit check counts it
  if (s != ea_mcu::kOk) return fail("load", s);
  line("parameters", static_cast<uint32_t>(runner.parameters()));

  // ea_inputs holds samples of forward's input 0 back to back (float32, ea_input_numel each).
  size_t sample = ea_input_numel;
  size_t in_numel = static_cast<size_t>(ea_inputs_end - ea_inputs);
  if (!sample || in_numel % sample) return fail("input", 0);
  size_t n_inputs = in_numel / sample;
  line("inputs", static_cast<uint32_t>(n_inputs));
  // Inputs after the batch (a teacher step's view draws) come from ea_extra, each step's
  // back to back, drawn by build.py as the host draws them; there is no generator here.
  size_t per_step = 0;
  for (int i = 1; i < f.inputs; ++i) {
    size_t n = runner.input_numel(i);
    if (!n) return fail("extra_input", i);
    per_step += n;
  }
  size_t extra = static_cast<size_t>(ea_extra_end - ea_extra);
  if (f.inputs > 1 && (!runner.training() || extra != per_step * ea_steps)) {
    ea_put("EA error the program takes ");
    ea_put_i(f.inputs);
    ea_put(" inputs; the self-test has those after the batch for training steps only, from ");
    ea_put("build.py's view draws\n");
    return 1;
  }

  if (!runner.training()) {
    for (size_t k = 0; k < n_inputs; ++k) {
      if ((s = runner.set_input(0, ea_inputs + k * sample, sample)) != ea_mcu::kOk)
        return fail("input", s);
      uint32_t t0 = ea_platform_cycles();
      if ((s = runner.run()) != ea_mcu::kOk) return fail("run", s);
      line("cycles", ea_platform_cycles() - t0);
      size_t n;
      const float *out = runner.output(0, &n);
      floats("out", static_cast<int>(k), out, n);
    }
  } else {
    for (uint32_t step = 0; step < ea_steps; ++step) {
      const float *x = ea_inputs + (step % n_inputs) * sample;
      if ((s = runner.set_input(0, x, sample)) != ea_mcu::kOk) return fail("input", s);
      const float *e = ea_extra + step * per_step;
      for (int i = 1; i < f.inputs; ++i) {
        size_t n = runner.input_numel(i);
        if ((s = runner.set_input(i, e, n)) != ea_mcu::kOk) return fail("input", s);
        e += n;
      }
      float loss;
      int kept;
      if ((s = runner.step(ea_lr, &loss, &kept)) != ea_mcu::kOk) return fail("step", s);
      size_t n;
      const float *logits = runner.output(1, &n);
      ea_put("EA step ");
      ea_put_u(step);
      ea_put(" kept ");
      ea_put_i(kept);
      ea_put(" loss");
      ea_put_floats(&loss, 1);
      ea_put("\n");
      floats("logits", static_cast<int>(step), logits, n);
    }
    for (int k = 0; k < runner.parameters(); ++k) {
      size_t n;
      const float *p = runner.parameter(k, &n);
      floats("param", k, p, n);
    }
  }
  line("temp_used", static_cast<uint32_t>(runner.figures().temp_used));
  line("stack_high_water", static_cast<uint32_t>(ea_stack_high_water()));
  line("stack_size", static_cast<uint32_t>(ea_stack_size()));
  ea_put("EA done\n");
  ea_flush();
  return 0;
}
