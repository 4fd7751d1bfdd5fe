// The runtime directory is never used on trust: what another user could have planted at its
// path (a symlink, a directory of their own) is refused with an error naming the path, and
// nothing is written through it. "Another user" is uid 65534 (nobody): the tests run as
// root in CI; they skip that case otherwise.
#include "corral/os/runtime_dir.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>

#include "corral/core/types.hpp"
#include "corral/resources/ports.hpp"

using namespace corral;
namespace fs = std::filesystem;

namespace {

// A scratch directory and the variables the runtime directory depends on, restored after.
class RuntimeDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/corral-rtdir-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root = tmpl;
    for (const char* name : {"CORRAL_RUNTIME_DIR", "XDG_RUNTIME_DIR", "TMPDIR"}) {
      const char* v = std::getenv(name);
      saved.emplace_back(name, v ? std::optional<std::string>(v) : std::nullopt);
      ::unsetenv(name);
    }
  }
  void TearDown() override {
    for (const auto& [name, value] : saved)
      if (value)
        ::setenv(name.c_str(), value->c_str(), 1);
      else
        ::unsetenv(name.c_str());
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  std::string error_of(const std::string& path) {
    try {
      os::private_dir(path);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  }
  static mode_t mode_of(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::lstat(path.c_str(), &st), 0);
    return st.st_mode & 07777;
  }
  std::string root;
  std::vector<std::pair<std::string, std::optional<std::string>>> saved;
};

}  // namespace

TEST_F(RuntimeDir, IsCreatedPrivate) {
  ::setenv("TMPDIR", root.c_str(), 1);
  std::string dir = os::runtime_dir();
  EXPECT_EQ(dir, root + "/corral-" + std::to_string(::getuid()));
  EXPECT_EQ(mode_of(dir), 0700U);
}

TEST_F(RuntimeDir, AModeOpenToOthersIsNarrowedWhenTheDirectoryIsOurs) {
  std::string dir = root + "/rt";
  ASSERT_EQ(::mkdir(dir.c_str(), 0777), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0777), 0);
  ::setenv("CORRAL_RUNTIME_DIR", dir.c_str(), 1);
  EXPECT_EQ(os::runtime_dir(), dir);
  EXPECT_EQ(mode_of(dir), 0700U);
}

TEST_F(RuntimeDir, APlantedSymlinkIsRefusedAndNothingIsWrittenThroughIt) {
  std::string victim = root + "/victim";
  ASSERT_EQ(::mkdir(victim.c_str(), 0755), 0);
  std::string planted = root + "/corral-" + std::to_string(::getuid());
  ASSERT_EQ(::symlink(victim.c_str(), planted.c_str()), 0);
  ::setenv("TMPDIR", root.c_str(), 1);
  try {
    os::runtime_dir();
    FAIL() << "a symlink was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(planted + ": it is a symbolic link"), std::string::npos) << e.what();
  }
  // The port allocator goes through the same check, as a corral::Error.
  EXPECT_THROW(port_lock_dir(), Error);
  EXPECT_TRUE(fs::is_empty(victim));
  EXPECT_EQ(mode_of(victim), 0755U);
}

TEST_F(RuntimeDir, ADirectoryOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory to another user";
  std::string planted = root + "/corral-" + std::to_string(::getuid());
  ASSERT_EQ(::mkdir(planted.c_str(), 0777), 0);
  ASSERT_EQ(::chown(planted.c_str(), 65534, 65534), 0);
  ASSERT_EQ(::chmod(planted.c_str(), 0777), 0);
  ::setenv("TMPDIR", root.c_str(), 1);
  std::string err;
  try {
    os::runtime_dir();
  } catch (const std::runtime_error& e) {
    err = e.what();
  }
  EXPECT_NE(err.find(planted + ": it is owned by uid 65534"), std::string::npos) << err;
  EXPECT_EQ(mode_of(planted), 0777U) << "another user's directory was changed";
  EXPECT_TRUE(fs::is_empty(planted));
}

TEST_F(RuntimeDir, AFileAtThePathIsRefused) {
  std::string path = root + "/file";
  ::close(::open(path.c_str(), O_CREAT | O_WRONLY, 0600));
  EXPECT_NE(error_of(path).find(path + ": it is not a directory"), std::string::npos) << error_of(path);
}

TEST_F(RuntimeDir, XdgRuntimeDirComesFirstWhenItIsPrivate) {
  std::string xdg = root + "/xdg";
  ASSERT_EQ(::mkdir(xdg.c_str(), 0700), 0);
  ::setenv("XDG_RUNTIME_DIR", xdg.c_str(), 1);
  ::setenv("TMPDIR", root.c_str(), 1);
  EXPECT_EQ(os::runtime_dir(), xdg + "/corral");
  // One that others can enter is not trusted (and not ours to change): the fallback.
  ASSERT_EQ(::chmod(xdg.c_str(), 0755), 0);
  EXPECT_EQ(os::runtime_dir(), root + "/corral-" + std::to_string(::getuid()));
  EXPECT_EQ(mode_of(xdg), 0755U);
}

TEST_F(RuntimeDir, FilesInsideAreNeverOpenedThroughASymlink) {
  std::string victim = root + "/victim-file";
  ::close(::open(victim.c_str(), O_CREAT | O_WRONLY, 0600));
  std::string link = root + "/lock";
  ASSERT_EQ(::symlink(victim.c_str(), link.c_str()), 0);
  errno = 0;
  EXPECT_EQ(os::open_private(link, O_RDWR | O_CREAT), -1);
  EXPECT_EQ(errno, ELOOP);
}
