// The test runner: Catch2's own main, with two warnings always on, because Catch2 v2 accepts only
// one --warn on the command line:
//   NoAssertions  a test case that asserts nothing fails;
//   NoTests       a test name that matches no test case fails (instead of "No test cases matched"
//                 and exit 0, which let two tests whose names CMake split pass without running).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  Catch::Session session;
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  auto& config = session.configData();
  config.warnings = static_cast<Catch::WarnAbout::What>(config.warnings | Catch::WarnAbout::NoAssertions |
                                                        Catch::WarnAbout::NoTests);
  return session.run();
}
