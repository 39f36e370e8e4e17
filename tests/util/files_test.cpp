// Write errors name errno, appends go whole or fail loudly, and libtorch stack frames are cut from
// the one line a user sees.
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cerrno>
#include <filesystem>

#include "util/check.h"
#include "util/error_text.h"
#include "util/files.h"

using namespace meshtrain;
using ::testing::HasSubstr;

TEST(Files, ErrnoMessagesNameTheErrno) {
  EXPECT_EQ(util::errno_message(ENOSPC), "ENOSPC: No space left on device");
  EXPECT_EQ(util::errno_message(EACCES), "EACCES: Permission denied");
}

TEST(Files, AFullDeviceIsANamedWriteError) {
  util::AppendFile full("/dev/full");
  EXPECT_THAT([&] { full.append("{\"step\": 1}\n"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("cannot write \"/dev/full\": ENOSPC: No space left on device")));
}

TEST(Files, AppendFileAppendsWholeLines) {
  util::TempDir dir("mt-files-test");
  const auto path = std::filesystem::path(dir.path()) / "log.jsonl";
  {
    util::AppendFile f(path);
    f.append("a\n");
  }
  util::AppendFile(path).append("b\n");
  EXPECT_EQ(util::read_file(path), "a\nb\n");
}

TEST(Files, TempDirIsRemovedWithItsContents) {
  std::string path;
  {
    util::TempDir dir("mt-files-test");
    path = dir.path();
    util::write_file_atomic(std::filesystem::path(path) / "x", "1");
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(path) / "x"));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST(ErrorText, StackFramesAreCutAndTheRestIsOneLine) {
  const std::string c10_error =
      "Connection closed by peer [10.0.0.2]:4711\n"
      "Exception raised from recvBytes at ../torch/csrc/distributed/c10d/Utils.hpp:672 (most recent call first):\n"
      "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9d (0x7f in libc10.so)\n"
      "frame #1: <unknown function> + 0x5ab2 (0x7f in libtorch_cpu.so)\n";
  EXPECT_EQ(util::without_stack_frames(c10_error), "Connection closed by peer [10.0.0.2]:4711");
  EXPECT_EQ(util::without_stack_frames("one\ntwo"), "one two");
  EXPECT_EQ(util::without_stack_frames("plain"), "plain");
}
