// The device side of the execution model: built-in index variables, barriers, warp-synchronous
// intrinsics, atomics and shared memory. Everything that blocks a thread calls into
// runtime.cpp, which owns the fibers.
#pragma once

// Initial-exec TLS is a plain %fs-relative load, so reading threadIdx costs what a global does.
#define EMU_TLS __attribute__((tls_model("initial-exec")))

// The scheduler writes these before it resumes a fiber, so each emulated thread reads its own
// values. blockDim/gridDim are uint3 rather than dim3 because __thread needs a trivial type;
// `dim3 d = blockDim;` still works through dim3's converting constructor.
extern __thread uint3 threadIdx EMU_TLS;
extern __thread uint3 blockIdx EMU_TLS;
extern __thread uint3 blockDim EMU_TLS;
extern __thread uint3 gridDim EMU_TLS;
constexpr int warpSize = 32;

namespace emu::detail {

enum class WarpKind : unsigned char {
  ShflIdx, ShflUp, ShflDown, ShflXor,
  Ballot, Any, All,
  ReduceAdd, ReduceMinS, ReduceMaxS, ReduceMinU, ReduceMaxU, ReduceAnd, ReduceOr, ReduceXor,
  Sync, ActiveMask,
  WmmaLoad, WmmaStore, WmmaMma,  // nvcuda::wmma (detail/wmma.h): full-warp rendezvous
  MmaSync,                       // raw mma.sync m16n8k16 (detail/mma.h): full-warp rendezvous
};

// One lane's side of a warp-synchronous intrinsic. `b` and `c` are the operands of PTX's
// shfl.sync (lane or offset, and the packed segment mask / clamp), so the runtime applies
// PTX's exact source-lane rule rather than a paraphrase of it.
struct WarpCall {
  WarpKind kind;
  unsigned int mask;
  unsigned long long value;
  unsigned int b, c;
  const char* intrinsic;
  const char* file;
  int line;
};

// Implemented in runtime.cpp. They suspend the calling fiber until the barrier or the warp
// rendezvous completes, or never return if the launch fails.
unsigned long long warp_call(const WarpCall& call);
unsigned int block_sync(int predicate, const char* file, int line);  // threads with predicate != 0
void* shared_alloc(const void* site, size_t bytes, size_t align, const char* name, const char* func);
void* dynamic_shared(size_t align, const char* func);

template <class T>
unsigned long long to_payload(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                "warp shuffles move at most 8 bytes of a trivially copyable type");
  unsigned long long p = 0;
  std::memcpy(&p, &v, sizeof(T));
  return p;
}

template <class T>
T from_payload(unsigned long long p) {
  T v;
  std::memcpy(static_cast<void*>(&v), &p, sizeof(T));
  return v;
}

template <class T>
T shuffle(WarpKind kind, unsigned int mask, T var, unsigned int b, int c, const char* intrinsic,
          const char* file, int line) {
  const WarpCall call{kind, mask, to_payload(var), b, static_cast<unsigned int>(c), intrinsic, file, line};
  return from_payload<T>(warp_call(call));
}

inline unsigned long long warp_value(WarpKind kind, unsigned int mask, unsigned long long value,
                                     const char* intrinsic, const char* file, int line) {
  return warp_call(WarpCall{kind, mask, value, 0, 0, intrinsic, file, line});
}

}  // namespace emu::detail

// Barriers. The call site identifies the barrier, so threads waiting at two different
// __syncthreads() are reported as divergent instead of silently pairing up.
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emu::detail::block_sync(0, file, line);
}
inline int __syncthreads_count(int predicate, const char* file = __builtin_FILE(),
                               int line = __builtin_LINE()) {
  return static_cast<int>(emu::detail::block_sync(predicate, file, line));
}
inline int __syncthreads_and(int predicate, const char* file = __builtin_FILE(),
                             int line = __builtin_LINE()) {
  return emu::detail::block_sync(predicate, file, line) == blockDim.x * blockDim.y * blockDim.z;
}
inline int __syncthreads_or(int predicate, const char* file = __builtin_FILE(),
                            int line = __builtin_LINE()) {
  return emu::detail::block_sync(predicate, file, line) != 0;
}
inline void __syncwarp(unsigned int mask = 0xffffffffu, const char* file = __builtin_FILE(),
                       int line = __builtin_LINE()) {
  emu::detail::warp_value(emu::detail::WarpKind::Sync, mask, 0, __func__, file, line);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned int) {}

