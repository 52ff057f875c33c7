// programs.cpp -- see programs.h.
#include "programs.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <new>
#include <optional>

#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include "edgeadapt_frame.h"
#include "hal.h"
#include "peak_allocator.h"

// Pool sizes are build constants: an MCU build sets them to its banks, the host build to
// whatever the largest profile may plan (pages never touched cost nothing).
#ifndef EA_METHOD_POOL_BYTES
#define EA_METHOD_POOL_BYTES (8u << 20)
#endif
#ifndef EA_PLANNED_POOL_BYTES
#define EA_PLANNED_POOL_BYTES (64u << 20)
#endif
#ifndef EA_TEMP_POOL_BYTES
#define EA_TEMP_POOL_BYTES (8u << 20)
#endif
#ifndef EA_ADAPTER_MAX_BYTES
#define EA_ADAPTER_MAX_BYTES (4u << 20)
#endif

namespace ea {
namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::extension::BufferDataLoader;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::HierarchicalAllocator;
using executorch::runtime::MemoryAllocator;
using executorch::runtime::MemoryManager;
using executorch::runtime::Method;
using executorch::runtime::MethodMeta;
using executorch::runtime::Program;
using executorch::runtime::Result;
using executorch::runtime::Span;

constexpr int kSlots = 3;
constexpr int kMaxPlanned = 8;
constexpr int kMaxParams = 256;
constexpr const char *kTrainingMethods[3] = {"__et_training_fqn_forward",
                                             "__et_training_gradients_index_forward",
                                             "__et_training_parameters_index_forward"};
constexpr const char *kPrefix = "model.";

alignas(64) uint8_t g_method_pool[kSlots][EA_METHOD_POOL_BYTES];
alignas(64) uint8_t g_planned_pool[kSlots][EA_PLANNED_POOL_BYTES];
alignas(64) uint8_t g_temp_pool[kSlots][EA_TEMP_POOL_BYTES];
alignas(8) uint8_t g_blob[EA_ADAPTER_MAX_BYTES];

struct Param {
  const char *name;  // in the program's flatbuffer (flash), without the "model." prefix
  uint32_t name_len;
  Shape shape;
  float *value;      // planned memory of the loaded forward (nullptr until loaded)
};

struct Slot {
  int index = 0;
  int role = -1;
  const uint8_t *data = nullptr;
  uint32_t size = 0;
  std::optional<BufferDataLoader> loader;
  std::optional<Program> program;
  std::optional<Method> method;
  std::optional<MemoryAllocator> method_alloc;
  std::optional<PeakAllocator> temp_alloc;
  std::optional<HierarchicalAllocator> planned;
  std::optional<MemoryManager> memory;
  Span<uint8_t> spans[kMaxPlanned];
  int n_planned = 0;
  uint64_t arenas[kMaxPlanned] = {};
  int n_arenas = 0;
  uint64_t constants = 0;
  Shape input{};
  float *input_data = nullptr;
  uint32_t run_ms = 0;
  int n_params = 0;
  Param params[kMaxParams];
};

Slot g_slot[kSlots];
int g_role_slot[3] = {-1, -1, -1};  // by target: PROGRAM, (ADAPTER unused), TRAINING
int g_candidate = 0;

void unload_method(Slot &s) {
  s.method.reset();
  s.memory.reset();
  s.planned.reset();
  s.input_data = nullptr;
  for (int i = 0; i < s.n_params; ++i) s.params[i].value = nullptr;
}

void unload(Slot &s) {
  unload_method(s);
  s.program.reset();
  s.loader.reset();
  s.role = -1;
  s.data = nullptr;
  s.size = 0;
  s.n_params = 0;
  s.run_ms = 0;
}

Slot *role_slot(int target) {
  int i = (target == kProgram || target == kTraining) ? g_role_slot[target] : -1;
  return i >= 0 ? &g_slot[i] : nullptr;
}

// Sizes in refusal texts go through %lu: newlib-nano's printf (the MCU build) has no %zu or
// %ll, and a specifier it does not know shifts every argument after it.
unsigned long ul(size_t n) { return static_cast<unsigned long>(n); }

bool fail(Refusal *r, uint16_t code, const char *what, Error err) {
  return refuse(r, code, 0, "%s (runtime error 0x%x)", what, static_cast<unsigned>(err));
}

// Load `name` into the slot's pools (method tables in the method pool, planned buffers
// carved from the planned pool at MethodMeta's sizes).
bool load_method(Slot &s, const char *name, Refusal *r) {
  unload_method(s);
  s.method_alloc.emplace(EA_METHOD_POOL_BYTES, g_method_pool[s.index]);
  s.temp_alloc.emplace(EA_TEMP_POOL_BYTES, g_temp_pool[s.index]);
  Result<MethodMeta> meta = s.program->method_meta(name);
  if (!meta.ok()) return fail(r, kInvalidProgram, "ProgramFileError: no method meta", meta.error());
  size_t n = meta->num_memory_planned_buffers(), used = 0;
  if (n > static_cast<size_t>(kMaxPlanned))
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: %lu planned buffers (at most %d)", ul(n),
                  kMaxPlanned);
  for (size_t i = 0; i < n; ++i) {
    Result<int64_t> bytes = meta->memory_planned_buffer_size(i);
    if (!bytes.ok()) return fail(r, kInvalidProgram, "ProgramFileError: bad memory plan", bytes.error());
    size_t need = (static_cast<size_t>(*bytes) + 63) & ~static_cast<size_t>(63);
    if (used + need > EA_PLANNED_POOL_BYTES)
      return refuse(r, kDoesNotFit, static_cast<uint32_t>(used + need - EA_PLANNED_POOL_BYTES),
                    "the memory plan (%lu B) exceeds this firmware's pool of %lu B", ul(used + need),
                    ul(EA_PLANNED_POOL_BYTES));
    s.spans[i] = Span<uint8_t>(g_planned_pool[s.index] + used, static_cast<size_t>(*bytes));
    used += need;
  }
  s.n_planned = static_cast<int>(n);
  s.planned.emplace(Span<Span<uint8_t>>(s.spans, n));
  s.memory.emplace(&*s.method_alloc, &*s.planned, &*s.temp_alloc);
  Result<Method> method = s.program->load_method(name, &*s.memory);
  if (!method.ok())
    return fail(r, kInvalidProgram, "ProgramFileError: the runtime cannot load the method",
                method.error());
  s.method.emplace(std::move(method.get()));
  return true;
}

