// runtime.cpp: the scheduler behind cuda_emu.h.
//
// A launch runs its blocks one at a time, in a seeded pseudo-random order. A block's threads
// are fibers with their own stacks, switched by a few instructions of assembly; the scheduler
// runs on the launching OS thread's stack and resumes a randomly chosen runnable fiber until
// that fiber blocks (barrier, warp rendezvous) or exits. Blocking calls record what the fiber
// waits for, and the last arrival releases the others, so checking for divergence and deadlock
// needs no extra pass. Each block gets a fresh shared-memory arena filled with 0xFF (NaN),
// with guard bytes between variables.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <memory>
#include <mutex>
#include <numeric>
#include <string>
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

__thread uint3 threadIdx EMU_TLS;
__thread uint3 blockIdx EMU_TLS;
__thread uint3 blockDim EMU_TLS;
__thread uint3 gridDim EMU_TLS;

// emu_switch_context(save, load) pushes the callee-saved registers, saves the stack pointer
// to *save, and resumes the stack `load`. The MXCSR and x87 control words, also callee-saved,
// are left alone: kernel code cannot change them (CUDA has no fesetround), so every fiber
// runs with the launching thread's, and saving them would double the cost of a switch.
// emu_fiber_trampoline is where a new fiber's first switch returns to: it calls the rbx-held
// entry function with the r12-held Fiber*. Its CFI marks it the outermost frame.
extern "C" void emu_switch_context(void** save, void* load);
extern "C" void emu_fiber_trampoline();
asm(R"(
  .text
  .globl emu_switch_context
  .hidden emu_switch_context
  .type emu_switch_context, @function
  .p2align 4
emu_switch_context:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch_context, .-emu_switch_context

  .globl emu_fiber_trampoline
  .hidden emu_fiber_trampoline
  .type emu_fiber_trampoline, @function
  .p2align 4
emu_fiber_trampoline:
  .cfi_startproc
  .cfi_undefined rip
  movq %r12, %rdi
  callq *%rbx
  ud2
  .cfi_endproc
  .size emu_fiber_trampoline, .-emu_fiber_trampoline
)");

namespace emu::detail {
namespace {

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

std::string vformat(const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string s(static_cast<size_t>(n), '\0');
  vsnprintf(s.data(), s.size() + 1, fmt, args);
  return s;
}

__attribute__((format(printf, 1, 2))) std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string s = vformat(fmt, args);
  va_end(args);
  return s;
}

unsigned long long env_u64(const char* name, unsigned long long fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 0);
  return *end ? fallback : v;
}

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

#ifdef EMU_ASAN
constexpr unsigned long long kDefaultStackKb = 256;  // instrumented frames carry redzones
#else
constexpr unsigned long long kDefaultStackKb = 64;
#endif

struct Settings {
  std::atomic<unsigned long long> seed{env_u64("SOFTPROMPT_EMU_SEED", 1)};
  const size_t default_stack_bytes =
      static_cast<size_t>(env_u64("SOFTPROMPT_EMU_STACK_KB", kDefaultStackKb) * 1024);
  std::atomic<size_t> stack_bytes{default_stack_bytes};
};

Settings& settings() {
  static Settings s;
  return s;
}

