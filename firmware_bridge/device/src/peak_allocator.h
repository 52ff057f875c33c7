// A MemoryAllocator that keeps its high-water mark. The runtime resets the temp allocator
// between instructions, so used_size() afterwards says nothing about what a kernel needed;
// `peak` does. Shared by the protocol server (programs.cpp) and the Cortex-M7 self-test
// runner (mcu/src/runner.cpp).
#pragma once

#include <stddef.h>

#include <executorch/runtime/core/memory_allocator.h>

namespace ea {

class PeakAllocator : public executorch::runtime::MemoryAllocator {
 public:
  using executorch::runtime::MemoryAllocator::MemoryAllocator;
  void *allocate(size_t size, size_t alignment) override {
    void *p = MemoryAllocator::allocate(size, alignment);
    if (used_size() > peak) peak = used_size();
    return p;
  }
  size_t peak = 0;
};

}  // namespace ea