bool in_planned(const Slot &s, const void *p, size_t bytes) {
  const uint8_t *b = static_cast<const uint8_t *>(p);
  const uint8_t *pool = g_planned_pool[s.index];
  return b >= pool && b + bytes <= pool + EA_PLANNED_POOL_BYTES;
}

bool tensor_shape(const Tensor &t, Shape *out) {
  if (t.dim() > kMaxDims) return false;
  out->ndim = static_cast<int>(t.dim());
  for (int i = 0; i < out->ndim; ++i) out->dims[i] = static_cast<int32_t>(t.size(i));
  return true;
}

// After `forward` is loaded: where its input and its parameters live.
bool bind_forward(Slot &s, Refusal *r) {
  EValue &in = s.method->mutable_input(0);
  if (!in.isTensor() || in.toTensor().scalar_type() != ScalarType::Float)
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: forward's input is not a float tensor");
  Tensor t = in.toTensor();
  if (!tensor_shape(t, &s.input) || t.mutable_data_ptr() == nullptr ||
      !in_planned(s, t.const_data_ptr(), t.nbytes()))
    return refuse(r, kInvalidProgram, 0,
                  "ProgramFileError: forward's input must be memory-planned (export default)");
  s.input_data = t.mutable_data_ptr<float>();
  if (s.role != kTraining) return true;
  size_t first = 3 + static_cast<size_t>(s.n_params);
  for (int j = 0; j < s.n_params; ++j) {
    const EValue &v = s.method->get_output(first + j);
    const EValue &g = s.method->get_output(3 + j);
    if (!v.isTensor() || !g.isTensor() || v.toTensor().scalar_type() != ScalarType::Float ||
        g.toTensor().numel() != v.toTensor().numel())
      return refuse(r, kInvalidProgram, 0, "ProgramFileError: parameter %d is not a float tensor", j);
    Tensor p = v.toTensor();
    // The parameters must live in planned (RAM) memory: constants are read from flash.
    if (!in_planned(s, p.const_data_ptr(), p.nbytes()) || !tensor_shape(p, &s.params[j].shape))
      return refuse(r, kInvalidProgram, 0, "ProgramFileError: parameter %d is not in planned memory", j);
    s.params[j].value = p.mutable_data_ptr<float>();
  }
  return true;
}

