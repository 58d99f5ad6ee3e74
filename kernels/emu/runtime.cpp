// runtime.cpp: the scheduler behind cuda_emu.h.
//
// A launch runs its blocks one at a time, in a seeded pseudo-random order. A block's threads
// are fibers with their own stacks, switched by a few instructions of assembly; the scheduler
// runs on the launching OS thread's stack and resumes a randomly chosen runnable fiber until
// that fiber blocks (barrier, warp rendezvous) or exits. Blocking calls record what the fiber
// waits for, and the last arrival releases the others, so checking for divergence and deadlock
// needs no extra pass. Each block gets a fresh shared-memory arena filled with 0xFF (NaN),
// with guard bytes between variables.
//
// This file holds launches, blocks, fibers, barriers and errors; runtime_warp.cpp the warp
// rendezvous, runtime_shared.cpp the shared arena, runtime.h the engine they share.
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

#include "runtime.h"

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

namespace emu::detail::runtime {
namespace {

std::string vformat(const char* fmt, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  std::string s(static_cast<size_t>(n), '\0');
  vsnprintf(s.data(), s.size() + 1, fmt, args);
  return s;
}

unsigned long long env_u64(const char* name, unsigned long long fallback) {
  const char* s = std::getenv(name);
  if (!s || !*s) return fallback;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(s, &end, 0);
  return *end ? fallback : v;
}

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

unsigned long long hash_name(const char* s) {
  unsigned long long h = 0xcbf29ce484222325ull;
  for (; *s; ++s) h = (h ^ static_cast<unsigned char>(*s)) * 0x100000001b3ull;
  return h;
}

thread_local Engine* t_engine EMU_TLS = nullptr;
thread_local std::string t_last_error;

}  // namespace

std::string format(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::string s = vformat(fmt, args);
  va_end(args);
  return s;
}

Engine::Engine(size_t stack_bytes)
    : stack_bytes_(stack_bytes),
      arena_(static_cast<char*>(std::aligned_alloc(4096, kArenaBytes))) {}

Engine::~Engine() {
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

int Engine::run(const LaunchSpec& spec, std::string& message) {
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

unsigned Engine::block_sync(int predicate, const char* file, int line) {
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

void Engine::device_error(int status, const char* message) {
  fail(status, "%s", message);
}

void Engine::thread_main(Fiber& f) {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &scheduler_stack_, &scheduler_stack_bytes_);
#endif
  spec_.invoke(spec_.args);
  exit_thread(f);
}

bool Engine::reserve_stacks(unsigned n) {
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

void Engine::run_block(unsigned long long b, unsigned long long seed) {
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
void Engine::prepare_stack(Fiber& f) {
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

void Engine::exit_thread(Fiber& f) {
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

// After a failure the block's remaining fibers are dropped mid-call. Their stacks are
// reused by the next launch, so ASan must forget the frames they left behind.
void Engine::abandon_fibers() {
#ifdef EMU_ASAN
  for (unsigned i = 0; i < nthreads_; ++i)
    ASAN_UNPOISON_MEMORY_REGION(fibers_[i].stack, stack_bytes_);
#endif
}

std::string Engine::thread_name(const Fiber& f) const {
  if (spec_.block.y == 1 && spec_.block.z == 1) return format("thread %u", f.tid.x);
  return format("thread (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z);
}

void Engine::set_error(int status, const std::string& what) {
  if (status_ != EMU_OK) return;
  status_ = status;
  message_ = format("kernel '%s' block (%u,%u,%u): ", spec_.kernel, block_.x, block_.y,
                    block_.z) + what;
}

void Engine::fail(int status, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  set_error(status, vformat(fmt, args));
  va_end(args);
  leave(*current_);
}

void fiber_entry(Fiber* f) { t_engine->thread_main(*f); }

namespace {

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
}  // namespace emu::detail::runtime

// The entry points kernel code calls (detail/device.h, detail/wmma.h, detail/launch.h).
namespace emu::detail {

using runtime::current_engine;

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
  std::string& last_error = runtime::t_last_error;
  last_error = runtime::check_config(kernel, num_params, grid, block, dynamic_smem_bytes, args);
  if (!last_error.empty()) return EMU_ERROR_LAUNCH;
  std::unique_ptr<runtime::Engine> engine = runtime::acquire_engine();
  const runtime::LaunchSpec spec{kernel, invoke, uint3{grid[0], grid[1], grid[2]},
                                 uint3{block[0], block[1], block[2]}, dynamic_smem_bytes, args};
  const int status = engine->run(spec, last_error);
  runtime::release_engine(std::move(engine));
  return status;
}

}  // namespace emu::detail

namespace rt = emu::detail::runtime;

extern "C" const char* emu_last_error(void) { return rt::t_last_error.c_str(); }

extern "C" void emu_set_seed(unsigned long long seed) { rt::settings().seed = seed; }

extern "C" void emu_set_stack_size(size_t bytes) {
  rt::Settings& s = rt::settings();
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  s.stack_bytes = bytes == 0 ? s.default_stack_bytes
                             : rt::round_up(std::max<size_t>(bytes, 16384), page);
}
