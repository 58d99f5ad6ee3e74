#include "harness.h"

#include <cstdarg>

namespace {
int g_failures = 0;
}

std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

std::string strprintf(const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  char buf[2048];
  vsnprintf(buf, sizeof buf, fmt, args);
  va_end(args);
  return buf;
}

void record_failure(const char* file, int line, const std::string& what) {
  ++g_failures;
  if (g_failures <= 50) std::printf("    %s:%d: %s\n", file, line, what.c_str());
}

int failures() { return g_failures; }

// Runs every test, or those whose name contains one of the arguments.
int main(int argc, char** argv) {
  int passed = 0, failed = 0;
  for (const TestCase& t : registry()) {
    bool selected = argc == 1;
    for (int i = 1; i < argc; ++i) selected |= std::strstr(t.name, argv[i]) != nullptr;
    if (!selected) continue;
    const int before = g_failures;
    t.fn();
    const bool ok = g_failures == before;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", t.name);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