// Role (docs §3.6): TRAINING with forward + the three __et_training_* methods describing
// its 3 + 2P outputs; PROGRAM with forward alone taking one input.
bool read_role(Slot &s, int *role, Refusal *r) {
  size_t n = s.program->num_methods();
  bool forward = false, found[3] = {false, false, false};
  int n_found = 0;
  for (size_t i = 0; i < n; ++i) {
    Result<const char *> name = s.program->get_method_name(i);
    if (!name.ok()) return fail(r, kInvalidProgram, "ProgramFileError: bad method table", name.error());
    if (strcmp(*name, "forward") == 0) forward = true;
    for (int k = 0; k < 3; ++k)
      if (strcmp(*name, kTrainingMethods[k]) == 0 && !found[k]) found[k] = true, ++n_found;
  }
  if (!forward) return refuse(r, kInvalidProgram, 0, "ProgramFileError: the program has no 'forward' method");
  Result<MethodMeta> fwd = s.program->method_meta("forward");
  if (!fwd.ok()) return fail(r, kInvalidProgram, "ProgramFileError: no forward meta", fwd.error());
  if (n_found == 0) {
    if (fwd->num_inputs() != 1)
      return refuse(r, kInvalidProgram, 0, "ProgramFileError: an inference program's forward takes "
                    "the batch alone; this one takes %lu inputs", ul(fwd->num_inputs()));
    *role = kProgram;
    return true;
  }
  if (n_found != 3)
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: the program has %d of the 3 training "
                  "methods: neither role", n_found);
  // The metadata methods have no instructions: their outputs are the program's constants.
  int64_t index[2] = {-1, -1};
  for (int k = 1; k < 3; ++k) {
    if (!load_method(s, kTrainingMethods[k], r)) return false;
    const EValue &v = s.method->get_output(0);
    if (!v.isInt()) return refuse(r, kInvalidProgram, 0, "ProgramFileError: %s is not an int", kTrainingMethods[k]);
    index[k - 1] = v.toInt();
  }
  if (!load_method(s, kTrainingMethods[0], r)) return false;
  size_t p = s.method->outputs_size();
  if (p > static_cast<size_t>(kMaxParams))
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: %lu parameters (at most %d)", ul(p), kMaxParams);
  for (size_t j = 0; j < p; ++j) {
    const EValue &v = s.method->get_output(j);
    if (!v.isString()) return refuse(r, kInvalidProgram, 0, "ProgramFileError: parameter name %lu", ul(j));
    auto name = v.toString();  // points into the program's flatbuffer, which stays in flash
    const char *c = name.data();
    size_t len = name.size(), skip = strlen(kPrefix);
    if (len >= skip && memcmp(c, kPrefix, skip) == 0) c += skip, len -= skip;
    s.params[j].name = c;
    s.params[j].name_len = static_cast<uint32_t>(len);
    s.params[j].value = nullptr;
  }
  s.n_params = static_cast<int>(p);
  unload_method(s);
  if (index[0] != 3 || index[1] != 3 + static_cast<int64_t>(p) ||
      fwd->num_outputs() != 3 + 2 * p)
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: forward's %lu outputs do not match its "
                  "training methods (%lu parameters, indices [%ld, %ld])", ul(fwd->num_outputs()), ul(p),
                  static_cast<long>(index[0]), static_cast<long>(index[1]));
  if (fwd->num_inputs() != 1)  // EcoTTA's view-averaging teacher also takes random views
    return refuse(r, kInvalidProgram, 0, "ProgramFileError: training programs with %lu inputs "
                  "(view-averaging teachers) are not supported by this firmware", ul(fwd->num_inputs()));
  *role = kTraining;
  return true;
}