unsigned long long splitmix64(unsigned long long x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

unsigned long long hash_name(const char* s) {
  unsigned long long h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001b3ull;
  return h;
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

std::string threads(unsigned n) { return format(n == 1 ? "%u thread" : "%u threads", n); }

bool same_site(const char* file_a, int line_a, const char* file_b, int line_b) {
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

class Engine;
thread_local Engine* t_engine EMU_TLS = nullptr;
thread_local std::string t_last_error;

[[noreturn]] void fiber_entry(Fiber* f);

// Everything one launch needs; kept in a pool so stacks and the arena are allocated once.
class Engine {
 public:
  explicit Engine(size_t stack_bytes)
      : stack_bytes_(stack_bytes),
        arena_(static_cast<char*>(std::aligned_alloc(4096, kArenaBytes))) {}
  ~Engine() {
    for (auto& s : stack_maps_) {
      // A fiber's bottom frame never returns, so its shadow stays poisoned; a later mapping
      // at the same address must not inherit that.
#ifdef EMU_ASAN
      ASAN_UNPOISON_MEMORY_REGION(s.first, s.second);
#endif
      munmap(s.first, s.second);
    }
#ifdef EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(arena_, kArenaBytes);
#endif
    std::free(arena_);
  }
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  size_t stack_bytes() const { return stack_bytes_; }

  int run(const LaunchSpec& spec, std::string& message) {
    spec_ = spec;
    status_ = EMU_OK;
    message_.clear();
    nthreads_ = spec.block.x * spec.block.y * spec.block.z;
    if (!arena_ || !reserve_stacks(nthreads_)) {
      message = format("kernel '%s': cannot allocate %u fiber stacks of %zu bytes", spec.kernel,
                       nthreads_, stack_bytes_);
      return EMU_ERROR_LAUNCH;
    }
    t_engine = this;
    blockDim = spec.block;
    gridDim = spec.grid;

    // Blocks run in an affine permutation of their linear ids, so no kernel can lean on
    // blocks finishing in order.
    const unsigned long long seed = settings().seed.load() ^ hash_name(spec.kernel);
    const unsigned long long nblocks =
        static_cast<unsigned long long>(spec.grid.x) * spec.grid.y * spec.grid.z;
    Rng order(seed);
    const unsigned long long offset = order.next() % nblocks;
    unsigned long long stride = 1 + order.next() % nblocks;
    while (std::gcd(stride, nblocks) != 1) ++stride;
    for (unsigned long long i = 0; i < nblocks && status_ == EMU_OK; ++i) {
      const auto b = static_cast<unsigned long long>(
          (static_cast<unsigned __int128>(stride) * i + offset) % nblocks);
      run_block(b, seed);
    }
    t_engine = nullptr;
    message = message_;
    return status_;
  }

  // --- Called on fiber stacks, through the emu::detail functions below. ---

  unsigned block_sync(int predicate, const char* file, int line) {
    Fiber& f = *current_;
    if (exited_ > 0)
      fail(EMU_ERROR_BARRIER,
           "%s reached __syncthreads() at %s:%d after %s had exited; every thread of the block "
           "must reach every barrier",
           thread_name(f).c_str(), file, line, thread_name(fibers_[first_exited_]).c_str());
    if (barrier_waiting_ == 0) {
      barrier_file_ = file;
      barrier_line_ = line;
      barrier_count_ = 0;
    } else if (!same_site(file, line, barrier_file_, barrier_line_)) {
      fail(EMU_ERROR_BARRIER,
           "divergent __syncthreads(): %s reached the one at %s:%d while the one at %s:%d has "
           "%s waiting",
           thread_name(f).c_str(), file, line, barrier_file_, barrier_line_,
           threads(barrier_waiting_).c_str());
    }
    ++barrier_waiting_;
    barrier_count_ += predicate != 0;
    if (barrier_waiting_ == nthreads_) {
      for (unsigned i = 0; i < nthreads_; ++i) {
        fibers_[i].result = barrier_count_;
        make_runnable(fibers_[i]);
      }
      barrier_waiting_ = 0;
    }
    suspend(f);
    return static_cast<unsigned>(f.result);
  }

  unsigned long long warp_call(const WarpCall& call) {
    Fiber& f = *current_;
    Warp& w = warps_[f.linear / kWarpSize];
    const unsigned bit = 1u << (f.linear % kWarpSize);
    if (call.kind != WarpKind::ActiveMask) {
      if (!(call.mask & bit))
        fail(EMU_ERROR_WARP, "%s at %s:%d: %s (lane %u) is not in its own mask 0x%08x",
             call.intrinsic, call.file, call.line, thread_name(f).c_str(), f.linear % kWarpSize,
             call.mask);
      if (call.mask & ~w.exists)
        fail(EMU_ERROR_WARP,
             "%s at %s:%d: mask 0x%08x names lanes 0x%08x that do not exist (warp %u has lanes "
             "0x%08x)",
             call.intrinsic, call.file, call.line, call.mask, call.mask & ~w.exists,
             f.linear / kWarpSize, w.exists);
      if (call.mask & w.exited)
        fail(EMU_ERROR_WARP, "%s at %s:%d: mask 0x%08x names lanes 0x%08x that have exited",
             call.intrinsic, call.file, call.line, call.mask, call.mask & w.exited);
    }
    f.call = call;
    w.waiting |= bit;
    if (call.kind != WarpKind::ActiveMask && (w.waiting & call.mask) == call.mask)
      try_rendezvous(f.linear / kWarpSize, call.mask);
    suspend(f);
    return f.result;
  }

  void* shared_alloc(const void* site, size_t bytes, size_t align, const char* name,
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

  void* dynamic_shared(size_t align, const char* func) {
    if (align > kDynamicOffset)
      fail(EMU_ERROR_SHARED,
           "extern __shared__ in %s asks for %zu-byte alignment; the emulator provides %zu",
           func, align, kDynamicOffset);
    return arena_ + kDynamicOffset;
  }

  // An error found by device-side code of the emulator (detail/wmma.h): fails the launch.
  [[noreturn]] void device_error(int status, const char* message) {
    fail(status, "%s", message);
  }

  [[noreturn]] void thread_main(Fiber& f) {
#ifdef EMU_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_, &scheduler_stack_bytes_);
#endif
    spec_.invoke(spec_.args);
    exit_thread(f);
  }

 private:
  bool reserve_stacks(unsigned n) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    while (stack_maps_.size() < n) {
      const size_t bytes = stack_bytes_ + page;
      void* map = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      if (map == MAP_FAILED) return false;
      if (mprotect(map, page, PROT_NONE) != 0) {
        munmap(map, bytes);
        return false;
      }
      stack_maps_.emplace_back(map, bytes);
    }
    if (fibers_.size() < n) fibers_.resize(n);
    for (unsigned i = 0; i < n; ++i) fibers_[i].stack = static_cast<char*>(stack_maps_[i].first) + page;
    return true;
  }

  void run_block(unsigned long long b, unsigned long long seed) {
    const uint3 g = spec_.grid, d = spec_.block;
    block_ = uint3{static_cast<unsigned>(b % g.x), static_cast<unsigned>(b / g.x % g.y),
                   static_cast<unsigned>(b / (static_cast<unsigned long long>(g.x) * g.y))};
    blockIdx = block_;
    rng_ = Rng(seed ^ splitmix64(b + 1));
    reset_shared();

    const unsigned nwarps = (nthreads_ + kWarpSize - 1) / kWarpSize;
    warps_.assign(nwarps, Warp{~0u, 0, 0});
    if (nthreads_ % kWarpSize) warps_.back().exists = (1u << (nthreads_ % kWarpSize)) - 1;
    runnable_.clear();
    for (unsigned i = 0; i < nthreads_; ++i) {
      Fiber& f = fibers_[i];
      f.tid = uint3{i % d.x, i / d.x % d.y, i / (d.x * d.y)};
      f.linear = i;
      prepare_stack(f);
      make_runnable(f);
    }
    barrier_waiting_ = 0;
    exited_ = 0;
    first_exited_ = 0;
    live_ = nthreads_;

    while (live_ > 0 && status_ == EMU_OK) {
      if (runnable_.empty()) {
        if (!release_active_masks()) report_deadlock();
        continue;
      }
      const size_t k = rng_.below(runnable_.size());
      Fiber& f = fibers_[runnable_[k]];
      runnable_[k] = runnable_.back();
      runnable_.pop_back();
      resume(f);
    }
    if (status_ != EMU_OK) {
      abandon_fibers();
      return;
    }
#ifndef EMU_ASAN  // under ASan the guards are poisoned and every access to them is caught
    check_guards();
#endif
  }

  // A new fiber's stack holds the frame emu_switch_context pops: r15..r12, rbx, rbp, then
  // the trampoline as return address. The trampoline starts with a 16-byte aligned stack.
  void prepare_stack(Fiber& f) {
    const auto top = reinterpret_cast<uintptr_t>(f.stack + stack_bytes_) & ~uintptr_t{15};
    auto* sp = reinterpret_cast<unsigned long long*>(top) - 9;
    sp[0] = sp[1] = sp[2] = 0;                          // r15, r14, r13
    sp[3] = reinterpret_cast<uintptr_t>(&f);            // r12: the trampoline's argument
    sp[4] = reinterpret_cast<uintptr_t>(&fiber_entry);  // rbx: what it calls
    sp[5] = 0;                                          // rbp: ends frame-pointer walks
    sp[6] = reinterpret_cast<uintptr_t>(&emu_fiber_trampoline);
    sp[7] = sp[8] = 0;  // popping sp[0..6] leaves the stack at top - 16
    f.sp = sp;
  }

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

  [[noreturn]] void exit_thread(Fiber& f) {
    --live_;
    if (exited_++ == 0) first_exited_ = f.linear;
    Warp& w = warps_[f.linear / kWarpSize];
    const unsigned bit = 1u << (f.linear % kWarpSize);
    w.exited |= bit;
    if (barrier_waiting_ > 0)
      fail(EMU_ERROR_BARRIER,
           "%s exited while __syncthreads() at %s:%d has %s waiting; every thread of the block "
           "must reach every barrier",
           thread_name(f).c_str(), barrier_file_, barrier_line_, threads(barrier_waiting_).c_str());
    for (unsigned lanes = w.waiting; lanes; lanes &= lanes - 1) {
      const Fiber& g = fibers_[f.linear / kWarpSize * kWarpSize + __builtin_ctz(lanes)];
      if (g.call.kind != WarpKind::ActiveMask && (g.call.mask & bit))
        fail(EMU_ERROR_WARP, "%s exited while %s waits for it in %s (mask 0x%08x) at %s:%d",
             thread_name(f).c_str(), thread_name(g).c_str(), g.call.intrinsic, g.call.mask,
             g.call.file, g.call.line);
    }
    leave(f);
  }

  // Completes the rendezvous of `mask` if every lane it names waits with that same mask.
  // A lane that waits with another mask belongs to another rendezvous, which must finish
  // (and the lane come back) first.
  void try_rendezvous(unsigned warp, unsigned mask) {
    Fiber* lanes = &fibers_[warp * kWarpSize];
    const unsigned first = __builtin_ctz(mask);
    for (unsigned m = mask; m; m &= m - 1) {
      const WarpCall& c = lanes[__builtin_ctz(m)].call;
      if (c.kind == WarpKind::ActiveMask || c.mask != mask) return;
    }
    for (unsigned m = mask; m; m &= m - 1) {
      const Fiber& g = lanes[__builtin_ctz(m)];
      if (g.call.kind != lanes[first].call.kind)
        fail(EMU_ERROR_WARP,
             "warp %u, mask 0x%08x: %s calls %s at %s:%d but %s calls %s at %s:%d", warp, mask,
             thread_name(lanes[first]).c_str(), lanes[first].call.intrinsic,
             lanes[first].call.file, lanes[first].call.line, thread_name(g).c_str(),
             g.call.intrinsic, g.call.file, g.call.line);
    }
    const WarpKind kind = lanes[first].call.kind;
    const bool shuffle = kind <= WarpKind::ShflXor;  // WarpKind lists the shuffles first
    const unsigned long long vote = shuffle ? 0 : reduce(kind, lanes, mask);
    for (unsigned m = mask; m; m &= m - 1) {
      const unsigned lane = __builtin_ctz(m);
      Fiber& g = lanes[lane];
      g.result = vote;
      if (shuffle) {
        const unsigned src = shuffle_source(kind, lane, g.call.b, g.call.c);
        // Reading a lane outside the mask is undefined on the device: hand back poison.
        g.result = (mask >> src) & 1u ? lanes[src].call.value : ~0ull;
      }
      warps_[warp].waiting &= ~(1u << lane);
      make_runnable(g);
    }
  }

  // PTX ISA, shfl.sync: the source lane j for `lane`, or `lane` itself when j is out of range.
  static unsigned shuffle_source(WarpKind kind, unsigned lane, unsigned b, unsigned c) {
    const int l = static_cast<int>(lane), bval = static_cast<int>(b & 31u);
    const int cval = static_cast<int>(c & 31u), segmask = static_cast<int>((c >> 8) & 31u);
    const int max_lane = (l & segmask) | (cval & ~segmask);
    const int min_lane = l & segmask;
    int j = 0;
    bool in_range = false;
    switch (kind) {
      case WarpKind::ShflUp:
        j = l - bval;
        in_range = j >= max_lane;
        break;
      case WarpKind::ShflDown:
        j = l + bval;
        in_range = j <= max_lane;
        break;
      case WarpKind::ShflXor:
        j = l ^ bval;
        in_range = j <= max_lane;
        break;
      default:  // ShflIdx
        j = min_lane | (bval & ~segmask);
        in_range = j <= max_lane;
        break;
    }
    return static_cast<unsigned>(in_range ? j : l);
  }

  static unsigned long long reduce(WarpKind kind, const Fiber* lanes, unsigned mask) {
    unsigned r = 0;
    bool first = true;
    for (unsigned m = mask; m; m &= m - 1) {
      const unsigned lane = __builtin_ctz(m);
      const auto v = static_cast<unsigned>(lanes[lane].call.value);
      switch (kind) {
        case WarpKind::Ballot: r |= v ? 1u << lane : 0u; break;
        case WarpKind::Any: r = r || v; break;
        case WarpKind::All: r = (first || r) && v; break;
        case WarpKind::ReduceAdd: r += v; break;
        case WarpKind::ReduceMinS: r = first || int(v) < int(r) ? v : r; break;
        case WarpKind::ReduceMaxS: r = first || int(v) > int(r) ? v : r; break;
        case WarpKind::ReduceMinU: r = first || v < r ? v : r; break;
        case WarpKind::ReduceMaxU: r = first || v > r ? v : r; break;
        case WarpKind::ReduceAnd: r = first ? v : r & v; break;
        case WarpKind::ReduceOr: r |= v; break;
        case WarpKind::ReduceXor: r ^= v; break;
        default: break;  // __syncwarp returns nothing
      }
      first = false;
    }
    return r;
  }

  // __activemask() models convergence: once nothing can run, the lanes of a warp waiting at
  // the same __activemask() call site are the ones executing it together.
  bool release_active_masks() {
    bool released = false;
    for (unsigned w = 0; w < warps_.size(); ++w) {
      Fiber* lanes = &fibers_[w * kWarpSize];
      unsigned pending = 0;
      for (unsigned m = warps_[w].waiting; m; m &= m - 1)
        if (lanes[__builtin_ctz(m)].call.kind == WarpKind::ActiveMask) pending |= m & -m;
      while (pending) {
        const WarpCall& lead = lanes[__builtin_ctz(pending)].call;
        unsigned group = 0;
        for (unsigned m = pending; m; m &= m - 1) {
          const WarpCall& c = lanes[__builtin_ctz(m)].call;
          if (same_site(c.file, c.line, lead.file, lead.line)) group |= m & -m;
        }
        for (unsigned m = group; m; m &= m - 1) {
          Fiber& g = lanes[__builtin_ctz(m)];
          g.result = group;
          make_runnable(g);
        }
        pending &= ~group;
        warps_[w].waiting &= ~group;
        released = true;
      }
    }
    return released;
  }

  void report_deadlock() {
    std::string s = "deadlock: every remaining thread waits for something that cannot happen.";
    if (barrier_waiting_ > 0)
      s += format(" __syncthreads() at %s:%d has %u of %s waiting.", barrier_file_,
                  barrier_line_, barrier_waiting_, threads(nthreads_).c_str());
    unsigned listed = 0;
    for (unsigned w = 0; w < warps_.size() && listed < 8; ++w) {
      const Fiber* lanes = &fibers_[w * kWarpSize];
      unsigned todo = warps_[w].waiting;
      while (todo && listed < 8) {
        const WarpCall& lead = lanes[__builtin_ctz(todo)].call;
        unsigned group = 0;
        for (unsigned m = todo; m; m &= m - 1) {
          const WarpCall& c = lanes[__builtin_ctz(m)].call;
          if (c.mask == lead.mask && c.kind == lead.kind) group |= m & -m;
        }
        s += format(" Warp %u lanes 0x%08x wait in %s (mask 0x%08x) at %s:%d; lanes 0x%08x of "
                    "the mask never joined.",
                    w, group, lead.intrinsic, lead.mask, lead.file, lead.line,
                    lead.mask & ~group);
        todo &= ~group;
        ++listed;
      }
    }
    set_error(EMU_ERROR_DEADLOCK, s);
  }

  void reset_shared() {
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
  size_t carve(size_t bytes, size_t align) {
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

  void check_guards() {
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

  // After a failure the block's remaining fibers are dropped mid-call. Their stacks are
  // reused by the next launch, so ASan must forget the frames they left behind.
  void abandon_fibers() {
#ifdef EMU_ASAN
    for (unsigned i = 0; i < nthreads_; ++i)
      ASAN_UNPOISON_MEMORY_REGION(fibers_[i].stack, stack_bytes_);
#endif
  }

  std::string thread_name(const Fiber& f) const {
    if (spec_.block.y == 1 && spec_.block.z == 1) return format("thread %u", f.tid.x);
    return format("thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z);
  }

  void set_error(int status, const std::string& what) {
    if (status_ != EMU_OK) return;
    status_ = status;
    message_ = format("kernel '%s' block (%u,%u,%u): ", spec_.kernel, block_.x, block_.y,
                      block_.z) + what;
  }

  // Ends the calling fiber's part in the launch: the block is abandoned once it returns to
  // the scheduler.
  [[noreturn]] __attribute__((format(printf, 3, 4))) void fail(int status, const char* fmt, ...) {
    va_list args;
    va_start(args, fmt);
    set_error(status, vformat(fmt, args));
    va_end(args);
    leave(*current_);
  }

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

void fiber_entry(Fiber* f) { t_engine->thread_main(*f); }

Engine& current_engine(const char* what) {
  if (!t_engine) {
    std::fprintf(stderr,
                 "emu: %s used outside a kernel launch (call kernels through emu_launch_<name>)\n",
                 what);
    std::abort();
  }
  return *t_engine;
}

std::mutex g_pool_mutex;
std::vector<std::unique_ptr<Engine>> g_pool;  // idle engines, reused by later launches

std::unique_ptr<Engine> acquire_engine() {
  const size_t want = settings().stack_bytes.load();
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    while (!g_pool.empty()) {
      std::unique_ptr<Engine> e = std::move(g_pool.back());
      g_pool.pop_back();
      if (e->stack_bytes() == want) return e;
    }
  }
  return std::make_unique<Engine>(want);
}

void release_engine(std::unique_ptr<Engine> e) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  g_pool.push_back(std::move(e));
}

std::string check_config(const char* kernel, size_t num_params, const unsigned grid[3],
                         const unsigned block[3], size_t dynamic_bytes, void** args) {
  if (t_engine) return format("kernel '%s' launched from inside a kernel", kernel);
  if (!grid || !block) return format("kernel '%s': grid or block is a null pointer", kernel);
  if (num_params > 0 && !args)
    return format("kernel '%s' takes %zu parameters but args is null", kernel, num_params);
  const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
  if (threads == 0 || threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64)
    return format("kernel '%s': block (%u,%u,%u) is not 1 to 1024 threads with x,y <= 1024 and "
                  "z <= 64",
                  kernel, block[0], block[1], block[2]);
  if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[0] > 0x7fffffffu ||
      grid[1] > 65535 || grid[2] > 65535)
    return format("kernel '%s': grid (%u,%u,%u) is outside 1..2^31-1 x 1..65535 x 1..65535",
                  kernel, grid[0], grid[1], grid[2]);
  if (dynamic_bytes > kMaxSharedPerBlock)
    return format("kernel '%s': %zu bytes of dynamic shared memory exceed the %zu-byte "
                  "per-block limit",
                  kernel, dynamic_bytes, kMaxSharedPerBlock);
  return {};
}

}  // namespace

unsigned long long warp_call(const WarpCall& call) {
  return current_engine(call.intrinsic).warp_call(call);
}

unsigned int block_sync(int predicate, const char* file, int line) {
  return current_engine("__syncthreads").block_sync(predicate, file, line);
}

void* shared_alloc(const void* site, size_t bytes, size_t align, const char* name,
                   const char* func) {
  return current_engine("__shared__").shared_alloc(site, bytes, align, name, func);
}

void device_error(int status, const char* message) {
  current_engine("device_error").device_error(status, message);
}

void* dynamic_shared(size_t align, const char* func) {
  return current_engine("extern __shared__").dynamic_shared(align, func);
}

int launch(const char* kernel, Invoke invoke, size_t num_params, const unsigned grid[3],
           const unsigned block[3], size_t dynamic_smem_bytes, void** args) {
  t_last_error = check_config(kernel, num_params, grid, block, dynamic_smem_bytes, args);
  if (!t_last_error.empty()) return EMU_ERROR_LAUNCH;
  std::unique_ptr<Engine> engine = acquire_engine();
  const LaunchSpec spec{kernel, invoke, uint3{grid[0], grid[1], grid[2]},
                        uint3{block[0], block[1], block[2]}, dynamic_smem_bytes, args};
  const int status = engine->run(spec, t_last_error);
  release_engine(std::move(engine));
  return status;
}

}  // namespace emu::detail

extern "C" const char* emu_last_error(void) { return emu::detail::t_last_error.c_str(); }

extern "C" void emu_set_seed(unsigned long long seed) { emu::detail::settings().seed = seed; }

extern "C" void emu_set_stack_size(size_t bytes) {
  emu::detail::Settings& s = emu::detail::settings();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  s.stack_bytes = bytes == 0 ? s.default_stack_bytes
                             : emu::detail::round_up(std::max<size_t>(bytes, 16384), page);
}
