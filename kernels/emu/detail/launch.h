// The launch ABI: EMU_EXPORT(kernel) defines
//   extern "C" int emu_launch_<kernel>(const unsigned grid[3], const unsigned block[3],
//                                      size_t dynamic_smem_bytes, void** args);
// with cuLaunchKernel's convention: args[i] points at the value of the kernel's i-th
// parameter. The parameter types come from the kernel's own signature, so nothing is parsed.
#pragma once

namespace emu::detail {

using Invoke = void (*)(void** args);

// Implemented in runtime.cpp: checks the configuration, runs every block, returns an
// emu_status and leaves the message for emu_last_error().
int launch(const char* kernel, Invoke invoke, size_t num_params, const unsigned grid[3],
           const unsigned block[3], size_t dynamic_smem_bytes, void** args);

template <class F> struct Kernel;
template <class... P>
struct Kernel<void (*)(P...)> {
  static constexpr size_t num_params = sizeof...(P);

  template <auto K, size_t... I>
  static void call(void** args, std::index_sequence<I...>) {
    K(*static_cast<std::remove_reference_t<P>*>(args[I])...);
  }
};

template <auto K>
void invoke([[maybe_unused]] void** args) {
  using Sig = Kernel<decltype(K)>;
  Sig::template call<K>(args, std::make_index_sequence<Sig::num_params>{});
}

}  // namespace emu::detail

#define EMU_EXPORT_NAMED(kernel, symbol)                                                       \
  extern "C" int symbol(const unsigned grid[3], const unsigned block[3],                       \
                        size_t dynamic_smem_bytes, void** args) {                              \
    return ::emu::detail::launch(#kernel, &::emu::detail::invoke<kernel>,                      \
                                 ::emu::detail::Kernel<decltype(&kernel)>::num_params, grid,    \
                                 block, dynamic_smem_bytes, args);                             \
  }
#define EMU_EXPORT(kernel) EMU_EXPORT_NAMED(kernel, emu_launch_##kernel)
// The other builds of a kernel file (float32, mixed) export with EMU_EXPORT_NAMED under their
// own prefix (build/emu_rewrite.rs `wrapper_variant`).

// The generated wrapper TU puts a kernel file between these two. The anonymous namespace
// gives each file's helpers (kernels/common.cuh included by several files, __device__
// globals) internal linkage, as NVRTC's one-module-per-file compilation does, so they never
// collide at link time. The pragmas silence what NVRTC does not warn about either: helpers a
// file does not use, unsigned threadIdx compared with int, unused kernel parameters.
#define EMU_KERNELS_BEGIN                                                                      \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wunused-function\"")      \
      _Pragma("GCC diagnostic ignored \"-Wunused-variable\"")                                 \
          _Pragma("GCC diagnostic ignored \"-Wsign-compare\"")                                \
              _Pragma("GCC diagnostic ignored \"-Wunused-parameter\"") namespace {
#define EMU_KERNELS_END                                                                        \
  }                                                                                            \
  _Pragma("GCC diagnostic pop")