// Constant bytes the program holds: the extended header's segment data (weights, plus the
// initial values of mutable buffers, a few bytes more than export's program_memory counts).
uint64_t constant_bytes(const uint8_t *data, uint32_t size) {
  if (size < 40 || memcmp(data + 8, "eh00", 4) != 0) return 0;
  uint32_t header_len;
  memcpy(&header_len, data + 12, 4);
  if (header_len < 32) return 0;
  uint64_t segment_size;
  memcpy(&segment_size, data + 32, 8);
  return segment_size;
}

bool execute(Slot &s, Refusal *r) {
  uint32_t start = ea_hal_clock_ms();
  Error err = s.method->execute();
  if (err != Error::Ok) return fail(r, kExecutionFailed, "RuntimeError: the program failed to run", err);
  uint32_t ms = ea_hal_clock_ms() - start;
  if (!s.run_ms) s.run_ms = ms ? ms : 1;
  return true;
}

const Param *find_param(const Slot &s, const char *name, uint32_t len) {
  for (int j = 0; j < s.n_params; ++j)
    if (s.params[j].name_len == len && memcmp(s.params[j].name, name, len) == 0) return &s.params[j];
  return nullptr;
}

// Walk an adapter blob; for each entry call fn(name, len, shape, values). False with `r`
// filled (BAD_ARGUMENT) where it is malformed.
template <typename Fn>
bool walk_blob(const uint8_t *blob, uint32_t len, Refusal *r, Fn fn) {
  if (len < 8 || memcmp(blob, "EAAD", 4) != 0 || blob[4] != 1 || blob[5] != 0)
    return refuse(r, kBadArgument, 0, "MessageError: not an adapter blob v1");
  uint32_t count = blob[6] | (blob[7] << 8), pos = 8;
  for (uint32_t i = 0; i < count; ++i) {
    if (pos + 2 > len) return refuse(r, kBadArgument, 0, "MessageError: adapter blob entry %u is truncated", i);
    uint32_t n = blob[pos] | (blob[pos + 1] << 8);
    pos += 2;
    if (pos + n + 1 > len) return refuse(r, kBadArgument, 0, "MessageError: adapter blob entry %u is truncated", i);
    const char *name = reinterpret_cast<const char *>(blob + pos);
    pos += n;
    Shape shape{};
    shape.ndim = blob[pos++];
    if (shape.ndim > kMaxDims) return refuse(r, kBadArgument, 0, "MessageError: adapter blob entry %u claims %d dimensions", i, shape.ndim);
    if (pos + 4u * shape.ndim > len) return refuse(r, kBadArgument, 0, "MessageError: adapter blob entry %u is truncated", i);
    uint64_t numel = 1;
    for (int d = 0; d < shape.ndim; ++d, pos += 4) {
      uint32_t v;
      memcpy(&v, blob + pos, 4);
      shape.dims[d] = static_cast<int32_t>(v);
      numel *= v;
    }
    if (pos + 4 * numel > len) return refuse(r, kBadArgument, 0, "MessageError: adapter blob entry %u runs past the end", i);
    if (!fn(name, n, shape, blob + pos)) return false;
    pos += static_cast<uint32_t>(4 * numel);
  }
  if (pos != len) return refuse(r, kBadArgument, 0, "MessageError: adapter blob has %u bytes after its last entry", len - pos);
  return true;
}

