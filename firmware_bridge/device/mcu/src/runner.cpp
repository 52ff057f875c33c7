// runner.cpp -- see runner.h.
#include "runner.h"

#include <math.h>
#include <new>

#include <executorch/extension/data_loader/buffer_data_loader.h>
#include <executorch/runtime/core/hierarchical_allocator.h>
#include <executorch/runtime/core/memory_allocator.h>
#include <executorch/runtime/executor/memory_manager.h>
#include <executorch/runtime/executor/method.h>
#include <executorch/runtime/executor/program.h>
#include <executorch/runtime/platform/runtime.h>

#include "peak_allocator.h"

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::aten::TensorImpl;
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

namespace ea_mcu {
namespace {

// The runtime's objects in static storage (one program per Runner instance would need one
// set each; the self-test and a device hold one of each role).
template <typename T>
struct Slot {
  alignas(T) uint8_t bytes[sizeof(T)];
  T *get() { return reinterpret_cast<T *>(bytes); }
};
Slot<BufferDataLoader> loader;
Slot<Program> program;
Slot<Method> method;
Slot<MemoryAllocator> method_alloc;
Slot<HierarchicalAllocator> planned;
Slot<MemoryManager> manager;
Span<uint8_t> spans[kMaxArenas];

Slot<ea::PeakAllocator> temp_slot;  // the temp allocator, with its high-water mark

bool finite(float x) { return !isnan(x) && !isinf(x); }

}  // namespace

Status Runner::load(const uint8_t *pte, size_t size, const Arena *arenas, int n_arenas,
                    uint8_t *pool, size_t pool_bytes, uint8_t *temp, size_t temp_bytes) {
  executorch::runtime::runtime_init();
  new (loader.get()) BufferDataLoader(pte, size);
  Result<Program> p = Program::load(loader.get(), Program::Verification::Minimal);
  if (!p.ok()) return kLoadFailed;
  new (program.get()) Program(std::move(p.get()));
  Result<MethodMeta> meta = program.get()->method_meta("forward");
  if (!meta.ok()) return kNoForward;

  figures_ = Figures();
  figures_.arenas = static_cast<int>(meta->num_memory_planned_buffers());
  if (figures_.arenas > kMaxArenas || figures_.arenas != n_arenas) return kArenaTooSmall;
  for (int i = 0; i < figures_.arenas; ++i) {
    int64_t need = meta->memory_planned_buffer_size(i).get();
    figures_.planned[i] = need;
    if (need > arenas[i].bytes) return kArenaTooSmall;
    spans[i] = Span<uint8_t>(arenas[i].data, static_cast<size_t>(need));
  }
  new (planned.get()) HierarchicalAllocator({spans, static_cast<size_t>(figures_.arenas)});
  new (method_alloc.get()) MemoryAllocator(static_cast<uint32_t>(pool_bytes), pool);
  new (temp_slot.get()) ea::PeakAllocator(static_cast<uint32_t>(temp_bytes), temp);
  new (manager.get()) MemoryManager(method_alloc.get(), planned.get(), temp_slot.get());
  figures_.method_pool = pool_bytes;

  Result<Method> m = program.get()->load_method("forward", manager.get());
  figures_.method_used = method_alloc.get()->used_size();
  if (!m.ok()) {
    figures_.error = static_cast<int>(m.error());
    return kMethodFailed;
  }
  new (method.get()) Method(std::move(m.get()));
  figures_.inputs = static_cast<int>(method.get()->inputs_size());
  figures_.outputs = static_cast<int>(method.get()->outputs_size());

  // A training program has the index methods (docs/bridge-protocol.md §5): forward's
  // outputs are loss, logits, kept, P gradients, P parameters.
  params_ = 0;
  if (program.get()->method_meta("__et_training_parameters_index_forward").ok())
    params_ = (figures_.outputs - 3) / 2;
  return kOk;
}

Status Runner::set_input(int index, const float *x, size_t numel) {
  Result<MethodMeta> meta = program.get()->method_meta("forward");
  auto info = meta->input_tensor_meta(index);
  if (!info.ok() || info->scalar_type() != ScalarType::Float) return kInputFailed;
  auto sizes = info->sizes();
  auto order = info->dim_order();
  TensorImpl::SizesType sz[8];
  TensorImpl::DimOrderType dim_order[8];
  size_t n = 1;
  if (sizes.size() > 8) return kInputFailed;
  for (size_t d = 0; d < sizes.size(); ++d) {
    sz[d] = sizes[d];
    dim_order[d] = order[d];
    n *= static_cast<size_t>(sizes[d]);
  }
  if (n != numel) return kInputFailed;
  // The input is planned memory: set_input copies into it, so x may live in flash.
  TensorImpl impl(ScalarType::Float, static_cast<ssize_t>(sizes.size()), sz,
                  const_cast<float *>(x), dim_order);
  Error e = method.get()->set_input(EValue(Tensor(&impl)), index);
  return e == Error::Ok ? kOk : kInputFailed;
}

size_t Runner::input_numel(int index) const {
  Result<MethodMeta> meta = program.get()->method_meta("forward");
  if (!meta.ok()) return 0;
  auto info = meta->input_tensor_meta(index);
  if (!info.ok() || info->scalar_type() != ScalarType::Float) return 0;
  size_t n = 1;
  for (auto s : info->sizes()) n *= static_cast<size_t>(s);
  return n;
}

Status Runner::run() {
  Error e = method.get()->execute();
  figures_.error = static_cast<int>(e);
  ea::PeakAllocator *t = temp_slot.get();
  if (t->peak > figures_.temp_used) figures_.temp_used = t->peak;
  return e == Error::Ok ? kOk : kRunFailed;
}

const float *Runner::output(int index, size_t *numel) const {
  const EValue &v = method.get()->get_output(index);
  if (!v.isTensor()) {
    *numel = 0;
    return nullptr;
  }
  const Tensor &t = v.toTensor();
  *numel = t.numel();
  return t.const_data_ptr<float>();
}

Status Runner::step(double lr, float *loss, int *kept) {
  if (!params_) return kNotTraining;
  Status s = run();
  if (s != kOk) return s;
  size_t n;
  *loss = *output(0, &n);
  *kept = static_cast<int>(*output(2, &n));
  if (!finite(*loss)) return kLossNotFinite;  // nothing applied, as the emulator does
  if (*kept <= 0) return kOk;
  for (int k = 0; k < params_; ++k) {
    size_t ng, np;
    const float *g = output(3 + k, &ng);
    // The parameter outputs alias the program's planned memory: updating them in place
    // updates what the next run reads.
    float *p = const_cast<float *>(output(3 + params_ + k, &np));
    if (ng != np) return kRunFailed;
    // As ExecuTorch's SGD (extension/training/optimizer/sgd.cpp, add_out_hack): the sum in
    // double, alpha = -lr a double, rounded to float once. Soft double on an FPv5-SP, but
    // only over the P parameters (a few thousand values).
    const double alpha = -1 * lr;
    for (size_t i = 0; i < np; ++i) p[i] = static_cast<float>(p[i] + g[i] * alpha);
  }
  return kOk;
}

}  // namespace ea_mcu