// Shuffles: the `c` operand is built exactly as CUDA's sm_30_intrinsics.hpp builds it.
template <class T>
T __shfl_sync(unsigned int mask, T var, int srcLane, int width = warpSize,
              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::detail::shuffle(emu::detail::WarpKind::ShflIdx, mask, var,
                              static_cast<unsigned int>(srcLane), ((warpSize - width) << 8) | 0x1f,
                              __func__, file, line);
}
template <class T>
T __shfl_up_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize,
                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::detail::shuffle(emu::detail::WarpKind::ShflUp, mask, var, delta,
                              (warpSize - width) << 8, __func__, file, line);
}
template <class T>
T __shfl_down_sync(unsigned int mask, T var, unsigned int delta, int width = warpSize,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::detail::shuffle(emu::detail::WarpKind::ShflDown, mask, var, delta,
                              ((warpSize - width) << 8) | 0x1f, __func__, file, line);
}
template <class T>
T __shfl_xor_sync(unsigned int mask, T var, int laneMask, int width = warpSize,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return emu::detail::shuffle(emu::detail::WarpKind::ShflXor, mask, var,
                              static_cast<unsigned int>(laneMask), ((warpSize - width) << 8) | 0x1f,
                              __func__, file, line);
}

// Votes and reductions.
inline unsigned int __ballot_sync(unsigned int mask, int predicate,
                                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<unsigned int>(emu::detail::warp_value(
      emu::detail::WarpKind::Ballot, mask, predicate != 0, __func__, file, line));
}
inline int __any_sync(unsigned int mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(emu::detail::warp_value(emu::detail::WarpKind::Any, mask,
                                                  predicate != 0, __func__, file, line));
}
inline int __all_sync(unsigned int mask, int predicate, const char* file = __builtin_FILE(),
                      int line = __builtin_LINE()) {
  return static_cast<int>(emu::detail::warp_value(emu::detail::WarpKind::All, mask,
                                                  predicate != 0, __func__, file, line));
}
// The lanes that reach this same call site together (see README: convergence).
inline unsigned int __activemask(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return static_cast<unsigned int>(
      emu::detail::warp_value(emu::detail::WarpKind::ActiveMask, 0, 0, __func__, file, line));
}

#define EMU_WARP_REDUCE(name, T, kind)                                                          \
  inline T name(unsigned int mask, T value, const char* file = __builtin_FILE(),               \
                int line = __builtin_LINE()) {                                                 \
    return static_cast<T>(emu::detail::warp_value(emu::detail::WarpKind::kind, mask,           \
                                                  static_cast<unsigned int>(value), __func__,  \
                                                  file, line));                                \
  }
EMU_WARP_REDUCE(__reduce_add_sync, int, ReduceAdd)
EMU_WARP_REDUCE(__reduce_add_sync, unsigned int, ReduceAdd)
EMU_WARP_REDUCE(__reduce_min_sync, int, ReduceMinS)
EMU_WARP_REDUCE(__reduce_max_sync, int, ReduceMaxS)
EMU_WARP_REDUCE(__reduce_min_sync, unsigned int, ReduceMinU)
EMU_WARP_REDUCE(__reduce_max_sync, unsigned int, ReduceMaxU)
EMU_WARP_REDUCE(__reduce_and_sync, unsigned int, ReduceAnd)
EMU_WARP_REDUCE(__reduce_or_sync, unsigned int, ReduceOr)
EMU_WARP_REDUCE(__reduce_xor_sync, unsigned int, ReduceXor)
#undef EMU_WARP_REDUCE

// Atomics. All fibers of a launch share one OS thread, but concurrent launches from other OS
// threads may touch the same memory, so these are real atomic instructions. The generic
// builtins compare bit patterns, which is what the device's CAS loops do for floats too.
namespace emu::detail {
template <class T, class Op>
T atomic_update(T* address, Op op) {
  T old;
  __atomic_load(address, &old, __ATOMIC_RELAXED);
  T desired;
  do {
    desired = op(old);
  } while (!__atomic_compare_exchange(address, &old, &desired, true, __ATOMIC_RELAXED,
                                      __ATOMIC_RELAXED));
  return old;
}
}  // namespace emu::detail

#define EMU_ATOMIC(name, T, expr)                                                               \
  inline T name(T* address, T val) {                                                           \
    return emu::detail::atomic_update(address, [val]([[maybe_unused]] T old) -> T { return expr; });         \
  }