bool same_shape(const Shape &a, const Shape &b) {
  if (a.ndim != b.ndim) return false;
  for (int i = 0; i < a.ndim; ++i) if (a.dims[i] != b.dims[i]) return false;
  return true;
}

}  // namespace

void Programs::init(const Profile *profile, double lr) {
  executorch::runtime::runtime_init();
  profile_ = profile;
  lr_ = lr;
  for (int i = 0; i < kSlots; ++i) g_slot[i].index = i;
  unload_all();
}

void Programs::unload_all() {
  for (Slot &s : g_slot) unload(s);
  g_role_slot[kProgram] = g_role_slot[kTraining] = -1;
  g_candidate = 0;
}

bool Programs::load_candidate(int target, const uint8_t *data, uint32_t size, bool dry_run,
                              Refusal *r) {
  // The candidate slot is whichever no role uses.
  for (int i = 0; i < kSlots; ++i)
    if (i != g_role_slot[kProgram] && i != g_role_slot[kTraining]) g_candidate = i;
  Slot &s = g_slot[g_candidate];
  unload(s);
  s.data = data;
  s.size = size;
  s.loader.emplace(data, size);
  Result<Program> program = Program::load(
      &*s.loader, dry_run ? Program::Verification::InternalConsistency : Program::Verification::Minimal);
  if (!program.ok())
    return fail(r, kInvalidProgram, "ProgramFileError: not an ExecuTorch program", program.error());
  s.program.emplace(std::move(program.get()));
  int role = -1;
  if (!read_role(s, &role, r)) return false;
  if (role != target)
    return refuse(r, kWrongRole, static_cast<uint32_t>(role), "this is %s program: upload it with "
                  "target %s", role == kTraining ? "a training" : "an inference",
                  role == kTraining ? "TRAINING" : "PROGRAM");
  s.role = role;
  // The memory plan: method 0's arenas (as export's program_memory reads execution_plan[0])
  // next to the other resident program's, both staying loaded.
  Result<const char *> first = s.program->get_method_name(0);
  Result<MethodMeta> meta = s.program->method_meta(first.ok() ? *first : "forward");
  if (!meta.ok()) return fail(r, kInvalidProgram, "ProgramFileError: no method meta", meta.error());
  s.n_arenas = 0;
  for (size_t i = 0; i < meta->num_memory_planned_buffers() && s.n_arenas < kMaxPlanned; ++i)
    s.arenas[s.n_arenas++] = static_cast<uint64_t>(meta->memory_planned_buffer_size(i).get());
  s.constants = constant_bytes(data, size);
  uint64_t arenas[2 * kMaxPlanned];
  int n = 0;
  for (int i = 0; i < s.n_arenas; ++i) arenas[n++] = s.arenas[i];
  uint64_t constants = s.constants;
  const Slot *other = role_slot(target == kProgram ? kTraining : kProgram);
  if (other != nullptr) {
    for (int i = 0; i < other->n_arenas; ++i) arenas[n++] = other->arenas[i];
    constants += other->constants;
  }
  if (!check_fit(*profile_, arenas, n, constants, r)) return false;
  if (!load_method(s, "forward", r) || !bind_forward(s, r)) return false;
  if (dry_run) {  // proves it runs; a training candidate's state is reloaded on activation
    memset(s.input_data, 0, s.input.numel() * sizeof(float));
    Refusal why;
    if (!execute(s, &why))
      return refuse(r, kInvalidProgram, 0, "ProgramFileError: the program fails to run (%s)", why.text);
  }
  return true;
}

