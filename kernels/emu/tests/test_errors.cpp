// Misuse must come back as an error code and a message naming the kernel, never a crash, and
// the next launch must work.
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

DECLARE_KERNEL(reduce_tree);
DECLARE_KERNEL(reverse_rows);
DECLARE_KERNEL(early_exit_then_barrier);
DECLARE_KERNEL(two_barrier_sites);
DECLARE_KERNEL(barrier_in_divergent_loop);
DECLARE_KERNEL(shfl_after_lane_exit);
DECLARE_KERNEL(shfl_lane_elsewhere);
DECLARE_KERNEL(shfl_partial_warp);
DECLARE_KERNEL(mask_without_self);
DECLARE_KERNEL(mismatched_intrinsics);
DECLARE_KERNEL(shared_overflow);
DECLARE_KERNEL(static_too_big);
DECLARE_KERNEL(dynamic_overflow);

namespace {

void expect_error(int status, int want, const char* kernel, const char* phrase) {
  const std::string msg = emu_last_error();
  CHECK_MSG(status == want, "status %d, want %d: %s", status, want, msg.c_str());
  CHECK_MSG(msg.find(std::string("'") + kernel + "'") != std::string::npos, "no kernel name in: %s", msg.c_str());
  CHECK_MSG(msg.find(phrase) != std::string::npos, "no \"%s\" in: %s", phrase, msg.c_str());
}

// A healthy launch after a failed one proves the failure left nothing behind.
void expect_recovery() {
  std::vector<float> x(512, 1.0f), out(2);
  CHECK(launch(emu_launch_reduce_tree, dim3(2), dim3(256), 0, out.data(), x.data(), 256) == EMU_OK);
  CHECK(out[0] == 256.0f && out[1] == 256.0f);
  CHECK(std::string(emu_last_error()).empty());
}

TEST(launch_configuration_errors) {
  std::vector<float> buf(4096);
  const float* in = buf.data();
  float* out = buf.data();
  int n = 1;
  const struct {
    dim3 grid, block;
    size_t smem;
    const char* phrase;
  } bad[] = {
      {dim3(1), dim3(0), 0, "block (0,1,1)"},
      {dim3(1), dim3(1025), 0, "block (1025,1,1)"},
      {dim3(1), dim3(32, 32, 2), 0, "block (32,32,2)"},
      {dim3(1), dim3(1, 1, 65), 0, "block (1,1,65)"},
      {dim3(0), dim3(32), 0, "grid (0,1,1)"},
      {dim3(1, 65536), dim3(32), 0, "grid (1,65536,1)"},
      {dim3(1), dim3(32), 227 * 1024 + 1, "232449 bytes of dynamic shared memory"},
  };
  for (const auto& b : bad)
    expect_error(launch(emu_launch_reverse_rows, b.grid, b.block, b.smem, out, in, n),
                 EMU_ERROR_LAUNCH, "reverse_rows", b.phrase);
  const unsigned one[3] = {1, 1, 1};
  expect_error(emu_launch_reverse_rows(one, one, 0, nullptr), EMU_ERROR_LAUNCH, "reverse_rows", "args is null");
  expect_recovery();
}

TEST(thread_exit_before_barrier) {
  std::vector<float> out(64);
  expect_error(launch(emu_launch_early_exit_then_barrier, dim3(2), dim3(64), 0, out.data()),
               EMU_ERROR_BARRIER, "early_exit_then_barrier", "thread 5");
  expect_recovery();
}

TEST(barrier_divergence_between_two_call_sites) {
  std::vector<float> out(64);
  expect_error(launch(emu_launch_two_barrier_sites, dim3(1), dim3(64), 0, out.data()),
               EMU_ERROR_BARRIER, "two_barrier_sites", "divergent __syncthreads()");
  expect_recovery();
}

TEST(barrier_in_loop_with_uneven_trip_counts) {
  std::vector<float> out(100);
  expect_error(launch(emu_launch_barrier_in_divergent_loop, dim3(1), dim3(64), 0, out.data(), 100),
               EMU_ERROR_BARRIER, "barrier_in_divergent_loop", "exited");
  expect_recovery();
}

TEST(shuffle_naming_an_exited_lane) {
  std::vector<float> out(32);
  expect_error(launch(emu_launch_shfl_after_lane_exit, dim3(1), dim3(32), 0, out.data()),
               EMU_ERROR_WARP, "shfl_after_lane_exit", "__shfl_xor_sync");
  expect_recovery();
}

TEST(shuffle_whose_lane_never_arrives_is_a_deadlock) {
  std::vector<float> out(64);
  expect_error(launch(emu_launch_shfl_lane_elsewhere, dim3(1), dim3(64), 0, out.data()),
               EMU_ERROR_DEADLOCK, "shfl_lane_elsewhere", "lanes 0x00000080 of the mask never joined");
  expect_recovery();
}

TEST(full_mask_in_a_partial_warp) {
  std::vector<float> out(48);
  expect_error(launch(emu_launch_shfl_partial_warp, dim3(1), dim3(48), 0, out.data()),
               EMU_ERROR_WARP, "shfl_partial_warp", "do not exist");
  expect_recovery();
}

TEST(lane_missing_from_its_own_mask) {
  std::vector<unsigned> out(32);
  expect_error(launch(emu_launch_mask_without_self, dim3(1), dim3(32), 0, out.data()),
               EMU_ERROR_WARP, "mask_without_self", "not in its own mask");
  expect_recovery();
}

TEST(different_intrinsics_in_one_rendezvous) {
  std::vector<unsigned> out(32);
  expect_error(launch(emu_launch_mismatched_intrinsics, dim3(1), dim3(32), 0, out.data()),
               EMU_ERROR_WARP, "mismatched_intrinsics", "__any_sync");
  expect_recovery();
}

TEST(static_shared_memory_over_48_kb) {
  std::vector<float> out(32);
  expect_error(launch(emu_launch_static_too_big, dim3(1), dim3(32), 0, out.data()),
               EMU_ERROR_SHARED, "static_too_big", "48 KB");
  expect_recovery();
}

// Without ASan the guard bytes after `a` catch the write when the block ends. With ASan the
// guards are poisoned and the write itself is reported, which ends the process: run it in a
// child and look for the report.
TEST(shared_memory_out_of_bounds_write) {
  std::vector<float> out(33);
#ifndef __SANITIZE_ADDRESS__
  expect_error(launch(emu_launch_shared_overflow, dim3(1), dim3(33), 0, out.data()),
               EMU_ERROR_SHARED, "shared_overflow", "byte 128 of __shared__ a in shared_overflow, which has 128 bytes");
  expect_recovery();
  expect_error(launch(emu_launch_dynamic_overflow, dim3(1), dim3(32), 40 * sizeof(float), out.data(), 40),
               EMU_ERROR_SHARED, "dynamic_overflow", "byte 160 of the dynamic shared memory, which has 160 bytes");
  expect_error(launch(emu_launch_dynamic_overflow, dim3(1), dim3(32), 40 * sizeof(float), out.data(), -1),
               EMU_ERROR_SHARED, "dynamic_overflow", "byte -4 of the dynamic shared memory");
  expect_recovery();
#else
  int fds[2];
  CHECK(pipe(fds) == 0);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDERR_FILENO);
    launch(emu_launch_shared_overflow, dim3(1), dim3(33), 0, out.data());
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;) report.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) != 0, "child status %d", status);
  CHECK_MSG(report.find("AddressSanitizer") != std::string::npos &&
                report.find("shared_overflow") != std::string::npos,
            "no ASan report naming the kernel:\n%s", report.c_str());
#endif
}

}  // namespace