EMU_ATOMIC(atomicAdd, int, old + val)
EMU_ATOMIC(atomicAdd, unsigned int, old + val)
EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
EMU_ATOMIC(atomicAdd, float, old + val)
EMU_ATOMIC(atomicAdd, double, old + val)
EMU_ATOMIC(atomicAdd, __half, old + val)
EMU_ATOMIC(atomicAdd, __half2, old + val)
EMU_ATOMIC(atomicAdd, __nv_bfloat16, old + val)
EMU_ATOMIC(atomicAdd, __nv_bfloat162, old + val)
EMU_ATOMIC(atomicSub, int, old - val)
EMU_ATOMIC(atomicSub, unsigned int, old - val)
EMU_ATOMIC(atomicMax, int, old > val ? old : val)
EMU_ATOMIC(atomicMax, unsigned int, old > val ? old : val)
EMU_ATOMIC(atomicMax, long long, old > val ? old : val)
EMU_ATOMIC(atomicMax, unsigned long long, old > val ? old : val)
EMU_ATOMIC(atomicMin, int, old < val ? old : val)
EMU_ATOMIC(atomicMin, unsigned int, old < val ? old : val)
EMU_ATOMIC(atomicMin, long long, old < val ? old : val)
EMU_ATOMIC(atomicMin, unsigned long long, old < val ? old : val)
EMU_ATOMIC(atomicExch, int, val)
EMU_ATOMIC(atomicExch, unsigned int, val)
EMU_ATOMIC(atomicExch, unsigned long long, val)
EMU_ATOMIC(atomicExch, float, val)
EMU_ATOMIC(atomicAnd, int, old & val)
EMU_ATOMIC(atomicAnd, unsigned int, old & val)
EMU_ATOMIC(atomicAnd, unsigned long long, old & val)
EMU_ATOMIC(atomicOr, int, old | val)
EMU_ATOMIC(atomicOr, unsigned int, old | val)
EMU_ATOMIC(atomicOr, unsigned long long, old | val)
EMU_ATOMIC(atomicXor, int, old ^ val)
EMU_ATOMIC(atomicXor, unsigned int, old ^ val)
EMU_ATOMIC(atomicXor, unsigned long long, old ^ val)
EMU_ATOMIC(atomicInc, unsigned int, old >= val ? 0u : old + 1u)
EMU_ATOMIC(atomicDec, unsigned int, (old == 0u || old > val) ? val : old - 1u)
#undef EMU_ATOMIC

#define EMU_ATOMIC_CAS(T)                                                                      \
  inline T atomicCAS(T* address, T compare, T val) {                                          \
    __atomic_compare_exchange(address, &compare, &val, false, __ATOMIC_RELAXED,               \
                              __ATOMIC_RELAXED);                                               \
    return compare;                                                                            \
  }
EMU_ATOMIC_CAS(int)
EMU_ATOMIC_CAS(unsigned int)
EMU_ATOMIC_CAS(unsigned long long)
EMU_ATOMIC_CAS(unsigned short)
#undef EMU_ATOMIC_CAS

// Cache-hinted loads and stores are plain accesses on the host.
template <class T> T __ldg(const T* p) { return *p; }
template <class T> T __ldcg(const T* p) { return *p; }
template <class T> T __ldca(const T* p) { return *p; }
template <class T> T __ldcs(const T* p) { return *p; }
template <class T> T __ldlu(const T* p) { return *p; }
template <class T> T __ldcv(const T* p) { return *p; }
template <class T> void __stwb(T* p, T v) { *p = v; }
template <class T> void __stcg(T* p, T v) { *p = v; }
template <class T> void __stcs(T* p, T v) { *p = v; }
template <class T> void __stwt(T* p, T v) { *p = v; }

// Shared memory. rewrite.py turns each `__shared__` declaration into one of these macros
// (README.md: "The build step"). A declaration's storage lives in the block's arena;
// the static `site` is only an address that names the declaration, so every thread of the
// block that executes it gets the same storage, and the next block gets fresh, poisoned bytes.
namespace emu::detail {
template <class T>
T& shared_var(const void* site, size_t align, const char* name, const char* func) {
  static_assert(std::is_trivially_default_constructible_v<std::remove_all_extents_t<T>>,
                "a __shared__ variable cannot have a constructor, as in CUDA");
  return *static_cast<T*>(
      shared_alloc(site, sizeof(T), align > alignof(T) ? align : alignof(T), name, func));
}

template <class T> using unbounded = T[];

template <class T>
unbounded<T>& extern_shared(size_t align, const char* func) {
  return *static_cast<unbounded<T>*>(dynamic_shared(align > alignof(T) ? align : alignof(T), func));
}
}  // namespace emu::detail

// A namespace-scope __shared__ would become a static initializer running outside any launch;
// the static_assert turns it into a compile error instead (__builtin_FUNCTION() is "" there).
#define EMU_SHARED(name, align, ...)                                                           \
  static_assert(__builtin_FUNCTION()[0] != '\0', "__shared__ declared outside a function");   \
  static char emu_shared_site_##name;                                                          \
  auto& name = ::emu::detail::shared_var<__VA_ARGS__>(&emu_shared_site_##name, align, #name,   \
                                                      __func__)
#define EMU_EXTERN_SHARED(name, align, ...)                                                    \
  static_assert(__builtin_FUNCTION()[0] != '\0', "__shared__ declared outside a function");   \
  ::emu::detail::unbounded<__VA_ARGS__>& name =                                                \
      ::emu::detail::extern_shared<__VA_ARGS__>(align, __func__)