bool Programs::activate(int target, const uint8_t *adapter, uint32_t adapter_len, Refusal *r) {
  Slot *old = role_slot(target);
  g_role_slot[target] = g_candidate;
  if (old != nullptr) unload(*old);
  if (target == kTraining) return reset_state(adapter, adapter_len, r);
  return true;
}

bool Programs::loaded(int target) const { return role_slot(target) != nullptr; }

const Shape &Programs::input_shape(int target) const {
  static const Shape none{};
  const Slot *s = role_slot(target);
  return s ? s->input : none;
}

uint32_t Programs::run_ms(int target) const {
  const Slot *s = role_slot(target);
  return s ? s->run_ms : 0;
}

uint32_t Programs::size(int target) const {
  const Slot *s = role_slot(target);
  return s ? s->size : 0;
}

bool Programs::memory(int target, ProgramMemory *out) const {
  const Slot *s = role_slot(target);
  if (s == nullptr || !s->method_alloc || !s->temp_alloc) return false;
  size_t planned = 0;
  for (int i = 0; i < s->n_planned; ++i) planned += s->spans[i].size();
  out->planned = static_cast<uint32_t>(planned);
  out->method_used = static_cast<uint32_t>(s->method_alloc->used_size());
  out->method_pool = EA_METHOD_POOL_BYTES;
  out->temp_peak = static_cast<uint32_t>(s->temp_alloc->peak);
  out->temp_pool = EA_TEMP_POOL_BYTES;
  return true;
}

bool Programs::has_training_params() const { return role_slot(kTraining) != nullptr; }

bool Programs::check_adapter(const uint8_t *blob, uint32_t len, bool candidate, Refusal *r) const {
  const Slot *s = candidate ? &g_slot[g_candidate] : role_slot(kTraining);
  int count = 0;
  bool match = true;
  bool ok = walk_blob(blob, len, r, [&](const char *name, uint32_t n, const Shape &shape, const uint8_t *) {
    ++count;
    if (s != nullptr) {
      const Param *p = find_param(*s, name, n);
      match = match && p != nullptr && same_shape(p->shape, shape);
    }
    return true;
  });
  if (!ok) return false;
  if (s != nullptr && (!match || count != s->n_params))
    return refuse(r, kBadArgument, 0, "ValueError: adapter does not match the training program "
                  "(%d tensors given, %d expected, or names/shapes differ)", count, s->n_params);
  return true;
}

bool Programs::reset_state(const uint8_t *adapter, uint32_t adapter_len, Refusal *r) {
  Slot *s = role_slot(kTraining);
  if (s == nullptr) return true;
  // Loading forward again copies the program's initial parameters and buffers into planned
  // memory: the state as exported, nothing run.
  if (!load_method(*s, "forward", r) || !bind_forward(*s, r)) return false;
  if (adapter == nullptr) return true;
  return walk_blob(adapter, adapter_len, r, [&](const char *name, uint32_t n, const Shape &shape,
                                                const uint8_t *values) {
    const Param *p = find_param(*s, name, n);
    if (p != nullptr && same_shape(p->shape, shape))
      memcpy(p->value, values, p->shape.numel() * sizeof(float));
    return true;
  });
}

