// runtime.h: the engine behind cuda_emu.h, shared by the runtime's files:
//   runtime.cpp         launches, blocks and their fibers, barriers, errors, the entry points
//                       kernels call (detail/device.h, detail/launch.h) and the C API;
//   runtime_warp.cpp    warp-synchronous calls: the rendezvous, shuffles, votes and reductions,
//                       __activemask(), the deadlock report;
//   runtime_shared.cpp  each block's shared-memory arena: limits, poison, guard bytes.
// Only those files include it; a kernel's wrapper TU sees cuda_emu.h alone.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "cuda_emu.h"

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

// emu_switch_context(save, load) pushes the callee-saved registers, saves the stack pointer
// to *save, and resumes the stack `load`; emu_fiber_trampoline is where a new fiber's first
// switch returns to. Both are assembly in runtime.cpp, which says more.
extern "C" void emu_switch_context(void** save, void* load);
extern "C" void emu_fiber_trampoline();

namespace emu::detail {
// Hidden: these names link between the runtime's files only. Under -fPIC (the cc crate's
// default) a hidden function cannot be interposed, so calls to it stay direct and inlinable.
namespace runtime __attribute__((visibility("hidden"))) {

constexpr size_t kMaxSharedPerBlock = 227 * 1024;  // H100/H200 opt-in maximum per block
constexpr size_t kMaxStaticShared = 48 * 1024;     // CUDA's limit for statically sized __shared__
constexpr size_t kDynamicOffset = 256;  // extern __shared__ alignment; the bytes below are a guard
constexpr size_t kGuard = 32;           // guard bytes after every shared allocation
// Room for the largest block plus guards and alignment padding, in whole pages (aligned_alloc
// wants a multiple of its alignment).
constexpr size_t kArenaBytes = (kDynamicOffset + kMaxSharedPerBlock + 64 * 1024 + 4095) / 4096 * 4096;
constexpr unsigned char kPoison = 0xff;  // NaN as float, half and bf16; -1 as an integer
constexpr unsigned char kCanary = 0xcd;
constexpr unsigned kWarpSize = 32;
constexpr size_t kNone = ~size_t{0};

__attribute__((format(printf, 1, 2))) std::string format(const char* fmt, ...);

inline size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

inline unsigned long long splitmix64(unsigned long long x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Rng {
 public:
  explicit Rng(unsigned long long seed = 1) : state_(splitmix64(seed) | 1) {}
  unsigned long long next() {  // xorshift64*
    state_ ^= state_ >> 12;
    state_ ^= state_ << 25;
    state_ ^= state_ >> 27;
    return state_ * 0x2545f4914f6cdd1dull;
  }
  // Uniform enough in [0, n) for n < 2^32, without a division.
  size_t below(size_t n) { return static_cast<size_t>(((next() >> 32) * n) >> 32); }

 private:
  unsigned long long state_;
};

inline std::string threads(unsigned n) { return format(n == 1 ? "%u thread" : "%u threads", n); }

inline bool same_site(const char* file_a, int line_a, const char* file_b, int line_b) {
  return line_a == line_b && (file_a == file_b || std::strcmp(file_a, file_b) == 0);
}

struct Fiber {
  void* sp;
  char* stack;  // lowest usable byte; a PROT_NONE guard page lies below it
  uint3 tid;
  unsigned linear;
  WarpCall call;  // what the fiber waits for while InWarpCall
  unsigned long long result;
#ifdef EMU_ASAN
  void* fake_stack;
#endif
};

struct Warp {
  unsigned exists;   // lanes that are threads of the block
  unsigned exited;
  unsigned waiting;  // lanes suspended in a warp-synchronous call
};

struct SharedRegion {
  const void* site;  // the declaration (nullptr: extern __shared__)
  size_t begin, bytes;
  const char* name;
  const char* func;
};

struct LaunchSpec {
  const char* kernel;
  Invoke invoke;
  uint3 grid, block;
  size_t dynamic_bytes;
  void** args;
};

[[noreturn]] void fiber_entry(Fiber* f);

// Everything one launch needs; kept in a pool so stacks and the arena are allocated once.
// Each member is defined in the file its group names.
class Engine {
 public:
  // runtime.cpp
  explicit Engine(size_t stack_bytes);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  size_t stack_bytes() const { return stack_bytes_; }

  int run(const LaunchSpec& spec, std::string& message);

  // --- Called on fiber stacks, through the emu::detail functions in runtime.cpp. ---

  unsigned block_sync(int predicate, const char* file, int line);
  unsigned long long warp_call(const WarpCall& call);  // runtime_warp.cpp
  void* shared_alloc(const void* site, size_t bytes, size_t align, const char* name,
                     const char* func);                  // runtime_shared.cpp
  void* dynamic_shared(size_t align, const char* func);  // runtime_shared.cpp
  // An error found by device-side code of the emulator (detail/wmma.h): fails the launch.
  [[noreturn]] void device_error(int status, const char* message);
  [[noreturn]] void thread_main(Fiber& f);

 private:
  // runtime.cpp: stacks, blocks, fibers.
  bool reserve_stacks(unsigned n);
  void run_block(unsigned long long b, unsigned long long seed);
  void prepare_stack(Fiber& f);

  void resume(Fiber& f) {
    current_ = &f;
    threadIdx = f.tid;
#ifdef EMU_ASAN
    void* fake_stack = nullptr;
    __sanitizer_start_switch_fiber(&fake_stack, f.stack, stack_bytes_);
#endif
    emu_switch_context(&scheduler_sp_, f.sp);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(fake_stack, nullptr, nullptr);
#endif
  }

  void suspend(Fiber& f) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(&f.fake_stack, scheduler_stack_, scheduler_stack_bytes_);
#endif
    emu_switch_context(&f.sp, scheduler_sp_);
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(f.fake_stack, &scheduler_stack_, &scheduler_stack_bytes_);
#endif
  }

  // Switches away from a fiber that will never run again.
  [[noreturn]] void leave(Fiber& f) {
#ifdef EMU_ASAN
    __sanitizer_start_switch_fiber(nullptr, scheduler_stack_, scheduler_stack_bytes_);
#endif
    emu_switch_context(&f.sp, scheduler_sp_);
    __builtin_unreachable();
  }

  void make_runnable(const Fiber& f) { runnable_.push_back(f.linear); }
  [[noreturn]] void exit_thread(Fiber& f);
  void abandon_fibers();

  // runtime_warp.cpp
  void try_rendezvous(unsigned warp, unsigned mask);
  bool release_active_masks();
  void report_deadlock();

  // runtime_shared.cpp
  void reset_shared();
  size_t carve(size_t bytes, size_t align);
  void check_guards();

  // runtime.cpp: errors.
  std::string thread_name(const Fiber& f) const;
  void set_error(int status, const std::string& what);
  // Ends the calling fiber's part in the launch: the block is abandoned once it returns to
  // the scheduler.
  [[noreturn]] __attribute__((format(printf, 3, 4))) void fail(int status, const char* fmt, ...);

  const size_t stack_bytes_;
  char* const arena_;
  std::vector<std::pair<void*, size_t>> stack_maps_;  // mmap'd stack + guard page, per fiber
  std::vector<Fiber> fibers_;
  std::vector<Warp> warps_;
  std::vector<unsigned> runnable_;
  std::vector<SharedRegion> regions_;  // in arena order; regions_[0] is extern __shared__

  LaunchSpec spec_{};
  unsigned nthreads_ = 0;
  int status_ = EMU_OK;
  std::string message_;

  uint3 block_{};
  Rng rng_;
  Fiber* current_ = nullptr;
  void* scheduler_sp_ = nullptr;
  const void* scheduler_stack_ = nullptr;
  size_t scheduler_stack_bytes_ = 0;
  unsigned live_ = 0, exited_ = 0, first_exited_ = 0;
  unsigned barrier_waiting_ = 0, barrier_count_ = 0;
  const char* barrier_file_ = nullptr;
  int barrier_line_ = 0;
  size_t used_ = 0, static_bytes_ = 0;
};

}  // namespace runtime
}  // namespace emu::detail
