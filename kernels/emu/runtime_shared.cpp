// runtime_shared.cpp: each block's shared-memory arena (runtime.h's Engine). `extern
// __shared__` sits at kDynamicOffset, and each __shared__ variable follows as the block first
// reaches its declaration, checked against CUDA's limits. Every allocation starts as poison
// (0xFF: NaN as float, half and bf16) and is followed by canary bytes, which check_guards
// reads after the block; under ASan those bytes stay poisoned to ASan instead, so a stray
// write is caught where it happens.
#include <algorithm>
#include <string>

#include "runtime.h"

namespace emu::detail::runtime {

void* Engine::shared_alloc(const void* site, size_t bytes, size_t align, const char* name,
                           const char* func) {
  for (const SharedRegion& r : regions_)
    if (r.site == site) return arena_ + r.begin;
  if (static_bytes_ + bytes > kMaxStaticShared)
    fail(EMU_ERROR_SHARED,
         "__shared__ %s in %s brings static shared memory to %zu bytes, over CUDA's 48 KB "
         "limit",
         name, func, static_bytes_ + bytes);
  if (static_bytes_ + bytes + spec_.dynamic_bytes > kMaxSharedPerBlock)
    fail(EMU_ERROR_SHARED,
         "__shared__ %s in %s brings shared memory to %zu bytes (with %zu dynamic), over the "
         "%zu-byte per-block limit",
         name, func, static_bytes_ + bytes + spec_.dynamic_bytes, spec_.dynamic_bytes,
         kMaxSharedPerBlock);
  const size_t begin = carve(bytes, align);
  if (begin == kNone)
    fail(EMU_ERROR_SHARED,
         "__shared__ %s in %s (%zu bytes, %zu-byte alignment) does not fit the emulator's "
         "shared arena",
         name, func, bytes, align);
  static_bytes_ += bytes;
  regions_.push_back({site, begin, bytes, name, func});
  return arena_ + begin;
}

void* Engine::dynamic_shared(size_t align, const char* func) {
  if (align > kDynamicOffset)
    fail(EMU_ERROR_SHARED,
         "extern __shared__ in %s asks for %zu-byte alignment; the emulator provides %zu",
         func, align, kDynamicOffset);
  return arena_ + kDynamicOffset;
}

void Engine::reset_shared() {
#ifdef EMU_ASAN
  ASAN_POISON_MEMORY_REGION(arena_, kArenaBytes);
#else
  std::memset(arena_, kCanary, kDynamicOffset);
#endif
  regions_.clear();
  static_bytes_ = 0;
  used_ = kDynamicOffset;
  regions_.push_back(
      {nullptr, carve(spec_.dynamic_bytes, kDynamicOffset), spec_.dynamic_bytes, "", ""});
}

// Takes `bytes` from the arena, poisoned, followed by guard bytes; kNone if it does not fit.
size_t Engine::carve(size_t bytes, size_t align) {
  const size_t begin = round_up(used_, align);
  const size_t end = begin + bytes;
  const size_t guard_end = round_up(end, 16) + kGuard;
  if (guard_end > kArenaBytes) return kNone;
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(arena_ + begin, bytes);
#else
  std::memset(arena_ + used_, kCanary, begin - used_);
  std::memset(arena_ + end, kCanary, guard_end - end);
#endif
  std::memset(arena_ + begin, kPoison, bytes);
  used_ = guard_end;
  return begin;
}

void Engine::check_guards() {
  const auto corrupt = [this](size_t from, size_t to) {
    return static_cast<size_t>(std::find_if(arena_ + from, arena_ + to,
                                            [](char c) { return c != static_cast<char>(kCanary); }) -
                               arena_);
  };
  const size_t dynamic_begin = regions_[0].begin;
  size_t bad = corrupt(0, dynamic_begin);
  if (bad != dynamic_begin) {
    set_error(EMU_ERROR_SHARED,
              format("out-of-bounds write to shared memory: byte -%zu of the dynamic shared "
                     "memory",
                     dynamic_begin - bad));
    return;
  }
  for (size_t i = 0; i < regions_.size(); ++i) {
    const SharedRegion& r = regions_[i];
    const size_t to = i + 1 < regions_.size() ? regions_[i + 1].begin : used_;
    bad = corrupt(r.begin + r.bytes, to);
    if (bad != to) {
      const std::string what = r.site ? format("__shared__ %s in %s", r.name, r.func)
                                      : std::string("the dynamic shared memory");
      set_error(EMU_ERROR_SHARED,
                format("out-of-bounds write to shared memory: byte %zu of %s, which has %zu "
                       "bytes",
                       bad - r.begin, what.c_str(), r.bytes));
      return;
    }
  }
}

}  // namespace emu::detail::runtime