uint32_t Programs::adapter_blob(const uint8_t **out) {
  const Slot *s = role_slot(kTraining);
  if (s == nullptr || s->method == std::nullopt) return 0;
  // Entries sorted by name (bytes, as Python sorts str), so the CRC moves only with a weight.
  int order[kMaxParams];
  for (int j = 0; j < s->n_params; ++j) order[j] = j;
  auto less = [&](int a, int b) {
    const Param &x = s->params[a], &y = s->params[b];
    uint32_t n = x.name_len < y.name_len ? x.name_len : y.name_len;
    int c = memcmp(x.name, y.name, n);
    return c < 0 || (c == 0 && x.name_len < y.name_len);
  };
  for (int i = 1; i < s->n_params; ++i)
    for (int j = i; j > 0 && less(order[j], order[j - 1]); --j) {
      int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
    }
  uint32_t pos = 0;
  auto put = [&](const void *p, uint32_t n) {
    if (pos + n <= EA_ADAPTER_MAX_BYTES) memcpy(g_blob + pos, p, n);
    pos += n;
  };
  uint16_t version = 1, count = static_cast<uint16_t>(s->n_params);
  put("EAAD", 4);
  put(&version, 2);
  put(&count, 2);
  for (int k = 0; k < s->n_params; ++k) {
    const Param &p = s->params[order[k]];
    uint16_t n = static_cast<uint16_t>(p.name_len);
    uint8_t ndim = static_cast<uint8_t>(p.shape.ndim);
    put(&n, 2);
    put(p.name, p.name_len);
    put(&ndim, 1);
    for (int d = 0; d < p.shape.ndim; ++d) {
      uint32_t v = static_cast<uint32_t>(p.shape.dims[d]);
      put(&v, 4);
    }
    put(p.value, static_cast<uint32_t>(p.shape.numel() * sizeof(float)));
  }
  if (pos > EA_ADAPTER_MAX_BYTES) return 0;
  *out = g_blob;
  return pos;
}

float *Programs::input(int target) {
  Slot *s = role_slot(target);
  return s ? s->input_data : nullptr;
}

bool Programs::run_inference(Refusal *r, const float **out, size_t *numel) {
  Slot *s = role_slot(kProgram);
  if (s == nullptr) return refuse(r, kNotReady, 0, "upload an inference program first");
  if (!execute(*s, r)) return false;
  const EValue &y = s->method->get_output(0);
  if (!y.isTensor() || y.toTensor().scalar_type() != ScalarType::Float)
    return refuse(r, kExecutionFailed, 0, "RuntimeError: output 0 is not a float tensor");
  *out = y.toTensor().const_data_ptr<float>();
  *numel = y.toTensor().numel();
  return true;
}

bool Programs::run_step(Refusal *r, float *loss, const float **logits, size_t *numel) {
  Slot *s = role_slot(kTraining);
  if (s == nullptr) return refuse(r, kNotReady, 0, "upload a training program first");
  if (!execute(*s, r)) return false;
  const EValue &l = s->method->get_output(0), &y = s->method->get_output(1),
               &k = s->method->get_output(2);
  if (!l.isTensor() || !y.isTensor() || !k.isTensor())
    return refuse(r, kExecutionFailed, 0, "RuntimeError: forward's outputs are not tensors");
  *loss = l.toTensor().const_data_ptr<float>()[0];
  if (!isfinite(*loss))
    return refuse(r, kExecutionFailed, 0, "VerificationError: the program's loss is %s; the step "
                  "was skipped", isnan(*loss) ? "nan" : (*loss > 0 ? "inf" : "-inf"));
  *logits = y.toTensor().const_data_ptr<float>();
  *numel = y.toTensor().numel();
  int kept = static_cast<int>(k.toTensor().const_data_ptr<float>()[0]);
  if (kept > 0) {
    // ExecuTorch's SGD step (momentum, dampening, weight decay 0) is add.out(p, g, alpha=-lr);
    // measured against the runtime's optimizer, it rounds once from double:
    // p <- (float)((double)p + (-1 * lr) * (double)g), which is what is written here.
    const double alpha = -1 * lr_;
    for (int j = 0; j < s->n_params; ++j) {
      float *p = s->params[j].value;
      const float *g = s->method->get_output(3 + j).toTensor().const_data_ptr<float>();
      size_t n = s->params[j].shape.numel();
      for (size_t i = 0; i < n; ++i)
        p[i] = static_cast<float>(static_cast<double>(p[i]) + alpha * static_cast<double>(g[i]));
    }
  }
  return true;
}

}  // namespace ea
